"""One lab fleet of the demo's shape, with Route53, for the runbook and drill tests: it is
deployed once (about a minute) and each test leaves it as it found it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from georelay_testing.runbook_lab import RunbookFleet, runbook_fleet


@pytest.fixture(scope="session")
def fleet() -> Iterator[RunbookFleet]:
    with runbook_fleet() as f:
        yield f

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


@pytest.fixture(scope="module")
def prometheus(fleet: RunbookFleet) -> Iterator[str]:
    """The lab's Prometheus (georelay-lab prometheus) scraping the fleet, with the shipped
    rules; its URL. Stopped after the module."""
    from georelay_lab import prometheus as lab_prometheus
    from georelay_lab.processes import stop

    listen = f"127.0.{fleet.net}.199:9090"
    lab_prometheus.start(fleet.lab_dir, listen, fleet.lab().fleet)
    try:
        yield f"http://{listen}"
    finally:
        stop(fleet.lab_dir / "prometheus/prometheus.pid")

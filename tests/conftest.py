"""Shared fixtures. Fleets run real haproxy, real TLS and real ansible-playbook on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import SERVICES, LabFleet, running_fleet


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in ("haproxy", "curl") if not shutil.which(tool) and not
               Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)}: run the tests with `make test`, "
                                "which installs what they need")


@pytest.fixture(scope="module")
def two_region_fleet() -> Iterator[LabFleet]:
    """The demo's shape: 2 regions x 2 proxies, 2 services, deployed once per module."""
    with running_fleet(regions={"us-east-1": ["e1", "e2"], "us-west-2": ["w1", "w2"]},
                       services=[dict(s) for s in SERVICES], https_port=443,
                       http_port=80) as fleet:
        yield fleet


@pytest.fixture
def one_proxy_fleet() -> Iterator[LabFleet]:
    """One region, one proxy, one service: for tests that change or break things."""
    with running_fleet() as fleet:
        yield fleet

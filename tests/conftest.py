"""Shared fixtures. Fleets run real haproxy, real TLS and real ansible-playbook on loopback."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import SERVICES, LabFleet


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in ("haproxy", "curl") if not shutil.which(tool) and not
               Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise pytest.UsageError(f"missing {', '.join(missing)}: run the tests with `make test`, "
                                "which installs what they need")


@pytest.fixture(scope="module")
def two_region_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabFleet]:
    """The demo's shape: 2 regions x 2 proxies, 2 services, deployed once per module."""
    fleet = LabFleet(tmp_path_factory.mktemp("fleet"),
                     regions={"us-east-1": ["e1", "e2"], "us-west-2": ["w1", "w2"]},
                     services=[dict(s) for s in SERVICES], https_port=443, http_port=80)
    try:
        fleet.up()
        fleet.deploy()
        for proxy in fleet.proxy_names():
            fleet.wait_healthy(proxy)
        yield fleet
    finally:
        fleet.down()


@pytest.fixture
def one_proxy_fleet(tmp_path: Path) -> Iterator[LabFleet]:
    """One region, one proxy, one service: for tests that change or break things."""
    fleet = LabFleet(tmp_path)
    try:
        fleet.up()
        fleet.deploy()
        fleet.wait_healthy("p1")
        yield fleet
    finally:
        fleet.down()

"""Shared fixtures. Fleets run real haproxy, real TLS and real ansible-playbook on loopback."""

from __future__ import annotations

import shutil
import tempfile
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
def short_dir() -> Iterator[Path]:
    """A short base directory: HAProxy's unix socket paths are limited to 97 characters."""
    path = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def two_region_fleet(short_dir: Path) -> Iterator[LabFleet]:
    """The demo's shape: 2 regions x 2 proxies, 2 services, deployed once per module."""
    fleet = LabFleet(short_dir / "two",
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
def one_proxy_fleet() -> Iterator[LabFleet]:
    """One region, one proxy, one service: for tests that change or break things."""
    base = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    fleet = LabFleet(base)
    try:
        fleet.up()
        fleet.deploy()
        fleet.wait_healthy("p1")
        yield fleet
    finally:
        fleet.down()
        shutil.rmtree(base, ignore_errors=True)

"""Shared fixtures. Fleets run real haproxy, real TLS and real ansible-playbook on loopback."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from georelay_lab import programs
from georelay_testing import fleet as support
from georelay_testing.fleet import SERVICES, DeployedFleet, running_fleet


def pytest_sessionstart(session: pytest.Session) -> None:
    """Every program of lab/debian-packages.txt is installed, and from now on no test can start
    a system program the list does not declare (support.audit_programs)."""
    missing = programs.missing()
    if missing:
        names = ", ".join(f"{e.program} (Debian package {e.package})" for e in missing)
        raise pytest.UsageError(f"missing {names}: run the tests with `make test`, which "
                                f"installs every package of {programs.LIST} first (`make "
                                "system` installs them alone)")
    sys.addaudithook(support.audit_programs)


@pytest.fixture(autouse=True)
def _declared_programs_only() -> Iterator[None]:
    """Fail the test during which an undeclared system program was started, also when the
    refusal was swallowed (a background thread, a broad except)."""
    seen = len(support.UNDECLARED)
    yield
    started = support.UNDECLARED[seen:]
    if started:
        pytest.fail("\n".join(started), pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Also fails the run when an undeclared program was started outside any test (a
    module fixture's teardown)."""
    if support.UNDECLARED and exitstatus == pytest.ExitCode.OK:
        print("\n".join(["", *support.UNDECLARED]), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="module")
def two_region_fleet() -> Iterator[DeployedFleet]:
    """The demo's shape: 2 regions x 2 proxies, 2 services, deployed once per module."""
    with running_fleet(regions={"us-east-1": ["e1", "e2"], "us-west-2": ["w1", "w2"]},
                       services=[dict(s) for s in SERVICES], https_port=443,
                       http_port=80) as fleet:
        yield fleet


@pytest.fixture
def one_proxy_fleet() -> Iterator[DeployedFleet]:
    """One region, one proxy, one service: for tests that change or break things."""
    with running_fleet() as fleet:
        yield fleet

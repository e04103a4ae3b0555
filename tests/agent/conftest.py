"""Fixtures of the agent's tests: fleets with the agent deployed by playbooks/proxies.yml."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_support import AgentFleet, make_fleet
from support import SERVICES


@pytest.fixture(scope="module")
def agent_fleet() -> Iterator[AgentFleet]:
    """Two regions, one proxy each, two services; the agent deployed by playbooks/proxies.yml."""
    base = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    fleet = make_fleet(base, regions={"us-east-1": ["e1"], "us-west-2": ["w1"]},
                       services=[dict(s) for s in SERVICES])
    try:
        fleet.up()
        fleet.deploy()
        for proxy in fleet.proxy_names():
            fleet.wait_healthy(proxy)
        yield fleet
    finally:
        fleet.down()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def one_agent_fleet() -> Iterator[AgentFleet]:
    """One proxy, for the tests that break it (in order: the last one kills HAProxy).
    Its root has a cron directory, so the role installs the cron entry there."""
    base = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    fleet = make_fleet(base)
    try:
        fleet.up()
        (fleet.root("p1") / "etc/cron.d").mkdir(parents=True)
        fleet.deploy()
        fleet.wait_healthy("p1")
        yield fleet
    finally:
        fleet.down()
        shutil.rmtree(base, ignore_errors=True)

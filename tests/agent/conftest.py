"""Fixtures of the agent's tests: fleets with the agent deployed by playbooks/proxies.yml."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest

from georelay_testing.agent_fleet import AgentFleet, make_fleet
from georelay_testing.fleet import SERVICES, DeployedFleet, running_fleet


@pytest.fixture(scope="session")
def agent_fleet() -> Iterator[AgentFleet]:
    """Two regions, one proxy each, two services; the agent deployed by playbooks/proxies.yml.
    Each proxy's backends hold the other region's gateway as a backup server. Shared by the
    agent's fleet, bridging and drain-playbook tests (one deploy); each test leaves it as it
    found it: gateways up, no drains."""
    with running_fleet(make=make_fleet, regions={"us-east-1": ["e1"], "us-west-2": ["w1"]},
                       services=[dict(s) for s in SERVICES]) as fleet:
        yield cast(AgentFleet, fleet)  # built by make_fleet


def _cron_dir(fleet: DeployedFleet) -> None:
    (fleet.root("p1") / "etc/cron.d").mkdir(parents=True)


@pytest.fixture(scope="module")
def one_agent_fleet() -> Iterator[AgentFleet]:
    """One proxy, for the tests that break it (in order: the last one kills HAProxy).
    Its root has a cron directory, so the role installs the cron entry there."""
    with running_fleet(make=make_fleet, before_deploy=_cron_dir) as fleet:
        yield cast(AgentFleet, fleet)  # built by make_fleet

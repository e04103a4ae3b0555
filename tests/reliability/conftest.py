"""Fleets of the reliability tests: one proxy each, deployed once per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from georelay_lab.dns_server import DnsServer
from georelay_testing.fleet import SERVICES, DeployedFleet
from georelay_testing.reliability import (
    DNS_VARS,
    FAULT_VARS,
    GATEWAY_NAME,
    RELOAD_VARS,
    deployed_fleet,
)


@pytest.fixture(scope="module")
def reload_fleet() -> Iterator[DeployedFleet]:
    with deployed_fleet(RELOAD_VARS) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def fault_fleet() -> Iterator[DeployedFleet]:
    """Two services on the same gateway: one is made slow, the other must stay fast."""
    with deployed_fleet(FAULT_VARS, services=[dict(s) for s in SERVICES]) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def moving_fleet() -> Iterator[tuple[DeployedFleet, DnsServer]]:
    """The gateway addressed by a name (GATEWAY_NAME) that a local dnsmasq answers."""
    servers: list[DnsServer] = []

    def point_at_dns(fleet: DeployedFleet) -> None:
        ip, port = fleet.gateway("us-east-1")  # gateway A, started by fleet.up()
        dns = DnsServer(fleet.lab_dir / "dns", host=f"127.0.{fleet.net}.53", port=5353,
                        records={GATEWAY_NAME: ip})
        dns.start()
        servers.append(dns)
        fleet.apigw = {"us-east-1": f"{GATEWAY_NAME}:{port}"}
        fleet.all_vars.update(haproxy_resolvers=[dns.address], **DNS_VARS)
        fleet.write()

    with deployed_fleet({}, before_deploy=point_at_dns) as fleet:
        yield fleet, servers[0]

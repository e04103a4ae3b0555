"""The proxy never relays over an unverified link to a gateway."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from georelay_lab import certs, processes
from georelay_testing.fleet import DeployedFleet, running_fleet


@pytest.fixture
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(deploy=False) as fleet:
        yield fleet


def swap_gateway_certificate(fleet: DeployedFleet, pem: bytes) -> None:
    """Restart the us-east-1 stand-in gateway with another certificate."""
    lab = fleet.lab()
    lab.gateway_pem("us-east-1").write_bytes(pem)
    lab.stop_gateway("us-east-1")
    lab.start_gateway(lab.fleet.region("us-east-1"))


def assert_refused(fleet: DeployedFleet) -> None:
    for _ in range(3):
        reply = fleet.fetch("p1", "fast.example.com")
        assert 500 <= reply.status <= 599, reply.body
        assert "x-lab-region" not in reply.headers
    ip, port = fleet.gateway("us-east-1")
    assert processes.wait_port(ip, port, timeout=2)  # the gateway itself is up


def test_gateway_certificate_from_an_untrusted_ca_is_refused(fleet: DeployedFleet) -> None:
    rogue = certs.new_authority("rogue CA")
    good = fleet.lab().gateway_pem("us-east-1").read_bytes()
    swap_gateway_certificate(fleet, certs.issue(rogue, ["us-east-1-fast.example.com"]))
    fleet.deploy()
    assert_refused(fleet)
    # The same gateway with its proper certificate is served again: the CA made the difference.
    swap_gateway_certificate(fleet, good)
    fleet.wait_healthy("p1")
    assert fleet.fetch("p1", "fast.example.com").status == 200


def test_gateway_certificate_for_another_name_is_refused(fleet: DeployedFleet) -> None:
    lab_ca = certs.authority(fleet.lab_dir / "certs")
    # Trusted CA, wrong name: a certificate for another region's domain.
    swap_gateway_certificate(fleet, certs.issue(lab_ca, ["eu-west-1-fast.example.com"]))
    fleet.deploy()
    assert_refused(fleet)


def test_gateway_addressed_by_a_name_that_does_not_resolve_yet(fleet: DeployedFleet) -> None:
    """haproxy -c and start-up need no DNS (init-addr last,libc,none); runtime resolvers do."""
    fleet.apigw = {"us-east-1": "gw.us-east-1.georelay.invalid:9443"}
    fleet.write(haproxy_resolvers=[f"{fleet.gateway('us-east-1')[0]}:5353"])
    fleet.deploy()
    config = fleet.config("p1").read_text()
    assert "resolvers georelay" in config
    assert "gw.us-east-1.georelay.invalid:9443" in config
    assert "resolvers georelay resolve-prefer ipv4" in config
    reply = fleet.fetch("p1", "fast.example.com")
    assert reply.status == 503  # no address yet: HAProxy answers, nothing is relayed blindly

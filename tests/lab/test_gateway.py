"""The stand-in gateway is as strict as API Gateway, or the relay tests would prove nothing."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator

import pytest

from georelay_lab import client
from georelay_testing.fleet import DeployedFleet, running_fleet


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(deploy=False, regions={"eu-west-1": ["p1"]}) as fleet:
        yield fleet


def gw(fleet: DeployedFleet, sni: str, path: str = "/x", **kw: object) -> client.Reply:
    ip, port = fleet.gateway("eu-west-1")
    return client.fetch(ip, port, sni, path, ca_file=fleet.ca_file, **kw)  # type: ignore[arg-type]


def test_handshake_fails_for_a_name_it_does_not_serve(fleet: DeployedFleet) -> None:
    with pytest.raises(ssl.SSLError):
        gw(fleet, "us-east-1-fast.example.com")


def test_host_other_than_the_sni_is_forbidden(fleet: DeployedFleet) -> None:
    reply = gw(fleet, "eu-west-1-fast.example.com", headers={"Host": "fast.example.com"})
    assert reply.status == 403
    assert reply.headers["x-amzn-errortype"] == "ForbiddenException"


def test_matching_sni_and_host_are_echoed(fleet: DeployedFleet) -> None:
    reply = gw(fleet, "eu-west-1-fast.example.com", "/p?q=1")
    echo = reply.json()
    assert reply.status == 200
    assert (echo["region"], echo["host"], echo["sni"], echo["path"]) == \
        ("eu-west-1", "eu-west-1-fast.example.com", "eu-west-1-fast.example.com", "/p?q=1")
    assert reply.headers["x-lab-sni"] == "eu-west-1-fast.example.com"


def test_fault_knobs(fleet: DeployedFleet) -> None:
    assert gw(fleet, "eu-west-1-fast.example.com", "/x?status=502").status == 502
    assert len(gw(fleet, "eu-west-1-fast.example.com", "/x?bytes=5000").body) == 5000
    assert gw(fleet, "eu-west-1-fast.example.com", "/ping").json()["ping"] == "pong"
    # reset=1: half a body, then a TCP reset
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        gw(fleet, "eu-west-1-fast.example.com", "/x?reset=1")

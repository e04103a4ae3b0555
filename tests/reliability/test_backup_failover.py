"""In-proxy failover: a region's proxy bridges through the next region's gateway.

The fleet: us-east-1 (proxy e1) and us-west-2 (proxy w1), one service, product defaults
for failover (error-limit 3 marks a gateway down on real traffic's connection errors,
`option redispatch 1`, retries 4 on conn-failure/empty-response), checks every 500 ms
(fall 2, rise 2, fastinter 500 ms). Each stand-in gateway is SNI- and Host-strict: it
answers 403 to a Host that is not the domain its TLS handshake named, and says which
region answered (x-lab-region) and what Host/SNI it received.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from georelay_testing.fleet import DeployedFleet, running_fleet
from georelay_testing.reliability import (
    home_gateway_outage,
    record_figures,
    server_row,
    wait_status,
)
from georelay_testing.traffic import Traffic

FAST = "be_fast_example_com"
HOME = "us-east-1-fast.example.com"
BACKUP = "us-west-2-fast.example.com"
FAILOVER_BOUND_S = 3.0  # issue 6: traffic on the first healthy backup within 3 s
RETURN_BOUND_S = 5.0  # checks: rise 2 x 500 ms, plus fastinter and a busy machine
MAX_UNANSWERED = 2  # closed without a response at the instant of the kill (see below)


@pytest.fixture(scope="module")
def backup_fleet() -> Iterator[DeployedFleet]:
    with running_fleet(regions={"us-east-1": ["e1"], "us-west-2": ["w1"]}) as fleet:
        yield fleet


@pytest.fixture
def home_down(backup_fleet: DeployedFleet) -> Iterator[DeployedFleet]:
    """us-east-1's gateway stopped for the test; started again (and UP) afterwards."""
    fleet = backup_fleet
    lab = fleet.lab()
    lab.stop_gateway("us-east-1")
    try:
        yield fleet
    finally:
        lab.start_gateway(lab.fleet.region("us-east-1"))
        wait_status(fleet, "e1", FAST, "UP", server=HOME, timeout=15)


def test_backend_lists_the_other_region_as_backup(backup_fleet: DeployedFleet) -> None:
    config = backup_fleet.config("e1").read_text()
    home = next(line for line in config.splitlines() if f"server {HOME} " in line)
    backup = next(line for line in config.splitlines() if f"server {BACKUP} " in line)
    assert " backup " not in home and " backup " in backup
    assert f"sni str({BACKUP})" in backup and f"verifyhost {BACKUP}" in backup
    assert "http-send-name-header Host" in config
    # Both gateways are checked, each with its own Host (the check sends the server name).
    assert server_row(backup_fleet, "e1", FAST, HOME)["status"] == "UP"
    assert server_row(backup_fleet, "e1", FAST, BACKUP)["status"] == "UP"


def test_home_serves_while_it_is_up(backup_fleet: DeployedFleet) -> None:
    replies = [backup_fleet.fetch("e1", "fast.example.com", "/home") for _ in range(5)]
    assert [r.status for r in replies] == [200] * 5
    assert {r.headers["x-lab-region"] for r in replies} == {"us-east-1"}


def test_backup_gets_its_own_host_and_sni(home_down: DeployedFleet) -> None:
    """Host follows the server actually chosen: the strict backup gateway answers 200
    (it would answer 403 to the home domain, and refuse the handshake for another SNI)."""
    fleet = home_down
    wait_status(fleet, "e1", FAST, "DOWN", server=HOME)
    reply = fleet.fetch("e1", "fast.example.com", "/bridged")
    assert reply.status == 200, reply.body[:300]
    assert reply.headers["x-lab-region"] == "us-west-2"
    assert reply.headers["x-lab-received-host"] == BACKUP
    assert reply.headers["x-lab-sni"] == BACKUP
    assert reply.headers["x-lab-xfh"].split(":")[0] == "fast.example.com"  # as the client sent it


def test_http2_client_is_bridged_with_the_backup_host(home_down: DeployedFleet) -> None:
    fleet = home_down
    wait_status(fleet, "e1", FAST, "DOWN", server=HOME)
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--max-time", "10", "--cacert", fleet.ca_file,
         "--resolve", f"fast.example.com:{fleet.https_port}:{fleet.address('e1')}",
         "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "-D", "-",
         f"https://fast.example.com:{fleet.https_port}/h2"],
        capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("2 200"), out.stdout
    assert f"x-lab-received-host: {BACKUP}" in out.stdout.lower()


def test_failover_and_return_under_load(backup_fleet: DeployedFleet) -> None:
    """Gateway killed under load: every request is answered, by the backup within the
    bound; gateway back: traffic returns home, again without a failed request."""
    fleet = backup_fleet
    with Traffic(fleet, "e1", fresh_loops=2, kept_loops=2) as traffic:
        outage = home_gateway_outage(fleet, traffic, "e1", FAST, "us-east-1", HOME)

    during, after = outage.during(traffic), outage.after(traffic)
    killed, restarted, ended = outage.killed, outage.restarted, outage.ended
    failover_s = outage.failover_s(traffic, "us-west-2")
    return_s = outage.return_s(traffic, "us-east-1")
    figures = {
        "unanswered": sum(not s.ok for s in during),
        "failover_s": round(failover_s, 2), "return_s": round(return_s, 2),
        "during": traffic.summary(killed, restarted), "after": traffic.summary(restarted, ended),
        "slowest_during_ms": round(max(s.seconds for s in during) * 1000, 1),
    }
    record_figures("backup_failover_under_load", figures)
    # No request is answered with an error. The one race left (HAProxy 2.6.12): a request
    # sent on a pooled gateway connection at the instant the gateway dies can exhaust its
    # retries on dead pooled connections within milliseconds; HAProxy then closes the
    # client connection without a response (log: 503 bytes=0 term=SC), which HTTP clients
    # may retry for idempotent requests. Measured: 0 or 1 such request per kill (of ~65).
    unanswered = [s for s in during if not s.ok]
    assert all(s.status is None and "closed connection without response" in (s.error or "")
               for s in unanswered), figures
    assert len(unanswered) <= MAX_UNANSWERED, figures
    assert [s.error for s in after if not s.ok] == [], figures
    assert failover_s <= FAILOVER_BOUND_S, figures
    assert return_s <= RETURN_BOUND_S, figures

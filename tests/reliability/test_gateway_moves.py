"""The gateway's address changes under traffic: HAProxy follows the name without a reload.

The region's georelay_apigw_address is gw.us-east-1.lab.test:9443, answered by a local
dnsmasq (lab/georelay_lab/dns_server.py) that haproxy_resolvers points at. Gateway A
(127.0.N.101) serves first; gateway B (127.0.N.102, same domains and certificate) starts,
the name moves to B, and the old gateway is stopped once HAProxy uses B's address.
"""

from __future__ import annotations

import time

import pytest

from georelay_lab.dns_server import DnsServer
from georelay_testing.fleet import DeployedFleet
from georelay_testing.reliability import (
    DNS_VARS,
    GATEWAY_NAME,
    log_terms,
    record_figures,
    server_address,
    start_gateway,
    stop_gateway,
)
from georelay_testing.traffic import Traffic

FAST = "be_fast_example_com"
HOLD_VALID_S = float(DNS_VARS["haproxy_dns_hold_valid"].rstrip("s"))
HOLD_OBSOLETE_S = float(DNS_VARS["haproxy_dns_hold_obsolete"].rstrip("s"))
TIMEOUT_RESOLVE_S = 1.0  # the template's `timeout resolve 1s`
# HAProxy asks again once its valid answer is hold valid old; an address that left the
# answer is still used for hold obsolete; the query takes up to timeout resolve; 2 s more
# for dnsmasq's reload and a busy test machine.
SWITCH_BOUND_S = HOLD_OBSOLETE_S + HOLD_VALID_S + TIMEOUT_RESOLVE_S + 2.0
CUT_S = 1.0  # requests that end this soon after the old gateway is stopped were in flight
REUSE_BUG = (
    "product: HAProxy 2.6 keeps reusing pooled connections to the old address after a DNS "
    "change (srv_update_addr does not purge them, unlike `set server addr`), so every "
    "request still reaches the old gateway until it goes away, and one in flight on such a "
    "connection then fails (the kept-alive client connection is closed without an answer)")


def test_traffic_follows_the_gateway_name_to_a_new_address_without_reload(
        moving_fleet: tuple[DeployedFleet, DnsServer]) -> None:
    """The name moves from A to B under traffic. Within SWITCH_BOUND_S the server's address
    is B (no reload); connections to B serve; when A then goes away, every request is
    answered by B and none fails (settled: from CUT_S after A stopped). Measured: how much
    traffic still reaches A between the switch and A's end, over gateway connections HAProxy
    2.6 keeps reusing after a DNS change; requests in flight on them when A stops may fail
    (REUSE_BUG, reported as XFAIL when that is the only failure)."""
    fleet, dns = moving_fleet
    ip_a, port = fleet.gateway("us-east-1")
    ip_b = ip_a.rsplit(".", 1)[0] + ".102"
    lab = fleet.lab()
    start_gateway(fleet, "moved", (ip_b, port), "us-east-1-b", lab.domains("us-east-1"),
                  lab.gateway_pem("us-east-1"))
    reloads = fleet.reloads("p1")
    assert server_address(fleet, "p1", FAST) == ip_a

    with Traffic(fleet, "p1") as traffic:
        traffic.wait_for(20)
        assert {s.gateway for s in traffic.window()} == {"us-east-1"}
        moved = time.monotonic()
        dns.set(GATEWAY_NAME, ip_b)
        switched: float | None = None
        while time.monotonic() < moved + SWITCH_BOUND_S + 5:
            if server_address(fleet, "p1", FAST) == ip_b:
                switched = time.monotonic()
                break
            time.sleep(0.2)
        assert switched is not None, f"no switch to {ip_b} within {SWITCH_BOUND_S + 5}s"
        time.sleep(2)  # both gateways up: where does traffic go?
        stopping = time.monotonic()
        stop_gateway(fleet, "us-east-1")  # the old address is gone for good
        stopped = time.monotonic()
        settled = stopped + CUT_S
        time.sleep(CUT_S)
        traffic.wait_for(60, since=settled)
    between = traffic.window(switched, stopping)
    cut = traffic.window(stopping, settled)
    figures = {
        "hold_valid_s": HOLD_VALID_S, "hold_obsolete_s": HOLD_OBSOLETE_S,
        "switch_bound_s": SWITCH_BOUND_S,
        "switched_after_s": round(switched - moved, 2),
        "whole_run": traffic.summary(),
        "switch_to_old_stop": {"sent": len(between),
                               "from_old_gateway": sum(s.gateway == "us-east-1"
                                                       for s in between),
                               "from_new_gateway": sum(s.gateway == "us-east-1-b"
                                                       for s in between)},
        "before_switch": traffic.summary(until=switched),
        "switch_to_old_stop_summary": traffic.summary(switched, stopping),
        "old_gateway_stopping": traffic.summary(stopping, settled),
        "settled": traffic.summary(since=settled),
        "gateways_settled": sorted({s.gateway for s in traffic.window(settled)}),
        "proxy_log_terms": sorted(set(log_terms(fleet, "p1", "/kept")
                                      + log_terms(fleet, "p1", "/fresh"))),
        "reloads_during": fleet.reloads("p1") - reloads}
    record_figures("gateway_moves", figures)
    assert fleet.reloads("p1") == reloads  # followed without a reload
    assert switched - moved <= SWITCH_BOUND_S, figures
    assert figures["before_switch"]["failed"] == 0, figures
    assert figures["switch_to_old_stop_summary"]["failed"] == 0, figures
    assert figures["settled"]["sent"] >= 60, figures
    assert figures["settled"]["failed"] == 0, figures
    assert figures["gateways_settled"] == ["us-east-1-b"], figures
    cut_failures = [s.error or "" for s in cut if not s.ok]
    if cut_failures and all("RemoteDisconnected" in e or "HTTP 502" in e
                            for e in cut_failures):
        pytest.xfail(f"{len(cut_failures)} of {len(cut)} requests as the old gateway "
                     f"stopped: {REUSE_BUG}")
    assert cut_failures == [], figures

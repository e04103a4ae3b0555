"""Faults at the gateway, and what a client of the proxy sees for each.

The fleet (FAULT_VARS): haproxy_timeout_server 1s, health checks every 500 ms (fall 2,
rise 2), retries 4 on conn-failure/empty-response; two services on the one gateway.
"""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from georelay_lab import certs, client
from georelay_testing.fleet import DeployedFleet
from georelay_testing.reliability import (
    log_terms,
    record_figures,
    server_row,
    stat_rows,
    wait_status,
)
from georelay_testing.traffic import percentile_ms

FAST = "be_fast_example_com"
TIMEOUT_SERVER_S = 1.0  # FAULT_VARS haproxy_timeout_server
RETRIES = 4  # role default haproxy_retries; HAProxy waits min(timeout connect, 1s) between


def timed(fleet: DeployedFleet, hostname: str, path: str,
          timeout: float = 15) -> tuple[float, client.Reply]:
    start = time.monotonic()
    reply = fleet.fetch("p1", hostname, path, timeout=timeout)
    return time.monotonic() - start, reply


def timed_or_closed(fleet: DeployedFleet, hostname: str, path: str
                    ) -> tuple[float, client.Reply | None]:
    start = time.monotonic()
    try:
        return timed(fleet, hostname, path)
    except http.client.RemoteDisconnected:
        return time.monotonic() - start, None


def restart_gateway(fleet: DeployedFleet, pem: bytes | None = None) -> None:
    lab = fleet.lab()
    if pem is not None:
        lab.gateway_pem("us-east-1").write_bytes(pem)
    lab.stop_gateway("us-east-1")
    lab.start_gateway(lab.fleet.region("us-east-1"))


def test_refused_connections_get_503_at_once_not_a_hang(fault_fleet: DeployedFleet) -> None:
    """Gateway stopped: 503 from HAProxy. Until the checks mark it DOWN a request spends
    its connection retries (RETRIES x 1 s turn-around); after that 503 is immediate."""
    fleet = fault_fleet
    fleet.lab().stop_gateway("us-east-1")
    try:
        stopped = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as pool:  # a request before the checks tell
            first = pool.submit(timed_or_closed, fleet, "fast.example.com", "/refused")
            wait_status(fleet, "p1", FAST, "DOWN")
            down_after = time.monotonic() - stopped
            first_s, first_reply = first.result()
        # The first request may meet only pooled connections to the gateway that just died:
        # HAProxy 2.6.12 then spends its retries on them within milliseconds and closes the
        # client connection without a response (docs/BENCHMARKS.md, in-proxy failover).
        assert first_s < RETRIES * 1.0 + 2, first_s  # bounded: never a hang
        before_down = [(first_s, first_reply)] if first_reply is not None else []
        after_down = [timed(fleet, "fast.example.com", "/refused") for _ in range(20)]
        record_figures("gateway_refuses", {
            "first_request_s": round(first_s, 2),
            "first_status": first_reply.status if first_reply else "closed without response",
            "marked_down_after_s": round(down_after, 2),
            "after_down_requests": len(after_down),
            "after_down_p99_ms": percentile_ms([s for s, _ in after_down], 99),
            "after_down_statuses": sorted({r.status for _, r in after_down}),
            "terms": sorted(set(log_terms(fleet, "p1", "/refused")))})
        for seconds, reply in before_down + after_down:
            assert reply.status == 503, reply
            assert "x-lab-region" not in reply.headers
            assert seconds < RETRIES * 1.0 + 2, seconds  # bounded: never a hang
        assert max(s for s, _ in after_down) < 0.5
    finally:
        restart_gateway(fleet)
        fleet.wait_healthy("p1", timeout=30)
    assert fleet.fetch("p1", "fast.example.com").status == 200


def test_slow_gateway_gets_504_after_timeout_server_and_nothing_piles_up(
        fault_fleet: DeployedFleet) -> None:
    """20 requests the gateway answers after 5 s: each gets 504 after timeout server (1 s),
    none is retried, and while they wait the other service and /ping answer at once."""
    fleet = fault_fleet
    slow_n = 20
    with ThreadPoolExecutor(max_workers=slow_n + 2) as pool:
        slow = [pool.submit(timed, fleet, "fast.example.com", "/slow?delay_ms=5000")
                for _ in range(slow_n)]
        time.sleep(0.3)
        in_flight = int(server_row(fleet, "p1", FAST)["scur"])
        others: list[tuple[float, client.Reply]] = []
        while not all(f.done() for f in slow) and len(others) < 200:
            others.append(timed(fleet, "api.example.com", "/other"))
            others.append(timed(fleet, "fast.example.com", "/ping"))
        results = [f.result() for f in slow]
    time.sleep(0.2)
    after = int(server_row(fleet, "p1", FAST)["scur"])
    figures: dict[str, Any] = {
        "slow_requests": slow_n,
        "slow_statuses": sorted({r.status for _, r in results}),
        "slow_min_s": round(min(s for s, _ in results), 2),
        "slow_max_s": round(max(s for s, _ in results), 2),
        "in_flight_at_gateway_during": in_flight,
        "in_flight_after": after,
        "others_sent": len(others),
        "others_failed": sum(r.status != 200 for _, r in others),
        "others_p50_ms": percentile_ms([s for s, _ in others], 50),
        "others_p99_ms": percentile_ms([s for s, _ in others], 99),
        "terms": sorted(set(log_terms(fleet, "p1", "/slow"))),
        "server_status": server_row(fleet, "p1", FAST)["status"]}
    record_figures("gateway_slow", figures)
    for seconds, reply in results:
        assert reply.status == 504, reply
        # timeout server fired once: no retry doubled it, nothing waited for the 5 s answer
        assert TIMEOUT_SERVER_S - 0.1 <= seconds < TIMEOUT_SERVER_S + 1.5, seconds
    assert set(figures["terms"]) == {"sH"}, figures["terms"]
    assert after == 0  # every slow request released its server slot at the timeout
    assert others and figures["others_failed"] == 0, figures
    assert max(s for s, _ in others) < 1.0, figures  # the proxy kept answering the rest
    assert figures["server_status"].startswith("UP")  # slowness alone does not fail checks


def test_gateway_certificate_swapped_to_an_untrusted_one_is_refused(
        fault_fleet: DeployedFleet) -> None:
    """A gateway that suddenly presents a certificate of another CA gets no request: the
    client sees 503 from HAProxy (never the gateway's answer). Reporting it is the agent's
    job (tests/agent)."""
    fleet = fault_fleet
    good = fleet.lab().gateway_pem("us-east-1").read_bytes()
    rogue = certs.new_authority("rogue CA")
    restart_gateway(fleet, certs.issue(rogue, ["us-east-1-fast.example.com",
                                               "us-east-1-api.example.com"]))
    try:
        swapped = time.monotonic()
        with ThreadPoolExecutor(max_workers=1) as pool:  # a request before the checks tell
            first = pool.submit(timed, fleet, "fast.example.com", "/rogue")
            wait_status(fleet, "p1", FAST, "DOWN")
            down_after = time.monotonic() - swapped
            replies = [first.result()]
        replies += [timed(fleet, "fast.example.com", "/rogue") for _ in range(10)]
        record_figures("gateway_untrusted_certificate", {
            "requests": len(replies), "statuses": sorted({r.status for _, r in replies}),
            "max_s": round(max(s for s, _ in replies), 2),
            "marked_down_after_s": round(down_after, 2),
            "check_status": server_row(fleet, "p1", FAST)["check_status"],
            "terms": sorted(set(log_terms(fleet, "p1", "/rogue")))})
        for seconds, reply in replies:
            assert reply.status == 503, reply
            assert "x-lab-region" not in reply.headers  # nothing came from the gateway
            assert seconds < RETRIES * 1.0 + 2, seconds
        # Marked down by its checks (L6RSP: the TLS handshake failed) or first by real
        # traffic's failed handshakes (HANA: observe layer4 error-limit).
        assert server_row(fleet, "p1", FAST)["check_status"] in ("L6RSP", "HANA")
    finally:
        restart_gateway(fleet, good)
        fleet.wait_healthy("p1", timeout=30)
    assert fleet.fetch("p1", "fast.example.com").status == 200


def test_gateway_reset_mid_response_reaches_the_client_as_a_cut_response(
        fault_fleet: DeployedFleet) -> None:
    """The gateway sends 200, a Content-Length and half the body, then a TCP RST.

    What the client sees depends on whether the RST reached HAProxy before it had relayed
    the response headers: then a 502 from HAProxy (log term SH, server aborted during
    headers); else the gateway's 200 and a body shorter than its Content-Length, then the
    connection closed (term SD, IncompleteRead in Python). Never a complete-looking 200,
    no retry of a half-answered request, the server stays UP, the next request is served."""
    fleet = fault_fleet
    seen = []
    for _ in range(10):
        conn = fleet.connection("p1", "fast.example.com")
        try:
            conn.request("GET", "/reset?reset=1&bytes=4000")
            resp = conn.getresponse()
            length = int(resp.getheader("content-length") or -1)
            try:
                body = resp.read()
                seen.append(("complete", resp.status, length, len(body)))
            except http.client.IncompleteRead as exc:
                seen.append(("incomplete", resp.status, length, len(exc.partial)))
        except (OSError, http.client.HTTPException) as exc:
            seen.append(("no response", 0, 0, repr(exc)))
        finally:
            conn.close()
    terms = log_terms(fleet, "p1", "/reset")
    record_figures("gateway_resets_mid_response", {"seen": seen, "terms": sorted(set(terms))})
    for outcome, status, length, got in seen:
        assert (outcome, status) in {("incomplete", 200), ("complete", 502)}, seen
        if status == 200:
            assert isinstance(got, int) and got < length, seen
    assert terms and set(terms) <= {"SD", "SH"}, terms  # S: server aborted, in Data/Headers
    assert server_row(fleet, "p1", FAST)["status"].startswith("UP")
    assert fleet.fetch("p1", "fast.example.com").status == 200
    # Nothing piles up: every session of the backend ends within 3 s (the last request's
    # own session may still be closing when the first look is taken on a loaded machine).
    deadline = time.monotonic() + 3
    while any(int(r["scur"] or 0) for r in stat_rows(fleet, "p1") if r["pxname"] == FAST) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(int(r["scur"] or 0) == 0 for r in stat_rows(fleet, "p1")
               if r["pxname"] == FAST)

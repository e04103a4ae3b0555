"""Reloads under load: 50 hitless reloads in a row, and a config haproxy -c rejects.

Reloads go through georelay.relay.haproxy_master (plugins/modules/haproxy_master.py), the
module the role's "Reload HAProxy hitlessly" handler runs (state=reloaded). The fleet sets
haproxy_hard_stop_after 3s (RELOAD_VARS); close-spread-time stays off, the role's default:
with it, HAProxy 2.6.12 closes idle kept-alive client connections during a reload despite
`option idle-close-on-response` (docs/BENCHMARKS-reliability.md).
"""

from __future__ import annotations

import http.client
import threading
import time

from georelay_testing.fleet import DeployedFleet, sha
from georelay_testing.reliability import module_reload, record_figures
from georelay_testing.traffic import Traffic

RELOADS = 50
PAUSING_RELOADS = 6
HARD_STOP_AFTER_S = 3  # RELOAD_VARS haproxy_hard_stop_after
def test_fifty_reloads_drop_no_request_and_leave_no_old_worker(reload_fleet: DeployedFleet) -> None:
    """Clients on fresh and kept-alive connections see no failure across 50 reloads.

    A request still in flight at the last reload (10 s at the gateway) keeps the old worker
    alive; hard-stop-after ends that worker 3 s later, so `show proc` lists no old worker.
    """
    fleet = reload_fleet
    before = fleet.reloads("p1")
    durations = []
    cut: list[str] = []

    def slow_request() -> None:
        conn = fleet.connection("p1", "fast.example.com")
        conn.timeout = 15
        try:
            conn.request("GET", "/slow?delay_ms=10000")
            cut.append(f"HTTP {conn.getresponse().status}")
        except (OSError, http.client.HTTPException) as exc:
            cut.append(repr(exc))
        finally:
            conn.close()

    with Traffic(fleet, "p1") as traffic:
        traffic.wait_for(20)
        start = time.monotonic()
        for i in range(RELOADS):
            if i == RELOADS - 1:
                slow = threading.Thread(target=slow_request, daemon=True)
                slow.start()
                time.sleep(0.3)  # the slow request is at the gateway
            t = time.monotonic()
            module_reload(fleet, "p1")
            durations.append(time.monotonic() - t)
        last_reload = time.monotonic()
        reloading = last_reload - start
        time.sleep(1)
        old_after_1s = len(fleet.proc("p1").old_workers)
    assert fleet.reloads("p1") == before + RELOADS
    while (fleet.proc("p1").old_workers
           and time.monotonic() < last_reload + HARD_STOP_AFTER_S + 6):
        time.sleep(0.1)
    old_gone_s = time.monotonic() - last_reload
    table = fleet.proc("p1")
    slow.join(timeout=15)
    figures = traffic.summary()
    figures.update(reloads=RELOADS, reloading_s=round(reloading, 1),
                   reload_p50_ms=round(sorted(durations)[len(durations) // 2] * 1000),
                   reload_max_ms=round(max(durations) * 1000),
                   old_workers_1s_after_last_reload=old_after_1s,
                   old_workers_gone_after_s=round(old_gone_s, 1),
                   in_flight_request_at_hard_stop=cut)
    record_figures("fifty_reloads", figures)
    assert old_after_1s >= 1, "the worker serving the in-flight request should still run"
    assert table.old_workers == (), fleet.show_proc("p1")
    assert old_gone_s < HARD_STOP_AFTER_S + 3, old_gone_s  # 3 s for a busy machine
    assert len(table.workers) == 1, fleet.show_proc("p1")
    # What hard-stop-after means for a request still running then: it is cut, no answer.
    assert cut and "HTTP" not in cut[0], cut
    assert figures["fresh:ok"] > RELOADS and figures["kept:ok"] > RELOADS, figures
    assert figures.get("fresh:fail", 0) == 0, figures
    assert figures["failed"] == 0, figures


def test_reloads_never_close_a_pausing_kept_alive_client_under_it(
        reload_fleet: DeployedFleet) -> None:
    """Clients that pause 250 ms between requests on a kept-alive connection (as browsers,
    SDK connection pools and load balancers do) must get "Connection: close" on a response,
    never a connection closed while they send."""
    fleet = reload_fleet
    with Traffic(fleet, "p1", fresh_loops=0, kept_loops=4, pause_s=0.25) as traffic:
        traffic.wait_for(8)
        for _ in range(PAUSING_RELOADS):
            module_reload(fleet, "p1")
            time.sleep(0.4)
        time.sleep(1)
    figures = traffic.summary()
    record_figures("pausing_kept_alive_reloads", {**figures, "reloads": PAUSING_RELOADS})
    assert figures["kept:ok"] > 20, figures
    assert figures["failed"] == 0, figures


def test_config_rejected_by_haproxy_never_replaces_the_running_one(
        reload_fleet: DeployedFleet) -> None:
    fleet = reload_fleet
    config = sha(fleet.config("p1"))
    reloads = fleet.reloads("p1")
    workers = fleet.proc("p1").worker_pids
    try:
        with Traffic(fleet, "p1") as traffic:
            traffic.wait_for(20)
            fleet.write(haproxy_timeout_server="thirty")
            proc = fleet.play()
            traffic.wait_for(20, since=time.monotonic())
    finally:
        fleet.write()  # the inventory as the fixture deployed it
    figures = traffic.summary()
    record_figures("rejected_config", {**figures, "play_rc": proc.returncode})
    assert proc.returncode != 0
    assert "failed to validate" in proc.stdout, proc.stdout[-4000:]
    assert sha(fleet.config("p1")) == config
    assert fleet.reloads("p1") == reloads
    assert fleet.proc("p1").worker_pids == workers
    assert figures["fresh:ok"] > 20 and figures["kept:ok"] > 20, figures
    assert figures["failed"] == 0, figures

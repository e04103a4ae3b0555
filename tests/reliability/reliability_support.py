"""Helpers of the reliability tests: timed traffic, the role's reload path, HAProxy state.

Everything runs real processes on the test fleet's own loopback /24; every loop is bounded
in time, so a test that goes wrong ends by itself.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georelay_lab import client, processes
from georelay_model.facts import paths_below
from support import REPO, LabFleet, unix_cli

MASTER_MODULE = REPO / "roles/haproxy/library/georelay_haproxy_master.py"
BOUND_S = 120.0  # no loop of these tests runs longer than this, whatever happens

# Old workers must be gone this long after a reload (the product default is 30s/5s).
RELOAD_VARS = {"haproxy_hard_stop_after": "3s"}  # close-spread-time: the role's default (off)
# A gateway slower than this gets a 504 (the product default is 30s).
FAULT_VARS = {"haproxy_timeout_server": "1s"}
# The gateway's name, and how long HAProxy keeps a valid answer before asking again (the
# product default is 10s): the bound on following a moved gateway.
GATEWAY_NAME = "gw.us-east-1.lab.test"
DNS_VARS = {"haproxy_dns_hold_valid": "2s", "haproxy_dns_hold_obsolete": "5s"}


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic() when the request ended
    kind: str  # fresh | kept
    ok: bool
    seconds: float
    status: int | None
    gateway: str  # x-lab-region of the answer ("" when none)
    error: str | None


@dataclass
class Traffic:
    """Request loops against one proxy: fresh connections and kept-alive connections.

    Like tests/proxy/test_changes.py's Traffic, and it keeps every sample (time, latency,
    status, which stand-in gateway answered) so tests can look at a window of it.
    """

    fleet: LabFleet
    proxy: str
    hostname: str = "fast.example.com"
    fresh_loops: int = 2
    kept_loops: int = 1
    pause_s: float = 0.0  # kept-alive clients wait this long between requests (idle)
    samples: list[Sample] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def _record(self, kind: str, start: float, reply: client.Reply | None,
                error: str | None) -> None:
        end = time.monotonic()
        status = reply.status if reply else None
        if reply is not None and reply.status != 200:
            error = f"HTTP {reply.status}"
        gateway = reply.headers.get("x-lab-region", "") if reply else ""
        with self.lock:
            self.samples.append(Sample(end, kind, error is None, end - start, status, gateway,
                                       error))

    def fresh_connections(self) -> None:
        deadline = time.monotonic() + BOUND_S
        while not self.stop.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            try:
                reply = self.fleet.fetch(self.proxy, self.hostname, "/fresh", timeout=5)
                self._record("fresh", start, reply, None)
            except (OSError, http.client.HTTPException) as exc:
                self._record("fresh", start, None, repr(exc))

    def kept_alive(self) -> None:
        """One connection as long as the proxy keeps it; reconnect only when told to."""
        deadline = time.monotonic() + BOUND_S
        conn: http.client.HTTPSConnection | None = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = self.fleet.connection(self.proxy, self.hostname)
            start = time.monotonic()
            try:
                reply = client.request(conn, "/kept")
                self._record("kept", start, reply, None)
                if reply.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self._record("kept", start, None, repr(exc))
                conn.close()
                conn = None
            if self.pause_s:
                self.stop.wait(self.pause_s)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Traffic:
        loops = [self.fresh_connections] * self.fresh_loops + [self.kept_alive] * self.kept_loops
        self.threads = [threading.Thread(target=f, daemon=True) for f in loops]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def window(self, since: float = 0.0, until: float = math.inf) -> list[Sample]:
        with self.lock:
            return [s for s in self.samples if since <= s.at < until]

    def wait_for(self, count: int, since: float = 0.0, timeout: float = 10.0) -> None:
        """Until count more requests ended after since (so a window is not empty)."""
        deadline = time.monotonic() + timeout
        while len(self.window(since)) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def summary(self, since: float = 0.0, until: float = math.inf) -> dict[str, Any]:
        window = self.window(since, until)
        by_kind = Counter(f"{s.kind}:{'ok' if s.ok else 'fail'}" for s in window)
        return {"sent": len(window), "failed": sum(not s.ok for s in window),
                **dict(sorted(by_kind.items())),
                "p50_ms": percentile_ms([s.seconds for s in window], 50),
                "p99_ms": percentile_ms([s.seconds for s in window], 99),
                "max_ms": percentile_ms([s.seconds for s in window], 100),
                "errors": [s.error for s in window if s.error][:5]}


def percentile_ms(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile in milliseconds (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return round(ordered[rank - 1] * 1000, 1)


def record_figures(test: str, figures: dict[str, Any]) -> None:
    """Print the figures of a test; also append them to $GEORELAY_FIGURES if set (JSON lines).

    docs/BENCHMARKS-reliability.md is written from that file; nothing here is asserted.
    """
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"\nFIGURES {line}")
    target = os.environ.get("GEORELAY_FIGURES")
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


# --- the fleet ---------------------------------------------------------------------------

@contextmanager
def deployed_fleet(all_vars: dict[str, Any], *, services: list[dict[str, Any]] | None = None,
                   before_deploy: Callable[[LabFleet], None] | None = None
                   ) -> Iterator[LabFleet]:
    """One region, one proxy (p1): gateways up, deployed by the playbook, checks passing."""
    base = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    fleet = LabFleet(base, all_vars=dict(all_vars))
    if services is not None:
        fleet.services = services
    try:
        fleet.up()
        if before_deploy is not None:
            before_deploy(fleet)
        fleet.deploy()
        fleet.wait_healthy("p1", timeout=30)  # generous: the machine may be busy
        yield fleet
    finally:
        fleet.down()
        shutil.rmtree(base, ignore_errors=True)


def module_reload(fleet: LabFleet, proxy: str, timeout: int = 30) -> dict[str, Any]:
    """One hitless reload through roles/haproxy's own module, exactly as the handler runs it.

    The handler "Reload HAProxy hitlessly" calls georelay_haproxy_master with state=reloaded;
    an Ansible module runs as a script reading {"ANSIBLE_MODULE_ARGS": ...} from a file.
    """
    paths = paths_below(str(fleet.root(proxy)))
    args = {"state": "reloaded", "manager": "process", "binary": "/usr/sbin/haproxy",
            "config": paths["config"], "master_socket": paths["master_socket"],
            "pid_file": paths["pid_file"], "log_file": paths["log_file"],
            "admin_socket": paths["admin_socket"], "state_file": paths["state_file"],
            "timeout": timeout}
    args_file = fleet.base / "reload-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run([sys.executable, str(MASTER_MODULE), str(args_file)],
                          capture_output=True, text=True, timeout=timeout + 30, check=False)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"the module said:\n{proc.stdout}\n{proc.stderr}") from None
    assert proc.returncode == 0 and not result.get("failed"), result
    return result


def proc_table(show_proc: str) -> dict[str, list[int]]:
    """`show proc` of the master socket: pids of 'workers' and 'old workers'."""
    out: dict[str, list[int]] = {"workers": [], "old workers": []}
    section: str | None = None
    for line in show_proc.splitlines():
        if line.startswith("# "):
            name = line[2:].strip()
            section = name if name in out else None
        elif section and line.strip() and line.split()[0].isdigit():
            out[section].append(int(line.split()[0]))
    return out


def stat_rows(fleet: LabFleet, proxy: str) -> list[dict[str, str]]:
    """`show stat` of the admin socket as dicts (pxname, svname, status, scur, ...)."""
    text = unix_cli(fleet.admin_socket(proxy), "show stat")
    lines = text.splitlines()
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]


def server_row(fleet: LabFleet, proxy: str, backend: str) -> dict[str, str]:
    return next(r for r in stat_rows(fleet, proxy)
                if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND"))


def wait_status(fleet: LabFleet, proxy: str, backend: str, prefix: str,
                timeout: float = 10.0) -> float:
    """Seconds until the backend's gateway server's status starts with prefix (UP, DOWN)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server_row(fleet, proxy, backend)["status"].startswith(prefix):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{backend} not {prefix} within {timeout}s: "
                         f"{server_row(fleet, proxy, backend)}")


def server_address(fleet: LabFleet, proxy: str, backend: str) -> str:
    """The address the running worker uses for the backend's server (show servers state)."""
    text = unix_cli(fleet.admin_socket(proxy), f"show servers state {backend}")
    row = text.splitlines()[2].split()
    return row[4]  # be_id be_name srv_id srv_name srv_addr ...


def start_gateway(fleet: LabFleet, name: str, listen: tuple[str, int], region_label: str,
                  domains: list[str], cert: Path) -> int:
    """An extra stand-in gateway; its pid file is under the lab dir, so fleet.down() ends it."""
    cmd = [sys.executable, "-m", "georelay_lab", "gateway", "--region", region_label,
           "--listen", f"{listen[0]}:{listen[1]}", "--cert", str(cert)]
    for domain in domains:
        cmd += ["--domain", domain]
    run = fleet.lab_dir / "gateways"
    pid = processes.start(cmd, run / f"{name}.pid", run / f"{name}.log")
    assert processes.wait_port(*listen), (run / f"{name}.log").read_text()
    return pid


def stop_gateway(fleet: LabFleet, name: str) -> bool:
    return processes.stop(fleet.lab_dir / "gateways" / f"{name}.pid")


def log_terms(fleet: LabFleet, proxy: str, path_part: str) -> list[str]:
    """Termination states (term=) of the traffic log lines whose path contains path_part."""
    return [m.group(1) for line in fleet.log(proxy).splitlines() if path_part in line
            for m in [re.search(r" term=(\S+)", line)] if m]

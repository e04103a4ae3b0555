"""Instructions per request under callgrind: a count that does not depend on the machine.

This VM has no hardware counters (`perf stat -e instructions true` says <not supported>), so
`georelay-tools bench-rules` runs each HAProxy config in the foreground under
`valgrind --tool=callgrind`, warms it up, zeroes the counters, sends exactly N requests from
a deterministic client and reads the dump. Kernel time is not in the count (system calls,
the loopback), and a `rep movsb` copy counts one instruction per iteration, so a count
weighs memory copies more than the CPU does: read it beside the CPU time per request.
"""

from __future__ import annotations

import http.client
import re
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from georelay_lab import client, processes
from georelay_tools import bench_configs as cfg

HAPROXY, VALGRIND = "/usr/sbin/haproxy", "/usr/bin/valgrind"


@dataclass
class Count:
    """Instructions (callgrind's Ir) over `requests` requests, after a warm-up."""

    instructions: int
    requests: int
    statuses: dict[int, int]  # status (0: no answer) -> requests, warm-up included
    top: list[tuple[str, int]] = field(default_factory=list)  # function, self Ir

    @property
    def ok(self) -> bool:
        return self.instructions > 0 and set(self.statuses) == {200}

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


class Client:
    """A deterministic load: requests spread evenly over `connections` kept-alive (or, with
    close, new) TLS connections, one thread each."""

    def __init__(self, address: str, port: int, ca: Path, connections: int, path: str,
                 close: bool) -> None:
        self.address, self.port, self.path, self.close = address, port, path, close
        self.context = client.context(str(ca))
        self.conns: list[http.client.HTTPSConnection | None] = [None] * connections
        self.statuses: Counter[int] = Counter()
        self.lock = threading.Lock()

    def _send(self, slot: int, count: int) -> None:
        for _ in range(count):
            conn = self.conns[slot] or client.PinnedHTTPSConnection(  # valgrind is slow
                self.address, self.port, cfg.PUBLIC, self.context, timeout=120.0)
            self.conns[slot] = conn
            try:
                status = client.request(conn, self.path, headers={"Connection": "close"}
                                        if self.close else None).status
            except (OSError, http.client.HTTPException):
                status = 0
            if self.close or status == 0:
                conn.close()
                self.conns[slot] = None
            with self.lock:
                self.statuses[status] += 1

    def run(self, requests: int) -> None:
        n = len(self.conns)
        threads = [threading.Thread(target=self._send, args=(i, requests // n + (i < requests % n)))
                   for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def dump_instructions(dump: Path) -> int:
    """A dump's `totals:` (every cost line: what valgrind reports as collected; `summary:`
    leaves out part of the calls in flight when the counters were zeroed)."""
    text = dump.read_text()
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    return int(m[1]) if m else 0


def self_costs(dump: Path) -> Counter[str]:
    """Self instructions per function ("name (object)") of a callgrind dump. (callgrind_annotate
    shows the call chain in flight at the zeroing, main and the poll loop, as 100% self.)"""
    names: dict[str, dict[str, str]] = {"fn": {}, "ob": {}}
    costs: Counter[str] = Counter()
    fn = ob = ""
    after_call = False
    for line in dump.read_text().splitlines():
        key, eq, value = line.partition("=")
        if eq and key in ("fn", "cfn", "ob", "cob"):
            m = re.fullmatch(r"\((\d+)\)(?: (.*))?", value)
            table = names[key[-2:]]
            name = value if not m else table.setdefault(m[1], m[2]) if m[2] else table[m[1]]
            if key == "ob":
                ob = Path(name).name
            elif key == "fn":
                fn = f"{name} ({ob})"
        elif eq and key == "calls":
            after_call = True  # the next cost line is the call's inclusive cost
        elif line and (line[0].isdigit() or line[0] in "+-*"):
            if not after_call:
                costs[fn] += int(line.split()[-1])
            after_call = False
    return costs


def count_instructions(config: Path, address: str, port: int, ca: Path, run_dir: Path, *,
                       requests: int, connections: int, warmup: int, path: str = "/small",
                       close: bool = False, cpus: set[int] | None = None, top: int = 0) -> Count:
    """Run `config` in the foreground under callgrind, warm it up, zero the counters, send
    exactly `requests` requests, dump: the dump's instructions over those requests."""
    out = run_dir / "callgrind.out"
    for old in run_dir.glob("callgrind.out*"):
        old.unlink()
    taskset = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    with (run_dir / "valgrind.log").open("w") as log:
        proc = subprocess.Popen([*taskset, VALGRIND, "--tool=callgrind",
                                 f"--callgrind-out-file={out}", HAPROXY, "-db", "-f", str(config)],
                                stdout=log, stderr=subprocess.STDOUT)
    load = Client(address, port, ca, connections, path, close)
    try:
        if not processes.wait_port(address, port, timeout=120):
            raise RuntimeError(f"callgrind: nothing listens on {address}:{port} "
                               f"(see {run_dir / 'valgrind.log'})")
        for count, action in ((warmup, "-z"), (requests, "-d")):  # zero, then dump
            load.run(count)
            subprocess.run(["callgrind_control", action, str(proc.pid)], check=True,
                           capture_output=True, timeout=120)
        dump = max(run_dir.glob("callgrind.out.*"), key=lambda p: p.stat().st_mtime)
        return Count(dump_instructions(dump), requests, dict(load.statuses),
                     self_costs(dump).most_common(top) if top else [])
    finally:
        for conn in filter(None, load.conns):
            conn.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

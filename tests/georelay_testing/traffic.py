"""Request loops against a proxy for tests that change or break it while traffic flows.

Fresh-connection loops and kept-alive loops (reconnecting only when told
`Connection: close`); every sample is kept (time, latency, status, which stand-in gateway
answered) so a test can look at a window of it. Loops can also send bursts of requests
separated by pauses of random length (`burst`, `burst_pause_s`), each on its own or all
together (`together`: the proxy, and its pool of gateway connections, then sits idle for
the whole pause; `between_bursts` may make each). Every loop is bounded in time.
"""

from __future__ import annotations

import http.client
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from georelay_lab import client
from georelay_testing.fleet import DeployedFleet

BOUND_S = 120.0  # no loop runs longer than this, whatever happens


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

    fleet: DeployedFleet
    proxy: str
    hostname: str = "fast.example.com"
    fresh_loops: int = 2
    kept_loops: int = 1
    pause_s: float = 0.0  # kept-alive clients wait this long between requests (idle)
    burst: int = 0  # > 0: every loop pauses after each `burst` requests, for a time drawn
    burst_pause_s: tuple[float, float] = (0.0, 0.0)  # uniformly from this range (seconds)
    fresh_burst: int = 0  # requests of a fresh-connection loop's burst (0: `burst`)
    together: bool = False  # loops wait for each other after a burst, pause the same time
    # together: waits out each pause itself (told the stop event) and says how long it was;
    # by default a pause drawn from burst_pause_s
    between_bursts: Callable[[threading.Event], float] | None = None
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

    def _pauser(self, burst: int) -> Callable[[], None]:
        """What a loop calls after each request: a pause after each burst (none if burst=0).
        Together, the last loop to end its burst pauses (_pause_together) while the others
        wait for it, and they all start the next burst at once."""
        draw, sent = random.Random(), 0

        def after_request() -> None:
            nonlocal sent
            sent += 1
            if burst <= 0 or sent % burst:
                return
            if not self.together:
                self.stop.wait(draw.uniform(*self.burst_pause_s))
                return
            try:
                self._barrier.wait()
            except threading.BrokenBarrierError:  # stopping, or between_bursts failed
                self.stop.set()

        return after_request

    def _pause_together(self) -> None:
        if self.between_bursts is not None:
            self.pauses.append(self.between_bursts(self.stop))
            return
        pause = random.uniform(*self.burst_pause_s)
        self.stop.wait(pause)
        self.pauses.append(pause)

    def fresh_connections(self) -> None:
        deadline = time.monotonic() + BOUND_S
        after_request = self._pauser(self.fresh_burst or self.burst)
        while not self.stop.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            try:
                reply = self.fleet.fetch(self.proxy, self.hostname, "/fresh", timeout=5)
                self._record("fresh", start, reply, None)
            except (OSError, http.client.HTTPException) as exc:
                self._record("fresh", start, None, repr(exc))
            after_request()

    def kept_alive(self) -> None:
        """One connection as long as the proxy keeps it; reconnect only when told to."""
        deadline = time.monotonic() + BOUND_S
        after_request = self._pauser(self.burst)
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
            after_request()
        if conn is not None:
            conn.close()

    def __enter__(self) -> Traffic:
        loops = [self.fresh_connections] * self.fresh_loops + [self.kept_alive] * self.kept_loops
        self.pauses: list[float] = []  # together: the pauses, in order
        self._barrier = threading.Barrier(max(1, len(loops)), action=self._pause_together,
                                          timeout=BOUND_S)
        self.threads = [threading.Thread(target=f, daemon=True) for f in loops]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self._barrier.abort()
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

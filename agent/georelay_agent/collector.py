"""Gathering the raw facts (Runtime API, probes, drain spool) and the background loop.

Nothing here runs on the request path: the loop publishes an immutable Snapshot that the
HTTP server hands out from memory. Every step has a bounded duration, so one tick lasts at
most the sum of its timeouts, and a stuck step shows up as a stale snapshot, never as a
hung HTTP answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from georelay_agent import drains
from georelay_agent.config import Config
from georelay_agent.haproxy_api import BackendStat, ProcInfo, RuntimeAPI, RuntimeAPIError
from georelay_agent.probe import ProbeResult, probe, tls_context
from georelay_agent.snapshot import Snapshot, State

log = logging.getLogger("georelay_agent")


@dataclass
class Observation:
    """What one tick saw. Fields are None when they could not be read."""

    at: float
    info: dict[str, str] | None = None
    backends: dict[str, BackendStat] | None = None
    haproxy_error: str | None = None
    proc: ProcInfo | None = None
    config_mtime: float | None = None
    probes: dict[str, ProbeResult] = field(default_factory=dict)  # fresh results only
    drains: list[drains.Drain] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0


class Gatherer:
    """One observation at a time; keeps the probe schedule and its thread pool."""

    def __init__(self, config: Config) -> None:
        self.config = config
        h = config.haproxy
        self.api = RuntimeAPI(h.stats_socket, h.connect_timeout, h.read_timeout)
        self.master = RuntimeAPI(h.master_socket, h.connect_timeout, h.read_timeout) \
            if h.master_socket else None
        self.probed = [s for s in config.services if s.probe_path]
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.probed)),
                                       thread_name_prefix="probe") \
            if config.probe.enabled and self.probed else None
        self.next_probe = 0.0
        self.in_flight: dict[str, Future[ProbeResult]] = {}
        self._context = tls_context(config.probe.ca_file) if self.pool else None

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def _start_probes(self, now: float) -> None:
        if self.pool is None or self._context is None or self.in_flight or \
                now < self.next_probe:
            return
        self.next_probe = now + self.config.probe.interval
        p = self.config.probe
        for s in self.probed:
            self.in_flight[s.hostname] = self.pool.submit(
                probe, p.address, p.port, s.hostname, s.probe_path or "/",
                timeout=p.timeout, context=self._context, expect_status=p.expect_status)

    def _finished_probes(self, wait: bool) -> dict[str, ProbeResult]:
        done: dict[str, ProbeResult] = {}
        for hostname, future in list(self.in_flight.items()):
            if wait or future.done():
                # probe() bounds itself by its timeout and never raises
                done[hostname] = future.result(timeout=self.config.probe.timeout + 5)
                del self.in_flight[hostname]
        return done

    def observe(self, wait_for_probes: bool = False) -> Observation:
        """One observation. Probes run beside it, so a slow probe (HAProxy retrying a dead
        gateway) never delays what the Runtime API shows; their results are taken when they
        are done (at once with wait_for_probes, for one-shot checks)."""
        start = time.monotonic()
        obs = Observation(at=time.time())
        self._start_probes(start)
        try:
            obs.info = self.api.info()
            obs.backends = self.api.stat()
        except RuntimeAPIError as exc:
            obs.haproxy_error = str(exc)
        if self.master is not None and obs.haproxy_error is None:
            try:
                obs.proc = self.master.proc()
            except RuntimeAPIError as exc:
                obs.problems.append(f"master CLI: {exc}")
        if self.config.haproxy.config_file:
            try:
                obs.config_mtime = os.stat(self.config.haproxy.config_file).st_mtime
            except OSError as exc:
                obs.problems.append(f"haproxy config: {exc.strerror or exc}")
        obs.drains, problems = drains.read(Path(self.config.drain_dir))
        obs.problems += problems
        obs.probes = self._finished_probes(wait_for_probes)
        obs.duration_s = time.monotonic() - start
        return obs


class Collector(threading.Thread):
    """Observes every `interval` seconds and publishes the newest Snapshot."""

    def __init__(self, config: Config, on_snapshot: list | None = None) -> None:
        super().__init__(name="collector", daemon=True)
        self.config = config
        self.gatherer = Gatherer(config)
        self.state = State(config)
        self.snapshot: Snapshot = self.state.starting()
        self.ticks = 0
        self.errors = 0
        self.stopping = threading.Event()
        self.on_snapshot = on_snapshot or []

    def tick(self) -> Snapshot:
        obs = self.gatherer.observe()
        snap = self.state.apply(obs)
        previous = self.snapshot
        self.snapshot = snap  # a single reference swap: readers see old or new, whole
        self.ticks += 1
        if previous.state != snap.state or previous.reason != snap.reason:
            log.warning("state %s -> %s%s", previous.state, snap.state,
                        f": {snap.reason}" if snap.reason else "")
        for callback in self.on_snapshot:
            callback(obs, snap)
        return snap

    def run(self) -> None:
        interval = self.config.interval
        next_at = time.monotonic()
        while not self.stopping.is_set():
            try:
                self.tick()
            except Exception:  # keep observing; the stale snapshot shows the trouble
                self.errors += 1
                log.exception("collection failed")
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a slow tick: start again at once, do not try to catch up
                next_at = now
            self.stopping.wait(next_at - now)
        self.gatherer.close()

    def stop(self) -> None:
        self.stopping.set()

"""Gathering the raw facts of one observation: Runtime API (with the one-box maps and
fallback table, the edge version maps), master CLI, the ip-ranges map's header, probes,
drain spool.

Every step has a bounded duration, so one observation lasts at most the sum of its
timeouts. Used by the collector's background loop and by the one-shot `check`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from georelay_agent import drains, edge, onebox
from georelay_agent.config import Config
from georelay_agent.haproxy_api import RuntimeAPI, RuntimeAPIError
from georelay_agent.observation import Observation
from georelay_agent.probe import ProbeResult, probe, tls_context


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
        self.ip_ranges = edge.IpRangesFile(config.ip_ranges_map) if config.ip_ranges_map \
            else None

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
        versions: dict[str, str] | None = None
        if obs.haproxy_error is None:
            obs.onebox, problems = onebox.read(self.api, self.config.services)
            obs.problems += problems
            versions, problems = edge.read_versions(self.api, self.config.services)
            obs.problems += problems
        header = None
        if self.ip_ranges is not None:
            header, problems = self.ip_ranges.read()  # the file's header, when it changed
            obs.problems += problems
        obs.edge = edge.EdgeReading(versions, header)
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

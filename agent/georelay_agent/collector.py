"""The background loop: one observation every `interval` seconds, judged into a snapshot.

Nothing here runs on the request path: the loop publishes an immutable Snapshot that the
HTTP server hands out from memory. A stuck observation shows up as a stale snapshot, never
as a hung HTTP answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from georelay_agent.config import Config
from georelay_agent.gather import Gatherer
from georelay_agent.health import HealthMachine
from georelay_agent.logfmt import fields
from georelay_agent.observation import Observation
from georelay_agent.snapshot import Snapshot

log = logging.getLogger("georelay_agent")


class Collector(threading.Thread):
    """Observes every `interval` seconds and publishes the newest Snapshot."""

    def __init__(self, config: Config,
                 on_snapshot: list[Callable[[Observation, Snapshot], None]] | None = None) \
            -> None:
        super().__init__(name="collector", daemon=True)
        self.config = config
        self.gatherer = Gatherer(config)
        self.health = HealthMachine(config)
        self.snapshot: Snapshot = self.health.starting()
        self.ticks = 0
        self.errors = 0
        self.stopping = threading.Event()
        self.on_snapshot = on_snapshot or []

    def tick(self) -> Snapshot:
        obs = self.gatherer.observe()
        snap = self.health.apply(obs)
        previous = self.snapshot
        self.snapshot = snap  # a single reference swap: readers see old or new, whole
        self.ticks += 1
        if previous.state != snap.state or previous.reason != snap.reason:
            level = logging.INFO if snap.state == "healthy" else logging.WARNING
            log.log(level, "state changed", extra=fields(
                event="transition", from_=previous.state, to=snap.state, reason=snap.reason))
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
                log.exception("collection failed", extra=fields(event="collection_failed"))
            next_at += interval
            now = time.monotonic()
            if next_at < now:  # a slow tick: start again at once, do not try to catch up
                next_at = now
            self.stopping.wait(next_at - now)
        self.gatherer.close()

    def stop(self) -> None:
        self.stopping.set()

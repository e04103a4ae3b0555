"""The snapshot: one immutable judgement of the proxy's health, and its status document.

The health state machine (health.py) makes one per observation; the HTTP server, the
metrics and `check` only read it. A leaf module: it imports nothing of the agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    """The proxy's health as judged at one observation; swapped in whole, never changed."""

    state: str  # healthy | bridging | unhealthy | draining | starting
    reason: str | None
    generated: float  # wall clock
    generated_mono: float
    doc: dict[str, Any]  # the status document without its age
    warnings: tuple[str, ...] = field(default_factory=tuple)
    in_dns: bool = False  # /healthz answers 200: healthy, or bridging_keeps_in_dns

    @property
    def healthy(self) -> bool:
        """What /healthz says (before the staleness check): 200 or 503."""
        return self.in_dns

    def age(self, now_mono: float | None = None) -> float:
        return max(0.0, (time.monotonic() if now_mono is None else now_mono) -
                   self.generated_mono)


def status_document(snap: Snapshot) -> dict[str, Any]:
    """The status document (/status.json, `check --json`): the snapshot's, with its age."""
    return {**snap.doc, "snapshot_age_s": round(snap.age(), 3)}

"""What one observation saw: HAProxy's Runtime API and master CLI, the config file's age,
the one-box maps and fallback table, the edge versions and ip-ranges map, probes, the drain
spool. The gatherer makes them; the
health state machine judges them. A value type only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from georelay_agent.drains import Drain
from georelay_agent.edge import EdgeReading
from georelay_agent.haproxy_api import BackendStat, ProcInfo
from georelay_agent.onebox import Reading
from georelay_agent.probe import ProbeResult


@dataclass
class Observation:
    """What one tick saw. Fields are None when they could not be read."""

    at: float
    info: dict[str, str] | None = None
    backends: dict[str, BackendStat] | None = None
    haproxy_error: str | None = None
    proc: ProcInfo | None = None
    config_mtime: float | None = None
    onebox: Reading | None = None  # one-box maps and fallback table (None: none or unread)
    edge: EdgeReading = field(default_factory=EdgeReading)  # edge versions, ip-ranges map
    probes: dict[str, ProbeResult] = field(default_factory=dict)  # fresh results only
    drains: list[Drain] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    duration_s: float = 0.0

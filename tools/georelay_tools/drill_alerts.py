"""The drill's view of the alerts: the lab's Prometheus (georelay-lab prometheus), read from
its HTTP API, with the shipped rules of monitoring/rules/ (lab time: each `for` divided by
the lab's FOR_SCALE).

For a step, the drill waits until an alert fires for the proxy it broke and says how long
after the break it fired and how long it was pending (`activeAt`: when its expression
first held), against its `for` plus one evaluation interval; after the repair, until it
resolves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from georelay_lab import processes
from georelay_lab import prometheus as lab_prometheus

POLL = 0.25


def running_url(lab_dir: Path) -> str | None:
    """The lab's Prometheus URL, if `georelay-lab prometheus` started one that runs."""
    base = lab_dir / "prometheus"
    if not processes.running(base / "prometheus.pid") or not (base / "url").exists():
        return None
    return (base / "url").read_text().strip()


def lab_for(lab_dir: Path, alert: str) -> float:
    """The `for` (seconds) of alert in the rules the lab's Prometheus loaded."""
    for path in sorted((lab_dir / "prometheus/rules").glob("*.yml")):
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups", []):
            for rule in group.get("rules", []):
                if rule.get("alert") == alert:
                    return lab_prometheus.seconds(rule.get("for", "0s"))
    raise KeyError(f"no alert {alert} in the lab's rules")


@dataclass
class Fired:
    alert: str
    labels: dict[str, str]
    after_s: float  # from the break to firing, as polled
    pending_s: float  # from activeAt to firing, as polled
    summary: str


@dataclass
class Alerts:
    url: str
    lab_dir: Path
    interval_s: float = lab_prometheus.seconds(lab_prometheus.INTERVAL)

    def now(self) -> list[dict[str, Any]]:
        return lab_prometheus.alerts(self.url)

    def lines(self) -> list[str]:
        found = self.now()
        if not found:
            return ["  (none pending or firing)"]
        return [f"  {a['state']:<8} {a['name']:<28} {a['summary']}" for a in found]

    def matching(self, alert: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [a for a in lab_prometheus.api(self.url, "/api/v1/alerts")["alerts"]
                if a["labels"].get("alertname") == alert
                and all(a["labels"].get(k) == v for k, v in labels.items())]

    def wait_firing(self, alert: str, labels: dict[str, str], since: float,
                    timeout: float) -> Fired | None:
        """The first firing alert with labels, polled until timeout seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for a in self.matching(alert, labels):
                if a["state"] == "firing":
                    active = datetime.fromisoformat(a["activeAt"].replace("Z", "+00:00"))
                    return Fired(alert, a["labels"], round(time.monotonic() - since, 1),
                                 round(time.time() - active.timestamp(), 1),
                                 a.get("annotations", {}).get("summary", ""))
            time.sleep(POLL)
        return None

    def wait_resolved(self, alert: str, labels: dict[str, str], timeout: float,
                      since: float) -> float | None:
        """Seconds from since until no alert with labels is pending or firing, or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.matching(alert, labels):
                return round(time.monotonic() - since, 1)
            time.sleep(POLL)
        return None


def watch(lab_dir: Path, say: Callable[[str], None]) -> Alerts | None:
    url = running_url(lab_dir)
    if url is None:
        say("Alerts: no lab Prometheus runs (georelay-lab prometheus starts one; make demo "
            "does): alerts are not shown")
        return None
    return Alerts(url, lab_dir)

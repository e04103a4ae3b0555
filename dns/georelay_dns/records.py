"""The Route53 value types georelay works with: record sets, health checks, and the live zone.

A leaf module (it imports nothing of georelay): the desired tree (tree.py), the live zone
(route53.py), the operator state record (state_record.py) and plans (plan.py) are all
made of these.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

SET_ID_MAX = 128
IMMUTABLE = ("Type", "RequestInterval", "MeasureLatency")


def immutable_part(config: dict[str, Any]) -> list[Any]:
    """What UpdateHealthCheck cannot change: a difference here means a new health check.

    Type, RequestInterval and MeasureLatency are immutable in Route53; an IP-addressed check
    cannot be turned into a name-addressed one either (IPAddress cannot be reset).
    """
    return [config.get(k, False if k == "MeasureLatency" else None) for k in IMMUTABLE] + [
        bool(config.get("IPAddress"))]


def norm_name(name: str) -> str:
    """Route53 returns 'fast.example.com.' (and octal escapes); we compare lowercase, no dot."""
    return name.replace("\\052", "*").rstrip(".").lower()


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


@dataclass(frozen=True)
class Alias:
    zone_id: str
    dns_name: str
    evaluate: bool


@dataclass(frozen=True)
class Record:
    """One Route53 resource record set with a routing policy (every georelay record has one)."""

    name: str
    type: str
    set_id: str
    weight: int | None = None
    region: str | None = None  # latency region
    ttl: int | None = None
    values: tuple[str, ...] = ()
    alias: Alias | None = None
    health_check: str | None = None  # desired: a health check key; live: its id
    # What the record is for (grouping and messages only).
    service: str = field(default="", compare=False)
    site: str = field(default="", compare=False)  # the region the record serves
    proxy: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.name, self.type, self.set_id)

    @property
    def kind(self) -> str:
        return "latency" if self.region else "weighted" if self.weight is not None else "other"


@dataclass(frozen=True)
class HealthCheck:
    """A desired health check: key names it across runs, config is Route53's HealthCheckConfig."""

    key: str  # "<hostname>/<proxy>"
    service: str
    region: str
    proxy: str
    config_json: str  # canonical JSON of HealthCheckConfig (hashable, comparable)

    @property
    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.config_json)
        return result

    @property
    def immutable_hash(self) -> str:
        return short_hash(json.dumps(immutable_part(self.config)), 8)

    def caller_reference(self, owner: str, generation: int) -> str:
        """Deterministic (same check, same generation -> same reference: a retried create is
        idempotent) and never reused (a new generation when Route53 says it was used)."""
        return f"grl:{owner}:{short_hash(self.key)}:{self.immutable_hash}:{generation}"

    def name_tag(self) -> str:
        return f"georelay {self.service} {self.region} {self.proxy}"


def owner_prefix(owner: str) -> str:
    return f"{owner}:"


def set_id(owner: str, *parts: str) -> str:
    """A zone-unique SetIdentifier that starts with the owner marker."""
    sid = owner_prefix(owner) + ":".join(parts)
    if len(sid) > SET_ID_MAX:
        sid = sid[:SET_ID_MAX - 13] + "~" + short_hash(sid)
    return sid


@dataclass(frozen=True)
class LiveHealthCheck:
    id: str
    caller_reference: str
    version: int
    config: dict[str, Any] = field(hash=False, compare=False)


@dataclass
class Live:
    """The zone's records and the account's health checks, as Route53 has them now."""

    zone_id: str
    records: list[Record]
    raw: dict[tuple[str, str, str], dict[str, Any]]  # record key -> rrset as read (DELETE)
    health_checks: list[LiveHealthCheck]

"""Diff the desired tree against Route53: the minimal set of changes, with a checksum.

Ownership (docs/DNS.md): a record is georelay's when its SetIdentifier starts with
``<owner>:``; a health check is when its CallerReference starts with ``grl:<owner>:``
(immutable, and read with the listing itself: no tag calls). Nothing else is touched; a
foreign record that is in the way of a desired one is a conflict that stops the plan.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from georelay_dns.operator_state import OperatorState, StateError, describe, summary
from georelay_dns.records import (
    HealthCheck,
    Live,
    LiveHealthCheck,
    Record,
    immutable_part,
    owner_prefix,
    short_hash,
)
from georelay_dns.state_record import STATE_SERVICE, decode, state_set_id
from georelay_dns.tree import Tree

NEW = "new:"  # health check id placeholder until the check is created
MUTABLE = ("IPAddress", "Port", "ResourcePath", "FullyQualifiedDomainName", "SearchString",
           "FailureThreshold", "Inverted", "Disabled", "EnableSNI")
THRESHOLD_SHARE = 0.30
THRESHOLD_MIN_OWNED = 10
PHASES = ("leaves", "aliases", "alias deletes", "leaf deletes", "state")
STATE_PHASE = 4  # operator commands write the state record first (compare-and-swap)


def hc_prefix(owner: str) -> str:
    return f"grl:{owner}:"


@dataclass(frozen=True)
class HcCreate:
    check: HealthCheck
    generation: int  # first CallerReference generation to try
    reason: str


@dataclass(frozen=True)
class HcUpdate:
    id: str
    version: int
    check: HealthCheck
    changes: dict[str, Any]  # field -> new value (UpdateHealthCheck arguments)
    reset: tuple[str, ...] = ()  # ResetElements


@dataclass(frozen=True)
class HcDelete:
    id: str
    caller_reference: str
    address: str
    reason: str


@dataclass(frozen=True)
class RecordChange:
    action: str  # CREATE, UPSERT, DELETE
    record: Record  # what to write (desired) or what to delete (live, as read)
    old: Record | None
    phase: int  # index in PHASES


@dataclass
class Plan:
    zone: str
    zone_id: str
    owner: str
    hc_creates: list[HcCreate] = field(default_factory=list)
    hc_updates: list[HcUpdate] = field(default_factory=list)
    records: list[RecordChange] = field(default_factory=list)
    hc_deletes: list[HcDelete] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    owned: int = 0  # records + health checks georelay owns now
    raw_deletes: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    # The operator state the plan honours (evacuations, weight overrides): data and lines.
    operator_state: dict[str, Any] = field(default_factory=dict)
    operator_lines: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.hc_creates or self.hc_updates or self.records or self.hc_deletes)

    @property
    def destructive(self) -> int:
        """Owned things this plan would update or delete."""
        return (len(self.hc_updates) + len(self.hc_deletes) +
                sum(1 for c in self.records if c.action != "CREATE") +
                sum(1 for c in self.hc_creates if c.reason == "replace"))

    def over_threshold(self) -> bool:
        return (self.owned >= THRESHOLD_MIN_OWNED and
                self.destructive > THRESHOLD_SHARE * self.owned)

    def counts(self) -> dict[str, int]:
        by = defaultdict(int)
        for c in self.records:
            by[f"record_{c.action.lower()}"] += 1
        return {"healthcheck_create": len(self.hc_creates),
                "healthcheck_update": len(self.hc_updates),
                "healthcheck_delete": len(self.hc_deletes),
                "record_create": by["record_create"], "record_upsert": by["record_upsert"],
                "record_delete": by["record_delete"]}

    def to_dict(self) -> dict[str, Any]:
        """The plan as data: what --output json prints and what the checksum covers."""
        return {
            "zone": self.zone, "zone_id": self.zone_id, "owner": self.owner,
            "healthcheck_creates": [{"key": c.check.key, "region": c.check.region,
                                     "config": c.check.config, "reason": c.reason}
                                    for c in self.hc_creates],
            "healthcheck_updates": [{"id": u.id, "key": u.check.key, "version": u.version,
                                     "changes": u.changes, "reset": list(u.reset)}
                                    for u in self.hc_updates],
            "records": [{"action": c.action, "phase": PHASES[c.phase], "service": c.record.service,
                         "region": c.record.site, **_record_dict(c.record)}
                        for c in self.records],
            "healthcheck_deletes": [{"id": d.id, "address": d.address, "reason": d.reason}
                                    for d in self.hc_deletes],
            "conflicts": self.conflicts,
            "operator_state": self.operator_state,
        }

    @property
    def checksum(self) -> str:
        body = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(body.encode()).hexdigest()[:32]


def _record_dict(r: Record) -> dict[str, Any]:
    d = asdict(r)
    for k in ("service", "site", "proxy"):
        d.pop(k, None)
    return {k: v for k, v in d.items() if v not in (None, (), "")}


def _keyhash(ref: str) -> str:
    parts = ref.split(":")
    return parts[2] if len(parts) >= 5 else ""


def _generation(ref: str) -> int:
    try:
        return int(ref.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return -1


def make_plan(tree: Tree, live: Live, owner: str) -> Plan:
    """The changes that make Route53 match the tree. The operator state record is read (the
    tree honours it) but never written here: only evacuate/restore/weight write it."""
    plan = Plan(zone=tree.zone, zone_id=live.zone_id, owner=owner, warnings=list(tree.warnings))
    state = tree.state or OperatorState()
    plan.operator_state = summary(state, tree.inventory_weights)
    plan.operator_lines = describe(state, tree.inventory_weights)
    rprefix, hprefix, state_sid = owner_prefix(owner), hc_prefix(owner), state_set_id(owner)
    owned_records = {r.key: r for r in live.records
                     if r.set_id.startswith(rprefix) and r.set_id != state_sid}
    foreign = [r for r in live.records if not r.set_id.startswith(rprefix)]
    owned_hcs = [h for h in live.health_checks if h.caller_reference.startswith(hprefix)]
    plan.owned = len(owned_records) + len(owned_hcs)
    referenced = {r.health_check for r in owned_records.values() if r.health_check}
    ids = _plan_health_checks(plan, tree, owned_hcs, referenced)
    _plan_records(plan, tree, owned_records, foreign, ids, live)
    # Health checks no longer wanted go last; never one a foreign record still uses.
    foreign_refs = {r.health_check: r for r in foreign if r.health_check}
    kept = []
    for d in plan.hc_deletes:
        if d.id in foreign_refs:
            f = foreign_refs[d.id]
            plan.warnings.append(f"health check {d.id} is georelay's but {f.name} {f.type} "
                                 f"{f.set_id or ''} (not georelay's) uses it: kept")
        else:
            kept.append(d)
    plan.hc_deletes = kept
    return plan


def _address(cfg: dict[str, Any]) -> str:
    return f"{cfg.get('IPAddress') or cfg.get('FullyQualifiedDomainName')}:{cfg.get('Port')}"


def _plan_health_checks(plan: Plan, tree: Tree, owned: list[LiveHealthCheck],
                        referenced: set[str | None]) -> dict[str, str]:
    """Match desired checks to owned ones by key; returns desired key -> id (or NEW+key)."""
    by_keyhash: dict[str, list[LiveHealthCheck]] = defaultdict(list)
    for h in owned:
        by_keyhash[_keyhash(h.caller_reference)].append(h)
    ids: dict[str, str] = {}
    used: set[str] = set()
    for hc in tree.health_checks:
        candidates = by_keyhash.get(short_hash(hc.key), [])
        want = hc.config
        same_kind = [h for h in candidates if immutable_part(h.config) == immutable_part(want)]
        same_kind.sort(key=lambda h: (h.id not in referenced, h.id))
        if same_kind:
            keep = same_kind[0]
            used.add(keep.id)
            ids[hc.key] = keep.id
            changes, reset = _mutable_diff(want, keep.config)
            if changes or reset:
                plan.hc_updates.append(HcUpdate(keep.id, keep.version, hc, changes, reset))
            continue
        taken = [_generation(h.caller_reference) for h in candidates
                 if h.caller_reference.startswith(hc.caller_reference(plan.owner, 0)[:-1])]
        plan.hc_creates.append(HcCreate(hc, max(taken, default=-1) + 1,
                                        "replace" if candidates else "new"))
        ids[hc.key] = NEW + hc.key
    for h in owned:
        if h.id not in used:
            reason = ("replaced (Type/RequestInterval/address kind changed)"
                      if _keyhash(h.caller_reference) in {short_hash(c.key)
                                                          for c in tree.health_checks}
                      else "its proxy or service left the inventory")
            plan.hc_deletes.append(HcDelete(h.id, h.caller_reference, _address(h.config),
                                            reason))
    return ids


def _mutable_diff(want: dict[str, Any], have: dict[str, Any]) -> tuple[dict[str, Any],
                                                                      tuple[str, ...]]:
    changes = {k: want[k] for k in MUTABLE if k in want and want[k] != have.get(k)}
    reset: list[str] = []
    if "Regions" in want:
        if sorted(want["Regions"]) != sorted(have.get("Regions") or []):
            changes["Regions"] = want["Regions"]
    elif have.get("Regions") and len(have["Regions"]) < 8:  # back to Route53's default set
        reset.append("Regions")
    return changes, tuple(reset)


def _resolve(r: Record, ids: dict[str, str]) -> Record:
    if r.health_check is None:
        return r
    return Record(r.name, r.type, r.set_id, r.weight, r.region, r.ttl, r.values, r.alias,
                  ids[r.health_check], r.service, r.site, r.proxy)


def _phase(r: Record, delete: bool) -> int:
    if delete:
        return 2 if r.alias else 3
    return 1 if r.alias else 0


def _plan_records(plan: Plan, tree: Tree, owned: dict[tuple[str, str, str], Record],
                  foreign: list[Record], ids: dict[str, str], live: Live) -> None:
    foreign_at: dict[str, list[Record]] = defaultdict(list)
    for f in foreign:
        foreign_at[f.name].append(f)
    desired_keys: set[tuple[str, str, str]] = set()
    desired_sids: dict[str, Record] = {}
    for d in tree.records:
        d = _resolve(d, ids)
        desired_keys.add(d.key)
        desired_sids[d.set_id] = d
        for f in foreign_at.get(d.name, []):
            if f.type == d.type or "CNAME" in (f.type, d.type):
                msg = (f"{d.name} {f.type}{' ' + f.set_id if f.set_id else ''} is not "
                       f"georelay's (SetIdentifier without '{plan.owner}:') and is in the way "
                       f"of {d.type} {d.set_id}: remove or rename it, or change the "
                       "inventory; georelay never overwrites it")
                if msg not in plan.conflicts:
                    plan.conflicts.append(msg)
        have = owned.get(d.key)
        if have is None:
            plan.records.append(RecordChange("CREATE", d, None, _phase(d, False)))
        elif have != d:
            plan.records.append(RecordChange("UPSERT", d, have, _phase(d, False)))
    site_of = {r.alias.dns_name: r.region for r in owned.values() if r.alias and r.region}
    for key, have in owned.items():
        if key in desired_keys:
            continue
        # A record moving kind (e.g. A -> CNAME) keeps its SetIdentifier: delete + create.
        full = dataclasses.replace(have, **dict(zip(("service", "site", "proxy"),
                                                    meta_from_set_id(have, desired_sids),
                                                    strict=True)))
        if not full.site:
            full = dataclasses.replace(full, site=site_of.get(full.name, ""))
        plan.records.append(RecordChange("DELETE", full, have, _phase(have, True)))
        plan.raw_deletes[key] = live.raw[key]
    plan.records.sort(key=lambda c: (c.phase, c.record.service, c.record.site, c.record.name,
                                     c.record.type, c.record.set_id))


def meta_from_set_id(r: Record, desired: dict[str, Record]) -> tuple[str, str, str | None]:
    """Service/region/proxy of a live record, recovered from its SetIdentifier."""
    d = desired.get(r.set_id)
    if d is not None:
        return d.service, d.site, d.proxy
    parts = r.set_id.split(":")
    if len(parts) == 4 and parts[1] == "lat":
        return parts[2], parts[3], None
    if len(parts) == 4 and parts[1] == "w":
        return parts[2], "", parts[3]
    return "", "", None


def render(plan: Plan) -> str:
    """Human-readable plan grouped by service and region."""
    lines = [f"zone {plan.zone} ({plan.zone_id}), owner {plan.owner!r}: {plan.owned} owned"]
    if plan.operator_lines:
        lines.append("operator state (kept by apply; evacuate/restore/weight change it):")
        lines += [f"  {line}" for line in plan.operator_lines]
    for c in plan.conflicts:
        lines.append(f"CONFLICT {c}")
    lines += change_lines(plan)
    for w in plan.warnings:
        lines.append(f"warning: {w}")
    counts = plan.counts()
    if plan.empty:
        lines.append("nothing to do: Route53 matches the inventory")
    else:
        lines.append("changes: " + ", ".join(f"{k}={v}" for k, v in counts.items() if v))
        if plan.over_threshold():
            lines.append(f"warning: updates/deletes {plan.destructive} of {plan.owned} owned "
                         f"(> {THRESHOLD_SHARE:.0%}): apply needs --force")
    lines.append(f"checksum: {plan.checksum}")
    return "\n".join(lines)


def change_lines(plan: Plan) -> list[str]:
    """The plan's changes grouped by service and region (the state record first)."""
    lines: list[str] = []
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for hc in plan.hc_creates:
        groups[(hc.check.service, hc.check.region)].append(
            f"  + health check {hc.check.proxy} {_address(hc.check.config)}"
            f"{' (replaces the old one)' if hc.reason == 'replace' else ''}")
    for u in plan.hc_updates:
        what = ", ".join(f"{k}={v}" for k, v in sorted(u.changes.items()))
        what += "".join(f", reset {r}" for r in u.reset)
        groups[(u.check.service, u.check.region)].append(
            f"  ~ health check {u.check.proxy} {u.id}: {what}")
    for c in plan.records:
        r = c.record
        sign = {"CREATE": "+", "UPSERT": "~" if c.old else "+", "DELETE": "-"}[c.action]
        if r.service == STATE_SERVICE:
            groups[(r.service, "")].append(f"  {sign} {r.name} {r.type} [{r.set_id}] "
                                           f"{_state_text(r)}")
            continue
        if r.alias:
            what = f"latency {r.region} -> ALIAS {r.alias.dns_name}"
        else:
            what = f"weight {r.weight} -> {', '.join(r.values)} ttl {r.ttl}"
        extra = ""
        if c.action == "UPSERT" and c.old is not None:
            extra = "  (was " + _was(c.old, r) + ")"
        groups[(r.service, r.site)].append(f"  {sign} {r.name} {r.type} [{r.set_id}] {what}"
                                           f"{extra}")
    for key in sorted(groups, key=lambda k: (k[0] != STATE_SERVICE, k)):
        service, region = key
        lines.append(f"{service}:" if service == STATE_SERVICE else
                     f"{service or '?'} / {region or '?'}:")
        lines += groups[key]
    for d in plan.hc_deletes:
        lines.append(f"  - health check {d.id} {d.address}: {d.reason}")
    return lines


def _state_text(r: Record) -> str:
    try:
        state = decode(r.values[0], r.name)
    except (StateError, IndexError):
        return "(unreadable)"
    parts = [f"evacuated {', '.join(sorted(state.evacuated)) or 'none'}"]
    if state.weights:
        parts.append("weights " + ", ".join(f"{h}={w}" for h, w in sorted(state.weights.items())))
    return f"state #{state.serial}: " + "; ".join(parts)


def _was(old: Record, new: Record) -> str:
    diffs = []
    for f in ("weight", "ttl", "values", "alias", "health_check", "region"):
        if getattr(old, f) != getattr(new, f):
            diffs.append(f"{f} {getattr(old, f)}")
    return "; ".join(diffs)

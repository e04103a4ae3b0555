"""Operator commands: evacuate or restore a region, override a proxy's weight.

Each command reads the zone and the operator state from Route53 (nothing else: the
region's hosts may be unreachable), computes the new state, builds the tree that honours
it (tree.py), makes one plan with the ordinary machinery (make_plan) and *scopes* it to
what the command names:

* the state record (``_<owner>-state.<zone>`` TXT, state_record.py);
* evacuate: DELETE of the region's latency records (every service); restore: their CREATE;
* weight: the proxy's weighted records (every service), their Weight only.

Whatever else the zone owes the inventory is left to plan/apply (and counted in the
output), so an incident command never ships an unreviewed inventory change. The scoped
plan goes through apply_plan (batches, INSYNC wait) like any other.

The state record is replaced by a DELETE of the value exactly as read plus a CREATE of the
new value (its serial one higher), first in the same batch; the very first write is a
CREATE alone. Route53 applies a batch all or nothing, refuses a DELETE whose value no
longer matches and a CREATE of a record that exists, so two operators changing the state
at once cannot silently lose each other's change: the second is refused and re-runs.
Restore writes the latency records with UPSERT: their content follows from the inventory
alone, so a retried restore converges instead of failing on a record already back.

The 30% threshold of apply does not apply here: a scoped plan only touches the named
region's latency records (or the named proxy's weights) and the state record. The
evacuation's own guard is the last-region rule (--force).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from georelay_dns.apply import ApplyError, Progress, Result, apply_plan
from georelay_dns.inputs import Inputs
from georelay_dns.operator_state import (
    WEIGHT_MAX,
    Evacuation,
    OperatorState,
    StateError,
    check_reason,
)
from georelay_dns.plan import STATE_PHASE, Plan, RecordChange, make_plan
from georelay_dns.records import Live, Record, owner_prefix
from georelay_dns.route53 import find_zone, read_live
from georelay_dns.state_record import LiveState, read_state, state_name, state_record
from georelay_dns.tree import Tree, build_tree


class Refusal(ValueError):
    """The command cannot or must not run; the message names the problem and the fix."""


@dataclass
class Context:
    """What every operator command reads first: the zone and the operator state in it."""

    inputs: Inputs
    zone_id: str
    live: Live
    current: LiveState

    @property
    def owner(self) -> str:
        return self.inputs.settings.owner

    @property
    def zone(self) -> str:
        return self.inputs.fleet.zone

    @property
    def regions(self) -> list[str]:
        return [r.name for r in self.inputs.fleet.regions]

    def tree(self, state: OperatorState) -> Tree:
        return build_tree(self.inputs, self.zone_id, state)


def read_context(client: Any, inputs: Inputs) -> Context:
    zone_id = find_zone(client, inputs.fleet.zone, inputs.settings.zone_id)
    live = read_live(client, zone_id)
    return Context(inputs, zone_id, live,
                   read_state(live, inputs.settings.owner, inputs.fleet.zone))


@dataclass
class Change:
    """A scoped plan and what it means for people."""

    plan: Plan
    before: Tree
    after: Tree
    done: str  # what applying it does, in words
    undo: list[str]  # georelay-dns arguments that undo it (the CLI adds -i)
    noop: bool = False  # nothing to change: done says why
    notes: list[str] = field(default_factory=list)
    pending: int = 0  # changes the inventory calls for that this command leaves to apply


def evacuate(ctx: Context, region: str, reason: str, *, by: str, at: str,
             force: bool = False) -> Change:
    state = ctx.current.state
    if region not in ctx.regions:
        raise Refusal(f"{region} is not a region of the inventory. Fix: use one of "
                      f"{', '.join(ctx.regions)}")
    if region in state.evacuated:
        e = state.evacuated[region]
        new, notes = state, []
        if " ".join(reason.split()) != e.reason:
            notes.append(f"kept the first reason ({e.reason}); restore, then evacuate again "
                         "to change it")
        already = f"{region} is already evacuated (since {e.at} by {e.by}: {e.reason})"
    else:
        try:
            reason = check_reason(reason)
        except StateError as err:
            raise Refusal(str(err)) from err
        serving = [r for r in ctx.regions if r != region and r not in state.evacuated]
        if not serving and not force:
            others = sorted(state.evacuated)
            raise Refusal(
                f"{region} is the last region still serving users"
                f"{' (evacuated: ' + ', '.join(others) + ')' if others else ''}; evacuating "
                "it leaves " + ", ".join(s.hostname for s in ctx.inputs.fleet.services) +
                " with no answer at all. Fix: restore another region first (georelay-dns "
                "restore REGION), or pass --force to take the service out of DNS entirely")
        new, notes, already = state.evacuate(region, Evacuation(reason, at, by)), [], ""
    change = _scoped(ctx, new, lambda r: r.kind == "latency" and r.site == region, "DELETE")
    change.undo = ["restore", region]
    change.notes = notes + change.notes
    n = sum(1 for c in change.plan.records if c.record.kind == "latency")
    if already:
        change.noop = change.plan.empty
        change.done = (f"{already}; nothing changed" if change.noop else
                       f"{already}; removed {n} latency record(s) still left for it")
    else:
        change.done = (f"evacuated {region}: removed its {n} latency record(s); users near "
                       f"{region} now get the next closest region, whatever its proxies' "
                       "health checks say; apply keeps it so")
    return change


def restore(ctx: Context, region: str) -> Change:
    state = ctx.current.state
    if region not in state.evacuated:
        if region not in ctx.regions:
            raise Refusal(f"{region} is neither evacuated nor a region of the inventory. Fix: "
                          f"use one of {', '.join(ctx.regions)}")
        tree = ctx.tree(state)
        change = Change(_empty_plan(ctx, state, tree), tree, tree,
                        f"{region} is not evacuated; nothing changed", [], noop=True)
        live_keys = {r.key for r in ctx.live.records}
        if any(r.site == region and r.kind == "latency" and r.key not in live_keys
               for r in tree.records):
            change.notes.append(f"{region}'s latency records are not all in Route53: "
                                "georelay-dns plan shows what apply would add")
        return change
    e = state.evacuated[region]
    change = _scoped(ctx, state.restore(region),
                     lambda r: r.kind == "latency" and r.site == region, "CREATE")
    change.undo = ["evacuate", region, "--reason", e.reason]
    n = sum(1 for c in change.plan.records if c.record.kind == "latency")
    change.done = (f"restored {region} (evacuated since {e.at} by {e.by}: {e.reason}): "
                   f"re-created its {n} latency record(s); its users come back as its "
                   "health checks allow")
    return change


def set_weight(ctx: Context, host: str, weight: int | None) -> Change:
    """weight None: back to the inventory's dns_weight."""
    if ctx.inputs.settings.mode == "direct":
        raise Refusal("weight: georelay_dns_mode is direct, which has no proxies to weigh. Fix: "
                      "evacuate/restore regions instead")
    state = ctx.current.state
    proxies = {p.name: p for p in ctx.inputs.fleet.proxies}
    if host not in proxies and not (weight is None and host in state.weights):
        raise Refusal(f"HOST: {host} is not a proxy of the inventory. Fix: use one of "
                      f"{', '.join(sorted(proxies))}")
    if weight is not None and not 0 <= weight <= WEIGHT_MAX:
        raise Refusal(f"N: {weight} is out of range. Fix: give a weight from 0 to {WEIGHT_MAX}")
    inventory = proxies[host].dns_weight if host in proxies else None
    old = state.weights.get(host)
    new_override = None if weight is None or weight == inventory else weight
    change = _scoped(ctx, state.with_weight(host, new_override),
                     lambda r: r.kind == "weighted" and r.proxy == host, "UPSERT")
    change.undo = ["weight", host, str(old)] if old is not None else ["weight", host, "--reset"]
    now = new_override if new_override is not None else inventory
    how = "override" if new_override is not None else "the inventory's dns_weight"
    if change.plan.empty:
        change.noop = True
        change.done = f"{host} already has weight {now} ({how}); nothing changed"
    elif new_override is None:
        change.done = (f"weight of {host}: {old} -> {now}, the inventory's dns_weight again "
                       "(override removed)")
    else:
        change.done = (f"weight of {host}: {old if old is not None else inventory} -> {now} "
                       f"({how}); apply keeps it")
    if weight is not None and weight == inventory and old is not None:
        change.notes.append(f"{weight} is {host}'s dns_weight in the inventory: the override "
                            "is removed instead of stored")
    return change


def execute(client: Any, change: Change, *, wait_timeout: float = 600.0,
            progress: Progress = lambda _: None, sleep: Callable[[float], None] = time.sleep
            ) -> Result:
    """Apply a scoped plan; a refused batch (e.g. the state changed meanwhile) changed
    nothing: Route53 applies a batch all or nothing."""
    try:
        return apply_plan(client, change.plan, wait_timeout=wait_timeout, progress=progress,
                          sleep=sleep)
    except ApplyError as e:
        if any(c.phase == STATE_PHASE for c in change.plan.records):
            raise ApplyError(f"{e} If the operator state changed since it was read (another "
                             "operator at the same time), Route53 refused the whole batch "
                             "and nothing changed. Fix: run the command again; it re-reads "
                             "the state") from e
        raise


def _empty_plan(ctx: Context, state: OperatorState, tree: Tree) -> Plan:
    full = make_plan(tree, ctx.live, ctx.owner)
    return Plan(ctx.zone, ctx.zone_id, ctx.owner, owned=full.owned,
                operator_state=full.operator_state, operator_lines=full.operator_lines)


def _scoped(ctx: Context, new: OperatorState, in_scope: Callable[[Record], bool],
            action: str) -> Change:
    before, after = ctx.tree(ctx.current.state), ctx.tree(new)
    pending = _size(make_plan(before, ctx.live, ctx.owner))
    full = make_plan(after, ctx.live, ctx.owner)
    plan = _empty_plan(ctx, new, after)
    plan.warnings = list(after.state_warnings)
    _state_changes(ctx, new, plan)
    owned_names = {r.name for r in ctx.live.records
                   if r.set_id.startswith(owner_prefix(ctx.owner))}
    for c in full.records:
        if c.action != action or not in_scope(c.record):
            continue
        if action == "DELETE":
            plan.records.append(c)
            plan.raw_deletes[c.record.key] = full.raw_deletes[c.record.key]
        elif action == "CREATE":
            blocking = [m for m in full.conflicts if m.startswith(c.record.name + " ")]
            if blocking:
                raise Refusal(f"CONFLICT {blocking[0]}")
            a = c.record.alias
            if a and a.zone_id == ctx.zone_id and a.dns_name not in owned_names:
                raise Refusal(f"{a.dns_name} (the weighted records {c.record.name} "
                              f"{c.record.site} points at) is not in Route53 yet, so its "
                              "latency record cannot be re-created. Fix: run georelay-dns "
                              "plan, then apply (it creates them and keeps the evacuation), "
                              "then restore")
            plan.records.append(dataclasses.replace(c, action="UPSERT"))
        elif c.old is not None and c.old.weight != c.record.weight:  # weight only, as is else
            meta = {k: getattr(c.record, k) for k in ("service", "site", "proxy")}
            new_rec = dataclasses.replace(c.old, weight=c.record.weight, **meta)
            plan.records.append(RecordChange("UPSERT", new_rec, c.old, c.phase))
    return Change(plan, before, after, "", [], pending=pending)


def _state_changes(ctx: Context, new: OperatorState, plan: Plan) -> None:
    """DELETE the state as read + CREATE the new one (compare-and-swap), first in the plan."""
    cur = ctx.current
    if new.same_as(cur.state):
        return
    try:
        record = state_record(new.next(), ctx.owner, ctx.zone)
    except StateError as e:
        raise Refusal(str(e)) from e
    if cur.foreign:
        f = cur.foreign[0]
        raise Refusal(f"{f.name} {f.type} is not georelay's and holds the name georelay keeps "
                      "its operator state at. Fix: remove it, or give this fleet another "
                      f"georelay_dns_owner (its state then lives at "
                      f"{state_name('OWNER', ctx.zone)})")
    if cur.record is not None and cur.raw is not None:
        plan.records.append(RecordChange("DELETE", cur.record, cur.record, STATE_PHASE))
        plan.raw_deletes[cur.record.key] = cur.raw
    plan.records.append(RecordChange("CREATE", record, None, STATE_PHASE))


def _size(plan: Plan) -> int:
    return len(plan.records) + len(plan.hc_creates) + len(plan.hc_updates) + len(
        plan.hc_deletes)

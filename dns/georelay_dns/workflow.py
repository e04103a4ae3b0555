"""The plan-and-apply workflow of georelay-dns as steps that never exit, for every front end:
the CLI's plan/apply and the Ansible module georelay.relay.route53_fleet
(plugins/action/route53_fleet.py) run the same steps, so both build the same tree, make the
same plan (same checksum) and refuse the same things.

1. :func:`plan_zone`: refuse a tree that cannot fail over before any AWS call, then read the
   zone and the operator state it holds, build the tree that honours it, diff it;
2. :func:`refusal`: why apply must not run this plan (conflicts, a reviewed checksum that no
   longer matches, the 30% threshold without force), or None;
3. :func:`apply_planned`: apply it (apply.py's order), or raise :class:`DnsError`.

Every failure is a :class:`DnsError` whose message is the one line georelay-dns prints
(:func:`aws_message` turns AWS-side errors into it); inventory problems stay
``InventoryError`` (a list of problems, each with its fix), raised by ``load_inputs``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from georelay_dns.apply import ApplyError, Result, apply_plan
from georelay_dns.inputs import Inputs
from georelay_dns.operations import Context, Refusal, read_context
from georelay_dns.operator_state import StateError
from georelay_dns.plan import NEW, THRESHOLD_SHARE, Plan, change_lines, make_plan
from georelay_dns.records import Record
from georelay_dns.route53 import AwsConfigError, ZoneError, make_client, rrset_from_record
from georelay_dns.tree import Tree, TreeError, build_tree

T = TypeVar("T")
# Errors whose message is already the one line to show (each names the fix).
PLAIN_ERRORS = (ZoneError, StateError, Refusal, AwsConfigError, ApplyError, TreeError)
AWS_ERRORS = (BotoCoreError, ClientError, *PLAIN_ERRORS)


class DnsError(RuntimeError):
    """A step failed or refused; the message names the problem and the fix."""


def aws_message(exc: BaseException) -> str | None:
    """The line georelay-dns prints for an error of the AWS side, or None for any other."""
    if isinstance(exc, NoCredentialsError):
        return ("no AWS credentials: set AWS_PROFILE or the AWS_* variables (standard boto3 "
                "chain)")
    if isinstance(exc, PLAIN_ERRORS):
        return str(exc)
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        meta = exc.response.get("ResponseMetadata", {})
        gave_up = ""
        if meta.get("MaxAttemptsReached"):
            gave_up = (f" (gave up after {int(meta.get('RetryAttempts', 0)) + 1} attempts; "
                       "AWS_MAX_ATTEMPTS or max_attempts in the AWS config file sets how many)")
        return f"Route53 {exc.operation_name}: {err.get('Code')}: {err.get('Message')}{gave_up}"
    if isinstance(exc, BotoCoreError):
        return f"AWS: {exc}"
    return None


def guarded(fn: Callable[[], T]) -> T:
    """fn(), with AWS-side errors raised as :class:`DnsError` (one line, the fix named)."""
    try:
        return fn()
    except AWS_ERRORS as e:
        raise DnsError(aws_message(e) or str(e)) from e


@dataclass
class Planned:
    """A plan and what it was made from (the client that read the zone applies it)."""

    client: Any
    context: Context
    tree: Tree
    plan: Plan


def plan_zone(inputs: Inputs, client: Any | None = None) -> Planned:
    """Read the zone and its operator state, build the tree that honours it, plan."""
    guarded(lambda: build_tree(inputs))  # a tree that cannot fail over: no AWS call at all

    def work() -> Planned:
        c = client if client is not None else make_client()
        ctx = read_context(c, inputs)
        tree = build_tree(inputs, ctx.zone_id, ctx.current.state)
        return Planned(c, ctx, tree, make_plan(tree, ctx.live, inputs.settings.owner))

    return guarded(work)


@dataclass(frozen=True)
class Refused:
    """Why apply must not run a plan: ``reason`` conflicts, checksum or threshold."""

    reason: str
    message: str


def refusal(plan: Plan, *, checksum: str | None = None, force: bool = False,
            force_hint: str = "--force") -> Refused | None:
    """Why apply must not run this plan, or None. ``force_hint`` is how the caller's user
    passes force (the CLI: --force)."""
    if plan.conflicts:
        return Refused("conflicts", "refusing: records that georelay does not own are in the "
                       "way (see CONFLICT)")
    if checksum and checksum != plan.checksum:
        return Refused("checksum", f"refusing: the plan changed since review ({checksum} != "
                       f"{plan.checksum}); run plan again")
    if plan.over_threshold() and not force:
        return Refused("threshold", f"refusing: this would update or delete "
                       f"{plan.destructive} of the {plan.owned} records and health checks "
                       f"georelay owns (more than {THRESHOLD_SHARE:.0%}); check the "
                       f"inventory, then pass {force_hint}")
    return None


def apply_planned(planned: Planned, *, wait_timeout: float = 600.0,
                  progress: Callable[[str], None] = lambda _: None) -> Result:
    """Apply the plan (health checks, records leaves first, INSYNC, unused checks)."""
    return guarded(lambda: apply_plan(planned.client, planned.plan, wait_timeout=wait_timeout,
                                      progress=progress))


def summary(plan: Plan) -> dict[str, Any]:
    """What a plan amounts to, for people and tools: checksum, counts, the change lines."""
    return {"checksum": plan.checksum, "counts": plan.counts(), "owned": plan.owned,
            "destructive": plan.destructive, "over_threshold": plan.over_threshold(),
            "conflicts": list(plan.conflicts),
            "warnings": list(plan.warnings), "changes": change_lines(plan),
            "operator_state": plan.operator_state}


def applied_line(res: Result) -> str:
    return (f"applied: {len(res.created)} health check(s) created, {len(res.updated)} "
            f"updated, {res.batches} record batch(es), {len(res.deleted)} health "
            "check(s) deleted")


# --- the plan as before/after documents, one per record and health check (Ansible's --diff)

def plan_diff(planned: Planned) -> list[dict[str, str]]:
    """One {before_header, after_header, before, after} per change: a record set or health
    check as Route53 holds it before and after apply (YAML; empty when it does not exist)."""
    plan, live = planned.plan, planned.context.live
    live_hc = {h.id: h for h in live.health_checks}
    out: list[dict[str, str]] = []
    for c in plan.hc_creates:
        out.append(_diff(f"health check {c.check.key} ({c.check.region})", None,
                         c.check.config, "create, replacing a check of another kind"
                         if c.reason == "replace" else "create"))
    for u in plan.hc_updates:
        have = live_hc[u.id].config if u.id in live_hc else {}
        want = {k: v for k, v in {**have, **u.changes}.items() if k not in u.reset}
        out.append(_diff(f"health check {u.check.key} {u.id} ({u.check.region})",
                         have, want, "update"))
    for rc in plan.records:
        label = f"{rc.record.name} {rc.record.type} [{rc.record.set_id}]"
        if rc.action == "DELETE":
            out.append(_diff(label, _rrset(rc.record), None, "delete"))
        else:
            out.append(_diff(label, _rrset(rc.old) if rc.old else None, _rrset(rc.record),
                             "create" if rc.old is None else "update"))
    for d in plan.hc_deletes:
        have = live_hc[d.id].config if d.id in live_hc else {"address": d.address}
        out.append(_diff(f"health check {d.id} {d.address} ({d.reason})", have, None,
                         "delete"))
    return out


def _rrset(r: Record) -> dict[str, Any]:
    rr = rrset_from_record(r)
    hc = rr.get("HealthCheckId")
    if isinstance(hc, str) and hc.startswith(NEW):
        rr["HealthCheckId"] = f"(created by this apply: {hc.removeprefix(NEW)})"
    return rr


def _diff(label: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
          action: str) -> dict[str, str]:
    return {"before_header": f"{label} (now)",
            "after_header": f"{label} ({action})",
            "before": _text(before), "after": _text(after)}


def _text(doc: dict[str, Any] | None) -> str:
    if doc is None:
        return ""
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, width=100)

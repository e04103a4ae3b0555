"""Carry out a plan, in the only order that never leaves a record pointing at nothing.

1. create health checks (deterministic CallerReference; a new generation if Route53 says
   the reference was used), tag them, and update changed ones in place (HealthCheckVersion);
2. change records in batches within Route53's limits: leaves before aliases, then alias
   deletes before leaf deletes;
3. wait until every change is INSYNC (bounded);
4. only then delete health checks no record references any more.

Progress is counted in steps, all known before the first call (:func:`count_steps`): one
per health check created, updated or deleted, one per record batch submitted and one per
batch's change reported INSYNC. ``progress`` gets the log lines (every 25th health check
created, each batch, each INSYNC poll); ``on_step`` gets every :class:`Step`, for a
progress bar.

Interrupted anywhere, a re-run plans the rest: created checks are found by their
CallerReference, records already written compare equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from georelay_dns.plan import NEW, Plan, RecordChange
from georelay_dns.route53 import Sleep, call, error_code, rrset_from_record

MAX_RRS = 1000  # ResourceRecord elements per ChangeResourceRecordSets (UPSERT counts twice)
MAX_CHARS = 32000  # characters of Value elements per request (UPSERT counts twice)
MAX_GENERATIONS = 50
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Step:
    """Where an apply is: ``done`` of ``total`` steps, and the log line of this moment ("" for
    a step that has none; a line without a step, such as an INSYNC poll, leaves ``done``)."""

    done: int
    total: int
    message: str


OnStep = Callable[[Step], None]


class _Tracker:
    def __init__(self, total: int, progress: Progress, on_step: OnStep | None) -> None:
        self.done, self.total = 0, total
        self._progress, self._on_step = progress, on_step

    def advance(self, message: str = "", n: int = 1) -> None:
        self.done += n
        self.note(message)

    def note(self, message: str) -> None:
        if message:
            self._progress(message)
        if self._on_step is not None:
            self._on_step(Step(self.done, self.total, message))


class ApplyError(RuntimeError):
    """Route53 refused a step; what was done before it stays done (re-run to converge)."""


@dataclass
class Result:
    created: dict[str, str] = field(default_factory=dict)  # health check key -> id
    updated: list[str] = field(default_factory=list)
    batches: int = 0
    changes: list[str] = field(default_factory=list)  # change ids
    deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What was done, for --output json."""
        return {"healthchecks_created": dict(self.created),
                "healthchecks_updated": list(self.updated), "record_batches": self.batches,
                "change_ids": list(self.changes), "healthchecks_deleted": list(self.deleted)}


def change_size(change: dict[str, Any]) -> tuple[int, int]:
    """(ResourceRecord elements, value characters) as Route53 counts them for limits."""
    rr = change["ResourceRecordSet"]
    if "AliasTarget" in rr:
        n, chars = 1, len(rr["AliasTarget"]["DNSName"])
    else:
        values = [v["Value"] for v in rr.get("ResourceRecords", [])]
        n, chars = len(values), sum(len(v) for v in values)
    factor = 2 if change["Action"] == "UPSERT" else 1
    return n * factor, chars * factor


def split_batches(changes: list[dict[str, Any]], max_rrs: int = MAX_RRS,
                  max_chars: int = MAX_CHARS) -> list[list[dict[str, Any]]]:
    """Pack changes, in order, into as few requests as the limits allow."""
    batches: list[list[dict[str, Any]]] = []
    cur: list[dict[str, Any]] = []
    rrs = chars = 0
    for ch in changes:
        n, c = change_size(ch)
        if n > max_rrs or c > max_chars:
            raise ApplyError(f"{ch['ResourceRecordSet']['Name']} alone exceeds Route53's "
                             "per-request limits")
        if cur and (rrs + n > max_rrs or chars + c > max_chars):
            batches.append(cur)
            cur, rrs, chars = [], 0, 0
        cur.append(ch)
        rrs += n
        chars += c
    if cur:
        batches.append(cur)
    return batches


def record_changes(plan: Plan, ids: dict[str, str]) -> list[dict[str, Any]]:
    """Route53 Change elements in plan order, new health check ids filled in."""
    out = []
    for c in plan.records:
        if c.action == "DELETE":
            rr = plan.raw_deletes[c.record.key]  # exactly as read: DELETE must match
        else:
            rr = rrset_from_record(c.record)
            hc = rr.get("HealthCheckId", "")
            if hc.startswith(NEW):
                rr["HealthCheckId"] = ids[hc.removeprefix(NEW)]
        out.append({"Action": c.action, "ResourceRecordSet": rr})
    return out


def _describe(c: RecordChange) -> str:
    return f"{c.action} {c.record.name} {c.record.type} {c.record.set_id}"


def count_steps(plan: Plan, max_rrs: int = MAX_RRS, max_chars: int = MAX_CHARS) -> int:
    """The steps :func:`apply_plan` reports for this plan (a batch counts twice: submitted,
    then INSYNC). Batches do not depend on the new health checks' ids, so they are known
    before any is created."""
    placeholders = {hc.check.key: "" for hc in plan.hc_creates}
    batches = len(split_batches(record_changes(plan, placeholders), max_rrs, max_chars))
    return len(plan.hc_creates) + len(plan.hc_updates) + 2 * batches + len(plan.hc_deletes)


def apply_plan(client: Any, plan: Plan, *, progress: Progress = lambda _: None,
               on_step: OnStep | None = None, sleep: Sleep = time.sleep,
               wait_timeout: float = 600.0, max_rrs: int = MAX_RRS,
               max_chars: int = MAX_CHARS) -> Result:
    res = Result()
    ids: dict[str, str] = {}
    steps = _Tracker(count_steps(plan, max_rrs, max_chars), progress, on_step)
    total = len(plan.hc_creates)
    for i, hc in enumerate(plan.hc_creates, 1):
        ids[hc.check.key] = _create_health_check(client, plan, hc.check, hc.generation)
        res.created[hc.check.key] = ids[hc.check.key]
        steps.advance(f"health checks created: {i}/{total}" if i == total or i % 25 == 0
                      else "")
    for u in plan.hc_updates:
        kwargs: dict[str, Any] = {"HealthCheckId": u.id, "HealthCheckVersion": u.version,
                                  **u.changes}
        if u.reset:
            kwargs["ResetElements"] = list(u.reset)
        try:
            call(client, "update_health_check", **kwargs)
        except ClientError as e:
            if error_code(e) == "HealthCheckVersionMismatch":
                raise ApplyError(f"health check {u.id} changed since the plan was made: "
                                 "plan again") from e
            raise
        res.updated.append(u.id)
        steps.advance(f"health checks updated: {len(res.updated)}/{len(plan.hc_updates)}"
                      if len(res.updated) == len(plan.hc_updates) else "")

    batches = split_batches(record_changes(plan, ids), max_rrs, max_chars)
    done = 0
    for n, batch in enumerate(batches, 1):
        try:
            got = call(client, "change_resource_record_sets",
                       HostedZoneId=plan.zone_id,
                       ChangeBatch={"Comment": f"georelay-dns {plan.checksum[:19]} batch {n}/"
                                               f"{len(batches)}", "Changes": batch})
        except ClientError as e:
            if error_code(e) == "InvalidChangeBatch":
                msgs = e.response.get("Error", {}).get("Message", "")
                first = _describe(plan.records[done])
                raise ApplyError(f"Route53 refused record batch {n}/{len(batches)} (starting "
                                 f"{first}): {msgs}. Health checks created so far are kept "
                                 "and reused by the next apply.") from e
            raise
        done += len(batch)
        res.batches += 1
        res.changes.append(got["ChangeInfo"]["Id"])
        steps.advance(f"record batch {n}/{len(batches)}: {len(batch)} change(s) submitted")

    if res.changes:
        wait_insync(client, res.changes, sleep=sleep, timeout=wait_timeout,
                    progress=steps.note, on_insync=lambda n: steps.advance(n=n))
    for i, d in enumerate(plan.hc_deletes, 1):
        try:
            call(client, "delete_health_check", HealthCheckId=d.id)
            res.deleted.append(d.id)
        except ClientError as e:
            if error_code(e) == "HealthCheckInUse":
                raise ApplyError(f"health check {d.id} is still used by a record: "
                                 "not deleted; plan again") from e
            if error_code(e) != "NoSuchHealthCheck":  # already gone: the goal is reached
                raise
        steps.advance(f"health checks deleted: {len(res.deleted)}"
                      if i == len(plan.hc_deletes) else "")
    return res


def _create_health_check(client: Any, plan: Plan, check: Any, generation: int) -> str:
    for gen in range(generation, generation + MAX_GENERATIONS):
        ref = check.caller_reference(plan.owner, gen)
        try:
            got = call(client, "create_health_check", CallerReference=ref,
                       HealthCheckConfig=check.config)
        except ClientError as e:
            if error_code(e) == "HealthCheckAlreadyExists":
                continue  # reference used before (a deleted check): never reuse it
            raise
        hc_id = str(got["HealthCheck"]["Id"])
        call(client, "change_tags_for_resource", ResourceType="healthcheck",
             ResourceId=hc_id, AddTags=[
                 {"Key": "Name", "Value": check.name_tag()[:256]},
                 {"Key": "georelay:owner", "Value": plan.owner},
                 {"Key": "georelay:key", "Value": check.key[:256]}])
        return hc_id
    raise ApplyError(f"no free CallerReference for {check.key} after {MAX_GENERATIONS} "
                     "generations")


def wait_insync(client: Any, change_ids: list[str], *, sleep: Sleep = time.sleep,
                timeout: float = 600.0, progress: Progress = lambda _: None,
                on_insync: Callable[[int], None] = lambda _: None,
                clock: Callable[[], float] = time.monotonic) -> None:
    """Poll GetChange until every change is INSYNC, backing off 2 s -> 15 s; bounded.
    ``on_insync(n)``: n more changes (of change_ids, duplicates included) are INSYNC."""
    start = clock()
    pending = list(dict.fromkeys(change_ids))
    counts = {c: change_ids.count(c) for c in pending}
    delay = 2.0
    while pending:
        still = [c for c in pending
                 if call(client, "get_change", Id=c)["ChangeInfo"]["Status"] != "INSYNC"]
        if len(still) < len(pending):
            on_insync(sum(counts[c] for c in pending if c not in still))
        pending = still
        if not pending:
            break
        if clock() - start > timeout:
            raise ApplyError(f"{len(pending)} change(s) not INSYNC after {timeout:.0f}s "
                             f"({', '.join(pending[:3])}): unused health checks were not "
                             "deleted; re-run apply once Route53 has caught up")
        progress(f"waiting for {len(pending)} change(s) to be INSYNC")
        sleep(delay)
        delay = min(delay * 1.5, 15.0)
    progress("all changes INSYNC")

"""The rollout controller's reach into every proxy: playbook georelay.relay.onebox.

run() reads (or sets, then reads back) one service's one-box percentage and counters on
every proxy of an inventory, through ansible-playbook with the inventory's own connection
settings (SSH, become), and returns one Reading per proxy host (a host with aws_region):

- ok: the module georelay.relay.onebox answered; its values are in the Reading.
- off: the one-box is switched off in the proxy's region; the proxy was not touched (ok is
  False, error says so: a controller targets the regions with a one-box).
- unreachable / error: Ansible could not reach the host, or a task failed on it; the other
  proxies' Readings are unaffected.

A request that cannot run at all (ansible-playbook missing, a bad inventory, an inventory
georelay.relay.fleet refuses, no proxy in it) raises ProxiesError; a refused request (unknown
service, a percentage outside 0-100, a bad hold) raises RequestError, before anything is
touched.

The run itself (ansible-playbook, its callback, the timeout) is georelay_model.playbook's,
shared with georelay-edge.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from georelay_model.playbook import (
    InventoryRefused,
    PlaybookError,
    PlaybookRun,
    RequestRefused,
    answers,
    no_answer,
    run_playbook,
)

PLAYBOOK = "georelay.relay.onebox"
HOLDER = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")  # the module's rule for a hold
# Tasks of the playbook that refuse the request itself (the same on every proxy).
REFUSALS = ("Check the one-box request", "Check the percentage", "Check the hold",
            "Check that the service has a one-box")

# What the playbook's callback keeps of its results (georelay_model.playbook).
KEYS = ("onebox", "before", "changed", "process", "msg")
FACTS = ("onebox_off",)


class ProxiesError(Exception):
    """ansible-playbook could not run the request at all (missing program or playbook, a bad
    inventory, an inventory georelay.relay.fleet refuses, no proxy in it, a timeout before
    any proxy answered). The text says why and what to fix."""


class RequestError(ProxiesError, ValueError):
    """The request itself is refused (unknown service, percent outside 0-100, a bad hold);
    nothing was touched."""


@dataclass(frozen=True)
class Reading:
    """One proxy, now."""

    host: str
    region: str | None
    ok: bool  # the module answered
    unreachable: bool  # Ansible could not reach the host
    off: bool  # one-box switched off in this proxy's region
    error: str | None  # why not ok (unreachable/failed message)
    percent: int | None
    held_by: str | None
    usable_servers: int | None  # one-box backend's usable servers (None: no backend)
    onebox_requests: int = 0
    onebox_5xx: int = 0
    regular_requests: int = 0
    regular_5xx: int = 0
    fallback_requests: int = 0
    process: str | None = None  # "pid@start" identity of the worker, changes on reload
    changed: bool = False  # this run changed the percentage or hold here
    before: int | None = None  # the running percentage before this run


def extra_vars(service: str, percent: int | None, hold: str | None) -> dict[str, Any]:
    """The playbook's extra vars for a request; RequestError when it is malformed."""
    if not isinstance(service, str) or not service.strip():
        raise RequestError(f"service: {service!r} is not a public hostname; name the service, "
                           "e.g. fast.example.com")
    out: dict[str, Any] = {"onebox_service": service.strip()}
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise RequestError(f"percent: {percent!r} is not a whole number from 0 to 100; give "
                               "the share of users for the one-box, or None to only read")
        out["onebox_percent"] = percent
    if hold is not None:
        if percent is None:
            raise RequestError("hold: needs percent (a hold keeps a value set with percent)")
        if not isinstance(hold, str) or not HOLDER.match(hold):
            raise RequestError(f"hold: {hold!r} is not 1-128 letters, digits or _.:@- (the "
                               "owner, e.g. a rollout id)")
        out["onebox_hold"] = hold
    return out


def _reading(host: str, region: str | None, result: dict[str, Any]) -> Reading:
    ob, proc = result.get("onebox") or {}, result.get("process") or {}
    return Reading(
        host=host, region=region, ok=True, unreachable=False, off=False, error=None,
        percent=ob.get("percent"), held_by=ob.get("held_by"),
        usable_servers=ob.get("onebox_usable_servers"),
        onebox_requests=int(ob.get("onebox_requests") or 0),
        onebox_5xx=int(ob.get("onebox_5xx") or 0),
        regular_requests=int(ob.get("regular_requests") or 0),
        regular_5xx=int(ob.get("regular_5xx") or 0),
        fallback_requests=int(ob.get("fallback_requests") or 0),
        process=f"{proc['pid']}@{proc.get('started')}" if proc.get("pid") else None,
        changed=bool(result.get("changed")), before=result.get("before"))


def _not_ok(host: str, region: str | None, error: str, *, unreachable: bool = False,
            off: bool = False) -> Reading:
    return Reading(host=host, region=region, ok=False, unreachable=unreachable, off=off,
                   error=error, percent=None, held_by=None, usable_servers=None)


def readings(run: PlaybookRun, timeout: float) -> dict[str, Reading]:
    """One Reading per proxy of the run; RequestError / ProxiesError when the playbook
    refused the request or the inventory."""
    try:
        got = answers(run, answered=lambda r: {"onebox", "process"} <= set(r),
                      refusals=REFUSALS, timeout=timeout, task="one-box")
    except RequestRefused as exc:
        raise RequestError(str(exc)) from exc
    except InventoryRefused as exc:
        raise ProxiesError(str(exc)) from exc
    out: dict[str, Reading] = {}
    for host, a in got.items():
        if a.result is not None:
            out[host] = _reading(host, a.region, a.result)
        elif a.facts.get("onebox_off") in (True, "True", "true"):
            out[host] = _not_ok(host, a.region, f"the one-box is switched off in {a.region} "
                                "(georelay_onebox_enabled: false): not touched", off=True)
        else:
            out[host] = _not_ok(host, a.region, a.error or "no answer",
                                unreachable=a.unreachable)
    return out


def run(inventory: str, service: str, *, percent: int | None = None, hold: str | None = None,
        timeout: float = 120.0, limit: str | None = None,
        check: bool = False) -> dict[str, Reading]:
    """Read (percent None) or set percent, held by hold (None: released), then read back,
    service's one-box on every proxy host of inventory (limit: an Ansible host pattern, -l;
    check: --check, nothing changes). ansible-playbook may take timeout seconds."""
    extra = extra_vars(service, percent, hold)
    try:
        done = run_playbook(PLAYBOOK, inventory, extra, keys=KEYS, facts=FACTS, limit=limit,
                            check=check, timeout=timeout)
    except PlaybookError as exc:
        raise ProxiesError(str(exc)) from exc
    found = readings(done, timeout)
    if not found:
        raise ProxiesError(no_answer(done, inventory, PLAYBOOK, timeout))
    return found

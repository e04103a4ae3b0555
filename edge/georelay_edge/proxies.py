"""georelay-edge's reach into every proxy: playbooks georelay.relay.edge_version and
georelay.relay.edge_ip_ranges, run by georelay_model.playbook (the runner georelay-rollout
uses too), one Answer per proxy host (a host with aws_region).

- versions(): read, or set then read back, one service's edge cache version;
- ip_ranges(): load a map made on the control node into every proxy's file and running HAProxy.

An unreachable or failing proxy gets an Answer with ok False and the reason; the others are
unaffected. A request that cannot run at all raises EdgeError; a request the playbook refuses
(the same on every proxy: a service without an edge cache, no service with regional
redirects) raises RequestError. Nothing is touched in either case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from georelay_model.playbook import (
    InventoryRefused,
    PlaybookError,
    RequestRefused,
    answers,
    no_answer,
    run_playbook,
)

VERSION_PLAYBOOK = "georelay.relay.edge_version"
IP_RANGES_PLAYBOOK = "georelay.relay.edge_ip_ranges"
VERSION_KEYS = ("before", "after", "file_before", "changed", "msg")
IP_RANGES_KEYS = ("sync_token_before", "sync_token_after", "entries", "chunks", "seconds",
                  "loaded_into_running", "changed", "msg")
REFUSALS = ("Check the version request", "Check that the service has an edge cache",
            "Check the ip-ranges request", "Check that a service redirects by region")


class EdgeError(Exception):
    """The request could not run at all (no ansible-playbook, a bad inventory, one
    georelay.relay.fleet refuses, no proxy in it, a timeout before any proxy answered)."""


class RequestError(EdgeError, ValueError):
    """The playbook refused the request itself; nothing was touched."""


@dataclass(frozen=True)
class Answer:
    """One proxy's answer: ok with the module's values, or not with why."""

    host: str
    region: str | None
    ok: bool
    unreachable: bool = False
    error: str | None = None
    values: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "region": self.region, "ok": self.ok,
                "unreachable": self.unreachable, "error": self.error, **self.values}


def _run(playbook: str, inventory: str, extra: dict[str, Any], keys: tuple[str, ...], *,
         check: bool, timeout: float, limit: str | None, task: str) -> dict[str, Answer]:
    try:
        done = run_playbook(playbook, inventory, extra, keys=keys, limit=limit, check=check,
                            timeout=timeout)
        got = answers(done, answered=lambda r: "changed" in r and keys[0] in r,
                      refusals=REFUSALS, timeout=timeout, task=task)
    except RequestRefused as exc:
        raise RequestError(str(exc)) from exc
    except (InventoryRefused, PlaybookError) as exc:
        raise EdgeError(str(exc)) from exc
    if not got:
        raise EdgeError(no_answer(done, inventory, playbook, timeout))
    return {h: Answer(h, a.region, a.ok, a.unreachable, a.error, dict(a.result or {}))
            for h, a in got.items()}


def versions(inventory: str, service: str, version: str | None = None, *, check: bool = False,
             timeout: float = 120.0, limit: str | None = None) -> dict[str, Answer]:
    """service's edge version on every proxy: read (version None) or set then read back.
    An Answer's values: before, after, file_before (the map file's line), changed."""
    extra: dict[str, Any] = {"edge_service": service}
    if version is not None:
        extra["edge_version"] = version
    return _run(VERSION_PLAYBOOK, inventory, extra, VERSION_KEYS, check=check, timeout=timeout,
                limit=limit, task="edge version")


def ip_ranges(inventory: str, map_path: str, *, force: bool = False, check: bool = False,
              timeout: float = 600.0, limit: str | None = None) -> dict[str, Answer]:
    """Load the map text at map_path (on the control node) into every proxy. An Answer's
    values: sync_token_before / _after, entries, chunks, seconds, loaded_into_running,
    changed."""
    extra = {"edge_ip_ranges_map": map_path, "edge_force": force}
    return _run(IP_RANGES_PLAYBOOK, inventory, extra, IP_RANGES_KEYS, check=check,
                timeout=timeout, limit=limit, task="ip-ranges load")

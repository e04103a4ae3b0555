"""JSON Schema (draft 2020-12) of the status document: /status.json and `check --json`.

``schema_version`` changes whenever a field is removed, renamed or changes meaning; adding
an optional field (or a new `state`) does not change it. `georelay-agent schema` prints this
schema. Added to version 1 since: `state` "bridging", `agent.bridging_keeps_in_dns`,
`services[].home`, `services[].bridging`, `services[].servers[].backup` and `.region`,
`services[].onebox`, `services[].edge_cache`, `ip_ranges`.
"""

from __future__ import annotations

from typing import Any

from georelay_agent import STATUS_SCHEMA_VERSION

_NUM = {"type": "number"}
_INT = {"type": "integer", "minimum": 0}
_STR = {"type": "string"}


def _opt(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(props: dict[str, Any], extra: dict[str, Any] | None = None,
         optional: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object with exactly these properties; all required but the `optional` ones (fields
    added to version 1 later: documents of older agents lack them)."""
    return {"type": "object", "required": sorted(set(props) - set(optional)),
            "properties": props, "additionalProperties": False, **(extra or {})}


_BOOL = {"type": "boolean"}
SERVER = _obj({"name": _STR, "status": _STR, "check_status": _STR, "check_code": _STR,
               "check_desc": _STR, "last_change": _opt(_NUM),
               "backup": _BOOL, "region": _opt(_STR)}, optional=("backup", "region"))
HOME = _obj({"server": _STR, "status": _opt(_STR), "usable": _BOOL, "up": _BOOL,
             "since": _opt(_NUM)})
BRIDGING = _obj({"region": _STR, "server": _STR, "since": _NUM})
PROBE = _obj({"path": _STR, "ok": {"type": "boolean"}, "status": _opt(_INT),
              "duration_s": _NUM, "error": _opt(_STR), "at": _NUM,
              "cert_not_after": _opt(_NUM), "up": {"type": "boolean"}})
ONEBOX = _obj({"backend": _STR, "percent": _opt({"type": "integer"}),
               "usable_servers": _opt(_INT), "status": _opt(_STR),
               "requests_total": _opt(_INT), "http_5xx_total": _opt(_INT),
               "fallback_requests": _opt(_INT), "falling_back": _BOOL})
EDGE_CACHE = _obj({"version_map": _STR, "version": _opt(_STR)})
IP_RANGES = _obj({"map_file": _STR, "sync_token": _opt(_INT), "create_date": _opt(_STR),
                  "created": _opt(_NUM), "mtime": _opt(_NUM)})
SERVICE = _obj({
    "hostname": _STR, "backend": _STR, "domain": _STR, "up": {"type": "boolean"},
    "reason": _opt(_STR), "since": _opt(_NUM), "status": _opt(_STR),
    "usable_servers": _INT, "servers": {"type": "array", "items": SERVER},
    "requests_total": _opt(_INT), "http_5xx_total": _opt(_INT),
    "cache_lookups": _opt(_INT), "cache_hits": _opt(_INT),
    "errors": _opt(_obj({"connect": _INT, "response": _INT, "retries": _INT})),
    "http_5xx_ratio": _opt({"type": "number", "minimum": 0, "maximum": 1}),
    "probe": _opt(PROBE), "home": _opt(HOME), "bridging": _opt(BRIDGING),
    "onebox": _opt(ONEBOX), "edge_cache": _opt(EDGE_CACHE)},
    optional=("home", "bridging", "onebox", "edge_cache"))
DRAIN = _obj({"id": _STR, "reason": _STR, "who": _STR, "created": _NUM,
              "expires": _opt(_NUM), "active": {"type": "boolean"}})
CHECK = _obj({"status": {"enum": ["OK", "WARNING", "CRITICAL", "UNKNOWN"]},
              "exit_code": {"enum": [0, 1, 2, 3]}, "summary": _STR, "perfdata": _STR,
              "agent_http_status": _opt(_INT), "agent_answer": _STR})

STATUS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": f"https://georelay.invalid/schemas/agent-status-v{STATUS_SCHEMA_VERSION}.json",
    "title": "georelay-agent status document",
    **_obj({
        "schema_version": {"const": STATUS_SCHEMA_VERSION},
        "generated": _NUM,
        "snapshot_age_s": {"type": "number", "minimum": 0},
        "agent": _obj({"version": _STR, "proxy": _STR, "region": _STR, "pid": _INT,
                       "started": _NUM, "interval_s": _NUM, "rise": _INT, "fall": _INT,
                       "bridging_keeps_in_dns": _BOOL}, optional=("bridging_keeps_in_dns",)),
        "state": {"enum": ["healthy", "bridging", "unhealthy", "draining", "starting"]},
        "healthy": {"type": "boolean"},
        "reason": _opt(_STR),
        "since": _NUM,
        "haproxy": _obj({"up": {"type": "boolean"}, "error": _opt(_STR), "pid": _opt(_INT),
                         "version": _opt(_STR), "uptime_s": _opt(_INT), "reloads_seen": _INT,
                         "reloads": _opt(_INT), "failed_reloads": _opt(_INT),
                         "config_pending": {"type": "boolean"}}),
        "services": {"type": "array", "items": SERVICE},
        "ip_ranges": _opt(IP_RANGES),
        "drains": {"type": "array", "items": DRAIN},
        "warnings": {"type": "array", "items": _STR},
        "collection": _obj({"at": _opt(_NUM), "duration_s": _opt(_NUM),
                            "problems": {"type": "array", "items": _STR}}),
        "check": CHECK,
    }),
}
# `check` appears only in `check --json` output; `ip_ranges` was added to version 1 later.
STATUS_SCHEMA["required"] = [k for k in STATUS_SCHEMA["required"]
                             if k not in ("check", "ip_ranges")]

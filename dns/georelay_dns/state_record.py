"""The operator state record: evacuated regions and weight overrides, kept in Route53 itself.

One TXT record per owner, ``_<owner>-state.<zone>`` (``_georelay-state.example.com``),
weighted with SetIdentifier ``<owner>:state`` so that it carries the same ownership marker
as every other georelay record. Its value is compact, versioned JSON::

    {"evacuated":{"us-east-1":{"at":"2025-01-02T03:04:05Z","by":"alice@ops1",
     "reason":"gateway errors"}},"serial":3,"v":1,"weights":{"use1-a":0}}

cut into strings of at most 255 characters (the DNS limit per TXT string) inside one value
(Route53 allows 4,000 characters per value). No record means no operator state; once
written, the record stays (possibly empty) and ``serial`` grows by one per write, so no
two writes are ever the same value (every write is a compare-and-swap, operations.py).

The leading underscore keeps the name apart from every hostname (hostnames cannot hold
``_``), and the owner in the label keeps two fleets sharing a zone apart.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from georelay_dns.operator_state import VERSION, WEIGHT_MAX, Evacuation, OperatorState, StateError
from georelay_dns.records import Live, Record, owner_prefix

STRING_MAX = 255  # characters per TXT string
VALUE_MAX = 4000  # characters per Route53 record value
STATE_TTL = 60
STATE_WEIGHT = 1  # the only member of its weighted set
STATE_SERVICE = "operator state"  # what plans group the state record under


def state_name(owner: str, zone: str) -> str:
    return f"_{owner}-state.{zone}"


def state_set_id(owner: str) -> str:
    return f"{owner_prefix(owner)}state"


def encode(state: OperatorState) -> str:
    """The TXT value: JSON cut into quoted 255-character strings, escaped for Route53."""
    body = json.dumps(state.to_dict(), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True)
    chunks = [body[i:i + STRING_MAX] for i in range(0, len(body), STRING_MAX)]
    value = " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
    if len(value) > VALUE_MAX:
        raise StateError(f"the operator state would take {len(value)} characters, more than "
                         f"Route53's {VALUE_MAX} per TXT value. Fix: reset weight overrides "
                         "you no longer need (georelay-dns weight HOST --reset) or put the "
                         "weights in the inventory (dns_weight)")
    return value


_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\([0-9]{3}|.)", re.DOTALL)


def _unescape(s: str) -> str:
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(s):
        out += s[pos:m.start()].encode()
        esc = m.group(1)
        out += bytes([int(esc, 8) & 0xFF]) if len(esc) == 3 else esc.encode()
        pos = m.end()
    out += s[pos:].encode()
    return out.decode("utf-8", errors="replace")


def decode(value: str, where: str) -> OperatorState:
    """Parse a TXT value written by :func:`encode` (or by hand, carefully)."""
    fix = (f"Fix: repair or delete the TXT record {where} (it must hold the JSON that "
           "georelay-dns writes), then evacuate/weight again as needed")
    strings = _STRING.findall(value)
    if not strings:
        raise StateError(f"{where}: the value is not quoted TXT strings. {fix}")
    try:
        data = json.loads("".join(_unescape(s) for s in strings))
    except ValueError as e:
        raise StateError(f"{where}: not JSON ({e}). {fix}") from e
    if not isinstance(data, dict):
        raise StateError(f"{where}: not a JSON object. {fix}")
    version = data.get("v")
    if isinstance(version, int) and not isinstance(version, bool) and version > VERSION:
        raise StateError(f"{where} was written by a newer georelay-dns (state v{version}; "
                         f"this one reads v{VERSION}). Fix: upgrade georelay-dns")
    if version != VERSION or set(data) - {"v", "serial", "evacuated", "weights"}:
        raise StateError(f"{where}: expected keys v={VERSION}, serial, evacuated, weights. "
                         f"{fix}")
    evacuated, weights = data.get("evacuated", {}), data.get("weights", {})
    serial = data.get("serial", 0)
    if not isinstance(evacuated, dict) or not isinstance(weights, dict) or isinstance(
            serial, bool) or not isinstance(serial, int):
        raise StateError(f"{where}: evacuated and weights must be objects, serial a number. "
                         f"{fix}")
    evs: dict[str, Evacuation] = {}
    for region, e in evacuated.items():
        if not (isinstance(e, dict) and set(e) == {"reason", "at", "by"}
                and all(isinstance(v, str) for v in e.values())):
            raise StateError(f"{where}: evacuated.{region} must be {{reason, at, by}}. {fix}")
        evs[region] = Evacuation(e["reason"], e["at"], e["by"])
    ws: dict[str, int] = {}
    for host, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w <= WEIGHT_MAX:
            raise StateError(f"{where}: weights.{host} = {w!r} is not 0-{WEIGHT_MAX}. {fix}")
        ws[host] = w
    return OperatorState(evs, ws, serial)


def state_record(state: OperatorState, owner: str, zone: str) -> Record:
    """The record holding ``state``."""
    return Record(state_name(owner, zone), "TXT", state_set_id(owner), weight=STATE_WEIGHT,
                  ttl=STATE_TTL, values=(encode(state),), service=STATE_SERVICE)


@dataclass(frozen=True)
class LiveState:
    """The operator state as Route53 holds it now."""

    state: OperatorState
    record: Record | None  # the owned state record, as read
    raw: dict[str, Any] | None  # exactly as read: a DELETE of it must match (compare-and-swap)
    foreign: tuple[Record, ...] = ()  # records at the state name that are not ours

    @property
    def where(self) -> str:
        return self.record.name + " TXT" if self.record else "the state record"


def read_state(live: Live, owner: str, zone: str) -> LiveState:
    name, sid = state_name(owner, zone), state_set_id(owner)
    mine = [r for r in live.records if r.set_id == sid]
    foreign = tuple(r for r in live.records if r.name == name and r.set_id != sid)
    if not mine:
        return LiveState(OperatorState(), None, None, foreign)
    rec = replace(mine[0], service=STATE_SERVICE)
    where = f"{rec.name} {rec.type} [{sid}]"
    if rec.name != name or rec.type != "TXT" or len(rec.values) != 1:
        raise StateError(f"{where}: georelay's state record must be one TXT value at {name}. "
                         f"Fix: delete {where}, then evacuate/weight again as needed")
    return LiveState(decode(rec.values[0], where), rec, live.raw[rec.key], foreign)

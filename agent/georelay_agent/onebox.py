"""The one-box canary of this proxy as the agent reports it (README "One-box canary").

Per service with a one-box here, the agent shows the running percentage (``show map`` of the
map file), the one-box backend's usable servers (from the ``show stat`` every observation
reads anyway) and the requests of one-box users sent to regular because the one-box had no
usable server (``show table georelay_onebox_fallback``, ``http_req_cnt`` per public name).
The maps and the table are asked in one round trip per observation, whatever the number of
services ("show map A; show table T": HAProxy ends each answer with an empty line).

A one-box with a percentage above 0 and no usable server is *falling back*: its users are
served by the regular gateways. That is a warning, never a failure: every user is still
served, so /healthz (Route53) does not change.

HAProxy dumps a table's entries only on a socket of level operator or admin; on the
agent's default ``user.sock`` (level user) the fallback count is unknown (None) and the
collection's problems say why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from georelay_agent.config import Service
from georelay_agent.haproxy_api import BackendStat, RuntimeAPI, RuntimeAPIError, answer_blocks
from georelay_agent.onebox_map import FALLBACK_TABLE

_ENTRY = re.compile(r"^0x[0-9a-f]+ (\S+) (-?\d+)$")  # "0x55d1... fast.example.com 25"
_ROW = re.compile(r"^0x[0-9a-f]+: key=(\S+) .*\bhttp_req_cnt=(\d+)")
_NO_RIGHTS = "insufficient privileges"
FIX = "agent config and haproxy.cfg disagree; re-run playbooks/proxies.yml"


@dataclass(frozen=True)
class Reading:
    """What one round trip saw: percentages by public name (None: unread) and fallback
    requests by public name (None: unread; fallback_error says why)."""

    percents: dict[str, int] | None
    fallbacks: dict[str, int] | None
    fallback_error: str | None = None


def map_files(services: tuple[Service, ...]) -> list[str]:
    """The distinct map files of the services' one-boxes, in config order."""
    return list(dict.fromkeys(s.onebox.map_file for s in services if s.onebox))


def command(files: list[str]) -> str:
    """One command line for every map file and the fallback table."""
    return "; ".join([*(f"show map {f}" for f in files), f"show table {FALLBACK_TABLE}"])


def parse(answer: str, files: list[str]) -> tuple[Reading, list[str]]:
    """The Reading of command(files)'s answer, and the problems found (a map or the table
    missing from the running config, entries HAProxy will not dump)."""
    problems: list[str] = []
    blocks = answer_blocks(answer, len(files) + 1, "show map, show table")
    percents: dict[str, int] | None = {}
    for path, block in zip(files, blocks, strict=False):
        if block and not _ENTRY.match(block[0]):
            problems.append(f"one-box: show map {path}: {block[0]} (a one-box in the agent's "
                            f"config but not in the running haproxy.cfg: {FIX})")
            percents = None
            continue
        for line in block:
            m = _ENTRY.match(line)
            if m and percents is not None:
                percents.setdefault(m.group(1), int(m.group(2)))  # lookups take the first
    table = blocks[-1]
    fallbacks: dict[str, int] | None = {}
    error: str | None = None
    if not table or not table[0].startswith(f"# table: {FALLBACK_TABLE},"):
        fallbacks, error = None, f"no table {FALLBACK_TABLE} in the running haproxy.cfg " \
            f"({(table or ['nothing'])[0]}): {FIX}"
    elif any(_NO_RIGHTS in line for line in table):
        fallbacks, error = None, (
            f"HAProxy does not show the entries of {FALLBACK_TABLE} on this socket (its "
            "level is user): the fallback count needs a stats socket of level operator")
    else:
        for line in table[1:]:
            m = _ROW.match(line)
            if m:
                fallbacks[m.group(1)] = int(m.group(2))
    if error:
        problems.append(f"one-box: fallback requests unknown: {error}")
    return Reading(percents, fallbacks, error), problems


def read(api: RuntimeAPI, services: tuple[Service, ...]) -> tuple[Reading | None, list[str]]:
    """One round trip for every one-box of services: (None, []) without one-box here;
    (None, [problem]) when HAProxy did not answer."""
    files = map_files(services)
    if not files:
        return None, []
    try:
        return parse(api.command(command(files)), files)
    except RuntimeAPIError as exc:
        return None, [f"one-box: {exc}"]


def judge(s: Service, backends: dict[str, BackendStat] | None,
          reading: Reading | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The status document's services[].onebox of s (None without a one-box) and its
    warnings: falling back, or the agent's config and haproxy.cfg disagreeing."""
    if s.onebox is None:
        return None, []
    b = backends.get(s.onebox.backend) if backends is not None else None
    percents = reading.percents if reading else None
    fallbacks = reading.fallbacks if reading else None
    percent = percents.get(s.hostname) if percents is not None else None
    usable = b.usable_servers if b is not None else None
    fallback = fallbacks.get(s.hostname, 0) if fallbacks is not None else None
    # 0 sends nobody to the one-box; an unknown percentage may send some (never hide it).
    falling_back = usable == 0 and percent != 0
    entry = {"backend": s.onebox.backend, "percent": percent, "usable_servers": usable,
             "status": b.status if b else None,
             "requests_total": b.requests_total if b else None,
             "http_5xx_total": b.http_5xx_total if b else None,
             "fallback_requests": fallback, "falling_back": falling_back}
    warnings: list[str] = []
    if backends is not None and b is None:
        warnings.append(f"{s.hostname}: one-box backend {s.onebox.backend} is not in "
                        f"haproxy.cfg: {FIX}")
    if b is not None and percents is not None and percent is None:
        warnings.append(f"{s.hostname}: the one-box map {s.onebox.map_file} has no entry for "
                        f"it (everyone is on regular): {FIX}")
    if falling_back:
        share = f"its {percent}% of users are" if percent is not None else \
            "its users (percentage unknown) are"
        count = fallback if fallback is not None else "unknown"
        warnings.append(f"one-box of {s.hostname} has no usable server: {share} served by "
                        f"regular (fallback requests: {count})")
    return entry, warnings

"""The edge rules of this proxy as the agent reports them (README "Edge rules").

- The deploy version of each service with an edge cache, as the running HAProxy has it: one
  ``show map <version map>`` round trip per observation (whatever the number of services;
  HAProxy ends each answer with an empty line). A service without an entry runs version
  "1", the default of haproxy.cfg's ``map(<version map>,1)``.
- The age of the AWS ip-ranges map of regional redirects: the ``syncToken`` and
  ``createDate`` of the header its writers put on the map file (georelay_model.ip_ranges),
  read from the file only when its mtime, size or inode changed (the map has AWS's
  ~13,000 lines; only its first lines are read).

Neither ever changes the health judgement: what cannot be read is a collection problem and
an absent value.
"""

from __future__ import annotations

import calendar
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from georelay_agent.config import Service
from georelay_agent.haproxy_api import RuntimeAPI, RuntimeAPIError, answer_blocks

DEFAULT_VERSION = "1"  # haproxy.cfg.j2: map(<version map>,1)
HEADER_LINES = 8  # the header is the file's first lines (georelay_model.ip_ranges.map_text)
_ENTRY = re.compile(r"^0x[0-9a-f]+ (\S+) (\S+)$")  # "0x55d1... fast.example.com 7"
_DATE = "%Y-%m-%d-%H-%M-%S"  # AWS's createDate, UTC
FIX = "agent config and haproxy.cfg disagree; re-run playbooks/proxies.yml"


def version_maps(services: tuple[Service, ...]) -> list[str]:
    """The distinct version map files of the services' edge caches, in config order."""
    return list(dict.fromkeys(s.edge_cache.version_map for s in services if s.edge_cache))


def parse_versions(answer: str, files: list[str]) -> tuple[dict[str, dict[str, str]],
                                                           list[str]]:
    """{map file: {hostname: version}} of the answers to ``show map F1; show map F2...``, and
    the problems (a map the running config does not have)."""
    out: dict[str, dict[str, str]] = {}
    problems: list[str] = []
    for path, block in zip(files, answer_blocks(answer, len(files), "show map"), strict=True):
        bad = next((line for line in block if not _ENTRY.match(line)), None)
        if bad is not None:
            problems.append(f"edge: show map {path}: {bad} (an edge cache in the agent's "
                            f"config but not in the running haproxy.cfg: {FIX})")
            continue
        entries: dict[str, str] = {}
        for line in block:
            m = _ENTRY.match(line)
            if m:
                entries.setdefault(m.group(1), m.group(2))  # lookups take the first
        out[path] = entries
    return out, problems


def read_versions(api: RuntimeAPI, services: tuple[Service, ...]) \
        -> tuple[dict[str, str] | None, list[str]]:
    """{hostname: running version} of every service with an edge cache (None: none here, or
    HAProxy did not answer), and the problems."""
    files = version_maps(services)
    if not files:
        return None, []
    try:
        maps, problems = parse_versions(api.command("; ".join(f"show map {f}" for f in files)),
                                        files)
    except RuntimeAPIError as exc:
        return None, [f"edge: {exc}"]
    versions = {s.hostname: maps[s.edge_cache.version_map].get(s.hostname, DEFAULT_VERSION)
                for s in services if s.edge_cache and s.edge_cache.version_map in maps}
    return versions, problems


@dataclass(frozen=True)
class IpRangesHeader:
    """What the ip-ranges map file's header says (None where it says nothing usable)."""

    map_file: str
    sync_token: int | None
    create_date: str | None
    created: float | None  # createDate as Unix seconds
    mtime: float

    def to_json(self) -> dict[str, Any]:
        return {"map_file": self.map_file, "sync_token": self.sync_token,
                "create_date": self.create_date, "created": self.created,
                "mtime": self.mtime}


def parse_header(map_file: str, head: list[str], mtime: float) -> IpRangesHeader:
    """The header of the map's first lines ("# syncToken: N", "# createDate: D")."""
    found: dict[str, str] = {}
    for line in head:
        for name in ("syncToken", "createDate"):
            if line.startswith(f"# {name}: "):
                found.setdefault(name, line.split(": ", 1)[1].strip())
    token = found.get("syncToken", "")
    date = found.get("createDate")
    try:
        created = float(calendar.timegm(time.strptime(date, _DATE))) if date else None
    except ValueError:
        created = None
    return IpRangesHeader(map_file, int(token) if token.isdigit() else None, date, created,
                          mtime)


class IpRangesFile:
    """The header of one map file, read again only when the file changed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._header: IpRangesHeader | None = None

    def read(self) -> tuple[IpRangesHeader | None, list[str]]:
        try:
            st = os.stat(self.path)
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            if key != self._seen or self._header is None:
                with open(self.path, encoding="utf-8", errors="replace") as fh:
                    head = [fh.readline(512) for _ in range(HEADER_LINES)]
                self._header, self._seen = parse_header(self.path, head, st.st_mtime), key
        except OSError as exc:
            self._seen = self._header = None
            return None, [f"edge: ip-ranges map {self.path}: {exc.strerror or exc}"]
        header = self._header
        if header.created is None:
            return header, [f"edge: ip-ranges map {self.path} has no valid createDate in its "
                            "header (georelay-edge ip-ranges sync or playbooks/proxies.yml "
                            "writes it)"]
        return header, []


@dataclass(frozen=True)
class EdgeReading:
    """What one observation saw of the edge rules."""

    versions: dict[str, str] | None = None  # hostname -> running version (None: unread)
    ip_ranges: IpRangesHeader | None = None  # None: no regional redirects, or unreadable

"""HAProxy Runtime API over a unix socket: bounded in time, tolerant of reload windows.

One connection per command (non-interactive mode: HAProxy answers and closes). Connect and
read have hard deadlines, so a socket that accepts and never answers costs at most
``connect_timeout + read_timeout``. A socket that is missing or refuses for a moment (the
worker handing over during a reload) is retried once after a short pause.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

# The socket client and the ``show proc`` parser are the collection's one toolkit
# (plugins/module_utils/haproxy_runtime.py), installed with the agent as haproxy_runtime.
from georelay_agent.haproxy_runtime import (
    MAX_ANSWER,
    ProcInfo,
    RuntimeAPIError,
    parse_show_proc,
    send,
)

__all__ = ["MAX_ANSWER", "BackendStat", "ProcInfo", "RuntimeAPI", "RuntimeAPIError",
           "ServerStat", "parse_proc", "parse_stat", "pending_reload_failure",
           "reload_failure_warning"]


@dataclass
class ServerStat:
    backend: str
    name: str
    status: str  # UP, DOWN, "UP 1/2", "DOWN 1/2", NOLB, MAINT, DRAIN, "no check"
    check_status: str  # L4OK, L4CON, L6OK, L7OK, L7STS, SOCKERR, ... ("" without checks)
    check_code: str
    check_desc: str
    last_change_s: int | None
    weight: int
    backup: bool = False  # a `backup` server: used only while no active server is usable

    @property
    def usable(self) -> bool:
        """Can receive requests: UP (also while failing checks toward DOWN) or unchecked. A
        usable backup server receives them only while no active server is usable."""
        return (self.status.startswith("UP") or self.status == "no check") and self.weight > 0


@dataclass
class BackendStat:
    name: str
    status: str
    requests_total: int
    http_5xx_total: int
    errors_connect: int
    errors_response: int
    retries: int
    last_change_s: int | None
    servers: list[ServerStat] = field(default_factory=list)
    # HAProxy's cache_lookups / cache_hits (README "Edge rules"; 0 without edge_cache)
    cache_lookups: int | None = None
    cache_hits: int | None = None

    @property
    def usable_servers(self) -> int:
        return sum(1 for s in self.servers if s.usable)

    @property
    def active_servers(self) -> list[ServerStat]:
        """The non-backup servers (the region's own gateway), in config order."""
        return [s for s in self.servers if not s.backup]

    @property
    def backup_servers(self) -> list[ServerStat]:
        """The backup servers in config order, which is HAProxy's order of preference."""
        return [s for s in self.servers if s.backup]


def pending_reload_failure(proc: ProcInfo, last_failed: int,
                           succeeded_at_failure: int | None) -> int | None:
    """Whether the latest reload failed, from two successive ``show proc`` answers.

    The master counts every reload, and in ``[failed: N]`` the failed ones since the last
    that succeeded (HAProxy 2.6 resets N on a successful reload: measured). A failure shows
    as N going up from last_failed (the previous answer's N, 0 for none: a master that
    answers N > 0 the first time has its latest reload failed); a later success as
    reloads - N going up, whether or not N is reset. Returns the successful-reload count at
    the failure while it is the latest reload, else None: pass it back in next time.
    """
    if proc.failed_reloads > last_failed and succeeded_at_failure is None:
        succeeded_at_failure = proc.succeeded_reloads
    if succeeded_at_failure is not None and proc.succeeded_reloads > succeeded_at_failure:
        return None
    return succeeded_at_failure


def reload_failure_warning(proc: ProcInfo) -> str:
    """The warning while :func:`pending_reload_failure` says the latest reload failed."""
    return (f"haproxy: the latest reload failed ({proc.failed_reloads} since the last that "
            "succeeded): the running config is older than haproxy.cfg; see the haproxy log")


class RuntimeAPI:
    def __init__(self, path: str, connect_timeout: float = 0.5, read_timeout: float = 1.0,
                 retry_pause: float = 0.1) -> None:
        self.path = path
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry_pause = retry_pause

    def command(self, command: str) -> str:
        """The whole answer to one command (a socket missing or refusing for a moment is
        asked once more; an "Unknown command" or "Permission denied" answer raises)."""
        return send(self.path, command, connect_timeout=self.connect_timeout,
                    read_timeout=self.read_timeout, retries=1, retry_pause=self.retry_pause,
                    refused_is_error=True)

    def info(self) -> dict[str, str]:
        """``show info`` as a mapping (Pid, Uptime_sec, Version, Stopping, ...)."""
        out: dict[str, str] = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        if "Pid" not in out:
            raise RuntimeAPIError(f"{self.path}: 'show info' answered without a Pid")
        return out

    def stat(self) -> dict[str, BackendStat]:
        """Backends of ``show stat`` with their servers, by backend name."""
        return parse_stat(self.command("show stat"))

    def proc(self) -> ProcInfo:
        """Reload counters from the master CLI (``show proc``)."""
        return parse_proc(self.command("show proc"))


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _opt_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def answer_blocks(answer: str, count: int, what: str) -> list[list[str]]:
    """The answers of count commands sent as one line ("show map A; show map B"): each
    ends with an empty line (an empty map answers the empty line alone). what names the
    commands in the error when fewer answers came."""
    blocks: list[list[str]] = []
    current: list[str] = []
    for line in answer.split("\n"):
        if line.strip():
            current.append(line.rstrip())
        else:
            blocks.append(current)
            current = []
            if len(blocks) == count:
                return blocks
    raise RuntimeAPIError(f"{count} commands ({what}) got {len(blocks)} answers: "
                          f"{answer[:120]!r}")


def parse_stat(text: str) -> dict[str, BackendStat]:
    text = text.lstrip()
    if not text.startswith("# pxname,"):
        raise RuntimeAPIError(f"'show stat' answered {text[:80]!r}")
    rows = list(csv.DictReader(io.StringIO(text[2:])))
    backends: dict[str, BackendStat] = {}
    for row in rows:
        if row.get("svname") == "BACKEND":
            backends[row["pxname"]] = BackendStat(
                name=row["pxname"], status=row.get("status", ""),
                requests_total=_int(row.get("req_tot")),
                http_5xx_total=_int(row.get("hrsp_5xx")),
                errors_connect=_int(row.get("econ")), errors_response=_int(row.get("eresp")),
                retries=_int(row.get("wretr")), last_change_s=_opt_int(row.get("lastchg")),
                cache_lookups=_opt_int(row.get("cache_lookups")),
                cache_hits=_opt_int(row.get("cache_hits")))
    for row in rows:
        name = row.get("svname", "")
        if name in ("FRONTEND", "BACKEND") or row.get("pxname") not in backends:
            continue
        backends[row["pxname"]].servers.append(ServerStat(
            backend=row["pxname"], name=name, status=row.get("status", ""),
            check_status=(row.get("check_status") or "").lstrip("* "),
            check_code=row.get("check_code") or "", check_desc=row.get("last_chk") or "",
            last_change_s=_opt_int(row.get("lastchg")), weight=_int(row.get("weight")),
            backup=_int(row.get("bck")) > 0))
    return backends


# ``show proc`` of the master CLI, under the name the agent has always used.
parse_proc = parse_show_proc

"""The one-box canary of one proxy (README "One-box canary"): what a rollout controller
needs on each proxy, given the admin socket and the map file (the ``georelay_proxy`` fact's
``paths.admin_socket`` and ``onebox.map_file``). Built on haproxy_runtime.py (the sockets);
the collection's module georelay.relay.onebox, the lab and the tests use it (installed with
the agent as georelay_agent.onebox_map, like haproxy_runtime).

- set_onebox_percent(socket, map_file, hostname, percent, hold=OWNER): sets the absolute
  percentage: rewrites the map file first (so a reload, which reads it, keeps the value),
  then ``set map`` (``add map`` for a missing entry: ``add map`` never replaces one, lookups
  keep the first), then reads it back and returns what HAProxy now answers. With hold, the
  file marks the entry "#held HOSTNAME OWNER" and playbook runs keep it; hold=None
  releases it (the next run renders the inventory's onebox_percent).
- get_onebox_percent(socket, map_file, hostname): the running value (None: no entry).
- onebox_state(socket, map_file, hostname): OneboxState: the percentage, the requests and
  5xx of the one-box and regular backends (counters a reload resets), the one-box
  backend's usable servers (0: its users are on regular, visible here) and the requests
  sent to regular because of that (``show table georelay_onebox_fallback``).
- read_map_file() / write_map_file(): the file's entries and holds; atomic rewrite.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

try:  # inside Ansible (a module's AnsiballZ payload carries both files)
    from ansible_collections.georelay.relay.plugins.module_utils.haproxy_runtime import (
        RuntimeAPIError,
        map_value,
        send,
        set_map_entry,
        write_file_atomically,
    )
except ImportError:  # installed with the agent, beside its haproxy_runtime
    from georelay_agent.haproxy_runtime import (  # type: ignore[no-redef]
        RuntimeAPIError,
        map_value,
        send,
        set_map_entry,
        write_file_atomically,
    )

FALLBACK_TABLE = "georelay_onebox_fallback"  # haproxy.cfg.j2's stick table
MAP_HEADER = (
    "# georelay one-box percentages: <public name> <percent of users in the one-box>.\n"
    "# HAProxy reads this file at start; `set map` changes the running value (README\n"
    "# \"One-box canary\"). \"#held\" entries were set at runtime by a rollout: playbook runs\n"
    "# keep them.\n")
_HOLDER = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")


def backend_name(hostname: str) -> str:
    """The regular backend of a public name (georelay_model's Service.backend_name); the
    one-box backend is this + "_onebox"."""
    return "be_" + hostname.replace(".", "_").replace("-", "_")


@dataclass(frozen=True)
class OneboxState:
    """One service's one-box on one proxy, as HAProxy reports it now."""

    hostname: str
    percent: int | None  # the running percentage; None: no entry (no one-box here)
    onebox_usable_servers: int | None  # None: no one-box backend (switched off here)
    onebox_requests: int
    onebox_5xx: int
    regular_requests: int  # includes the fallback requests
    regular_5xx: int
    fallback_requests: int  # one-box users sent to regular: no usable one-box server

    @property
    def falling_back(self) -> bool:
        """The one-box exists but has no usable server: its users are on regular."""
        return self.onebox_usable_servers == 0


def read_map_file(map_file: str) -> tuple[dict[str, int], dict[str, str]]:
    """The map file's entries {hostname: percent} and holds {hostname: owner} ({} when the
    file is missing)."""
    entries: dict[str, int] = {}
    holds: dict[str, str] = {}
    try:
        with open(map_file, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        return entries, holds
    for line in text.splitlines():
        f = line.split()
        if len(f) == 3 and f[0] == "#held":
            holds[f[1]] = f[2]
        elif len(f) == 2 and f[1].isdigit() and not f[0].startswith("#"):
            entries[f[0]] = int(f[1])
    return entries, {h: o for h, o in holds.items() if h in entries}


def write_map_file(map_file: str, entries: dict[str, int], holds: dict[str, str]) -> None:
    """Rewrite the one-box map file atomically, holds as `#held` lines."""
    lines = [MAP_HEADER]
    for host, percent in entries.items():
        if host in holds:
            lines.append(f"#held {host} {holds[host]}\n")
        lines.append(f"{host} {percent}\n")
    write_file_atomically(map_file, "".join(lines))


def get_onebox_percent(admin_socket: str, map_file: str, hostname: str,
                       timeout: float = 3.0) -> int | None:
    """The percentage HAProxy uses now for hostname (None: the map has no entry)."""
    value = map_value(admin_socket, map_file, hostname, timeout)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def set_onebox_percent(admin_socket: str, map_file: str, hostname: str, percent: int, *,
                       hold: str | None, timeout: float = 3.0) -> int:
    """Set hostname's one-box percentage to exactly percent (0-100) in the map file and the
    running HAProxy, and return the value read back (a repeat is harmless). hold names the
    holder (e.g. a rollout id) whose value playbook runs keep; None releases the entry.
    Raises ValueError for a bad argument (nothing touched) and RuntimeAPIError when HAProxy
    refuses or the value read back differs."""
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise ValueError(f"percent: {percent!r} is not a whole number from 0 to 100")
    if hold is not None and not _HOLDER.match(hold):
        raise ValueError(f"hold: {hold!r} is not 1-128 letters, digits or _.:@-")
    entries, holds = read_map_file(map_file)
    if hostname not in entries:
        raise ValueError(f"hostname: {hostname} has no one-box on this proxy (not in "
                         f"{map_file}); known: {', '.join(entries) or 'none'}")
    entries[hostname] = percent
    if hold is None:
        holds.pop(hostname, None)
    else:
        holds[hostname] = hold
    write_map_file(map_file, entries, holds)
    set_map_entry(admin_socket, map_file, hostname, str(percent), timeout=timeout)
    now = get_onebox_percent(admin_socket, map_file, hostname, timeout)
    if now != percent:
        raise RuntimeAPIError(f"{admin_socket}: {hostname}'s one-box percentage reads "
                              f"{now} after setting {percent}")
    return now


def onebox_state(admin_socket: str, map_file: str, hostname: str,
                 timeout: float = 3.0) -> OneboxState:
    """hostname's one-box on this proxy now: percentage, counters, usable servers."""
    percent = get_onebox_percent(admin_socket, map_file, hostname, timeout)
    stat = send(admin_socket, "show stat", connect_timeout=timeout, read_timeout=timeout,
                refused_is_error=True)
    rows = {r.get("pxname"): r for r in csv.DictReader(io.StringIO(stat.lstrip("# ")))
            if r.get("svname") == "BACKEND"}
    regular, onebox = backend_name(hostname), backend_name(hostname) + "_onebox"

    def num(row: dict[str, str] | None, key: str) -> int:
        value = (row or {}).get(key) or "0"
        return int(value) if value.isdigit() else 0

    ob = rows.get(onebox)
    table = send(admin_socket, f"show table {FALLBACK_TABLE} data.http_req_cnt gt -1",
                 connect_timeout=timeout, read_timeout=timeout)
    fallback = 0
    for line in table.splitlines():
        if f" key={hostname} " in line + " ":
            m = re.search(r"http_req_cnt=(\d+)", line)
            fallback = int(m.group(1)) if m else 0
    return OneboxState(
        hostname=hostname, percent=percent,
        onebox_usable_servers=None if ob is None else num(ob, "act") + num(ob, "bck"),
        onebox_requests=num(ob, "req_tot"), onebox_5xx=num(ob, "hrsp_5xx"),
        regular_requests=num(rows.get(regular), "req_tot"),
        regular_5xx=num(rows.get(regular), "hrsp_5xx"), fallback_requests=fallback)

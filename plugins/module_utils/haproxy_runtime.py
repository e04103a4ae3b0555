"""HAProxy's command-line sockets: the Runtime API (stats sockets) and the master CLI.

The one client of georelay for both: the collection's modules (haproxy_master), the health
agent (its haproxy_api builds on this file, installed with it as
georelay_agent.haproxy_runtime), the lab, the tools and the tests. Standard library only:
it also runs with a proxy host's own Python (3.11 on Debian 12).

- send(): one command on a unix socket, in non-interactive mode (HAProxy answers and
  closes once the input ends), with hard connect and read deadlines, an answer size bound
  and an optional retry of a socket that is missing or refuses for a moment (the socket is
  handed over during a reload).
- parse_show_proc() / show_proc(): the master CLI's ``show proc`` as a ProcInfo: master
  pid, reload count, failed reloads, workers and old workers with pid and uptime seconds.
  show_proc() returns None when no master answers on the socket.
- master_command(): the command line of a master-worker HAProxy with a master socket, as
  the role's process mode and the lab start it.
- The one-box canary of one proxy (README "One-box canary"), what a rollout controller
  needs on each proxy, given the admin socket and the map file (the ``georelay_proxy``
  fact's ``paths.admin_socket`` and ``onebox.map_file``):

  - set_onebox_percent(socket, map_file, hostname, percent, hold=OWNER): sets the
    absolute percentage: rewrites the map file first (so a reload, which reads it, keeps
    the value), then ``set map`` (``add map`` for a missing entry: ``add map`` never
    replaces one, lookups keep the first), then reads it back and returns what HAProxy now
    answers. With hold, the file marks the entry "#held HOSTNAME OWNER" and playbook runs
    keep it; hold=None releases it (the next run renders the inventory's onebox_percent).
  - get_onebox_percent(socket, map_file, hostname): the running value (None: no entry).
  - onebox_state(socket, map_file, hostname): OneboxState: the percentage, the requests
    and 5xx of the one-box and regular backends (counters a reload resets), the one-box
    backend's usable servers (0: its users are on regular, visible here) and the requests
    sent to regular because of that (``show table georelay_onebox_fallback``).
  - read_map_file() / write_map_file(): the file's entries and holds; atomic rewrite.

- map_value(socket, map_file, key): a running map's value for a key (``show map``);
  write_file_atomically(path, text): a map file rewritten at once, for a reload to read.
- replace_map(socket, map_file, lines): a whole running map replaced atomically
  (prepare / add @version in chunks below the CLI's 16 KB buffer / commit), e.g. AWS's
  ip-ranges map of regional redirects (README "Edge rules").

As a program it sends one command and prints the answer (on a host, where nothing of
georelay's Python is installed: ``python3 -c "$(cat haproxy_runtime.py)" SOCKET COMMAND``)::

    python -m georelay_agent.haproxy_runtime /run/haproxy-master.sock show proc
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
import re
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_ANSWER = 8 * 1024 * 1024  # bytes; "show stat" of a large config is well below this
# A socket missing or refusing for a moment: a reload hands it to the new process.
RETRYABLE = frozenset({errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN})
REFUSALS = ("Unknown command", "Permission denied")
USAGE = "usage: haproxy_runtime SOCKET COMMAND...  (sends one command, prints the answer)"


class RuntimeAPIError(Exception):
    """An HAProxy socket could not be asked, did not answer, or answered something else than
    what was asked for; the text says which socket and why."""


def send(path: str, command: str, *, connect_timeout: float = 0.5, read_timeout: float = 3.0,
         retries: int = 0, retry_pause: float = 0.1, refused_is_error: bool = False,
         max_answer: int = MAX_ANSWER) -> str:
    """The whole answer of HAProxy to one command on the unix socket at path.

    Connecting may take connect_timeout seconds and the whole answer read_timeout seconds
    (a socket that trickles bytes forever is cut there). A missing or refusing socket is
    tried again up to retries times, retry_pause seconds apart. With refused_is_error, an
    answer of "Unknown command" or "Permission denied" raises too. Raises RuntimeAPIError.
    """
    attempt = 0
    while True:
        try:
            answer = _once(path, command, connect_timeout, read_timeout, max_answer)
            break
        except OSError as exc:
            if attempt >= retries or exc.errno not in RETRYABLE:
                raise RuntimeAPIError(_describe(path, exc)) from exc
        attempt += 1
        time.sleep(retry_pause)
    if refused_is_error:
        first = answer.lstrip().split("\n", 1)[0]
        if first.startswith(REFUSALS):
            raise RuntimeAPIError(f"{path}: {command!r} refused: {first.strip()}")
    return answer


def _describe(path: str, exc: OSError) -> str:
    if isinstance(exc, TimeoutError):
        return f"{path}: no answer ({exc})"
    return f"{path}: {exc.strerror or exc}"


def _once(path: str, command: str, connect_timeout: float, read_timeout: float,
          max_answer: int) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(connect_timeout)
        try:
            sock.connect(path)
        except TimeoutError as exc:
            raise TimeoutError(f"connect timed out after {connect_timeout:g}s") from exc
        deadline = time.monotonic() + read_timeout
        sock.settimeout(read_timeout)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)  # the CLI answers and closes once the input ends
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"read timed out after {read_timeout:g}s")
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except TimeoutError as exc:
                raise TimeoutError(f"read timed out after {read_timeout:g}s") from exc
            if not data:
                break
            chunks.append(data)
            size += len(data)
            if size > max_answer:
                raise OSError(errno.EMSGSIZE, f"answer larger than {max_answer} bytes")
    return b"".join(chunks).decode("utf-8", "replace")


def master_command(binary: str, config: str, master_socket: str, pid_file: str) -> list[str]:
    """haproxy in master-worker mode (-W) with its master CLI on master_socket (root only)."""
    return [binary, "-W", "-S", f"{master_socket},mode,600", "-f", config, "-p", pid_file]


# --- show proc ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Process:
    """One line of ``show proc``: a worker (or the master) process."""

    pid: int
    reloads: int  # reloads this process has seen since it started
    uptime_s: int | None  # None when HAProxy's uptime field was unreadable
    version: str = ""


@dataclass(frozen=True)
class ProcInfo:
    """The master's ``show proc``. failed_reloads counts the failed reloads since the last one
    that succeeded (HAProxy 2.6 resets it on a successful reload)."""

    reloads: int
    failed_reloads: int
    master_pid: int = 0
    workers: tuple[Process, ...] = ()
    old_workers: tuple[Process, ...] = ()  # still finishing what they had at a reload

    @property
    def succeeded_reloads(self) -> int:
        return self.reloads - self.failed_reloads

    @property
    def worker_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def old_worker_pids(self) -> list[int]:
        return [w.pid for w in self.old_workers]

    @property
    def youngest_worker_uptime_s(self) -> int | None:
        """Seconds since the youngest current worker started (None: no readable uptime)."""
        ages = [w.uptime_s for w in self.workers if w.uptime_s is not None]
        return min(ages) if ages else None


_MASTER = re.compile(r"^\s*(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
_UPTIME = re.compile(r"^(\d+)d(\d+)h(\d+)m(\d+)s$")
_SECTIONS = {"workers": "workers", "old workers": "old_workers"}


def uptime_seconds(text: str) -> int | None:
    """HAProxy's uptime field (0d00h11m41s) in seconds, None when it reads otherwise."""
    m = _UPTIME.match(text)
    if not m:
        return None
    d, h, mi, s = (int(x) for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def parse_show_proc(text: str) -> ProcInfo:
    """The answer of ``show proc`` (HAProxy 2.x master CLI); RuntimeAPIError when it is not
    one."""
    m = _MASTER.search(text)
    if not m:
        raise RuntimeAPIError(f"'show proc' answered {text[:80]!r}")
    found: dict[str, list[Process]] = {"workers": [], "old_workers": []}
    section: str | None = None
    for line in text.splitlines():
        if line.startswith("#"):
            # "#<PID> <type> ..." is the header, "# workers" and "# old workers" open their
            # section, any other "# ..." (programs) closes it.
            section = _SECTIONS.get(line[1:].strip())
            continue
        fields = line.split()
        if section is None or len(fields) < 2 or not fields[0].isdigit():
            continue
        found[section].append(Process(
            pid=int(fields[0]),
            reloads=int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else 0,
            uptime_s=uptime_seconds(fields[3]) if len(fields) > 3 else None,
            version=fields[4] if len(fields) > 4 else ""))
    return ProcInfo(reloads=int(m.group(2)), failed_reloads=int(m.group(3)),
                    master_pid=int(m.group(1)), workers=tuple(found["workers"]),
                    old_workers=tuple(found["old_workers"]))


def show_proc(master_socket: str, timeout: float = 3.0) -> ProcInfo | None:
    """``show proc`` of the master socket, None when no master answers there."""
    try:
        return parse_show_proc(send(master_socket, "show proc", connect_timeout=timeout,
                                    read_timeout=timeout))
    except RuntimeAPIError:
        return None


# --- the one-box canary -------------------------------------------------------------------

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


def write_file_atomically(path: str, text: str) -> None:
    """Replace path with text at once (a reload never reads half of it), mode 0644."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def map_value(admin_socket: str, map_file: str, key: str, timeout: float = 3.0) -> str | None:
    """What the running HAProxy's map map_file holds for key (None: no entry);
    RuntimeAPIError when the running config has no such map."""
    answer = send(admin_socket, f"show map {map_file}", connect_timeout=timeout,
                  read_timeout=timeout, refused_is_error=True)
    if answer.lstrip().startswith(("Unknown map", "No such map")):
        raise RuntimeAPIError(f"{admin_socket}: no map {map_file} in the running config: "
                              f"{answer.strip()}")
    for line in answer.splitlines():
        f = line.split()  # "0x55d1...  fast.example.com  25"
        if len(f) == 3 and f[1] == key:
            return f[2]  # lookups answer the first entry of a key
    return None


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
    kw = {"connect_timeout": timeout, "read_timeout": timeout, "retries": 5,
          "refused_is_error": True}
    answer = send(admin_socket, f"set map {map_file} {hostname} {percent}", **kw)
    if answer.strip():  # "entry not found": a running config without the entry
        answer = send(admin_socket, f"add map {map_file} {hostname} {percent}", **kw)
        if answer.strip():
            raise RuntimeAPIError(f"{admin_socket}: add map {hostname}: {answer.strip()}")
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


def replace_map(admin_socket: str, map_file: str, lines: list[str], *,
                chunk_bytes: int = 12_000, between: Callable[[], None] | None = None) -> int:
    """Replaces the whole running map atomically: ``prepare map`` (a new, empty version),
    ``add map @V`` payloads each below chunk_bytes (the CLI drops a payload over its 16 KB
    buffer), then ``commit map``; lookups answer the old map until the commit (between, if
    given, runs just before it). lines: "<key> <value>". On an error the new version is
    cleared and the running map is unchanged (RuntimeAPIError). Returns the chunks sent."""
    answer = send(admin_socket, f"prepare map {map_file}", refused_is_error=True)
    m = re.search(r"New version created: (\d+)", answer)
    if not m:
        raise RuntimeAPIError(f"prepare map {map_file}: {answer.strip()[:200]}")
    version, chunks, chunk, size = m.group(1), 0, [], 0
    try:
        for line in [*lines, None]:
            if line is not None and size + len(line) + 1 < chunk_bytes:
                chunk.append(line)
                size += len(line) + 1
                continue
            if chunk:
                payload = "\n".join(chunk) + "\n"
                out = send(admin_socket, f"add map @{version} {map_file} <<\n{payload}",
                           read_timeout=10.0, refused_is_error=True)
                if out.strip():
                    raise RuntimeAPIError(f"add map @{version} {map_file}: {out.strip()[:200]}")
                chunks += 1
            chunk, size = ([line], len(line) + 1) if line is not None else ([], 0)
        if between is not None:
            between()
        out = send(admin_socket, f"commit map @{version} {map_file}", refused_is_error=True)
        if out.strip():
            raise RuntimeAPIError(f"commit map @{version} {map_file}: {out.strip()[:200]}")
    except BaseException:
        with contextlib.suppress(RuntimeAPIError):
            send(admin_socket, f"clear map @{version} {map_file}")
        raise
    return chunks


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    if len(args) < 2:
        print(USAGE, file=sys.stderr)
        return 64  # EX_USAGE
    try:
        sys.stdout.write(send(args[0], " ".join(args[1:]), connect_timeout=5.0,
                              read_timeout=10.0))
    except RuntimeAPIError as exc:
        print(f"haproxy_runtime: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
- The one-box canary's percentages and counters (set_onebox_percent, onebox_state, ...)
  are in onebox_map.py, which builds on this file.
- map_value(socket, map_file, key): a running map's value for a key (``show map``);
  set_map_entry(socket, map_file, key, value): set it (``set map``, else ``add map``);
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
import errno
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


# --- maps: files a reload reads, running maps -----------------------------------------

def write_file_atomically(path: str, text: str) -> None:
    """Replace path with text at once (a reload or a collector never reads half of it):
    a temporary file in its directory, fsync, rename, then the directory fsync'd (best
    effort); mode 0644. OSError when it cannot."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


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


def set_map_entry(admin_socket: str, map_file: str, key: str, value: str, *,
                  timeout: float = 3.0) -> None:
    """Make the running map map_file answer value for key: ``set map``, or ``add map`` for
    a key the running map lacks (``add map`` never replaces an entry: lookups keep the
    first). RuntimeAPIError when HAProxy refuses."""
    kw = {"connect_timeout": timeout, "read_timeout": timeout, "retries": 5,
          "refused_is_error": True}
    answer = send(admin_socket, f"set map {map_file} {key} {value}", **kw)
    if answer.strip():  # "entry not found": a running config without the entry
        answer = send(admin_socket, f"add map {map_file} {key} {value}", **kw)
        if answer.strip():
            raise RuntimeAPIError(f"{admin_socket}: add map {key}: {answer.strip()}")


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

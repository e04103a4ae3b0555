"""Background processes tracked by pid files, where no service manager runs them.

Shared by the modules of georelay.relay (agent_process, haproxy_master): start a command
detached from Ansible with its output appended to a log file, tell whether the process of a
pid file is alive (not a zombie, not a recycled pid running something else), stop it with a
signal and a deadline, wait for a condition, and read the end of a log. Standard library
only: it runs on the managed host with the host's Python (3.11 on Debian 12).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = ["alive", "read_pid", "running", "spawn", "stop", "stop_pid", "tail", "wait_for",
           "write_pid"]


def read_pid(pid_file: str | os.PathLike[str]) -> int | None:
    """The pid written in pid_file (its first word), None when absent or unreadable."""
    try:
        return int(Path(pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, cmdline_has: str | None = None) -> bool:
    """True when pid is a live process (not a zombie) and, when cmdline_has is given, one of
    its command-line arguments contains that text (a recycled pid running something else
    does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive, and /proc still tells the rest
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rpartition(") ")[2].startswith("Z"):
            return False
        if cmdline_has is None:
            return True
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    needle = cmdline_has.encode()
    return any(needle in arg for arg in args)


def running(pid_file: str | os.PathLike[str], cmdline_has: str | None = None) -> int | None:
    """The pid of pid_file when that process is alive (see alive()), else None."""
    pid = read_pid(pid_file)
    if pid is None or not alive(pid, cmdline_has):
        return None
    return pid


def write_pid(pid_file: str | os.PathLike[str], pid: int) -> None:
    """Write pid to pid_file atomically (a reader never sees a half-written file)."""
    path = Path(pid_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def spawn(command: Sequence[str], log_file: str | os.PathLike[str], *,
          pid_file: str | os.PathLike[str] | None = None,
          env: Mapping[str, str] | None = None,
          cwd: str | os.PathLike[str] | None = None) -> subprocess.Popen[bytes]:
    """Start command in a session of its own (it outlives Ansible's connection), its stdout
    and stderr appended to log_file, stdin from /dev/null. With pid_file, its pid is written
    there; a program that writes its own pid file (haproxy -p) is given none."""
    log_path = Path(log_file)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, start_new_session=True, close_fds=True,
                                env=None if env is None else dict(env), cwd=cwd)
    if pid_file is not None:
        write_pid(pid_file, proc.pid)
    return proc


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1) -> T | None:
    """Call predicate until it returns something true (returned) or timeout seconds pass
    (None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def stop_pid(pid: int, timeout: float, sig: int = signal.SIGTERM,
             cmdline_has: str | None = None) -> bool:
    """Send sig to pid and wait up to timeout seconds for it to end, then SIGKILL it.
    True when the process was alive."""
    if not alive(pid, cmdline_has):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    if wait_for(lambda: not alive(pid, cmdline_has), timeout, 0.05) is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not alive(pid, cmdline_has), 5.0, 0.05)
    return True


def stop(pid_file: str | os.PathLike[str], timeout: float, sig: int = signal.SIGTERM,
         cmdline_has: str | None = None) -> bool:
    """Stop the process of pid_file (stop_pid) and remove the pid file. True when one was
    running."""
    pid = running(pid_file, cmdline_has)
    stopped = pid is not None and stop_pid(pid, timeout, sig, cmdline_has)
    Path(pid_file).unlink(missing_ok=True)
    return stopped


def tail(path: str | os.PathLike[str], lines: int = 25, max_bytes: int = 8192) -> str:
    """The last lines of a log file (at most max_bytes of it), or a note that there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(no log at {os.fspath(path)})"
    return "\n".join(text.splitlines()[-lines:])

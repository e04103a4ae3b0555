"""Background processes of the lab, tracked by pid files (no systemd here)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def running(pid_file: Path) -> int | None:
    """The pid in pid_file if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    try:  # a zombie is not alive
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return None
    except OSError:
        return None
    return pid


def start(cmd: list[str], pid_file: Path, log_file: Path) -> int:
    """Start cmd detached from this process group, its output appended to log_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop(pid_file: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the process of pid_file, SIGKILL after timeout. True if one was running."""
    pid = running(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(pid_file) is not None:
        time.sleep(0.05)
    if running(pid_file) is not None:
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """True once something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False

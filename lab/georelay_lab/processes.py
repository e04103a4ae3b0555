"""Background processes of the lab, tracked by pid files (no systemd here).

The pid-file code is the collection's own (``pid_files`` is a link to
plugins/module_utils/processes.py, which the modules that start HAProxy and the agent use);
this module gives it the lab's shape and adds what the lab and the tools need beside it:
waiting for a port, and a lab proxy's HAProxy started, checked and stopped the way the role
runs it in process mode.
"""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

from georelay_agent.haproxy_runtime import master_command, show_proc
from georelay_lab import pid_files
from georelay_model.facts import paths_below


class ProcessError(RuntimeError):
    """A lab process did not start (the message names its command and log)."""


def running(pid_file: Path) -> int | None:
    """The pid in pid_file if that process is alive, else None."""
    return pid_files.running(pid_file)


def start(cmd: list[str], pid_file: Path, log_file: Path) -> int:
    """Start cmd detached from this process group, its output appended to log_file."""
    return pid_files.spawn(cmd, log_file, pid_file=pid_file).pid


def stop(pid_file: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the process of pid_file, SIGKILL after timeout. True if one was running."""
    return pid_files.stop(pid_file, timeout)


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


# ---- a lab proxy's HAProxy (georelay_root), as roles/haproxy runs it in process mode ------

def haproxy_running(root: Path) -> bool:
    """Whether the HAProxy master below georelay_root answers `show proc` with workers."""
    info = show_proc(paths_below(str(root))["master_socket"], timeout=2)
    return info is not None and bool(info.workers)


def stop_haproxy(root: Path) -> bool:
    """Stop the proxy's HAProxy master (and so its workers). True if it was running."""
    return stop(Path(paths_below(str(root))["pid_file"]))


def start_haproxy(root: Path, timeout: float = 15.0) -> None:
    """Start HAProxy master-worker below georelay_root, on its rendered config; ProcessError
    when it exits or no worker runs within timeout seconds."""
    paths = paths_below(str(root))
    Path(paths["master_socket"]).unlink(missing_ok=True)  # stale: nothing answers on it
    cmd = master_command(shutil.which("haproxy") or "/usr/sbin/haproxy", paths["config"],
                         paths["master_socket"], paths["pid_file"])
    proc = pid_files.spawn(cmd, paths["log_file"])
    if pid_files.wait_for(lambda: proc.poll() is not None or haproxy_running(root), timeout):
        if proc.poll() is None or haproxy_running(root):
            return
        raise ProcessError(f"haproxy exited ({' '.join(cmd)}); see {paths['log_file']}")
    proc.kill()
    raise ProcessError(f"haproxy did not start within {timeout:g}s; see {paths['log_file']}")


__all__ = ["ProcessError", "haproxy_running", "running", "start", "start_haproxy", "stop",
           "stop_haproxy", "wait_port"]

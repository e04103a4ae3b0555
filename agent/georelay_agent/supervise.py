"""`georelay-agent supervise`: keeps `serve` running where there is no systemd (process mode).

It restarts the agent when it exits, with an exponential back-off (1 s doubling to 30 s,
reset once a run lasted a minute), forwards SIGTERM/SIGINT and stops with it, and restarts
the agent on SIGHUP. The agent gets SIGTERM if the supervisor itself dies (PR_SET_PDEATHSIG),
so no agent outlives its supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from georelay_agent.logfmt import fields

log = logging.getLogger("georelay_agent.supervise")
PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 30.0
HEALTHY_RUN_S = 60.0
STOP_TIMEOUT_S = 10.0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def supervise(config_path: str, pid_file: str | None, log_level: str) -> int:
    if pid_file:
        tmp = Path(pid_file + ".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, pid_file)
    stopping = threading.Event()
    restart = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    def on_hup(signum: int, frame: FrameType | None) -> None:
        restart.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    backoff = 1.0
    cmd = [sys.executable, "-m", "georelay_agent", "serve", "--config", config_path,
           "--log-level", log_level]
    while not stopping.is_set():
        started = time.monotonic()
        child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.info("started georelay-agent serve", extra=fields(event="child_start",
                                                              pid=child.pid))
        code = child.wait()
        if stopping.is_set():
            break
        if restart.is_set():
            restart.clear()
            backoff = 1.0
            continue
        ran = time.monotonic() - started
        if ran >= HEALTHY_RUN_S:
            backoff = 1.0
        log.error("georelay-agent serve exited; restarting", extra=fields(
            event="child_exit", pid=child.pid, exit_code=code, ran_s=round(ran, 1),
            restart_in_s=backoff))
        stopping.wait(backoff)
        backoff = min(MAX_BACKOFF_S, backoff * 2)
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    if pid_file:
        try:
            if Path(pid_file).read_text().strip() == str(os.getpid()):
                Path(pid_file).unlink()
        except OSError:
            pass
    return 0

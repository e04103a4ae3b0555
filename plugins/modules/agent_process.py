#!/usr/bin/python
"""Run georelay-agent's supervisor as a background process with a pid file (process mode)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: georelay_agent_process
short_description: Keep georelay-agent (under its supervisor) running with a pid file
description:
  - Where there is no systemd, starts C(georelay-agent supervise) detached, with its output
    appended to a log file and its pid in a pid file, and proves it by waiting until the
    agent's /live answers 200. Idempotent - a running supervisor is left alone.
options:
  state:
    description: started, restarted or stopped.
    type: str
    choices: [started, restarted, stopped]
    default: started
  command:
    description: The supervisor's command line.
    type: list
    elements: str
    required: true
  pid_file:
    description: Pid file of the supervisor.
    type: path
    required: true
  log_file:
    description: File the supervisor and agent write their log to.
    type: path
    required: true
  live_url:
    description: The agent's /live URL, polled after a start.
    type: str
    required: true
  timeout:
    description: Seconds to wait for /live after a start, and for a stop.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Start the agent
  georelay_agent_process:
    command: [/opt/georelay-agent/venv/bin/python, -m, georelay_agent, supervise,
              --config, /etc/georelay-agent/agent.json]
    pid_file: /run/georelay-agent.pid
    log_file: /var/log/georelay-agent/agent.log
    live_url: http://127.0.0.1:8405/live
"""

RETURN = r"""
pid:
  description: Pid of the supervisor.
  type: int
  returned: when running
"""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule


def running(pid_file):
    try:
        pid = int(Path(pid_file).read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if stat.split(") ")[1].startswith("Z") or b"supervise" not in cmdline:
        return None  # a zombie, or a recycled pid that is not our supervisor
    return pid


def stop(pid_file, timeout):
    pid = running(pid_file)
    if pid is None:
        Path(pid_file).unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running(pid_file) == pid:
        time.sleep(0.05)
    if running(pid_file) == pid:
        os.kill(pid, signal.SIGKILL)
    Path(pid_file).unlink(missing_ok=True)
    return True


def live(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def tail(path, size=3000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def start(module, p):
    Path(p["log_file"]).parent.mkdir(parents=True, exist_ok=True)
    Path(p["pid_file"]).parent.mkdir(parents=True, exist_ok=True)
    with open(p["log_file"], "ab") as log:
        proc = subprocess.Popen(p["command"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)
    tmp = Path(p["pid_file"] + ".tmp")
    tmp.write_text(f"{proc.pid}\n")
    os.replace(tmp, p["pid_file"])
    deadline = time.monotonic() + p["timeout"]
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            module.fail_json(msg=f"georelay-agent supervisor exited with {proc.returncode}",
                             log=tail(p["log_file"]))
        if live(p["live_url"]):
            return proc.pid
        time.sleep(0.1)
    module.fail_json(msg=f"georelay-agent did not answer {p['live_url']} within "
                     f"{p['timeout']}s", log=tail(p["log_file"]))
    return None


def main():
    module = AnsibleModule(argument_spec={
        "state": {"type": "str", "choices": ["started", "restarted", "stopped"],
                  "default": "started"},
        "command": {"type": "list", "elements": "str", "required": True},
        "pid_file": {"type": "path", "required": True},
        "log_file": {"type": "path", "required": True},
        "live_url": {"type": "str", "required": True},
        "timeout": {"type": "int", "default": 30},
    }, supports_check_mode=True)
    p = module.params
    pid = running(p["pid_file"])
    if p["state"] == "stopped":
        if pid is not None and not module.check_mode:
            stop(p["pid_file"], p["timeout"])
        module.exit_json(changed=pid is not None)
    if p["state"] == "started" and pid is not None:
        module.exit_json(changed=False, pid=pid)
    if module.check_mode:
        module.exit_json(changed=True)
    if pid is not None:
        stop(p["pid_file"], p["timeout"])
    module.exit_json(changed=True, pid=start(module, p))


if __name__ == "__main__":
    main()

#!/usr/bin/python
"""Keep georelay-agent's supervisor running as a background process with a pid file."""

from __future__ import annotations

DOCUMENTATION = r"""
module: agent_process
short_description: Keep georelay-agent (under its supervisor) running with a pid file
version_added: 0.2.0
author: georelay
description:
  - Process mode of role C(georelay.relay.georelay_agent), for hosts without systemd (the demo
    and the tests run every proxy on one machine). Starts C(georelay-agent supervise)
    detached from Ansible, its output appended to a log file and its pid in a pid file, and
    proves the start by waiting until the agent's C(/live) answers 200.
  - Idempotent. A supervisor that runs (the pid of the pid file is alive, not a zombie, and
    its command line names C(supervise)) is left alone with O(state=started). A pid file
    whose pid was recycled by another program counts as not running.
  - O(state=restarted) stops a running supervisor (SIGTERM, then SIGKILL after O(timeout))
    and starts it again; O(state=stopped) stops it and removes the pid file.
  - In check mode nothing is started or stopped; the result says what would change.
options:
  state:
    description: Whether the supervisor should run (V(started)), be started afresh
      (V(restarted)) or not run (V(stopped)).
    type: str
    choices: [started, restarted, stopped]
    default: started
  command:
    description: The supervisor's command line, e.g. the virtualenv's C(georelay-agent
      supervise). One of its arguments must contain C(supervise) (how a running supervisor
      is told from a recycled pid).
    type: list
    elements: str
    required: true
  pid_file:
    description: Pid file of the supervisor (written by this module).
    type: path
    required: true
  log_file:
    description: File the supervisor and the agent append their output to.
    type: path
    required: true
  live_url:
    description: The agent's C(/live) URL, polled after a start until it answers 200.
    type: str
    required: true
  timeout:
    description: Seconds to wait for C(/live) after a start, and for a stop before SIGKILL.
    type: int
    default: 30
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Under systemd the role runs the agent as the unit C(georelay-agent.service) instead.
seealso:
  - module: ansible.builtin.systemd_service
"""

EXAMPLES = r"""
- name: Start the agent under its supervisor
  georelay.relay.agent_process:
    command: [/opt/georelay-agent/venv/bin/georelay-agent, supervise,
              --config, /etc/georelay-agent/agent.json]
    pid_file: /run/georelay-agent.pid
    log_file: /var/log/georelay-agent/agent.log
    live_url: http://127.0.0.1:8405/live

- name: Restart it (a new config or a new wheel)
  georelay.relay.agent_process:
    state: restarted
    command: [/opt/georelay-agent/venv/bin/georelay-agent, supervise]
    pid_file: /run/georelay-agent.pid
    log_file: /var/log/georelay-agent/agent.log
    live_url: http://127.0.0.1:8405/live
"""

RETURN = r"""
pid:
  description: Pid of the running supervisor.
  type: int
  returned: when it runs (state started or restarted, not in check mode for a new start)
  sample: 41327
log:
  description: The end of the log file, when a start failed.
  type: str
  returned: failure
"""

import urllib.error
import urllib.request
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.georelay.relay.plugins.module_utils.processes import (
    running,
    spawn,
    stop,
    tail,
    wait_for,
)

MARK = "supervise"  # an argument of the supervisor's command line


def live(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def start(module: AnsibleModule, p: dict[str, Any]) -> int:
    proc = spawn(p["command"], p["log_file"], pid_file=p["pid_file"])

    def up() -> str | None:
        if proc.poll() is not None:
            return "exited"
        return "live" if live(p["live_url"]) else None

    outcome = wait_for(up, p["timeout"])
    if outcome == "live":
        return proc.pid
    if outcome == "exited":
        msg = f"georelay-agent's supervisor exited with {proc.returncode}"
    else:
        stop(p["pid_file"], 5, cmdline_has=MARK)
        msg = f"georelay-agent did not answer {p['live_url']} within {p['timeout']} s"
    module.fail_json(msg=f"{msg}; {p['log_file']} says:\n{tail(p['log_file'])}",
                     log=tail(p["log_file"]))
    raise AssertionError("unreachable")


def main() -> None:
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
    if not any(MARK in arg for arg in p["command"]):
        module.fail_json(msg=f"command: {p['command']} does not run the supervisor. Fix: "
                         "give the virtualenv's `georelay-agent supervise ...`")
    pid = running(p["pid_file"], MARK)
    if p["state"] == "stopped":
        if pid is not None and not module.check_mode:
            stop(p["pid_file"], p["timeout"], cmdline_has=MARK)
        module.exit_json(changed=pid is not None)
    if p["state"] == "started" and pid is not None:
        module.exit_json(changed=False, pid=pid)
    if module.check_mode:
        module.exit_json(changed=True, msg="a normal run would " +
                         ("restart the agent" if pid is not None else "start the agent"))
    if pid is not None:
        stop(p["pid_file"], p["timeout"], cmdline_has=MARK)
    module.exit_json(changed=True, pid=start(module, p))


if __name__ == "__main__":
    main()

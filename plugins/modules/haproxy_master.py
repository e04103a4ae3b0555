#!/usr/bin/python
"""Start, reload and prove an HAProxy master-worker through its master socket."""

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_master
short_description: Start, reload and prove an HAProxy master-worker process
version_added: 0.2.0
author: georelay
description:
  - Used by role C(georelay.relay.haproxy) (its start in process mode, the handler
    C(Reload HAProxy hitlessly) and the final proof), with the C(paths) of the
    C(georelay_proxy) fact that C(georelay.relay.fleet) sets.
  - In process mode (O(manager=process)), starts C(haproxy -W -S master.sock) detached, its
    output appended to a log file, and reloads it hitlessly through the master socket's
    C(reload) command.
  - In systemd mode, reloads with C(systemctl reload) instead (Debian's unit runs
    C(haproxy -c) on the config, then signals the master).
  - Either way, a reload only counts once the master socket shows a new worker and no
    failed reload; otherwise the task fails with the reason (the unit's journal lines in
    systemd mode, the log file in process mode) and the old workers keep serving.
  - Before a reload, the server states are saved (C(show servers state) on the admin socket
    into the state file, so gateways keep their health across the reload), and each TCP
    listener of the config is bound once (SO_REUSEPORT, as HAProxy binds, never listened
    on). An address another program holds fails the task before the reload, since HAProxy's
    new master would retry that bind for 2 s with the old workers' listeners paused.
  - With O(state=started), a config newer than the running workers (a reload of an earlier
    run failed, and Ansible does not run that handler again) is reloaded.
  - In check mode nothing is started or reloaded; a master that is not running yet (a host
    being set up) is reported as would start.
options:
  state:
    description: V(started) (start when not running), V(reloaded) (start or reload),
      V(stopped) (soft stop, old connections finish).
    choices: [started, reloaded, stopped]
    default: started
    type: str
  manager:
    description: V(process) (this module starts the master) or V(systemd) (Debian's
      C(haproxy.service) runs it).
    choices: [process, systemd]
    default: process
    type: str
  service:
    description: The systemd unit (systemd mode).
    default: haproxy
    type: str
  binary:
    description: The haproxy executable.
    default: /usr/sbin/haproxy
    type: path
  paths:
    description:
      - The proxy's files, as the C(georelay_proxy.paths) fact holds them. Read are
        C(config) (haproxy.cfg), C(master_socket), C(pid_file), C(log_file) (the process-mode
        master's output, its traffic log; under systemd that is the unit's journal), and,
        when present, C(admin_socket) and C(state_file) (server states saved before each
        reload). Other keys are ignored.
    type: dict
    required: true
  timeout:
    description: Seconds to wait for a start or reload to be proven.
    default: 30
    type: int
attributes:
  check_mode:
    support: full
    details: Nothing is started, reloaded or stopped; the result says what would be.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux hosts with HAProxy 2.x in master-worker mode (Debian 12 is tested).
notes:
  - The socket client and the C(show proc) parser are the collection's module_utils
    C(haproxy_runtime); the pid-file process code is C(processes).
seealso:
  - module: georelay.relay.fleet
  - module: ansible.builtin.systemd_service
"""

EXAMPLES = r"""
- name: Start HAProxy as a master-worker process (process mode)
  georelay.relay.haproxy_master:
    state: started
    manager: process
    paths: "{{ georelay_proxy.paths }}"

- name: Reload HAProxy hitlessly (a handler)
  georelay.relay.haproxy_master:
    state: reloaded
    manager: "{{ georelay_proxy.service_manager }}"
    binary: /usr/sbin/haproxy
    paths: "{{ georelay_proxy.paths }}"
    timeout: 30

- name: A reload by hand, ad hoc
  # ansible PROXY -b -m georelay.relay.haproxy_master -a '{"state": "reloaded",
  #   "manager": "systemd", "paths": {"config": "/etc/haproxy/haproxy.cfg", ...}}'
  georelay.relay.haproxy_master:
    state: reloaded
    manager: systemd
    paths:
      config: /etc/haproxy/haproxy.cfg
      master_socket: /run/haproxy-master.sock
      pid_file: /run/haproxy.pid
      log_file: /var/log/haproxy/haproxy.log
      admin_socket: /run/haproxy/admin.sock
      state_file: /var/lib/haproxy/server-state
"""

RETURN = r"""
workers:
  description: Pids of the current workers after the operation.
  type: list
  elements: int
  returned: always
  sample: [4242]
reloads:
  description: Reload count of the master.
  type: int
  returned: always
  sample: 3
master:
  description: Pid of the master.
  type: int
  returned: when a master runs
  sample: 4241
failed_reloads:
  description: Failed reloads the master counts (since the last that succeeded).
  type: int
  returned: when a reload failed
log:
  description: The master's last output (its log file, or the unit's journal).
  type: str
  returned: when a start or reload failed
"""

import errno
import os
import re
import signal
import socket
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.georelay.relay.plugins.module_utils.haproxy_runtime import (
    ProcInfo,
    RuntimeAPIError,
    master_command,
    send,
    show_proc,
)
from ansible_collections.georelay.relay.plugins.module_utils.processes import (
    spawn,
    stop_pid,
    tail,
    wait_for,
)

BIND_RE = re.compile(r"^\s*bind\s+(\S+)", re.M)
REQUIRED_PATHS = ("config", "master_socket", "pid_file", "log_file")


def config_is_newer(p: dict, state: ProcInfo) -> bool:
    """True when haproxy.cfg changed after the current workers started: a reload did not
    take it (it failed in an earlier run, whose handler Ansible does not run again)."""
    age = state.youngest_worker_uptime_s
    if age is None:
        return False
    try:
        mtime = os.stat(p["config"]).st_mtime
    except OSError:
        return False
    return mtime > time.time() - age + 2  # uptime has 1 s steps: 2 s of slack


def journal_tail(module: AnsibleModule, service: str, since: float | None = None,
                 lines: int = 20) -> str:
    """The unit's last journal lines (since an epoch time when given)."""
    cmd = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "-u", service,
           "-n", str(lines)]
    if since is not None:
        cmd.append(f"--since=@{int(since) - 1}")
    rc, out, err = module.run_command(cmd)
    return out.rstrip() if rc == 0 and out.strip() else f"(no journal lines: {err.strip()})"


def reasons(text: str) -> str:
    """The lines of HAProxy's output that say why it refused (its ALERT lines first)."""
    lines = text.splitlines()
    picked = [ln for ln in lines if "[ALERT]" in ln] or \
        [ln for ln in lines if re.search(r"\[(WARNING|NOTICE)\]|error|fail", ln, re.I)]
    return "\n".join(picked[-8:])


def fail_reload(module: AnsibleModule, p: dict, msg: str, since: float | None,
                **extra: object) -> None:
    """Fail with what the master said: its unit's journal (systemd) or its log file."""
    if p["manager"] == "systemd":
        log, where = journal_tail(module, p["service"], since), f"journalctl -u {p['service']}"
    else:
        log, where = tail(p["log_file"]), p["log_file"]
    why = reasons(log)
    module.fail_json(msg=msg + (f"\n{where} says:\n{why}" if why else f"; see {where}"),
                     log=log, **extra)


def start(module: AnsibleModule, p: dict) -> ProcInfo:
    """Start a master-worker haproxy detached from Ansible; return its show proc."""
    for path in (p["master_socket"], p["pid_file"]):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if p["state_file"] and not os.path.exists(p["state_file"]):
        os.makedirs(os.path.dirname(p["state_file"]), exist_ok=True)
        open(p["state_file"], "a").close()
    if os.path.exists(p["master_socket"]):
        os.unlink(p["master_socket"])  # stale: nothing answered on it
    cmd = master_command(p["binary"], p["config"], p["master_socket"], p["pid_file"])
    proc = spawn(cmd, p["log_file"])  # haproxy -p writes its own pid file

    def up() -> ProcInfo | str | None:
        if proc.poll() is not None:
            return "exited"
        state = show_proc(p["master_socket"])
        return state if state and state.workers else None

    state = wait_for(up, p["timeout"])
    if not isinstance(state, ProcInfo):
        if state is None:
            proc.kill()
        module.fail_json(msg=f"haproxy did not start ({' '.join(cmd)})",
                         log=tail(p["log_file"]))
    return state


def tcp_listeners(config: str) -> list[tuple[str, int]]:
    """(address, port) of each TCP listener in a haproxy.cfg (its bind lines)."""
    try:
        with open(config) as fh:
            text = fh.read()
    except OSError:
        return []
    found = []
    for spec in BIND_RE.findall(text):
        for one in spec.split(","):
            host, sep, port = one.rpartition(":")
            if sep and port.isdigit() and "@" not in host and not host.startswith("/"):
                found.append((host.strip("[]") or "0.0.0.0", int(port)))
    return found


def cannot_listen(address: str, port: int) -> str | None:
    """Why HAProxy could not listen on address:port now, or None. It binds with SO_REUSEADDR
    and SO_REUSEPORT, so its own running listeners do not count; another program's do."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((address, port))  # never listen(): nothing is accepted here
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            return exc.strerror
    return None


def check_listeners(module: AnsibleModule, p: dict) -> None:
    """Fail before a reload whose new listener the host would refuse. (HAProxy 2.6's new
    master retries such a bind for 2 s with the old workers' listeners paused: new
    connections would be refused that long, for a reload that then fails anyway.)"""
    for address, port in tcp_listeners(p["config"]):
        reason = cannot_listen(address, port)
        if reason is None:
            continue
        rc, out, _err = module.run_command(["ss", "-Hltnp", f"sport = :{port}"])
        holder = f" (held by: {' '.join(out.split())})" if rc == 0 and out.strip() else ""
        module.fail_json(msg=f"haproxy cannot listen on {address}:{port}: {reason}{holder}; "
                         "not reloading, the previous workers keep serving")


def save_server_state(p: dict) -> None:
    """Write show servers state to the state file (atomically) for the next workers."""
    if not (p["admin_socket"] and p["state_file"]):
        return
    try:
        out = send(p["admin_socket"], "show servers state")
    except RuntimeAPIError:
        return  # no answer: the next workers start their servers from the defaults
    if not out.startswith("1\n"):
        return  # not the version-1 state format: start from defaults
    tmp = p["state_file"] + ".tmp"
    try:
        with open(tmp, "w") as fh:
            fh.write(out)
        os.replace(tmp, p["state_file"])
    except OSError:
        pass  # the reload starts servers from their defaults; HAProxy says why it cannot read


def reload(module: AnsibleModule, p: dict, before: ProcInfo) -> ProcInfo:
    check_listeners(module, p)
    save_server_state(p)
    since = time.time()
    if p["manager"] == "systemd":
        # Debian's ExecReload: `haproxy -c` on the config, then SIGUSR2 to the master. A
        # config that fails the check is never signalled: the old workers keep serving.
        rc, _out, err = module.run_command(["systemctl", "reload", p["service"]])
        if rc != 0:
            # The unit's check runs quietly (-q): ask haproxy -c again for its reasons.
            crc, cout, cerr = module.run_command([p["binary"], "-c", "-f", p["config"]])
            msg = (f"systemctl reload {p['service']} failed (exit {rc}); the previous "
                   "workers keep serving")
            if crc != 0:
                msg += f"\nhaproxy -c -f {p['config']} says:\n{reasons(cout + cerr)}"
            fail_reload(module, p, msg, since, rc=rc, stderr=err.strip())
    else:
        try:
            send(p["master_socket"], "reload")
        except RuntimeAPIError as exc:
            module.fail_json(msg=f"the master socket did not take the reload: {exc}")

    def settled() -> ProcInfo | None:
        state = show_proc(p["master_socket"])
        if state and state.reloads > before.reloads and \
                (state.workers or state.failed_reloads > before.failed_reloads):
            return state
        return None

    state = wait_for(settled, p["timeout"])
    if state is None:
        fail_reload(module, p, f"haproxy did not finish reloading within {p['timeout']}s "
                    "(no new workers on the master socket)", since)
    if state.failed_reloads > before.failed_reloads:
        fail_reload(module, p, f"haproxy rejected the new configuration (failed reloads: "
                    f"{state.failed_reloads}); the previous workers keep serving", since,
                    failed_reloads=state.failed_reloads)
    return state


def params(module: AnsibleModule) -> dict:
    """The module's parameters with the paths it reads lifted to the top (p["config"], ...)."""
    paths = module.params["paths"]
    missing = [key for key in REQUIRED_PATHS if not paths.get(key)]
    if missing:
        module.fail_json(msg=f"paths is missing {', '.join(missing)}: pass the proxy's paths "
                         "as the fact holds them, paths: \"{{ georelay_proxy.paths }}\"")
    p = {key: module.params[key] for key in ("state", "manager", "service", "binary",
                                             "timeout")}
    for key in (*REQUIRED_PATHS, "admin_socket", "state_file"):
        p[key] = paths.get(key) or None
    return p


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="started", choices=["started", "reloaded",
                                                                "stopped"]),
            manager=dict(type="str", default="process", choices=["process", "systemd"]),
            service=dict(type="str", default="haproxy"),
            binary=dict(type="path", default="/usr/sbin/haproxy"),
            paths=dict(type="dict", required=True),
            timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    p = params(module)
    state = show_proc(p["master_socket"])
    if p["state"] == "stopped":
        if state is not None and not module.check_mode:
            stop_pid(state.master_pid, p["timeout"], signal.SIGUSR1)  # soft stop
        module.exit_json(changed=state is not None, workers=[], reloads=0)
    changed = False
    if state is None:
        if module.check_mode:  # e.g. a host being set up: its haproxy is not installed yet
            module.exit_json(changed=True, workers=[], reloads=0,
                             msg="haproxy is not running yet: a normal run would start it")
        if p["manager"] == "systemd":
            fail_reload(module, p, f"haproxy (systemd unit {p['service']}) is not answering "
                        f"on {p['master_socket']}", None)
        changed = True
        state = start(module, p)
    elif p["state"] == "reloaded" or config_is_newer(p, state):
        why = ("" if p["state"] == "reloaded" else
               f"{p['config']} is newer than the running workers (an earlier reload did not "
               "take it): ")
        if module.check_mode:
            module.exit_json(changed=True, workers=state.worker_pids, reloads=state.reloads,
                             msg=why + "a normal run would reload")
        state = reload(module, p, state)
        module.exit_json(changed=True, workers=state.worker_pids, reloads=state.reloads,
                         master=state.master_pid, msg=why + "reloaded")
    module.exit_json(changed=changed, workers=state.worker_pids, reloads=state.reloads,
                     master=state.master_pid)


if __name__ == "__main__":
    main()

#!/usr/bin/python
"""Start, reload and prove an HAProxy master-worker through its master socket."""

from __future__ import annotations

DOCUMENTATION = r"""
module: georelay_haproxy_master
short_description: Start, reload and prove an HAProxy master-worker process
description:
  - In process mode, starts C(haproxy -W -S master.sock) detached, its output appended to a
    log file, and reloads it hitlessly through the master socket's C(reload) command.
  - In systemd mode, reloads with C(systemctl reload) instead (Debian's unit runs
    C(haproxy -c) on the config, then signals the master).
  - Either way, a reload only counts once the master socket shows a new worker and no
    failed reload; otherwise the task fails with the reason (the unit's journal lines in
    systemd mode, the log file in process mode) and the old workers keep serving.
  - Before a reload, each TCP listener of the config is bound once (SO_REUSEPORT, as
    HAProxy binds, never listened on): an address another program holds fails the task
    before the reload, since HAProxy's new master would retry that bind for 2 s with the
    old workers' listeners paused.
  - With state=started, a config newer than the running workers (a reload of an earlier
    run failed, and Ansible does not run that handler again) is reloaded.
  - In check mode nothing is started or reloaded; a master that is not running yet (a host
    being set up) is reported as would start.
options:
  state:
    description: started (start when not running), reloaded (start or reload), stopped.
    choices: [started, reloaded, stopped]
    default: started
    type: str
  manager:
    description: process or systemd.
    choices: [process, systemd]
    default: process
    type: str
  service:
    description: systemd unit (systemd mode).
    default: haproxy
    type: str
  binary:
    description: haproxy executable.
    default: /usr/sbin/haproxy
    type: path
  config:
    description: haproxy.cfg path.
    required: true
    type: path
  master_socket:
    description: master CLI socket path.
    required: true
    type: path
  pid_file:
    description: pid file of the master.
    required: true
    type: path
  log_file:
    description: where the process-mode master's output (traffic log) goes; in systemd
      mode its output is in the unit's journal instead.
    required: true
    type: path
  admin_socket:
    description: admin stats socket, used to save server states before a reload.
    type: path
  state_file:
    description: server-state-file of haproxy.cfg, written before each reload so that
      gateways keep their health and resolved address across it.
    type: path
  timeout:
    description: seconds to wait for a start or reload to be proven.
    default: 30
    type: int
"""

RETURN = r"""
workers:
  description: pids of current workers after the operation.
  type: list
  returned: always
reloads:
  description: reload count of the master.
  type: int
  returned: always
"""

import errno
import os
import re
import signal
import socket
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

MASTER_RE = re.compile(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", re.M)
BIND_RE = re.compile(r"^\s*bind\s+(\S+)", re.M)


def master_cli(path, command, timeout=3.0):
    """Send one command to the master socket and return its whole answer (None: no answer)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)  # the CLI answers and closes once input ends
            chunks = []
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None


UPTIME_RE = re.compile(r"^(\d+)d(\d+)h(\d+)m(\d+)s$")


def seconds(uptime):
    """HAProxy's show proc uptime (0d00h11m41s) in seconds, None if unreadable."""
    m = UPTIME_RE.match(uptime)
    if not m:
        return None
    d, h, mi, s = (int(x) for x in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def show_proc(path):
    """(master pid, reloads, failed reloads, current worker pids, seconds since the youngest
    current worker started) or None when not running."""
    out = master_cli(path, "show proc")
    if not out:
        return None
    m = MASTER_RE.search(out)
    if not m:
        return None
    workers = []
    ages = []
    section = None
    for line in out.splitlines():
        if line.startswith("# workers"):
            section = "workers"
        elif line.startswith("#"):
            section = None if not line.startswith("#<PID>") else section
        elif section == "workers" and line.strip():
            fields = line.split()
            workers.append(int(fields[0]))
            age = seconds(fields[3]) if len(fields) > 3 else None
            if age is not None:
                ages.append(age)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), workers,
            min(ages) if ages else None)


def config_is_newer(p, state):
    """True when haproxy.cfg changed after the current workers started: a reload did not
    take it (it failed in an earlier run, whose handler Ansible does not run again)."""
    if state[4] is None:
        return False
    try:
        mtime = os.stat(p["config"]).st_mtime
    except OSError:
        return False
    return mtime > time.time() - state[4] + 2  # uptime has 1 s steps: 2 s of slack


def log_tail(path, lines=25):
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 8192))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def journal_tail(module, service, since=None, lines=20):
    """The unit's last journal lines (since an epoch time when given)."""
    cmd = ["journalctl", "--no-pager", "--quiet", "-o", "short-iso", "-u", service,
           "-n", str(lines)]
    if since is not None:
        cmd.append(f"--since=@{int(since) - 1}")
    rc, out, err = module.run_command(cmd)
    return out.rstrip() if rc == 0 and out.strip() else f"(no journal lines: {err.strip()})"


def reasons(text):
    """The lines of HAProxy's output that say why it refused (its ALERT lines first)."""
    lines = text.splitlines()
    picked = [ln for ln in lines if "[ALERT]" in ln] or \
        [ln for ln in lines if re.search(r"\[(WARNING|NOTICE)\]|error|fail", ln, re.I)]
    return "\n".join(picked[-8:])


def output_of(module, p, since=None):
    """What the master said: its unit's journal (systemd) or its log file (process)."""
    if p["manager"] == "systemd":
        return journal_tail(module, p["service"], since)
    return log_tail(p["log_file"])


def fail_reload(module, p, msg, since, **extra):
    log = output_of(module, p, since)
    why = reasons(log)
    where = (f"journalctl -u {p['service']}" if p["manager"] == "systemd"
             else p["log_file"])
    module.fail_json(msg=msg + (f"\n{where} says:\n{why}" if why else f"; see {where}"),
                     log=log, **extra)


def wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    return None


def start(module, p):
    """Start a master-worker haproxy detached from Ansible; return its show proc."""
    for path in (p["master_socket"], p["pid_file"], p["log_file"]):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    if p["state_file"] and not os.path.exists(p["state_file"]):
        open(p["state_file"], "a").close()
    if os.path.exists(p["master_socket"]):
        os.unlink(p["master_socket"])  # stale: nothing answered on it
    cmd = [p["binary"], "-W", "-S", p["master_socket"] + ",mode,600", "-f", p["config"],
           "-p", p["pid_file"]]
    with open(p["log_file"], "ab") as log, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True)

    def up():
        if proc.poll() is not None:
            return "exited"
        state = show_proc(p["master_socket"])
        return state if state and state[3] else None

    state = wait_for(up, p["timeout"])
    if state is None or state == "exited":
        if state is None:
            proc.kill()
        module.fail_json(msg=f"haproxy did not start ({' '.join(cmd)})",
                         log=log_tail(p["log_file"]))
    return state


def tcp_listeners(config):
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


def cannot_listen(address, port):
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


def check_listeners(module, p):
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


def save_server_state(p):
    """Write show servers state to the state file (atomically) for the next workers."""
    if not (p["admin_socket"] and p["state_file"]):
        return
    out = master_cli(p["admin_socket"], "show servers state")
    if not out or not out.startswith("1\n"):
        return  # no answer, or not the version-1 state format: start from defaults
    tmp = p["state_file"] + ".tmp"
    try:
        with open(tmp, "w") as fh:
            fh.write(out)
        os.replace(tmp, p["state_file"])
    except OSError:
        pass  # the reload starts servers from their defaults; HAProxy says why it cannot read


def reload(module, p, before):
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
    elif master_cli(p["master_socket"], "reload") is None:
        module.fail_json(msg=f"the master socket {p['master_socket']} did not take the reload")

    def settled():
        state = show_proc(p["master_socket"])
        if state and state[1] > before[1] and (state[3] or state[2] > before[2]):
            return state
        return None

    state = wait_for(settled, p["timeout"])
    if state is None:
        fail_reload(module, p, f"haproxy did not finish reloading within {p['timeout']}s "
                    "(no new workers on the master socket)", since)
    if state[2] > before[2]:
        fail_reload(module, p, f"haproxy rejected the new configuration (failed reloads: "
                    f"{state[2]}); the previous workers keep serving", since,
                    failed_reloads=state[2])
    return state


def stop(p, state):
    try:
        os.kill(state[0], signal.SIGUSR1)  # soft stop: finish what is in flight
    except ProcessLookupError:
        return
    wait_for(lambda: show_proc(p["master_socket"]) is None, p["timeout"])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type="str", default="started", choices=["started", "reloaded",
                                                                "stopped"]),
            manager=dict(type="str", default="process", choices=["process", "systemd"]),
            service=dict(type="str", default="haproxy"),
            binary=dict(type="path", default="/usr/sbin/haproxy"),
            config=dict(type="path", required=True),
            master_socket=dict(type="path", required=True),
            pid_file=dict(type="path", required=True),
            log_file=dict(type="path", required=True),
            admin_socket=dict(type="path"),
            state_file=dict(type="path"),
            timeout=dict(type="int", default=30),
        ),
        supports_check_mode=True,
    )
    p = module.params
    state = show_proc(p["master_socket"])
    changed = False
    if p["state"] == "stopped":
        if state is not None:
            changed = True
            if not module.check_mode:
                stop(p, state)
        module.exit_json(changed=changed, workers=[], reloads=0)
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
        changed = True
        why = ("" if p["state"] == "reloaded" else
               f"{p['config']} is newer than the running workers (an earlier reload did not "
               "take it): ")
        if module.check_mode:
            module.exit_json(changed=True, workers=state[3], reloads=state[1],
                             msg=why + "a normal run would reload")
        state = reload(module, p, state)
        module.exit_json(changed=True, workers=state[3], reloads=state[1], master=state[0],
                         msg=why + "reloaded")
    module.exit_json(changed=changed, workers=state[3], reloads=state[1], master=state[0])


if __name__ == "__main__":
    main()

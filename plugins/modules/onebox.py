#!/usr/bin/python
"""Read or set one service's one-box percentage on one proxy, with its counters."""

from __future__ import annotations

DOCUMENTATION = r"""
module: onebox
short_description: Read or set a service's one-box (canary) percentage on one proxy
version_added: 0.3.0
author: georelay
description:
  - Runs on the proxy. Reads the share of users the proxy sends to a service's one-box
    (README "One-box canary") and the counters a rollout is judged on, and, with
    O(percent), sets that share at runtime, with no reload.
  - A change rewrites the map file first (so a reload keeps the value), then changes the
    running value with C(set map) on the admin socket, and reads it back; a value HAProxy
    does not read back fails the task.
  - With O(hold), the map file marks the entry as held by that owner, and playbook runs of
    role C(georelay.relay.haproxy) keep its value; O(percent) without O(hold) releases the
    hold, and the next playbook run renders the inventory's C(onebox_percent) again.
  - Idempotent. When the running value, the file's value and the hold already are what was
    asked, nothing is written and the result is not changed.
  - Playbook C(georelay.relay.onebox) runs it on every proxy of an inventory, with the paths
    of the C(georelay_proxy) fact that C(georelay.relay.fleet) sets.
options:
  admin_socket:
    description: HAProxy's admin socket (Runtime API), C(georelay_proxy.paths.admin_socket).
    type: path
    required: true
  map_file:
    description: The one-box percentages map file, C(georelay_proxy.onebox.map_file). It is
      also the map's name in the running HAProxy.
    type: path
    required: true
  service:
    description: The service's public hostname (C(hostname) in C(georelay_services)).
    type: str
    required: true
  percent:
    description: The share of users (0-100) to send to the one-box. Absent, the module only
      reads.
    type: int
  hold:
    description:
      - The owner (e.g. a rollout id) whose value playbook runs keep, 1-128 letters, digits
        or C(_.:@-). Only with O(percent).
      - Absent with O(percent), the entry's hold is released.
    type: str
  timeout:
    description: Seconds to wait for each answer of HAProxy.
    type: int
    default: 5
attributes:
  check_mode:
    support: full
    details: Nothing is written; the result says what would change, and RV(onebox) shows the
      values in force.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: HAProxy 2.x with the one-box configured by role C(georelay.relay.haproxy).
notes:
  - Counters (requests, 5xx) are those of the HAProxy worker answering; a reload starts new
    workers whose counters start at 0. RV(process) tells one worker from the next.
  - The socket client and the map file code are the collection's module_utils
    C(haproxy_runtime) (C(set_onebox_percent), C(onebox_state)).
seealso:
  - module: georelay.relay.fleet
"""

EXAMPLES = r"""
- name: Read the one-box of fast.example.com
  georelay.relay.onebox:
    admin_socket: "{{ georelay_proxy.paths.admin_socket }}"
    map_file: "{{ georelay_proxy.onebox.map_file }}"
    service: fast.example.com
  register: georelay_onebox

- name: Send 25% of users to the one-box, held by rollout r1 over playbook runs
  georelay.relay.onebox:
    admin_socket: "{{ georelay_proxy.paths.admin_socket }}"
    map_file: "{{ georelay_proxy.onebox.map_file }}"
    service: fast.example.com
    percent: 25
    hold: r1

- name: Everyone back on regular, the hold released (playbook runs render onebox_percent)
  georelay.relay.onebox:
    admin_socket: /run/haproxy/admin.sock
    map_file: /etc/haproxy/onebox-percent.map
    service: fast.example.com
    percent: 0
"""

RETURN = r"""
onebox:
  description: The service's one-box on this proxy now (in check mode, before any change).
  type: dict
  returned: success
  contains:
    hostname:
      description: The service.
      type: str
    percent:
      description: The running percentage.
      type: int
    onebox_usable_servers:
      description: Usable servers of the one-box backend; 0 means its users are sent to
        regular; null means this proxy has no one-box backend (switched off in its region).
      type: int
    onebox_requests:
      description: Requests of the one-box backend (since the worker started).
      type: int
    onebox_5xx:
      description: Its 5xx responses.
      type: int
    regular_requests:
      description: Requests of the regular backend, including the fallback requests.
      type: int
    regular_5xx:
      description: Its 5xx responses.
      type: int
    fallback_requests:
      description: One-box users sent to regular because the one-box had no usable server.
      type: int
    falling_back:
      description: The one-box exists and has no usable server.
      type: bool
    held_by:
      description: The owner holding the entry, or null.
      type: str
  sample: {hostname: fast.example.com, percent: 25, onebox_usable_servers: 1, onebox_requests: 120,
           onebox_5xx: 0, regular_requests: 380, regular_5xx: 1, fallback_requests: 0,
           falling_back: false, held_by: r1}
before:
  description: The running percentage before the task.
  type: int
  returned: success
  sample: 10
process:
  description: The HAProxy worker that answered (C(show info)), so a caller can tell a reload
    (new workers, counters from 0). C(started) is its start time in epoch seconds.
  type: dict
  returned: success
  sample: {pid: 4242, uptime_sec: 3600, started: 1790000000}
msg:
  description: What was done or, in check mode, what would be.
  type: str
  returned: always
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.georelay.relay.plugins.module_utils.haproxy_runtime import (
    RuntimeAPIError,
    send,
)
from ansible_collections.georelay.relay.plugins.module_utils.onebox_map import (
    get_onebox_percent,
    onebox_state,
    read_map_file,
    set_onebox_percent,
)

HOLDER = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")  # the rule of set_onebox_percent's hold


def show_info(admin_socket: str, timeout: float) -> dict:
    """{pid, uptime_sec, started} of the worker answering on the admin socket."""
    answer = send(admin_socket, "show info", connect_timeout=timeout, read_timeout=timeout,
                  refused_is_error=True)
    info = {}
    for line in answer.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    if not info.get("Pid", "").isdigit():
        raise RuntimeAPIError(f"{admin_socket}: 'show info' answered {answer[:80]!r}")
    pid = int(info["Pid"])
    uptime = int(info["Uptime_sec"]) if info.get("Uptime_sec", "").isdigit() else None
    return {"pid": pid, "uptime_sec": uptime, "started": started_at(pid, uptime)}


def started_at(pid: int, uptime: int | None) -> int | None:
    """The worker's start in epoch seconds: exact from /proc when that pid is an haproxy of
    this host's process namespace, else now - uptime (1 s steps)."""
    try:
        with open(f"/proc/{pid}/comm") as fh:
            comm = fh.read().strip()
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open("/proc/stat") as fh:
            btime = next(int(ln.split()[1]) for ln in fh if ln.startswith("btime "))
        if comm == "haproxy":
            ticks = int(stat.rpartition(")")[2].split()[19])  # field 22: starttime
            return btime + round(ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return None if uptime is None else int(time.time()) - uptime


def check_params(module: AnsibleModule) -> dict:
    p = dict(module.params)
    percent, hold = p["percent"], p["hold"]
    if percent is not None and not 0 <= percent <= 100:
        module.fail_json(msg=f"percent: {percent} is out of range: give the share of users "
                         "for the one-box as a whole number from 0 to 100, or leave percent "
                         "out to only read")
    if hold is not None and percent is None:
        module.fail_json(msg="hold: needs percent (a hold keeps a value set with percent); "
                         "to release a hold, set percent without hold")
    if hold is not None and not HOLDER.match(hold):
        module.fail_json(msg=f"hold: {hold!r} is not 1-128 letters, digits or _.:@-; name the "
                         "owner like a rollout id, e.g. hold: rollout-42")
    if not os.path.isfile(p["map_file"]):
        module.fail_json(msg=f"map_file: {p['map_file']} does not exist: this proxy has no "
                         "one-box (give the service an onebox_domain in georelay_services and "
                         "deploy with georelay.relay.proxies), or pass "
                         "georelay_proxy.onebox.map_file")
    if not os.path.exists(p["admin_socket"]):
        module.fail_json(msg=f"admin_socket: {p['admin_socket']}: no such socket: is HAProxy "
                         "running? Pass georelay_proxy.paths.admin_socket")
    return p


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            admin_socket=dict(type="path", required=True),
            map_file=dict(type="path", required=True),
            service=dict(type="str", required=True),
            percent=dict(type="int"),
            hold=dict(type="str"),
            timeout=dict(type="int", default=5),
        ),
        supports_check_mode=True,
    )
    p = check_params(module)
    sock, map_file, service, percent, hold = (p["admin_socket"], p["map_file"], p["service"],
                                              p["percent"], p["hold"])
    entries, holds = read_map_file(map_file)
    if service not in entries:
        module.fail_json(msg=f"service: {service} has no one-box on this proxy (no entry in "
                         f"{map_file}); services with a one-box here: "
                         f"{', '.join(entries) or 'none'}")
    try:
        before = get_onebox_percent(sock, map_file, service, p["timeout"])
        changed = percent is not None and (before, entries[service], holds.get(service)) != \
            (percent, percent, hold)
        held = f", held by {hold}" if hold else ", hold released"
        if not changed:
            msg = f"{service}: {before}% of users on the one-box" + (
                f", held by {holds[service]}" if service in holds else "")
        elif module.check_mode:
            msg = (f"{service}: would set {before}% -> {percent}%{held} (check mode: nothing "
                   "changed)")
        else:
            set_onebox_percent(sock, map_file, service, percent, hold=hold,
                               timeout=p["timeout"])
            msg = f"{service}: set {before}% -> {percent}%{held}, read back"
        state = onebox_state(sock, map_file, service, p["timeout"])
        process = show_info(sock, p["timeout"])
    except RuntimeAPIError as exc:
        module.fail_json(msg=f"admin_socket: {exc}")
    except ValueError as exc:  # the map file lost the entry meanwhile
        module.fail_json(msg=str(exc))
    _, holds = read_map_file(map_file)
    onebox = {
        "hostname": state.hostname, "percent": state.percent,
        "onebox_usable_servers": state.onebox_usable_servers,
        "onebox_requests": state.onebox_requests, "onebox_5xx": state.onebox_5xx,
        "regular_requests": state.regular_requests, "regular_5xx": state.regular_5xx,
        "fallback_requests": state.fallback_requests, "falling_back": state.falling_back,
        "held_by": holds.get(service),
    }
    module.exit_json(changed=changed, onebox=onebox, before=before, process=process, msg=msg)


if __name__ == "__main__":
    main()

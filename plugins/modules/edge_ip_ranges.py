#!/usr/bin/python
"""Load a new AWS ip-ranges map into one proxy: its file and its running HAProxy, atomically."""

from __future__ import annotations

DOCUMENTATION = r"""
module: edge_ip_ranges
short_description: Load the AWS ip-ranges map of regional redirects into one proxy
version_added: 0.4.0
author: georelay
description:
  - Runs on the proxy. O(content) is the map text made on the control node (by
    C(georelay-edge ip-ranges sync) or the lookup C(georelay.relay.ip_ranges_map)); O(src) a
    copy of it already on the host. Give one of the two.
  - Refuses a map whose syncToken is older than the running file's unless O(force).
  - Replaces the running map with C(prepare map) / C(add map @version) in chunks below the
    CLI's 16 KB buffer / C(commit map) (lookups answer the old map until the commit), then
    writes O(map_file) atomically, which a reload reads. A refused load changes nothing.
  - The same syncToken and the same entries is no change. Supports check mode (nothing is
    written or loaded; the result says what would be).
extends_documentation_fragment: georelay.relay.runtime_map
options:
  map_file:
    description: The ip-ranges map, C(georelay_proxy.edge.ip_map); also its name in HAProxy.
    type: path
    required: true
  content:
    description: The new map text.
    type: str
  src:
    description: A file on the host holding the new map text.
    type: path
  force:
    description: Load a map older (by syncToken) than the one in force.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Load the ip-ranges map made from an ip-ranges.json on the control node
  georelay.relay.edge_ip_ranges:
    socket: "{{ georelay_proxy.paths.admin_socket }}"
    map_file: "{{ georelay_proxy.edge.ip_map }}"
    content: "{{ lookup('georelay.relay.ip_ranges_map', '/srv/ip-ranges.json') }}"
"""

RETURN = r"""
sync_token_before:
  description: The syncToken of the map file before the task (null when it had none).
  type: str
  returned: always
sync_token_after:
  description: The syncToken in force after the task.
  type: str
  returned: always
entries:
  description: Prefixes in the new map.
  type: int
  returned: always
chunks:
  description: C(add map) payloads sent (0 when nothing was loaded).
  type: int
  returned: always
seconds:
  description: Time the runtime load took.
  type: float
  returned: always
loaded_into_running:
  description: Whether the running HAProxy got the new map (no socket, file only).
  type: bool
  returned: always
"""

import os
import re
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.georelay.relay.plugins.module_utils.haproxy_runtime import (
    RuntimeAPIError,
    replace_map,
    write_file_atomically,
)

TOKEN = re.compile(r"^# syncToken: (\d+)$", re.M)


def _token(text: str) -> int | None:
    m = TOKEN.search(text[:1024])
    return int(m.group(1)) if m else None


def _entries(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def main() -> None:
    module = AnsibleModule(
        argument_spec={"socket": {"type": "path", "required": True},
                       "map_file": {"type": "path", "required": True},
                       "content": {"type": "str"},
                       "src": {"type": "path"},
                       "force": {"type": "bool", "default": False}},
        mutually_exclusive=[("content", "src")], required_one_of=[("content", "src")],
        supports_check_mode=True)
    p = module.params
    new = p["content"]
    if new is None:
        try:
            with open(p["src"], encoding="utf-8") as f:
                new = f.read()
        except OSError as exc:
            module.fail_json(msg=f"src: {p['src']}: {exc.strerror}")
    new = new.rstrip("\n") + "\n"  # a lookup's text comes without its last newline
    old = ""
    if os.path.isfile(p["map_file"]):
        with open(p["map_file"], encoding="utf-8") as f:
            old = f.read()
    new_token, old_token = _token(new), _token(old)
    lines = _entries(new)
    if new_token is None or not lines:
        module.fail_json(msg="content/src: not a georelay ip-ranges map (no syncToken header or "
                         "no entry): make it with georelay-edge ip-ranges sync or the lookup "
                         "georelay.relay.ip_ranges_map")
    result = {"sync_token_before": None if old_token is None else str(old_token),
              "sync_token_after": str(new_token), "entries": len(lines), "chunks": 0,
              "seconds": 0.0, "loaded_into_running": False, "changed": False}
    if old_token is not None and new_token < old_token and not p["force"]:
        module.fail_json(msg=f"map_file: syncToken {new_token} is older than the {old_token} in "
                         "force: refused; fetch a newer ip-ranges.json or pass force (--force)",
                         **result)
    if new_token == old_token and lines == _entries(old):
        module.exit_json(msg=f"ip-ranges map {new_token} already in force", **result)
    result["changed"] = True
    if module.check_mode:
        module.exit_json(msg=f"would load ip-ranges map {old_token} -> {new_token}", **result)
    try:
        if os.path.exists(p["socket"]):
            started = time.monotonic()
            result["chunks"] = replace_map(p["socket"], p["map_file"], lines)
            result["seconds"] = round(time.monotonic() - started, 3)
            result["loaded_into_running"] = True
    except RuntimeAPIError as exc:
        module.fail_json(msg=f"socket: {exc}: the running map and the file are unchanged",
                         **result)
    try:  # after the running map: a refused load leaves the file as it was
        write_file_atomically(p["map_file"], new)
    except OSError as exc:
        module.fail_json(msg=f"map_file: {p['map_file']}: {exc.strerror}: the running HAProxy "
                         "has the new map, a reload would go back to the old file", **result)
    module.exit_json(msg=f"ip-ranges map {old_token} -> {new_token}: {len(lines)} prefixes",
                     **result)


if __name__ == "__main__":
    main()

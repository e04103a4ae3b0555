#!/usr/bin/python
"""Read or set one service's edge cache version on one proxy (map file + running map)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: edge_version
short_description: Read or set a service's edge cache version on one proxy
version_added: 0.4.0
author: georelay
description:
  - Runs on the proxy. HAProxy keys a service's edge cache on its version
    (C(str(<hostname>),map(<version_map>,1))); a new version makes every cached response
    of the service unreachable at once, with no reload.
  - Without O(version), reads the running value and the file's value.
  - With O(version), rewrites the map file first (atomically, every other line kept, so a
    reload keeps the value), then C(set map) (C(add map) only for a missing entry), then
    reads it back; a value HAProxy does not read back fails the task.
  - Idempotent. When the running and the file's value already are O(version), nothing is
    written and the result is not changed. Supports check mode.
  - The fleet's new value is computed once by C(georelay-edge version bump) over every
    proxy (numeric maximum + 1, or C(--to)); this module only reads and sets.
extends_documentation_fragment: georelay.relay.runtime_map
options:
  map_file:
    description: The version map file, C(georelay_proxy.edge.version_map); also the map's
      name in the running HAProxy.
    type: path
    required: true
  service:
    description: The service's public hostname.
    type: str
    required: true
  version:
    description: The version to set (1-64 of letters, digits, C(._-)); absent, only read.
    type: str
"""

EXAMPLES = r"""
- name: Bump fast.example.com's edge cache to version 7
  georelay.relay.edge_version:
    socket: "{{ georelay_proxy.paths.admin_socket }}"
    map_file: "{{ georelay_proxy.edge.version_map }}"
    service: fast.example.com
    version: "7"
"""

RETURN = r"""
before:
  description: The running version before the task ("1" when the map had no entry).
  type: str
  returned: always
after:
  description: The running version after the task (in check mode, what it would be).
  type: str
  returned: always
file_before:
  description: The map file's version before the task (null when it had no line).
  type: str
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.georelay.relay.plugins.module_utils.edge_version import (
    DEFAULT_VERSION,
    VERSION_RE,
    get_version,
    read_versions,
    set_version,
)
from ansible_collections.georelay.relay.plugins.module_utils.haproxy_runtime import (
    RuntimeAPIError,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "socket": {"type": "path", "required": True},
            "map_file": {"type": "path", "required": True},
            "service": {"type": "str", "required": True},
            "version": {"type": "str"},
        },
        supports_check_mode=True,
    )
    p = module.params
    version = p["version"]
    if version is not None and not VERSION_RE.match(version):
        module.fail_json(msg=f"version: {version!r} is not 1-64 letters, digits or ._- "
                         "starting with a letter or digit; give e.g. version: '7'")
    if not os.path.isfile(p["map_file"]):
        module.fail_json(msg=f"map_file: {p['map_file']} does not exist: deploy the proxy "
                         "with georelay.relay.proxies first, or pass "
                         "georelay_proxy.edge.version_map")
    if not os.path.exists(p["socket"]):
        module.fail_json(msg=f"socket: {p['socket']}: no such socket: is HAProxy running? "
                         "Pass georelay_proxy.paths.admin_socket")
    try:
        running = get_version(p["socket"], p["map_file"], p["service"])
        before = running or DEFAULT_VERSION
        file_before = read_versions(p["map_file"]).get(p["service"])
        result = {"before": before, "after": before, "file_before": file_before,
                  "changed": False, "service": p["service"]}
        if version is None:
            module.exit_json(msg=f"{p['service']}: edge version {before}", **result)
        if running == version and file_before == version:
            module.exit_json(msg=f"{p['service']}: edge version {version} already", **result)
        result.update(changed=True, after=version)
        if not module.check_mode:
            result["after"] = set_version(p["socket"], p["map_file"], p["service"], version)
        module.exit_json(msg=f"{p['service']}: edge version {before} -> {version}", **result)
    except (RuntimeAPIError, OSError) as exc:
        module.fail_json(msg=f"{p['service']}: {exc}")


if __name__ == "__main__":
    main()

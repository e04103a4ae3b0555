#!/usr/bin/python
"""Documentation of the action georelay.relay.fleet (plugins/action/fleet.py runs it)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: fleet
short_description: Validate the georelay inventory and compute this proxy's georelay_proxy fact
version_added: 0.2.0
author: georelay
description:
  - Runs on the control node (an action, nothing is sent to the host). Builds the fleet model
    from the variables of every inventory host that has C(aws_region), so a problem anywhere
    in the fleet stops the play before any host is touched, listing every problem with
    its fix.
  - Checks the public TLS bundle (C(georelay_tls_pem), a chain and key that cover every
    public hostname) and the backend CA file (C(georelay_backend_ca)) where they are, on the
    control node.
  - Sets the fact C(georelay_proxy) of the host, the one input of role
    C(georelay.relay.haproxy)'s C(haproxy.cfg) and of role C(georelay.relay.georelay_agent)'s
    C(agent.json). It holds its paths below C(georelay_root), listeners, one backend per
    service with the home gateway and the backup regions' gateways, the agent's address
    and the C(/healthz) path.
  - An unknown C(georelay_*) or C(haproxy_*) variable in the inventory is a problem (with the
    known names to use). Variables a play gave a host (registered results, facts) are not
    the inventory's and are not checked.
  - Needs the Python package C(georelay) (the fleet model, C(georelay_model)) in the Python
    that runs Ansible, C(pip install georelay) (see the collection's requirements.txt).
options: {}
attributes:
  action:
    support: full
    details: The whole module is an action on the control node.
  check_mode:
    support: full
    details: It only reads the inventory and control-node files, in every mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The inventory contract (every variable, its scope and default) is
    C(georelay_model.contract); README.md, "Inventory contract", lists it.
seealso:
  - module: georelay.relay.haproxy_master
"""

EXAMPLES = r"""
- name: Validate the inventory and compute this proxy's settings
  georelay.relay.fleet:

- name: Render a config of your own from the same fact
  ansible.builtin.template:
    src: my-haproxy-extra.cfg.j2
    dest: "{{ georelay_proxy.paths.conf_dir }}/extra.cfg"
    mode: "0644"
"""

RETURN = r"""
ansible_facts:
  description: The fact georelay_proxy of this host.
  returned: success
  type: dict
  contains:
    georelay_proxy:
      description: >-
        name, region, bind_address, bind_host, self_check_host, https_port, http_port,
        service_manager, root, debian_layout, log_target, paths (conf_dir, config, certs_dir,
        tls_pem, backend_ca, run_dir, admin_socket, user_socket, master_socket, pid_file,
        chroot, state_file, log_dir, log_file), resolving, healthz_path, backend_ca,
        backend_ca_source, tls_pem_source, backends (name, hostname, domain, server, resolve,
        health_path, backups, mark_down_on_errors), bridging_keeps_in_dns, agent (address,
        port, server).
      type: dict
      returned: success
problems:
  description: Every problem of the inventory, each naming the host or group, the variable
    and the fix.
  type: list
  elements: str
  returned: failure
  sample: ["e1: haproxy_https_port: 70000 is out of range. Fix: use a TCP port from 1 to 65535."]
"""

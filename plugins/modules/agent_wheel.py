#!/usr/bin/python
"""Documentation of the action georelay.relay.agent_wheel (plugins/action/agent_wheel.py)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: agent_wheel
short_description: Build georelay-agent's wheel on the control node
version_added: 0.2.0
author: georelay
description:
  - Builds the pure-Python wheel of georelay-agent (PEP 427) from the collection's C(agent/)
    source on the control node, with no build backend and no network - the package's
    modules and a dist-info directory (C(METADATA) from C(agent/pyproject.toml)'s
    C([project]) table, C(WHEEL), C(entry_points.txt), C(top_level.txt), C(RECORD) with
    sha256 hashes).
  - Reproducible - fixed timestamps, file modes and order, so the same source gives the same
    bytes and a copy of the wheel to a host changes only when the agent did. The file is
    written atomically, and left alone (changed=false) when it holds those bytes already.
  - Role C(georelay.relay.georelay_agent) copies the wheel to each host and installs it with
    C(ansible.builtin.pip) into the agent's virtualenv.
  - Runs on the control node only (an action plugin), also in check mode, since the wheel is
    what the role's copy previews against.
options:
  src:
    description:
      - Control-node directory holding the agent's C(pyproject.toml) and its package
        (C(georelay_agent/*.py); a symlinked module is read through the link).
      - Default is C(agent/) of this collection.
    type: path
  dest:
    description: Control-node directory the wheel is written to (created when missing).
    type: path
    default: ~/.cache/georelay/wheels
  requirements:
    description:
      - Control-node requirements file of the agent's dependencies, hash-pinned for
        C(pip install --require-hashes) (C(NAME==VERSION --hash=sha256:...)). It is checked
        here - every line pinned with its hashes, and the pins satisfy the wheel's
        C(Requires-Dist) - so a wrong file fails before any host is touched.
      - Default is C(requirements-host.txt) in O(src).
    type: path
  wheelhouse:
    description:
      - Control-node directory of the dependencies' files for hosts that cannot reach
        PyPI. When given, it must hold a file of every pin with one of its allowed hashes.
    type: path
attributes:
  action:
    support: full
  check_mode:
    support: full
    details: The wheel is built in check mode too; it is a control-node artifact.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The C([project]) fields written are name, version, description, requires-python,
    license, dependencies, scripts, classifiers, urls and keywords; any other field, or
    C(dynamic), fails the task naming it.
seealso:
  - module: ansible.builtin.pip
"""

EXAMPLES = r"""
- name: Build the agent's wheel once per play
  georelay.relay.agent_wheel:
  register: agent_wheel
  run_once: true

- name: Copy it to the host
  ansible.builtin.copy:
    src: "{{ agent_wheel.path }}"
    dest: "/opt/georelay-agent/wheels/{{ agent_wheel.filename }}"
    mode: "0644"
"""

RETURN = r"""
path:
  description: Control-node path of the wheel.
  type: str
  returned: success
  sample: /root/.cache/georelay/wheels/georelay_agent-0.2.0-py3-none-any.whl
filename:
  description: The wheel's file name.
  type: str
  returned: success
  sample: georelay_agent-0.2.0-py3-none-any.whl
sha256:
  description: sha256 of the wheel (hex).
  type: str
  returned: success
name:
  description: Distribution name.
  type: str
  returned: success
  sample: georelay-agent
version:
  description: Distribution version.
  type: str
  returned: success
  sample: 0.2.0
src:
  description: The source directory the wheel was built from.
  type: str
  returned: success
requires_python:
  description: The distribution's Requires-Python.
  type: str
  returned: success
  sample: ">=3.11"
dependencies:
  description: The distribution's requirements (Requires-Dist).
  type: list
  elements: str
  returned: success
  sample: [prometheus-client>=0.17]
requirements:
  description: The requirements file that was checked.
  type: str
  returned: success
pins:
  description: The pinned requirements of that file, C(NAME==VERSION) (the role's check
    mode compares the virtualenv's packages with them).
  type: list
  elements: str
  returned: success
  sample: [prometheus-client==0.26.0]
"""

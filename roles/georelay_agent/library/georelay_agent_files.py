#!/usr/bin/python
"""Install the agent's Python modules into its virtualenv in one step (idempotent)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: georelay_agent_files
short_description: Make a directory hold exactly the given text files
description:
  - Writes each given file whose content differs (atomically), removes files matching
    I(pattern) that are not given (modules of an older version) and their stale byte code.
    One task instead of one per file; changed only when a file was written or removed.
options:
  dest:
    description: The package directory (created when missing).
    type: path
    required: true
  files:
    description: File name to content.
    type: dict
    required: true
  pattern:
    description: Glob of the files this module owns in I(dest).
    type: str
    default: "*.py"
  mode:
    description: Mode of the files.
    type: str
    default: "0644"
"""

EXAMPLES = r"""
- name: Install the modules
  georelay_agent_files:
    dest: /opt/georelay-agent/venv/lib/python3.11/site-packages/georelay_agent
    files:
      __init__.py: "__version__ = '0.1.0'\n"
"""

RETURN = r"""
written:
  description: Files written.
  type: list
  elements: str
  returned: always
removed:
  description: Files removed.
  type: list
  elements: str
  returned: always
"""

import os
import shutil
import tempfile
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule


def main():
    module = AnsibleModule(argument_spec={
        "dest": {"type": "path", "required": True},
        "files": {"type": "dict", "required": True},
        "pattern": {"type": "str", "default": "*.py"},
        "mode": {"type": "str", "default": "0644"},
    }, supports_check_mode=True)
    p = module.params
    dest = Path(p["dest"])
    mode = int(p["mode"], 8)
    written, removed = [], []
    for name, content in sorted(p["files"].items()):
        if "/" in name or name.startswith("."):
            module.fail_json(msg=f"{name!r}: plain file names only")
        target = dest / name
        data = content.encode()
        try:
            same = target.read_bytes() == data and (target.stat().st_mode & 0o7777) == mode
        except OSError:
            same = False
        if same:
            continue
        written.append(name)
        if module.check_mode:
            continue
        dest.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    if dest.is_dir():
        for path in sorted(dest.glob(p["pattern"])):
            if path.name not in p["files"]:
                removed.append(path.name)
                if not module.check_mode:
                    path.unlink()
        if (written or removed) and not module.check_mode:
            shutil.rmtree(dest / "__pycache__", ignore_errors=True)
    module.exit_json(changed=bool(written or removed), written=written, removed=removed)


if __name__ == "__main__":
    main()

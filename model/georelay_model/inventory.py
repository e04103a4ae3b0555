"""Read an Ansible inventory the way Ansible does: through ``ansible-inventory --list``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from georelay_model.playbook import PlaybookError, program


class InventoryReadError(RuntimeError):
    """ansible-inventory could not read the inventory."""


def _ansible_inventory() -> str:
    try:
        return program("ansible-inventory")
    except PlaybookError as exc:
        raise InventoryReadError(str(exc)) from exc


def load_inventory(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Return every host's merged variables (``_meta.hostvars``) of the inventory at path."""
    if not Path(path).exists():
        raise InventoryReadError(f"inventory {path} does not exist: give -i a file or "
                                 "directory such as inventories/demo")
    proc = subprocess.run([_ansible_inventory(), "-i", str(path), "--list"],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False"})
    if proc.returncode != 0:
        raise InventoryReadError(f"ansible-inventory -i {path} failed:\n{proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    return hostvars

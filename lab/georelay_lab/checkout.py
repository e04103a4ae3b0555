"""Where the georelay checkout is, for the lab and the tools (dev-only code that runs from a
checkout: the demo's inventories, the playbooks, the roles' templates, the package list).

One rule, in this order:

1. ``$GEORELAY_CHECKOUT``, when set (a tool's ``--repo`` sets it too);
2. the working directory or one of its parents, when it is a checkout;
3. the checkout this package is installed from (``pip install -e ./lab``).

A checkout is a directory holding ``galaxy.yml`` and ``lab/debian-packages.txt``.
"""

from __future__ import annotations

import os
from pathlib import Path

import georelay_lab

ENV = "GEORELAY_CHECKOUT"
MARKERS = ("galaxy.yml", "lab/debian-packages.txt")


class CheckoutError(RuntimeError):
    """No georelay checkout found (the message says how to name one)."""


def is_checkout(path: Path) -> bool:
    return all((path / marker).is_file() for marker in MARKERS)


def _installed_from() -> Path | None:
    """The checkout holding this package's source (an editable install), if any."""
    for parent in Path(georelay_lab.__file__).resolve().parents:
        if is_checkout(parent):
            return parent
    return None


def checkout() -> Path:
    """The georelay checkout to work on (see the module's rule); CheckoutError if none."""
    named = os.environ.get(ENV)
    if named:
        path = Path(named).resolve()
        if not is_checkout(path):
            raise CheckoutError(f"{ENV}={named} is not a georelay checkout (no "
                                f"{' or '.join(MARKERS)}). Fix: point it at a git clone of "
                                "georelay, or unset it")
        return path
    cwd = Path.cwd().resolve()
    for path in (cwd, *cwd.parents):
        if is_checkout(path):
            return path
    found = _installed_from()
    if found is None:
        raise CheckoutError(f"no georelay checkout here ({cwd}): run from a git clone of "
                            f"georelay, or set {ENV} (or --repo) to one")
    return found


def in_checkout(relative: str) -> Path:
    """A path inside the checkout, e.g. ``in_checkout("playbooks/proxies.yml")``."""
    return checkout() / relative

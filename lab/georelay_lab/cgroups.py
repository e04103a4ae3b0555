"""The host lab's cgroups and mounts: finding, killing and removing what a container left.

Each lab host runs in cgroups of its own (``/sys/fs/cgroup/{systemd,unified}/georelay-lab-
<lab>/<host>``) and on mounts below its state directory; ``HostLab.down`` (hosts.py) clears
them with these, also after a run that died.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from georelay_lab.host_image import _run


def comm(pid: int) -> str:
    """The process's command name, "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def walk(cg: Path) -> Iterator[Path]:
    """cg and every cgroup below it, deepest first."""
    if not cg.is_dir():
        return
    for child in sorted((p for p in cg.iterdir() if p.is_dir()), reverse=True):
        yield from walk(child)
    yield cg


def pids(cgroups: Sequence[Path], named: str | None = None) -> list[int]:
    """Every process in or below the cgroups (only those whose comm is named, if given)."""
    found: set[int] = set()
    for top in cgroups:
        for cg in walk(top):
            with contextlib.suppress(OSError):
                found.update(int(x) for x in (cg / "cgroup.procs").read_text().split())
    return sorted(p for p in found if named is None or comm(p) == named)


def kill_tree(top: Path) -> None:
    """SIGKILL every process below top, then remove its cgroups."""
    for _ in range(50):
        left = pids([top])
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    for cg in walk(top):
        with contextlib.suppress(OSError):
            cg.rmdir()


def umount_below(path: Path) -> None:
    """Unmount every mount at or below path (deepest first)."""
    prefix = str(path.resolve()) if path.exists() else str(path)
    mounts = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            target = line.split()[1].encode().decode("unicode_escape")
            if target == prefix or target.startswith(prefix + "/"):
                mounts.append(target)
    for target in sorted(mounts, key=len, reverse=True):
        _run(["umount", "-l", target], check=False)

"""A rollout's durable state and its lease, on the control node.

Where: ``$GEORELAY_ROLLOUT_STATE_DIR``, else ``$XDG_STATE_HOME/georelay/rollout``, else
``~/.local/state/georelay/rollout``; one directory per fleet owner
(georelay_dns_owner), and in it per service:

- ``<service>.json``: the rollout (steps, current step, whether it was applied and read
  back, the bake so far, the counters' baseline, the history). Written atomically (a
  temporary file, fsync, rename, fsync of the directory): a crash (kill -9) leaves the last
  complete write, never half of one.
- ``<service>.lock``: the lease. The controller driving a rollout holds an exclusive
  ``flock`` on it for as long as it runs, and writes who it is into it. A second controller
  (start, resume) is refused while it is held; the kernel releases it when the process ends,
  however it ends, so ``resume`` after a kill -9 needs no waiting for an expiry.
- ``<service>.request``: what pause, abort or promote asked of the running controller,
  which acts on it within a second and removes it.

Why the control node and not Route53: the controller reaches every proxy through Ansible,
from the machine that holds the inventory and the SSH access, so that is where it runs and
where its state is safe (docs/ROLLOUT.md, "Where the state is kept").
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from georelay_rollout.rules import Sample, Thresholds

VERSION = 1
STATE_ENV = "GEORELAY_ROLLOUT_STATE_DIR"
RELEASE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
ACTIVE = ("running", "paused")
HISTORY_MAX = 500
REQUESTS = ("pause", "abort", "promote")


class StateError(Exception):
    """The state cannot be read or written; the message names the file and the fix."""


class LeaseHeld(StateError):
    """Another controller drives this service's rollout."""

    def __init__(self, service: str, holder: dict[str, Any]) -> None:
        self.holder = holder
        super().__init__(f"another controller drives the rollout of {service}: "
                         f"{describe_holder(holder)}")


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "a controller (it has not said who it is yet)"
    return (f"pid {holder.get('pid')} on {holder.get('by')} since {holder.get('since')} "
            f"({holder.get('command', '?')})")


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def default_dir(owner: str) -> Path:
    base = os.environ.get(STATE_ENV) or ""
    if base:
        root = Path(base)
    else:
        xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        root = Path(xdg) / "georelay" / "rollout"
    return root / owner


def check_release(release: str) -> str:
    if not RELEASE.match(release):
        raise StateError(f"--release {release!r}: 1-64 letters, digits and _.:- starting with a "
                         "letter or digit (e.g. v42 or 2026-12-02.1)")
    return release


@dataclass
class Rollout:
    service: str
    release: str
    steps: list[int]
    bake_s: float
    interval_s: float
    regions: list[str] | None  # None: every region with a one-box
    thresholds: Thresholds
    hook: str | None
    inventory: str
    started_by: str
    started_at: str
    status: str = "running"  # running, paused, aborted, completed
    step: int = 0  # index into steps
    applied: bool = False  # steps[step] set and read back on every targeted proxy
    baked_s: float = 0.0
    bad_evaluations: int = 0
    baseline: dict[str, Sample] = field(default_factory=dict)
    reason: str | None = None  # why it was paused, aborted or completed
    last: dict[str, Any] | None = None  # the last evaluation (rules.Verdict.to_dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def percent(self) -> int:
        return self.steps[self.step]

    @property
    def holder(self) -> str:
        """The owner marking the percentage in each proxy's map file (playbook runs keep it)."""
        return f"rollout@{self.release}"

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def event(self, what: str, **data: Any) -> None:
        self.history.append({"at": now_utc(), "event": what, **data})
        del self.history[:-HISTORY_MAX]

    def to_dict(self) -> dict[str, Any]:
        return {"v": VERSION, "service": self.service, "release": self.release,
                "steps": self.steps, "bake_s": self.bake_s, "interval_s": self.interval_s,
                "regions": self.regions, "thresholds": self.thresholds.to_dict(),
                "hook": self.hook, "inventory": self.inventory, "started_by": self.started_by,
                "started_at": self.started_at, "status": self.status, "step": self.step,
                "percent": self.percent, "applied": self.applied, "baked_s": self.baked_s,
                "bad_evaluations": self.bad_evaluations,
                "baseline": {h: s.to_list() for h, s in sorted(self.baseline.items())},
                "reason": self.reason, "last": self.last, "history": self.history}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Rollout:
        return cls(service=doc["service"], release=doc["release"], steps=list(doc["steps"]),
                   bake_s=float(doc["bake_s"]), interval_s=float(doc["interval_s"]),
                   regions=doc.get("regions"), thresholds=Thresholds.from_dict(doc["thresholds"]),
                   hook=doc.get("hook"), inventory=doc["inventory"],
                   started_by=doc["started_by"], started_at=doc["started_at"],
                   status=doc["status"], step=int(doc["step"]), applied=bool(doc["applied"]),
                   baked_s=float(doc["baked_s"]), bad_evaluations=int(doc["bad_evaluations"]),
                   baseline={h: Sample.from_list(v) for h, v in doc["baseline"].items()},
                   reason=doc.get("reason"), last=doc.get("last"),
                   history=list(doc.get("history", [])))


class Store:
    """The state directory of one fleet owner."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def path(self, service: str, suffix: str) -> Path:
        return self.dir / f"{service}.{suffix}"

    def load(self, service: str) -> Rollout | None:
        p = self.path(service, "json")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise StateError(f"{p}: cannot be read ({e}). Fix: repair or move it away; the "
                             "proxies keep the percentage they have") from e
        if doc.get("v") != VERSION:
            raise StateError(f"{p}: version {doc.get('v')!r}, this georelay-rollout reads "
                             f"{VERSION}. Fix: use the georelay-rollout that wrote it")
        try:
            return Rollout.from_dict(doc)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise StateError(f"{p}: not a rollout state ({e!r}). Fix: repair or move it "
                             "away") from e

    def save(self, rollout: Rollout) -> None:
        write_atomic(self.path(rollout.service, "json"),
                     json.dumps(rollout.to_dict(), indent=1, sort_keys=True) + "\n")

    def services(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.name[:-5] for p in self.dir.glob("*.json"))

    # -- requests to the running controller --------------------------------------------

    def request(self, service: str, action: str, reason: str) -> None:
        write_atomic(self.path(service, "request"), json.dumps(
            {"action": action, "reason": reason, "by": who(), "at": now_utc()}) + "\n")

    def take_request(self, service: str) -> dict[str, Any] | None:
        p = self.path(service, "request")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            doc = None
        p.unlink(missing_ok=True)
        if not isinstance(doc, dict) or doc.get("action") not in REQUESTS:
            return None
        return doc

    def clear_request(self, service: str) -> None:
        self.path(service, "request").unlink(missing_ok=True)

    # -- the lease -----------------------------------------------------------------------

    def holder(self, service: str) -> dict[str, Any] | None:
        """Who holds the lease now (None: nobody)."""
        p = self.path(service, "lock")
        if not p.exists():
            return None
        with open(p, "a+", encoding="utf-8") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fh)
            fcntl.flock(fh, fcntl.LOCK_UN)
            return None

    @contextlib.contextmanager
    def lease(self, service: str, command: str) -> Iterator[None]:
        """Hold the service's lease for the block, or raise LeaseHeld."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fh = open(self.path(service, "lock"), "a+", encoding="utf-8")  # noqa: SIM115
        try:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LeaseHeld(service, _read_holder(fh)) from None
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps({"pid": os.getpid(), "by": who(), "since": now_utc(),
                                 "command": command}) + "\n")
            fh.flush()
            yield
        finally:
            fh.close()  # releases the flock


def _read_holder(fh: IO[str]) -> dict[str, Any]:
    fh.seek(0)
    try:
        doc = json.loads(fh.read() or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)

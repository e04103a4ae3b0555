"""The drain spool: one JSON file per drain (reason, who, when, expiry), written by root.

While any unexpired drain exists, /healthz answers 503 "draining: <reason>", so Route53
stops handing this proxy out; HAProxy is not touched and existing traffic continues.
The agent only reads the spool; ``georelay-agent drain/undrain`` (root) write it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

MAX_REASON = 200
MAX_FILES = 100  # a spool this full is a mistake; reading stays bounded anyway
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


EX_USAGE, EX_NOPERM = 64, 77  # sysexits


class DrainError(Exception):
    """A drain or undrain that cannot be done; ``exit_code`` is the CLI's exit status."""

    def __init__(self, message: str, exit_code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Drain:
    id: str
    reason: str
    who: str
    created: float
    expires: float | None

    def active(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def parse_duration(text: str) -> int:
    """Seconds of '90s', '15m', '2h' or '1d'."""
    m = _DURATION.match(text.strip())
    if not m or int(m.group(1)) == 0:
        raise DrainError(f"--expires {text!r}: give a duration such as 30m, 2h or 1d")
    return int(m.group(1)) * _UNITS[m.group(2)]


def check_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise DrainError("--reason is required: say why this proxy is drained")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise DrainError(f"--reason must be printable and at most {MAX_REASON} characters")
    return reason


def who() -> str:
    user = os.environ.get("SUDO_USER") or getpass.getuser()
    return f"{user}@{os.uname().nodename}"


def _require_root(action: str, spool: Path) -> None:
    """Root writes the spool. Where it belongs to the caller (a lab or demo proxy run without
    root, georelay_service_manager: process), that caller may too."""
    if os.geteuid() == 0:
        return
    existing = next((p for p in (spool, *spool.parents) if p.exists()), Path("/"))
    if not os.access(existing, os.W_OK):
        raise DrainError(f"{action} needs root: the drain spool {spool} is owned by root",
                         EX_NOPERM)


def _check_id(drain_id: str | None) -> None:
    if drain_id is not None and not _ID.match(drain_id):
        raise DrainError(f"--id {drain_id!r}: lowercase letters, digits, '.', '_' or '-'")


def _new(reason: str, expires_in: int | None, drain_id: str | None, now: float) -> Drain:
    return Drain(id=drain_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" +
                 secrets.token_hex(3), reason=check_reason(reason), who=who(), created=now,
                 expires=None if expires_in is None else now + expires_in)


def _write(spool: Path, drain: Drain) -> None:
    spool.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = spool / f".{drain.id}.tmp"
    tmp.write_text(json.dumps(drain.to_json(), sort_keys=True) + "\n")
    tmp.chmod(0o644)
    os.replace(tmp, spool / f"{drain.id}.json")


def add(spool: Path, reason: str, expires_in: int | None, drain_id: str | None = None,
        now: float | None = None) -> Drain:
    _require_root("drain", spool)
    _check_id(drain_id)
    drain = _new(reason, expires_in, drain_id, time.time() if now is None else now)
    _write(spool, drain)
    return drain


def ensure(spool: Path, reason: str, expires_in: int | None, drain_id: str | None = None,
           now: float | None = None, dry_run: bool = False) -> tuple[Drain, bool]:
    """The drain ``drain_id`` with this reason and duration, and whether it had to be written.

    An active drain of that id with the same reason and the same requested duration is kept
    as it is (its expiry is not pushed back), so repeating a drain changes nothing; another
    reason or duration replaces it. Without an id every call adds a new drain.
    """
    _require_root("drain", spool)
    _check_id(drain_id)
    now = time.time() if now is None else now
    wanted = _new(reason, expires_in, drain_id, now)
    if drain_id is not None:
        found, _ = read(spool)
        for d in found:
            same_duration = (d.expires is None) if expires_in is None else \
                d.expires is not None and round(d.expires - d.created) == expires_in
            if d.id == drain_id and d.active(now) and d.reason == wanted.reason and \
                    same_duration:
                return d, False
    if not dry_run:
        _write(spool, wanted)
    return wanted, True


def remove(spool: Path, drain_id: str | None = None, *, missing_ok: bool = False,
           dry_run: bool = False) -> list[str]:
    """Remove one drain (or all, and the expired ones): the ids removed (or, with dry_run,
    that would be). A missing ``drain_id`` is an error unless ``missing_ok``."""
    _require_root("undrain", spool)
    removed = []
    for path in sorted(spool.glob("*.json")):
        if drain_id is None or path.stem == drain_id:
            if not dry_run:
                path.unlink(missing_ok=True)
            removed.append(path.stem)
    if drain_id is not None and not removed and not missing_ok:
        raise DrainError(f"no drain {drain_id!r} in {spool} (georelay-agent drains lists "
                         "them; --missing-ok makes this no error)", 1)
    return removed


def read(spool: Path) -> tuple[list[Drain], list[str]]:
    """Every drain in the spool (active or not) and the problems met reading it.

    An unreadable drain file still drains (reason "unreadable drain file"): a drain that
    was meant must never be ignored because its file is damaged.
    """
    drains: list[Drain] = []
    problems: list[str] = []
    try:
        paths = sorted(spool.glob("*.json"))[:MAX_FILES]
    except OSError as exc:
        return [], [f"drain spool {spool}: {exc.strerror or exc}"]
    for path in paths:
        try:
            data = json.loads(path.read_text()[:4096])
            drains.append(Drain(id=str(data["id"]), reason=str(data["reason"])[:MAX_REASON],
                                who=str(data.get("who", "?")), created=float(data["created"]),
                                expires=None if data.get("expires") is None
                                else float(data["expires"])))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"drain file {path}: {exc}")
            drains.append(Drain(id=path.stem, reason=f"unreadable drain file {path.name}",
                                who="?", created=0.0, expires=None))
    return drains, problems


def active(drains: list[Drain], now: float) -> list[Drain]:
    return sorted((d for d in drains if d.active(now)), key=lambda d: d.created)

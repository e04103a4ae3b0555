"""The external programs georelay's demo, tests and bench run, and the Debian packages they
come from: one list, ``lab/debian-packages.txt``.

``make system`` installs every package of that list; this module reads the same file so
that code looking for a program (``path("dnsmasq")``) names the package to install when it
is missing, and refuses a program the list does not declare. ``python -m
georelay_lab.programs check`` runs every program's check command (the fresh-machine stage,
ci/fresh-machine/, does after ``make demo``); ``packages`` prints the package names.
"""

from __future__ import annotations

import argparse
import functools
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from georelay_lab.checkout import CheckoutError, in_checkout


def _list_path() -> Path:
    try:
        return in_checkout("lab/debian-packages.txt")
    except CheckoutError:
        return Path("lab/debian-packages.txt")  # entries() says it is missing


LIST = _list_path()
# Where Debian installs programs; sbin is often missing from a user's PATH.
SYSTEM_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


class ProgramError(RuntimeError):
    """A program is not declared in the list, or its package is not installed."""


@dataclass(frozen=True)
class Entry:
    """One line of the list: a package, the program it provides (or none), its check."""

    package: str
    program: str | None
    check: tuple[str, ...]
    line: int


def parse(text: str) -> list[Entry]:
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = shlex.split(raw, comments=True)
        if not words:
            continue
        package, program, *check = [*words, "-"] if len(words) == 1 else words
        if program != "-" and not check:
            raise ValueError(f"{LIST.name}:{number}: {program} has no check command")
        entries.append(Entry(package, None if program == "-" else program, tuple(check),
                             number))
    return entries


@functools.cache
def entries() -> tuple[Entry, ...]:
    try:
        return tuple(parse(LIST.read_text()))
    except FileNotFoundError:
        raise ProgramError(f"{LIST} is missing: georelay_lab runs from a git checkout "
                           "(pip install -e ./lab; or set GEORELAY_CHECKOUT)") from None


def packages() -> list[str]:
    """Every package of the list, once each, in the list's order."""
    return list(dict.fromkeys(e.package for e in entries()))


def declared() -> dict[str, Entry]:
    """program name -> its entry."""
    return {e.program: e for e in entries() if e.program}


def find(name: str) -> str | None:
    """Where program ``name`` is installed (PATH, then Debian's program directories)."""
    found = shutil.which(name)
    if found:
        return found
    return next((f"{d}/{name}" for d in SYSTEM_DIRS if os.access(f"{d}/{name}", os.X_OK)),
                None)


def entry(name: str) -> Entry:
    """The list's entry for program ``name``; ProgramError when the list does not declare it."""
    found = declared().get(name)
    if found is None:
        raise ProgramError(f"{name} is not declared in {LIST}: add a line "
                           f"'<debian-package> {name} <check command>' so `make system` "
                           "installs it and the fresh-machine stage checks it")
    return found


def path(name: str) -> str:
    """The executable of declared program ``name``; ProgramError naming its package when it
    is not installed."""
    declared_as = entry(name)
    found = find(name)
    if found is None:
        raise ProgramError(f"{name} is not installed (Debian package {declared_as.package}; "
                           "`make system` installs every package georelay needs)")
    return found


def missing() -> list[Entry]:
    """Declared programs that are not installed."""
    return [e for e in declared().values() if find(e.program or "") is None]


def is_system_program(executable: str) -> bool:
    """Whether a resolved executable path lies in one of Debian's program directories."""
    return os.path.dirname(os.path.abspath(executable)) in SYSTEM_DIRS


def _installed(package: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", package],
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() == "installed"


def check() -> int:
    """Each package installed, each program's check command exits 0; a line per entry."""
    failed = 0
    for e in entries():
        if not _installed(e.package):
            status, detail = "MISSING", f"package {e.package} is not installed"
        elif not e.check:
            status, detail = "ok", "installed"
        else:
            try:
                proc = subprocess.run(list(e.check), capture_output=True, text=True,
                                      timeout=60, check=False, stdin=subprocess.DEVNULL)
                text = (proc.stdout.strip() or proc.stderr.strip()).splitlines()
                detail = text[0][:80] if text else ""
                status = "ok" if proc.returncode == 0 else f"EXIT {proc.returncode}"
            except (OSError, subprocess.TimeoutExpired) as exc:
                status, detail = "FAILED", str(exc)
        failed += status != "ok"
        print(f"{status:<8} {e.package:<18} {shlex.join(e.check) or '-':<44} {detail}",
              flush=True)
    print(f"{len(entries()) - failed} of {len(entries())} entries of {LIST}: ok")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m georelay_lab.programs",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=("check", "packages", "missing"))
    args = parser.parse_args(argv)
    if args.what == "packages":
        print("\n".join(packages()))
        return 0
    if args.what == "missing":
        gone = missing()
        print("\n".join(f"{e.program} ({e.package})" for e in gone))
        return 1 if gone else 0
    return check()


if __name__ == "__main__":
    sys.exit(main())

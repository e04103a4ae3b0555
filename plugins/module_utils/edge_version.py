"""A service's edge (cache) version on one proxy: the version map file and the running map.

HAProxy keys its edge cache on ``str(<hostname>),map(<version_map>,1)``: bumping the version
of a service makes every cached response of it unreachable at once, with no reload. The map
file's lines are ``<service hostname> <version>``; a service without a line is version "1".

- read_versions(map_file): {hostname: version} of the file, in file order.
- get_version(socket, map_file, hostname): what the running HAProxy answers (None: no entry).
- set_version(socket, map_file, hostname, version): file first (an atomic rewrite keeping
  every other line, so a reload keeps the value), then ``set map`` (``add map`` only for a
  missing entry: ``add map`` never replaces one, lookups keep the first), then read back.

The fleet's next version (the numeric maximum + 1 over every proxy, so the fleet ends equal)
is georelay-edge's to compute: each proxy only reads and sets.

Standard library only: it runs with a proxy host's own Python.
"""

from __future__ import annotations

import re

from ansible_collections.georelay.relay.plugins.module_utils.haproxy_runtime import (
    RuntimeAPIError,
    map_value,
    set_map_entry,
    write_file_atomically,
)

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_VERSION = "1"


def check_version(version: str) -> str:
    """Return version if it is a valid map value, else raise ValueError naming the fix."""
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ValueError(f"version: {version!r} is not 1-64 letters, digits or ._- starting "
                         "with a letter or digit. Fix: give e.g. --to 7 or --to 2026-12-03.1")
    return version


def read_versions(map_file: str) -> dict[str, str]:
    """The file's {hostname: version} ({} when the file is missing); comments are skipped."""
    out: dict[str, str] = {}
    try:
        with open(map_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        f = line.split()
        if len(f) == 2 and not f[0].startswith("#") and f[0] not in out:
            out[f[0]] = f[1]
    return out


def write_version(map_file: str, hostname: str, version: str) -> None:
    """Rewrite map_file atomically with hostname's line set to version; every other line
    (comments included) is kept as it was; a missing entry is appended."""
    try:
        with open(map_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        lines = []
    out: list[str] = []
    done = False
    for line in lines:
        f = line.split()
        if len(f) == 2 and f[0] == hostname:
            if not done:
                out.append(f"{hostname} {version}")
                done = True
            continue  # a duplicate line of the key would shadow nothing: drop it
        out.append(line)
    if not done:
        out.append(f"{hostname} {version}")
    write_file_atomically(map_file, "\n".join(out) + "\n")


def get_version(admin_socket: str, map_file: str, hostname: str,
                timeout: float = 3.0) -> str | None:
    """The version the running HAProxy uses for hostname (None: no entry, i.e. "1")."""
    return map_value(admin_socket, map_file, hostname, timeout)


def set_version(admin_socket: str, map_file: str, hostname: str, version: str,
                timeout: float = 3.0) -> str:
    """Set hostname's version in the file and the running HAProxy; return it read back.
    Raises ValueError for a bad version (nothing touched), RuntimeAPIError when HAProxy
    refuses or reads back another value."""
    check_version(version)
    write_version(map_file, hostname, version)
    set_map_entry(admin_socket, map_file, hostname, version, timeout=timeout)
    now = get_version(admin_socket, map_file, hostname, timeout)
    if now != version:
        raise RuntimeAPIError(f"{admin_socket}: {hostname}'s edge version reads {now} "
                              f"after setting {version}")
    return now


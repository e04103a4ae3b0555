"""georelay-edge: the edge rules' runtime levers on every proxy (README "Edge rules").

    georelay-edge version show SERVICE -i INVENTORY
    georelay-edge version bump SERVICE [--to V] -i INVENTORY [--dry-run]
    georelay-edge ip-ranges sync (--file F | --url URL [--md5 HEX]) -i INVENTORY
                                 [--force] [--dry-run]

Each acts through the Runtime API of every proxy's HAProxy (no reload) and its map file (so
a reload keeps the value), and reads the value back. Every command takes --output json.
Exit codes: 0 every proxy confirmed, 1 an error or a proxy not confirmed (named, with the
command to run again), 64 usage error.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, NoReturn

import click

from georelay_dns.cli_common import echo_json, output_option
from georelay_dns.cli_support import cli_group, inventory_option
from georelay_edge import proxies
from georelay_edge.proxies import Answer
from georelay_model import Fleet, InventoryError, fleet_from_hostvars, load_inventory
from georelay_model.fleet import Service
from georelay_model.inventory import InventoryReadError
from georelay_model.ip_ranges import IpRanges, IpRangesError, load, map_text, parse

AWS_IP_RANGES = "https://ip-ranges.amazonaws.com/ip-ranges.json"
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # the module's rule
MD5_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_DOWNLOAD = 64 * 1024 * 1024


def fail(message: str) -> NoReturn:
    click.echo(f"georelay-edge: {message}", err=True)
    sys.exit(1)


def read_fleet(inventory: str) -> Fleet:
    try:
        return fleet_from_hostvars(load_inventory(inventory), rendered=False)
    except (InventoryError, InventoryReadError) as e:
        fail(str(e))


def cached_service(fleet: Fleet, name: str) -> Service:
    names = [s.hostname for s in fleet.services if s.edge.cache is not None]
    for s in fleet.services:
        if s.hostname == name:
            if s.edge.cache is None:
                fail(f"{name} has no edge cache, so it has no deploy version. Fix: give its "
                     "georelay_services entry edge_cache: {} and deploy, or name one of: "
                     f"{', '.join(names) or 'none'}")
            return s
    fail(f"{name!r} is not a service of the inventory; services with edge_cache: "
         f"{', '.join(names) or 'none'}")


def next_version(seen: list[str | None]) -> str:
    """max(numeric versions) + 1 over every proxy's value (a non-numeric value counts as 1),
    so every proxy ends on one new value."""
    nums = [int(v) for v in seen if v is not None and v.isdigit()]
    return str(max([*nums, 1]) + 1)


def _where(a: Answer) -> str:
    return f"{a.host} ({a.region})" if a.region else a.host


def _not_confirmed(got: dict[str, Answer], good: Any) -> list[str]:
    return sorted(h for h, a in got.items() if not a.ok or not good(a))


def _run(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Answer]:
    try:
        result: dict[str, Answer] = fn(*args, **kwargs)
    except proxies.EdgeError as e:
        fail(str(e))
    return result


@cli_group("georelay-edge", distribution="georelay")
def main() -> None:
    """The edge rules' runtime levers: deploy versions of the edge cache, the AWS ip-ranges
    map of regional redirects. Acts on every proxy of the inventory through Ansible."""


@main.group("version")
def version_group() -> None:
    """A service's edge cache version: part of the cache key, so a new one is a new cache."""


@version_group.command("show")
@click.argument("service")
@output_option
@inventory_option()
def version_show(service: str, output: str, inventory: str) -> None:
    """The running version and the map file's on every proxy."""
    cached_service(read_fleet(inventory), service)
    got = _run(proxies.versions, inventory, service)
    differ = sorted({a.values.get("before") for a in got.values() if a.ok}, key=str)
    stale = sorted(h for h, a in got.items()
                   if a.ok and a.values.get("file_before") not in (None, a.values.get("before")))
    down = _not_confirmed(got, lambda a: True)
    if output == "json":
        echo_json({"service": service, "versions": differ, "file_differs": stale,
                   "not_answered": down, "proxies": {h: a.to_dict() for h, a in got.items()}})
    else:
        for a in got.values():
            click.echo(f"{_where(a)}: " + (
                f"{a.values.get('before')}" + (
                    f" (the map file says {a.values.get('file_before')})"
                    if a.host in stale else "") if a.ok else f"no answer: {a.error}"))
        if len(differ) > 1:
            click.echo(f"versions differ ({', '.join(differ)}): run georelay-edge version "
                       f"bump {service} -i {inventory}")
    sys.exit(1 if down or len(differ) > 1 or stale else 0)


@version_group.command("bump")
@click.argument("service")
@click.option("--to", "to", default=None, metavar="V",
              help="Set this version (1-64 letters, digits or ._-) instead of the fleet's "
                   "highest numeric version + 1; run again with the same --to to finish a "
                   "bump some proxies missed")
@click.option("--dry-run", is_flag=True, help="Read every proxy and say what would change")
@output_option
@inventory_option()
def version_bump(service: str, to: str | None, dry_run: bool, output: str,
                 inventory: str) -> None:
    """A new edge version on every proxy, read back: the next request is a MISS."""
    if to is not None and not VERSION_RE.match(to):
        raise click.BadParameter(f"{to!r}: 1-64 letters, digits or ._- starting with a letter "
                                 "or digit, e.g. --to 7", param_hint="--to")
    cached_service(read_fleet(inventory), service)
    if to is not None:  # the value is known: one run sets it and reads it back
        got = _run(proxies.versions, inventory, service, to, check=dry_run)
    else:  # the fleet's next value needs every proxy's first
        before = _run(proxies.versions, inventory, service)
        seen = [a.values.get("before") for a in before.values() if a.ok]
        if not seen:
            fail("no proxy answered, nothing was changed:\n" + "\n".join(
                f"  {_where(a)}: {a.error}" for a in before.values()))
        to = next_version(seen)
        reachable = ",".join(h for h, a in before.items() if a.ok)
        got = {**{h: a for h, a in before.items() if not a.ok},
               **_run(proxies.versions, inventory, service, to, check=dry_run,
                      limit=reachable)}
    target = to
    missed = _not_confirmed(got, lambda a: a.values.get("after") == target)
    again = f"georelay-edge version bump {service} --to {target} -i {inventory}"
    if output == "json":
        echo_json({"service": service, "version": target, "dry_run": dry_run,
                   "not_confirmed": missed, "again": again if missed else None,
                   "proxies": {h: a.to_dict() for h, a in sorted(got.items())}})
    else:
        verb = "would set" if dry_run else "set"
        for _h, a in sorted(got.items()):
            v = a.values
            click.echo(f"{_where(a)}: " + (
                f"{v.get('before')} -> {v.get('after')}" if a.ok and v.get("changed")
                else f"{v.get('after')} already" if a.ok else f"NOT CONFIRMED: {a.error}"))
        done = len(got) - len(missed)
        click.echo(f"{service}: edge version {target} {verb} on {done} of {len(got)} proxies"
                   + ("" if dry_run else ", read back"))
        if missed:
            click.echo(f"not confirmed on {', '.join(missed)}: once they answer, run {again}")
    sys.exit(1 if missed else 0)


@main.group("ip-ranges")
def ip_ranges_group() -> None:
    """The map of AWS prefixes -> region that regional_redirects read."""


def download(url: str, md5: str | None, timeout: float = 30.0) -> str:
    """The document at url, its md5 checked against --md5 or, when it is one, the ETag."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read(MAX_DOWNLOAD + 1)
            etag = (resp.headers.get("ETag") or "").strip().removeprefix("W/").strip('"')
    except (urllib.error.URLError, OSError) as e:
        fail(f"--url {url}: cannot fetch ({e}); nothing was changed")
    if len(body) > MAX_DOWNLOAD:
        fail(f"--url {url}: over {MAX_DOWNLOAD // 2**20} MiB: not ip-ranges.json")
    digest = hashlib.md5(body, usedforsecurity=False).hexdigest()
    want = md5 or (etag if MD5_RE.match(etag) else None)
    if want is not None and digest != want:
        fail(f"--url {url}: md5 {digest} is not the expected {want} "
             f"({'--md5' if md5 else 'the ETag'}): a damaged download; nothing was changed")
    return body.decode("utf-8", errors="replace")


def inventory_file_note(fleet: Fleet, ranges: IpRanges) -> str | None:
    """A note when the inventory's georelay_ip_ranges_file is older than the synced file:
    a proxy deployed later starts from that file (then catches up only by a sync)."""
    path = fleet.edge.ip_ranges_file
    if path is None:
        return None
    try:
        token = load(path).sync_token
    except IpRangesError as e:
        return f"georelay_ip_ranges_file: {e}"
    if token < ranges.sync_token:
        return (f"georelay_ip_ranges_file ({path}, syncToken {token}) is older than this file: "
                "copy this file there so new proxies start from it")
    return None


@ip_ranges_group.command("sync")
@click.option("--file", "file", default=None, type=click.Path(dir_okay=False),
              help="AWS's ip-ranges.json, downloaded")
@click.option("--url", default=None, metavar="URL",
              help=f"Fetch it instead (AWS publishes it at {AWS_IP_RANGES})")
@click.option("--md5", default=None, metavar="HEX",
              help="With --url: the md5 the body must have [default: the ETag when it is one]")
@click.option("--force", is_flag=True, help="Load a map older (by syncToken) than a proxy's")
@click.option("--dry-run", is_flag=True, help="Check the file, read every proxy, change nothing")
@output_option
@inventory_option()
def ip_ranges_sync(file: str | None, url: str | None, md5: str | None, force: bool,
                   dry_run: bool, output: str, inventory: str) -> None:
    """Build the map once from ip-ranges.json and load it into every proxy atomically."""
    if (file is None) == (url is None):
        raise click.UsageError("give one of --file ip-ranges.json or --url "
                               f"{AWS_IP_RANGES}")
    if md5 is not None and (url is None or not MD5_RE.match(md5.lower())):
        raise click.BadParameter("32 hex digits, with --url", param_hint="--md5")
    fleet = read_fleet(inventory)
    if not any(s.edge.redirects for s in fleet.services):
        fail("no service of georelay_services has regional_redirects, so no proxy reads the "
             "ip-ranges map. Fix: give a service regional_redirects (README \"Edge rules\")")
    try:
        if url is not None:
            ranges = parse(download(url, md5.lower() if md5 else None), url)
        else:
            ranges = load(str(file))
    except IpRangesError as e:
        fail(f"{e}; nothing was changed")
    with tempfile.TemporaryDirectory(prefix="georelay-edge-") as tmp:
        made = Path(tmp) / "aws-ip-ranges.map"
        made.write_text(map_text(ranges), encoding="utf-8")
        got = _run(proxies.ip_ranges, inventory, str(made), force=force, check=dry_run)
    token = str(ranges.sync_token)
    missed = _not_confirmed(got, lambda a: a.values.get("sync_token_after") == token)
    note = inventory_file_note(fleet, ranges)
    source = file or url
    doc: dict[str, Any] = {"source": source, "sync_token": ranges.sync_token,
                           "create_date": ranges.create_date, "ipv4": ranges.ipv4,
                           "ipv6": ranges.ipv6, "conflicts": ranges.conflicts,
                           "dry_run": dry_run, "not_confirmed": missed, "note": note,
                           "proxies": {h: a.to_dict() for h, a in got.items()}}
    if output == "json":
        echo_json(doc)
        sys.exit(1 if missed else 0)
    click.echo(f"{source}: syncToken {token} ({ranges.create_date}), {ranges.ipv4} IPv4 + "
               f"{ranges.ipv6} IPv6 prefixes" + (f", {ranges.conflicts} listed under two "
                                                 "regions (first kept)" if ranges.conflicts
                                                 else ""))
    for a in got.values():
        v = a.values
        if not a.ok:
            line = f"NOT LOADED: {a.error}"
        elif not v.get("changed"):
            line = f"{token} already in force"
        elif dry_run:
            line = f"would load {v.get('sync_token_before')} -> {token}"
        else:
            line = (f"{v.get('sync_token_before')} -> {token}: {v.get('entries')} prefixes in "
                    f"{v.get('chunks')} chunks, {v.get('seconds')} s")
        click.echo(f"  {_where(a)}: {line}")
    if missed:
        again = "georelay-edge ip-ranges sync " + (f"--file {file}" if file else f"--url {url}")
        click.echo(f"not loaded on {', '.join(missed)}: once they answer, run {again} "
                   f"-i {inventory}" + (" (--force loads an older file)"
                                        if any("older" in (got[h].error or "") for h in missed)
                                        else ""))
    if note:
        click.echo(f"note: {note}")
    sys.exit(1 if missed else 0)

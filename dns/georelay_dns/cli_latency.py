"""georelay-dns latency: the round trips between regions that order failover and backups.

* ``latency show``: for each region of the fleet, its backup order with each round trip and
  where the number comes from (inventory, measured, estimated); with ``--from REGION``, the
  order users near REGION fail over in (what ``simulate`` uses).
* ``latency compare FILE``: how often the orders georelay uses agree with another
  measurement (the next-nearest region of every 3-region fleet, each region's top 3).
* ``latency import FILE``: the operator's own measurements (CSV or JSON, see
  :func:`georelay_model.latency.read_matrix_file`) written into the inventory as
  ``georelay_region_latency`` (group_vars/all, see :func:`target_of`), so the inventory
  stays the one source of truth: the next ``ansible-playbook`` run orders the proxies'
  backups by it and ``georelay-dns simulate`` reads the same numbers.

Both read only the inventory; neither calls AWS.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import tempfile
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import yaml

from georelay_dns.cli_common import checked_region, fail, read_inputs
from georelay_dns.cli_support import inventory_option
from georelay_dns.inputs import load_inputs
from georelay_model import Fleet, InventoryError, load_inventory
from georelay_model.inventory import InventoryReadError
from georelay_model.latency import Latency, Matrix, read_matrix_file

VAR_FILE = "georelay_region_latency.yml"


@click.group("latency")
def latency_group() -> None:
    """The round trips between regions: show the orders, import measurements."""


def _rtt_text(latency: Latency, a: str, b: str) -> str:
    ms, how = latency.rtt(a, b)
    return f"{b} {'?' if ms is None else f'{ms:.0f} ms'} ({how})"


def orders(fleet: Fleet) -> dict[str, Any]:
    """Per fleet region: its backups in order, with each round trip and its origin."""
    out: dict[str, Any] = {}
    for region in fleet.regions:
        backups = []
        for b in fleet.backups_of(region.name):
            ms, how = fleet.latency.rtt(region.name, b.name)
            backups.append({"region": b.name, "rtt_ms": ms, "origin": how})
        out[region.name] = {"backups": backups, "note": fleet.backup_order_note(region.name)}
    return out


@latency_group.command("show")
@inventory_option()
@click.option("--from", "origin", metavar="REGION",
              help="the order users near this AWS region fail over in (as simulate uses)")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def show_cmd(inventory: str, origin: str | None, output: str) -> None:
    """Each region's backup order, or the failover order from --from, with round trips."""
    fleet = read_inputs(inventory).fleet
    lat = fleet.latency
    doc: dict[str, Any] = {"source": lat.describe()}
    if origin:
        note = checked_region(origin, lat, "--from")
        order = lat.nearest_first(origin, [r.name for r in fleet.regions])
        doc["from"] = {"region": origin, "order": [
            {"region": r, "rtt_ms": lat.rtt(origin, r)[0], "origin": lat.rtt(origin, r)[1]}
            for r in order], "note": note or lat.order_note(origin, order)}
    else:
        doc["regions"] = orders(fleet)
    if output == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    click.echo(f"round trips: {doc['source']}")
    if origin:
        click.echo(f"users near {origin} fail over in this order:")
        for i, r in enumerate(doc["from"]["order"], start=1):
            click.echo(f"  {i}. {_rtt_text(lat, origin, r['region'])}")
        if doc["from"]["note"]:
            click.echo(f"  note: {doc['from']['note']}")
        return
    for name, got in doc["regions"].items():
        backups = ", ".join(_rtt_text(lat, name, b["region"]) for b in got["backups"])
        click.echo(f"  {name:<15} backups: {backups or 'none'}")
        if got["note"]:
            click.echo(f"  {'':<15} {got['note']}")


BEGIN = "# BEGIN georelay-dns latency import (written by the command; import again to change)"
END = "# END georelay-dns latency import"


def target_of(inventory: str) -> tuple[Path, bool]:
    """Where the import goes, and whether as a marked block inside an existing file.

    Ansible reads ``group_vars/all`` as *either* a directory or one ``all.yml`` file (the
    directory shadows the file), so: into ``group_vars/all/georelay_region_latency.yml``
    when that directory exists or neither does; else a marked block at the end of the
    existing ``group_vars/all.yml`` (replaced on the next import, like blockinfile)."""
    path = Path(inventory)
    base = (path if path.is_dir() else path.parent) / "group_vars"
    if not (base / "all").is_dir():
        for ext in (".yml", ".yaml"):
            if (base / f"all{ext}").is_file():
                return base / f"all{ext}", True
    return base / "all" / VAR_FILE, False


@latency_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@inventory_option()
@click.option("--source", help="where the numbers come from (default: the file's own "
              "'source', else its name); shown beside every order")
@click.option("--all-pairs", is_flag=True,
              help="keep every pair, not only those with a region of the fleet at one end")
@click.option("--dry-run", is_flag=True, help="show what would change; write nothing")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def import_cmd(file: str, inventory: str, source: str | None, all_pairs: bool,
               dry_run: bool, output: str) -> None:
    """Write FILE's round trips (CSV or JSON) into the inventory as georelay_region_latency."""
    before = read_inputs(inventory).fleet
    try:
        matrix = read_matrix_file(file)
    except (OSError, ValueError) as e:
        fail(str(e) if str(e).startswith(file) else f"{file}: {e}")
    fleet_regions = {r.name for r in before.regions}
    rtt = {k: v for k, v in matrix.rtt.items() if all_pairs or fleet_regions & set(k)}
    if not rtt:
        fail(f"{file}: no round trip has a region of the fleet "
             f"({', '.join(sorted(fleet_regions))}) at either end. Fix: check the file's "
             "region codes, or pass --all-pairs")
    text_source = source or (matrix.source if matrix.source != file else Path(file).name)
    target, as_block = target_of(inventory)
    previous = target.read_text("utf-8") if target.exists() else None
    body = _new_text(previous, _yaml(rtt, text_source, file), as_block, target)
    after = {name: [b["region"] for b in got["backups"]] for name, got in
             orders(replace(before, latency=Latency(rtt, text_source))).items()}
    was = {name: [b["region"] for b in got["backups"]] for name, got in orders(before).items()}
    changed = {r: {"before": was[r], "after": after[r]} for r in after if was[r] != after[r]}
    undo = (f"rm {target}" if previous is None else
            f"restore {target} from version control" + (
                f" (or delete the block between '{BEGIN[:28]}...' and '{END}')" if as_block
                else f" (or rm {target} to use the shipped data)"))
    doc = {"file": str(target), "pairs": len(rtt), "source": text_source, "dry_run": dry_run,
           "backup_order_changes": changed, "undo": undo}
    if not dry_run:
        _write(target, body)
        problem = _verify(inventory, rtt)
        if problem:
            if previous is None:
                target.unlink()
            else:
                _write(target, previous)
            fail(f"{problem}. {target} is left as it was")
    if output == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    verb = "would write" if dry_run else "wrote"
    click.echo(f"{verb} {len(rtt)} round trip(s) ({text_source}) to {target}")
    for region, c in changed.items():
        click.echo(f"  {region} backups: {', '.join(c['before']) or 'none'} -> "
                   f"{', '.join(c['after']) or 'none'}")
    if not changed:
        click.echo("  no region's backup order changes")
    if not dry_run:
        click.echo("next: ansible-playbook playbooks/site.yml renders the backup order; "
                   f"undo: {undo}")


def _yaml(rtt: dict[tuple[str, str], float], source: str, file: str) -> str:
    table: dict[str, dict[str, float]] = {}
    for (a, b), ms in sorted(rtt.items()):
        table.setdefault(a, {})[b] = ms
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ")
    head = (f"# georelay-dns latency import {Path(file).name}, {stamp}: round trips in ms\n"
            "# between regions, over the measurements georelay ships (docs/DNS.md).\n")
    return head + yaml.safe_dump({"georelay_region_latency_source": source,
                                  "georelay_region_latency": table},
                                 sort_keys=True, default_flow_style=False)


def _new_text(previous: str | None, text: str, as_block: bool, target: Path) -> str:
    """The file's new content: ``text`` alone, or ``previous`` with its marked block
    replaced (or appended). A georelay_region_latency set outside the block is refused."""
    if not as_block:
        return text
    old = previous or ""
    start, end = old.find(BEGIN), old.find(END)
    if (start < 0) != (end < 0) or end < start:
        fail(f"{target}: the '{BEGIN[:28]}...' block is broken (one marker without the "
             "other). Fix: delete what is left of it, then import again")
    outside = old[:start] + old[end + len(END):] if start >= 0 else old
    try:
        doc = yaml.safe_load(outside) or {}
    except yaml.YAMLError as e:
        fail(f"{target}: not YAML ({e}). Fix the file first")
    if not isinstance(doc, dict):
        fail(f"{target}: is not a mapping of variables")
    clash = sorted({"georelay_region_latency", "georelay_region_latency_source"} & set(doc))
    if clash:
        fail(f"{target} already sets {', '.join(clash)} outside the imported block. Fix: "
             "delete it there (the import writes both)")
    block = f"{BEGIN}\n{text}{END}\n"
    if start >= 0:
        return old[:start] + block + old[end + len(END):].lstrip("\n")
    return old + ("" if not old or old.endswith("\n") else "\n") + block


def _write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, target)


def _verify(inventory: str, rtt: dict[tuple[str, str], float]) -> str:
    """'' when the inventory, read again, is valid and holds exactly the imported pairs."""
    try:
        got = load_inputs(load_inventory(inventory)).fleet.latency.override
    except (InventoryError, InventoryReadError) as e:
        return f"the inventory does not read back after the import:\n{e}"
    if dict(got) != rtt:
        return ("the inventory does not read back the imported round trips: "
                "georelay_region_latency is also set elsewhere, with a higher precedence "
                "(host vars, a group's vars). Fix: remove it there")
    return ""


def agreement(ours: Latency, ref: Matrix, tolerance: float = 10.0) -> dict[str, Any]:
    """How often ``ours`` picks what the reference measurements call nearest, over the
    regions the reference has:

    * ``next_nearest``: every 3-region fleet and every origin in it: does the region ours
      orders first among the other two cost at most ``tolerance`` ms more than the best?
    * ``top3``: every region, among all the others: is each of ours' first three within
      ``tolerance`` ms of the reference's region at the same rank?"""
    regions = sorted(r for r in ref.regions
                     if all(ref.get(r, o) is not None for o in ref.regions if o != r))

    def rtt(a: str, b: str) -> float:
        got = ref.rtt.get((a, b))
        return got if got is not None else float(ref.get(a, b) or 0.0)

    ok = total = 0
    worse: list[float] = []
    for trio in itertools.combinations(regions, 3):
        for origin in trio:
            others = [r for r in trio if r != origin]
            pick = ours.nearest_first(origin, others)[0]
            best = min(rtt(origin, r) for r in others)
            total += 1
            if rtt(origin, pick) - best <= tolerance:
                ok += 1
            else:
                worse.append(rtt(origin, pick) - best)
    top_ok, misses = 0, []
    for origin in regions:
        others = [r for r in regions if r != origin]
        mine = ours.nearest_first(origin, others)[:3]
        best = sorted(others, key=lambda r: (rtt(origin, r), r))[:3]
        if all(rtt(origin, a) - rtt(origin, b) <= tolerance for a, b in zip(mine, best,
                                                                           strict=True)):
            top_ok += 1
        else:
            misses.append({"region": origin, "ours": mine, "reference": best})
    return {"regions": len(regions), "tolerance_ms": tolerance,
            "next_nearest": {"agree": ok, "cases": total,
                             "share": round(ok / total, 4) if total else None,
                             "worse_median_ms": statistics.median(worse) if worse else 0.0,
                             "worse_max_ms": max(worse, default=0.0)},
            "top3": {"agree": top_ok, "regions": len(regions), "misses": misses}}


@latency_group.command("compare")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@inventory_option(required=False)
@click.option("--tolerance", type=float, default=10.0, show_default=True,
              help="ms by which a pick may be slower than the best and still agree")
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def compare_cmd(file: str, inventory: str | None, tolerance: float, output: str) -> None:
    """How often the orders georelay uses agree with FILE's measurements (CSV or JSON):
    the shipped data (with -i: the inventory's latency), and the distance estimate."""
    try:
        ref = read_matrix_file(file)
    except (OSError, ValueError) as e:
        fail(str(e) if str(e).startswith(file) else f"{file}: {e}")
    ours = read_inputs(inventory).fleet.latency if inventory else Latency()
    doc = {"reference": file,
           "georelay": {"source": ours.describe(), **agreement(ours, ref, tolerance)},
           "distance_estimate": agreement(Latency(measured=Matrix({}, "none")), ref,
                                          tolerance)}
    if output == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for name in ("georelay", "distance_estimate"):
        got = doc[name]
        nn, t3 = got["next_nearest"], got["top3"]
        click.echo(f"{name}: next-nearest in 3-region fleets agrees (within {tolerance:g} ms) "
                   f"in {nn['agree']}/{nn['cases']} = {nn['share']:.1%} of cases (when not: "
                   f"{nn['worse_median_ms']:.0f} ms worse at the median, up to "
                   f"{nn['worse_max_ms']:.0f}); top-3 backup order agrees for "
                   f"{t3['agree']}/{t3['regions']} regions")
        for miss in t3["misses"]:
            click.echo(f"  {miss['region']}: {', '.join(miss['ours'])} (reference: "
                       f"{', '.join(miss['reference'])})")

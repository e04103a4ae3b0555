"""georelay-dns evacuate / restore / weight: operator actions kept in Route53 (docs/DNS.md,
"Evacuating a region"). They read and write only Route53, never the proxies.

Each prints the changes, who answers users near each region before and after, what it did
and the exact command that undoes it; with --output json, one document holding the same
(stdout), progress and errors on stderr. Exit 0: done or nothing to do; 1: refused or failed
(stderr names the problem and the fix).
"""

from __future__ import annotations

import getpass
import shlex
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from georelay_dns import operations
from georelay_dns.apply import ApplyError, Result
from georelay_dns.cli_common import (
    aws,
    echo_json,
    fail,
    output_option,
    parse_weight,
    read_inputs,
    resolution,
)
from georelay_dns.cli_support import UsageCommand, inventory_option
from georelay_dns.inputs import Inputs
from georelay_dns.operations import Change, Context, read_context
from georelay_dns.operator_state import BY_MAX
from georelay_dns.plan import change_lines
from georelay_dns.route53 import make_client
from georelay_dns.simulate import effect_lines

dry_run_option = click.option("--dry-run", is_flag=True,
                              help="print exactly what would change; change nothing")
wait_option = click.option("--wait-timeout", type=float, default=600.0, show_default=True,
                           help="seconds to wait for Route53 to be INSYNC")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"[:BY_MAX]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _command(args: list[str], inventory: str) -> str:
    return shlex.join(["georelay-dns", *args, "-i", inventory])


def _run(inventory: str, make: Callable[[Context], Change], *, dry_run: bool,
         wait_timeout: float, output: str, confirm: str | None = None) -> None:
    inputs = read_inputs(inventory)
    client = aws(make_client)
    change: Change = aws(lambda: make(read_context(client, inputs)))
    plan = change.plan
    as_json = output == "json"
    say: Callable[[str], None] = (lambda _: None) if as_json else click.echo
    notes = list(change.notes)
    if change.pending:
        notes.append(f"Route53 also differs from the inventory by {change.pending} "
                     "change(s) that this command leaves alone: review them with "
                     f"{_command(['plan'], inventory)}")
    undo = _command(change.undo, inventory)
    say(f"zone {plan.zone} ({plan.zone_id}), owner {plan.owner!r}")
    if change.noop:
        say(change.done)
        for note in change.notes:
            say(f"note: {note}")
        if as_json:
            echo_json(_doc(inputs, change, notes, None, dry_run=dry_run))
        return
    say("changes:" + (" (dry run: none made)" if dry_run else ""))
    for line in change_lines(plan):
        say(line)
    for warning in plan.warnings:
        say(f"warning: {warning}")
    if not as_json:
        _effect(inputs, change)
    for note in notes:
        say(f"note: {note}")
    if dry_run:
        say("dry run: nothing changed. Without --dry-run this would be: " + change.done)
        say(f"undo, once done: {undo}")
        if as_json:
            echo_json(_doc(inputs, change, notes, undo, dry_run=True))
        return
    if confirm and sys.stdin.isatty():
        click.confirm(confirm, abort=True, err=as_json)
    try:
        res = aws(lambda: operations.execute(client, change, wait_timeout=wait_timeout,
                                             progress=lambda m: click.echo(f"... {m}",
                                                                           err=True)))
    except ApplyError as e:
        fail(str(e))
    say(change.done)
    say(f"undo: {undo}")
    if as_json:
        echo_json(_doc(inputs, change, notes, undo, dry_run=False, result=res))


def _doc(inputs: Inputs, change: Change, notes: list[str], undo: str | None, *,
         dry_run: bool, result: Result | None = None) -> dict[str, Any]:
    """--output json: what changed (or would), who answers before and after, the notes and
    the command that undoes it (None when nothing changes)."""
    plan = change.plan
    who = [] if change.noop else [
        {"service": svc.hostname, "near": region.name,
         **{when: resolution(tree, svc.hostname, region.name)
            for when, tree in (("before", change.before), ("after", change.after))}}
        for svc in inputs.fleet.services for region in inputs.fleet.regions]
    return {"zone": plan.zone, "zone_id": plan.zone_id, "owner": plan.owner,
            "noop": change.noop, "dry_run": dry_run, "applied": result is not None,
            "done": change.done, "changes": [] if change.noop else plan.to_dict()["records"],
            "warnings": list(plan.warnings), "notes": notes, "pending": change.pending,
            "who_answers": who, "undo": None if change.noop else undo,
            "result": result.to_dict() if result is not None else None}


def _effect(inputs: Inputs, change: Change) -> None:
    for line in effect_lines(change.before, change.after,
                             [s.hostname for s in inputs.fleet.services],
                             [r.name for r in inputs.fleet.regions]):
        click.echo(line)


@click.command("evacuate", cls=UsageCommand)
@click.argument("region")
@click.option("--reason", required=True,
              help="why (stored in DNS, readable by anyone: no secrets), e.g. a ticket")
@inventory_option()
@dry_run_option
@click.option("--force", is_flag=True, help="allow evacuating the last region still serving")
@click.option("--yes", is_flag=True, help="do not ask for confirmation on a terminal")
@wait_option
@output_option
def evacuate_cmd(region: str, reason: str, inventory: str, dry_run: bool, force: bool,
                 yes: bool, wait_timeout: float, output: str) -> None:
    """Stop Route53 answering with REGION: its users go to the next closest region, even
    while its proxies look healthy. Touches only Route53; apply keeps it."""
    by, at = _who(), _now()
    _run(inventory, lambda ctx: operations.evacuate(ctx, region, reason, by=by, at=at,
                                                    force=force),
         dry_run=dry_run, wait_timeout=wait_timeout, output=output,
         confirm=None if yes else f"Evacuate {region}?")


@click.command("restore", cls=UsageCommand)
@click.argument("region")
@inventory_option()
@dry_run_option
@wait_option
@output_option
def restore_cmd(region: str, inventory: str, dry_run: bool, wait_timeout: float,
                output: str) -> None:
    """Undo evacuate: re-create REGION's latency records (its health checks decide again)."""
    _run(inventory, lambda ctx: operations.restore(ctx, region), dry_run=dry_run,
         wait_timeout=wait_timeout, output=output)


@click.command("weight", cls=UsageCommand)
@click.argument("host")
@click.argument("n", required=False)
@inventory_option()
@click.option("--reset", is_flag=True, help="back to the inventory's dns_weight")
@dry_run_option
@wait_option
@output_option
def weight_cmd(host: str, n: str | None, inventory: str, reset: bool, dry_run: bool,
               wait_timeout: float, output: str) -> None:
    """Set proxy HOST's weight to N (0-255) in Route53, or --reset it to the inventory's
    dns_weight. Shares traffic within HOST's region; apply keeps it."""
    if reset and n is not None:
        fail(f"give N or --reset, not both. Fix: georelay-dns weight {host} {n} -i ..., or "
             f"georelay-dns weight {host} --reset -i ...")
    if not reset and n is None:
        fail(f"N is missing. Fix: georelay-dns weight {host} N -i ... with N from 0 to 255, "
             f"or georelay-dns weight {host} --reset -i ...")
    weight = None if n is None else parse_weight(n, "N")
    _run(inventory, lambda ctx: operations.set_weight(ctx, host, weight), dry_run=dry_run,
         wait_timeout=wait_timeout, output=output)

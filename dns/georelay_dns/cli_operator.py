"""georelay-dns evacuate / restore / weight: operator actions kept in Route53 (docs/DNS.md,
"Evacuating a region"). They read and write only Route53, never the proxies.

Each prints the changes, who answers users near each region before and after, what it did
and the exact command that undoes it. Exit 0: done or nothing to do; 1: refused or failed
(stderr names the problem and the fix).
"""

from __future__ import annotations

import getpass
import shlex
import socket
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import click

from georelay_dns import operations
from georelay_dns.apply import ApplyError
from georelay_dns.cli_common import aws, fail, parse_weight, read_inputs
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
         wait_timeout: float, confirm: str | None = None) -> None:
    inputs = read_inputs(inventory)
    client = aws(make_client)
    change: Change = aws(lambda: make(read_context(client, inputs)))
    plan = change.plan
    click.echo(f"zone {plan.zone} ({plan.zone_id}), owner {plan.owner!r}")
    if change.noop:
        click.echo(change.done)
        for note in change.notes:
            click.echo(f"note: {note}")
        return
    click.echo("changes:" + (" (dry run: none made)" if dry_run else ""))
    for line in change_lines(plan):
        click.echo(line)
    for warning in plan.warnings:
        click.echo(f"warning: {warning}")
    _effect(inputs, change)
    for note in change.notes:
        click.echo(f"note: {note}")
    if change.pending:
        click.echo(f"note: Route53 also differs from the inventory by {change.pending} "
                   "change(s) that this command leaves alone: review them with "
                   f"{_command(['plan'], inventory)}")
    undo = _command(change.undo, inventory)
    if dry_run:
        click.echo("dry run: nothing changed. Without --dry-run this would be: " + change.done)
        click.echo(f"undo, once done: {undo}")
        return
    if confirm and sys.stdin.isatty():
        click.confirm(confirm, abort=True)
    try:
        aws(lambda: operations.execute(client, change, wait_timeout=wait_timeout,
                                       progress=lambda m: click.echo(f"... {m}", err=True)))
    except ApplyError as e:
        fail(str(e))
    click.echo(change.done)
    click.echo(f"undo: {undo}")


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
def evacuate_cmd(region: str, reason: str, inventory: str, dry_run: bool, force: bool,
                 yes: bool, wait_timeout: float) -> None:
    """Stop Route53 answering with REGION: its users go to the next closest region, even
    while its proxies look healthy. Touches only Route53; apply keeps it."""
    by, at = _who(), _now()
    _run(inventory, lambda ctx: operations.evacuate(ctx, region, reason, by=by, at=at,
                                                    force=force),
         dry_run=dry_run, wait_timeout=wait_timeout,
         confirm=None if yes else f"Evacuate {region}?")


@click.command("restore", cls=UsageCommand)
@click.argument("region")
@inventory_option()
@dry_run_option
@wait_option
def restore_cmd(region: str, inventory: str, dry_run: bool, wait_timeout: float) -> None:
    """Undo evacuate: re-create REGION's latency records (its health checks decide again)."""
    _run(inventory, lambda ctx: operations.restore(ctx, region), dry_run=dry_run,
         wait_timeout=wait_timeout)


@click.command("weight", cls=UsageCommand)
@click.argument("host")
@click.argument("n", required=False)
@inventory_option()
@click.option("--reset", is_flag=True, help="back to the inventory's dns_weight")
@dry_run_option
@wait_option
def weight_cmd(host: str, n: str | None, inventory: str, reset: bool, dry_run: bool,
               wait_timeout: float) -> None:
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
         wait_timeout=wait_timeout)

"""georelay-dns: keep Route53 true to the inventory (docs/DNS.md).

Exit codes: 0 done / nothing to do, 2 plan has changes pending, 1 error or refusal.
Every input problem is reported before anything is written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from georelay_dns.apply import ApplyError, apply_plan
from georelay_dns.iam import policy
from georelay_dns.plan import THRESHOLD_SHARE, Plan, make_plan, render
from georelay_dns.route53_read import ZoneError, find_zone, make_client, read_live
from georelay_dns.settings import Inputs, load_inputs
from georelay_dns.simulate import Evaluator, health_for
from georelay_dns.status import live_status, render_status
from georelay_dns.tree import SELF_ZONE, Tree, TreeError, build_tree
from georelay_model import InventoryError, load_inventory
from georelay_model.inventory import InventoryReadError

EXIT_CHANGES = 2


def _fail(message: str) -> NoReturn:
    click.echo(f"georelay-dns: {message}", err=True)
    sys.exit(1)


def _inputs(inventory: str) -> Inputs:
    try:
        return load_inputs(load_inventory(inventory))
    except (InventoryError, InventoryReadError) as e:
        _fail(str(e))


def _tree(inputs: Inputs, zone_id: str = SELF_ZONE) -> Tree:
    try:
        return build_tree(inputs, zone_id)
    except TreeError as e:
        _fail(str(e))


def _aws(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except NoCredentialsError:
        _fail("no AWS credentials: set AWS_PROFILE or the AWS_* variables (standard boto3 "
              "chain)")
    except ZoneError as e:
        _fail(str(e))
    except ClientError as e:
        err = e.response.get("Error", {})
        _fail(f"Route53 {e.operation_name}: {err.get('Code')}: {err.get('Message')}")
    except BotoCoreError as e:
        _fail(f"AWS: {e}")


def _plan(inventory: str) -> tuple[Any, Inputs, Plan]:
    inputs = _inputs(inventory)
    _tree(inputs)  # refuse a bad tree before any AWS call
    client = make_client()

    def work() -> tuple[Inputs, Plan]:
        zone_id = find_zone(client, inputs.fleet.zone, inputs.settings.zone_id)
        tree = _tree(inputs, zone_id)
        return inputs, make_plan(tree, read_live(client, zone_id), inputs.settings.owner)

    got = _aws(work)
    return client, got[0], got[1]


inventory_option = click.option("-i", "--inventory", required=True,
                                help="Ansible inventory (file or directory)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Keep Route53 latency/weighted records and health checks true to the inventory."""


@main.command("plan")
@inventory_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def plan_cmd(inventory: str, output: str) -> None:
    """Show what apply would change. Exit 0: nothing to do, 2: changes pending."""
    _, _, plan = _plan(inventory)
    if output == "json":
        click.echo(json.dumps({**plan.to_dict(), "checksum": plan.checksum,
                               "counts": plan.counts(), "owned": plan.owned,
                               "over_threshold": plan.over_threshold(),
                               "warnings": plan.warnings}, indent=2, sort_keys=True))
    else:
        click.echo(render(plan))
    if plan.conflicts:
        sys.exit(1)
    sys.exit(0 if plan.empty else EXIT_CHANGES)


@main.command("apply")
@inventory_option
@click.option("--yes", is_flag=True, help="apply without a reviewed checksum")
@click.option("--checksum", help="apply only if the plan still has this checksum")
@click.option("--force", is_flag=True,
              help=f"allow updating/deleting more than {THRESHOLD_SHARE:.0%} of what is owned")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True,
              help="seconds to wait for INSYNC before giving up")
def apply_cmd(inventory: str, yes: bool, checksum: str | None, force: bool,
              wait_timeout: float) -> None:
    """Apply the plan: health checks, records (leaves first), INSYNC, unused checks."""
    client, _, plan = _plan(inventory)
    click.echo(render(plan))
    if plan.conflicts:
        _fail("refusing: records that georelay does not own are in the way (see CONFLICT)")
    if checksum and checksum != plan.checksum:
        _fail(f"refusing: the plan changed since review ({checksum} != {plan.checksum}); "
              "run plan again")
    if not (yes or checksum):
        _fail("refusing without --yes or --checksum (review the plan, then pass its checksum)")
    if plan.over_threshold() and not force:
        _fail(f"refusing: this would update or delete {plan.destructive} of the "
              f"{plan.owned} records and health checks georelay owns (more than "
              f"{THRESHOLD_SHARE:.0%}); check the inventory, then pass --force")
    if plan.empty:
        return
    try:
        res = _aws(lambda: apply_plan(client, plan, wait_timeout=wait_timeout,
                                      progress=lambda m: click.echo(f"... {m}", err=True)))
    except ApplyError as e:
        _fail(str(e))
    click.echo(f"applied: {len(res.created)} health check(s) created, {len(res.updated)} "
               f"updated, {res.batches} record batch(es), {len(res.deleted)} health "
               "check(s) deleted")


@main.command("status")
@inventory_option
@click.option("--output", type=click.Choice(["text", "json"]), default="text")
def status_cmd(inventory: str, output: str) -> None:
    """The live tree, each health check's status, and what users get now."""
    inputs = _inputs(inventory)
    client = make_client()

    def work() -> dict[str, Any]:
        zone_id = find_zone(client, inputs.fleet.zone, inputs.settings.zone_id)
        return live_status(client, read_live(client, zone_id), inputs.settings.owner)

    st = _aws(work)
    click.echo(json.dumps(st, indent=2, sort_keys=True) if output == "json"
               else render_status(st))


@main.command("simulate")
@inventory_option
@click.option("--from", "origin", required=True, help="users nearest this AWS region")
@click.option("--down", "down", multiple=True, help="a proxy (inventory host) that fails")
@click.option("--down-region", "down_regions", multiple=True, help="a region that fails")
@click.option("--service", "services", multiple=True, help="only this hostname")
def simulate_cmd(inventory: str, origin: str, down: tuple[str, ...],
                 down_regions: tuple[str, ...], services: tuple[str, ...]) -> None:
    """Which proxies answer users near REGION (no AWS calls: the inventory's tree)."""
    inputs = _inputs(inventory)
    tree = _tree(inputs)
    hosts = {p.name for p in inputs.fleet.proxies}
    regions = {r.name for r in inputs.fleet.regions}
    for name in down:
        if name not in hosts:
            _fail(f"--down {name}: not a proxy of the inventory ({', '.join(sorted(hosts))})")
    for name in down_regions:
        if name not in regions:
            _fail(f"--down-region {name}: not a region of the inventory "
                  f"({', '.join(sorted(regions))})")
    ev = Evaluator(tree.records, tree.zone_id, health_for(tree.records, down, down_regions),
                   down_regions)
    for svc in inputs.fleet.services:
        if services and svc.hostname not in services:
            continue
        out = ev.resolve(svc.hostname, origin)
        click.echo(f"{svc.hostname} for users near {origin}:")
        for a in out.answers:
            click.echo(f"  {a.target:<16} {a.region:<14} {a.value:<22} {float(a.share):6.1%}")
        for note in out.notes:
            click.echo(f"  note: {note}")


@main.command("iam-policy")
@inventory_option
@click.option("--zone-id", help="hosted zone id (default: georelay_dns_zone_id, else looked up)")
def iam_cmd(inventory: str, zone_id: str | None) -> None:
    """Print the least-privilege IAM policy georelay-dns needs for this zone."""
    inputs = _inputs(inventory)
    zone_id = zone_id or inputs.settings.zone_id
    if not zone_id:
        zone_id = _aws(lambda: find_zone(make_client(), inputs.fleet.zone, None))
    click.echo(json.dumps(policy(_tree(inputs, zone_id), zone_id), indent=2))

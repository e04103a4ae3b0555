"""georelay-dns: keep Route53 true to the inventory (docs/DNS.md).

Exit codes: 0 done / nothing to do, 2 plan has changes pending, 1 error or refusal,
64 usage error (unknown option, missing argument...; EX_USAGE).
Every input problem is reported before anything is written.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from georelay_dns.apply import ApplyError, apply_plan
from georelay_dns.cli_common import (
    StepDisplay,
    aws,
    checked_region,
    echo_json,
    fail,
    output_option,
    parse_weight,
    read_inputs,
    resolution,
    tree_of,
)
from georelay_dns.cli_latency import latency_group
from georelay_dns.cli_operator import evacuate_cmd, restore_cmd, weight_cmd
from georelay_dns.cli_support import cli_group, inventory_option
from georelay_dns.iam import policy
from georelay_dns.operations import read_context
from georelay_dns.operator_state import Evacuation, OperatorState, describe, summary
from georelay_dns.plan import THRESHOLD_SHARE, Plan, render
from georelay_dns.route53 import find_zone, make_client
from georelay_dns.status import live_status, render_status
from georelay_dns.tree import SELF_ZONE
from georelay_dns.workflow import DnsError, Planned, applied_line, plan_zone, refusal

EXIT_CHANGES = 2


def _plan(inventory: str) -> Planned:
    """The plan of the inventory against the zone (workflow.plan_zone: the module's too)."""
    try:
        return plan_zone(read_inputs(inventory))
    except DnsError as e:
        fail(str(e))


@cli_group("georelay-dns", distribution="georelay")
def main() -> None:
    """Keep Route53 latency/weighted records and health checks true to the inventory."""


def _plan_doc(plan: Plan) -> dict[str, Any]:
    """The plan as plan --output json prints it (and apply's document starts with)."""
    return {**plan.to_dict(), "checksum": plan.checksum, "counts": plan.counts(),
            "owned": plan.owned, "over_threshold": plan.over_threshold(),
            "warnings": plan.warnings}


@main.command("plan")
@inventory_option()
@output_option
def plan_cmd(inventory: str, output: str) -> None:
    """Show what apply would change. Exit 0: nothing to do, 2: changes pending."""
    plan = _plan(inventory).plan
    if output == "json":
        echo_json(_plan_doc(plan))
    else:
        click.echo(render(plan))
    if plan.conflicts:
        sys.exit(1)
    sys.exit(0 if plan.empty else EXIT_CHANGES)


@main.command("apply")
@inventory_option()
@click.option("--yes", is_flag=True, help="apply without a reviewed checksum")
@click.option("--checksum", help="apply only if the plan still has this checksum")
@click.option("--force", is_flag=True,
              help=f"allow updating/deleting more than {THRESHOLD_SHARE:.0%} of what is owned")
@click.option("--wait-timeout", type=float, default=600.0, show_default=True,
              help="seconds to wait for INSYNC before giving up")
@output_option
def apply_cmd(inventory: str, yes: bool, checksum: str | None, force: bool,
              wait_timeout: float, output: str) -> None:
    """Apply the plan: health checks, records (leaves first), INSYNC, unused checks.
    Progress on stderr: a bar on a terminal, else one line per step."""
    planned = _plan(inventory)
    client, plan = planned.client, planned.plan
    as_json = output == "json"
    if not as_json:
        click.echo(render(plan))
    # the refusals of workflow.refusal (the module's too), in the CLI's order: conflicts and
    # a stale checksum first, then a missing review, then the threshold
    refused = refusal(plan, checksum=checksum, force=True)
    if refused:
        fail(refused.message.replace(" (see CONFLICT)", f": {'; '.join(plan.conflicts)}")
             if as_json and refused.reason == "conflicts" else refused.message)
    if not (yes or checksum):
        fail("refusing without --yes or --checksum (review the plan, then pass its checksum)")
    refused = refusal(plan, force=force)
    if refused:
        fail(refused.message)
    if plan.empty:
        if as_json:
            echo_json({**_plan_doc(plan), "applied": False, "result": None})
        return
    try:
        with StepDisplay() as show:
            res = aws(lambda: apply_plan(client, plan, wait_timeout=wait_timeout,
                                         on_step=show))
    except ApplyError as e:
        fail(str(e))
    if as_json:
        echo_json({**_plan_doc(plan), "applied": True, "result": res.to_dict()})
        return
    click.echo(applied_line(res))


@main.command("status")
@inventory_option()
@output_option
def status_cmd(inventory: str, output: str) -> None:
    """The live tree, each health check's status, and what users get now."""
    inputs = read_inputs(inventory)
    client = aws(make_client)

    def work() -> dict[str, Any]:
        ctx = read_context(client, inputs)
        tree = tree_of(inputs, ctx.zone_id, ctx.current.state)
        return live_status(client, ctx.live, inputs.settings.owner, desired=tree,
                           operator_state=summary(ctx.current.state, tree.inventory_weights))

    st = aws(work)
    click.echo(json.dumps(st, indent=2, sort_keys=True) if output == "json"
               else render_status(st))


@main.command("simulate")
@inventory_option()
@click.option("--from", "origin", required=True, help="users nearest this AWS region")
@click.option("--down", "down", multiple=True, help="a proxy (inventory host) that fails")
@click.option("--down-region", "down_regions", multiple=True, help="a region that fails")
@click.option("--service", "services", multiple=True, help="only this hostname")
@click.option("--evacuate", "evacuate", multiple=True, metavar="REGION",
              help="what if this region were evacuated (repeatable)")
@click.option("--weight", "weights", multiple=True, metavar="HOST=N",
              help="what if this proxy had weight N (repeatable)")
@click.option("--live", is_flag=True, help="start from the operator state in Route53 "
              "(evacuations, weight overrides); needs AWS access")
@output_option
def simulate_cmd(inventory: str, origin: str, down: tuple[str, ...],
                 down_regions: tuple[str, ...], services: tuple[str, ...],
                 evacuate: tuple[str, ...], weights: tuple[str, ...], live: bool,
                 output: str) -> None:
    """Which proxies answer users near REGION: the inventory's tree (with --live, as the
    operator state in Route53 shapes it), before and after --evacuate/--weight."""
    inputs = read_inputs(inventory)
    tree_of(inputs)
    hosts = {p.name for p in inputs.fleet.proxies}
    regions = {r.name for r in inputs.fleet.regions}
    checked_region(origin, inputs.fleet.latency, "--from")  # users near any AWS region
    for flag, names, known, what in (("--down", down, hosts, "a proxy"),
                                     ("--down-region", down_regions, regions, "a region"),
                                     ("--evacuate", evacuate, regions, "a region")):
        for name in names:
            if name not in known:
                fail(f"{flag} {name}: not {what} of the inventory "
                     f"({', '.join(sorted(known))})")
    base = OperatorState()
    state_lines: list[str] = []
    if live:
        client = aws(make_client)
        base = aws(lambda: read_context(client, inputs).current.state)
        state_lines = describe(base, {p.name: p.dns_weight for p in inputs.fleet.proxies})
    after = base
    for region in evacuate:
        after = after.evacuate(region, Evacuation("simulated", "", ""))
    for spec in weights:
        host, n = _weight_spec(spec, hosts)
        after = after.with_weight(host, n)
    trees = [tree_of(inputs, SELF_ZONE, base)]
    if evacuate or weights:
        trees.append(tree_of(inputs, SELF_ZONE, after))
    change = " ".join([*(f"--evacuate {r}" for r in evacuate),
                       *(f"--weight {w}" for w in weights)])
    answers = [{"hostname": svc.hostname,
                **{when: resolution(tree, svc.hostname, origin, down, down_regions)
                   for when, tree in zip(("before", "after"), trees, strict=False)}}
               for svc in inputs.fleet.services
               if not services or svc.hostname in services]
    if output == "json":
        echo_json({"from": origin, "down": list(down), "down_regions": list(down_regions),
                   "change": change or None,
                   "operator_state": summary(base, trees[0].inventory_weights) if live
                   else None,
                   "services": [{"after": None, **a} for a in answers]})
        return
    if live:
        click.echo("operator state in Route53:" + ("" if state_lines else " none"))
        for line in state_lines:
            click.echo(f"  {line}")
    for a in answers:
        click.echo(f"{a['hostname']} for users near {origin}:")
        for when in ("before", "after")[:len(trees)]:
            indent = "  " if len(trees) == 1 else "    "
            if len(trees) > 1:
                click.echo("  before:" if when == "before" else f"  after {change}:")
            for ans in a[when]["answers"]:
                click.echo(f"{indent}{ans['target']:<16} {ans['region']:<14} "
                           f"{ans['value']:<22} {ans['share']:6.1%}")
            for note in a[when]["notes"]:
                click.echo(f"{indent}note: {note}")


def _weight_spec(spec: str, hosts: set[str]) -> tuple[str, int]:
    host, sep, n = spec.partition("=")
    if not sep or not host:
        fail(f"--weight {spec}: expected HOST=N. Fix: e.g. --weight {min(hosts)}=0")
    if host not in hosts:
        fail(f"--weight {spec}: {host} is not a proxy of the inventory "
             f"({', '.join(sorted(hosts))})")
    return host, parse_weight(n, f"--weight {spec}")


@main.command("iam-policy")
@inventory_option()
@click.option("--zone-id", help="hosted zone id (default: georelay_dns_zone_id, else looked up)")
def iam_cmd(inventory: str, zone_id: str | None) -> None:
    """Print the least-privilege IAM policy georelay-dns needs for this zone."""
    inputs = read_inputs(inventory)
    zone_id = zone_id or inputs.settings.zone_id
    if not zone_id:
        zone_id = aws(lambda: find_zone(make_client(), inputs.fleet.zone, None))
    click.echo(json.dumps(policy(tree_of(inputs, zone_id), zone_id, inputs.settings.owner),
                          indent=2))


for _command in (evacuate_cmd, restore_cmd, weight_cmd, latency_group):
    main.add_command(_command)

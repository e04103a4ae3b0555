"""Drive georelay-dns the way users do (the click CLI) and through its library API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from georelay_dns.cli import main
from georelay_dns.inputs import load_inputs
from georelay_dns.plan import Plan, make_plan
from georelay_dns.route53 import find_zone, make_client, read_live
from georelay_dns.tree import Tree, build_tree
from georelay_model import load_inventory


def cli(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(main, list(args))
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


def cli_streams(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr): refusals must name the problem and the fix on stderr."""
    res = CliRunner().invoke(main, list(args))
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def plan_json(inv: Path) -> tuple[int, dict[str, Any]]:
    code, out = cli("plan", "-i", str(inv), "--output", "json")
    return code, json.loads(out)


def library_plan(inv: Path, client: Any = None) -> tuple[Any, Tree, Plan]:
    client = client or make_client()
    inputs = load_inputs(load_inventory(inv))
    zone_id = find_zone(client, inputs.fleet.zone, inputs.settings.zone_id)
    tree = build_tree(inputs, zone_id)
    return client, tree, make_plan(tree, read_live(client, zone_id), inputs.settings.owner)


def recording_client() -> tuple[Any, list[str]]:
    """A real client (to moto) that records each operation it sends, in order."""
    client = make_client()
    ops: list[str] = []
    client.meta.events.register("before-call.route53.*",
                                lambda model, **_: ops.append(model.name))
    return client, ops

"""georelay-tools: the benchmarks, the drill and the scale measurements, in one command.

Each runs from a georelay checkout against the lab (georelay-lab): ``--repo`` names the
checkout, else the working directory's or the one the tools are installed from.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from georelay_dns.cli_support import HELP_OPTIONS, UsageGroup, inventory_option, version_option
from georelay_lab.checkout import ENV as CHECKOUT_ENV
from georelay_lab.checkout import is_checkout

EX_UNAVAILABLE = 69  # sysexits.h: a service the command needs is not there (the lab)
SETTLE_TIMEOUT = 45.0  # seconds a drill step may take to show (HAProxy checks, agent rise/fall)
# Subcommands defined in their own modules (each also runs as `python -m georelay_tools.X`),
# imported only when used: `georelay-tools drill` does not load the benchmarks.
MODULES = {"bench": "bench", "bench-healthz": "bench_healthz", "bench-plan": "bench_plan",
           "bench-rules": "bench_rules", "bench-slow-readers": "bench_slow_readers",
           "rollout-demo": "rollout_demo", "scale": "scale"}


class ToolsGroup(UsageGroup):
    """The group of georelay-tools: usage errors exit 64 (UsageGroup), subcommands of
    MODULES load on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in MODULES:
            module = importlib.import_module(f"georelay_tools.{MODULES[cmd_name]}")
            command: click.Command = module.command
            return command
        return super().get_command(ctx, cmd_name)


def _repo(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path | None:
    if value is None:
        return None
    if not is_checkout(value.resolve()):
        raise click.BadParameter(f"{value} is not a georelay checkout (no galaxy.yml and "
                                 "lab/debian-packages.txt)", ctx)
    os.environ[CHECKOUT_ENV] = str(value.resolve())  # georelay_lab.checkout reads it
    return value


@click.group("georelay-tools", cls=ToolsGroup, context_settings={"help_option_names": HELP_OPTIONS})
@version_option("georelay-tools", "georelay-tools")
@click.option("--repo", type=click.Path(exists=True, file_okay=False, path_type=Path),
              callback=_repo, expose_value=False, is_eager=True,
              help="The georelay checkout to work on [default: the working directory's, "
                   f"else ${CHECKOUT_ENV}, else the one these tools are installed from]")
def main() -> None:
    """georelay's tools, run from a checkout: make bench, make drill, the scale and
    Route53/agent benchmarks (docs/BENCHMARKS*.md). Development only."""



@main.command()
@inventory_option(help_text="Inventory of the running lab fleet (make demo: inventories/demo)")
@click.option("--lab-dir", default=".lab", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The lab directory georelay-lab up used")
@click.option("--settle-timeout", default=SETTLE_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="seconds each step may take to show")
def drill(inventory: str, lab_dir: Path, settle_timeout: float) -> None:
    """Fail a proxy, then a region's gateway, then evacuate a region, on the running lab
    fleet (make demo); show Route53's answers, the agents and real requests at each step;
    put it back. Exit 0: every step as expected; 1: something was not; 69 (EX_UNAVAILABLE):
    the lab is not in a state the drill can run on (the message says what to do)."""
    from georelay_lab.checkout import CheckoutError
    from georelay_lab.processes import ProcessError
    from georelay_lab.stand_ins import StandIns
    from georelay_model import InventoryError
    from georelay_tools.drill import Drill, DrillError

    if not Path(inventory).exists():
        raise click.UsageError(f"no inventory at {inventory}: give -i PATH of the lab "
                               "fleet's inventory, e.g. -i inventories/demo")
    try:
        lab = StandIns.from_inventory(inventory, lab_dir)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from exc
    run = Drill(lab, inventory, settle_timeout=settle_timeout,
                out=lambda s: click.echo(s))
    try:
        code = run.run()
    except (DrillError, ProcessError, CheckoutError) as exc:
        click.echo(f"georelay-tools drill: {exc}", err=True)
        sys.exit(EX_UNAVAILABLE)
    sys.exit(code)

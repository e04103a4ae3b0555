"""What every georelay-dns command shares: failing with a message, reading the inventory,
building the tree, turning AWS errors into one line that names the fix, ``--output json``
(one document on stdout; progress and errors on stderr) and an apply's progress display.

(What every georelay click CLI shares, -h, --version, exit 64, -i, is in cli_support.py.)"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, NoReturn

import click

from georelay_dns.apply import Step
from georelay_dns.inputs import Inputs, load_inputs
from georelay_dns.operator_state import WEIGHT_MAX, OperatorState
from georelay_dns.simulate import Evaluator, health_for
from georelay_dns.tree import SELF_ZONE, Tree, TreeError, build_tree
from georelay_dns.workflow import AWS_ERRORS, aws_message
from georelay_model import InventoryError, load_inventory
from georelay_model.inventory import InventoryReadError
from georelay_model.latency import Latency, RegionError, check_region

output_option = click.option(
    "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="text for people; json for scripts: one document on stdout (stable keys), "
         "progress and errors on stderr")


def echo_json(doc: dict[str, Any]) -> None:
    """The one JSON document of a command, on stdout."""
    click.echo(json.dumps(doc, indent=2, sort_keys=True))


def fail(message: str) -> NoReturn:
    click.echo(f"georelay-dns: {message}", err=True)
    sys.exit(1)


def read_inputs(inventory: str) -> Inputs:
    try:
        return load_inputs(load_inventory(inventory))
    except (InventoryError, InventoryReadError) as e:
        fail(str(e))


def checked_region(region: str, latency: Latency, what: str) -> str:
    """check_region's note for a region a flag names; a name that is not an AWS region
    fails, listing the known ones."""
    try:
        return check_region(region, latency, what=what)
    except RegionError as e:
        fail(str(e))


def tree_of(inputs: Inputs, zone_id: str = SELF_ZONE,
            state: OperatorState | None = None) -> Tree:
    try:
        return build_tree(inputs, zone_id, state)
    except TreeError as e:
        fail(str(e))


def aws(fn: Callable[[], Any]) -> Any:
    """fn(), failing with the one line an AWS-side error deserves (workflow.aws_message)."""
    try:
        return fn()
    except AWS_ERRORS as e:
        fail(aws_message(e) or str(e))


def resolution(tree: Tree, hostname: str, origin: str, down: Iterable[str] = (),
               down_regions: Iterable[str] = ()) -> dict[str, Any]:
    """Who Route53 answers users near origin with in this tree (the down proxies' and
    regions' health checks failing), as data: answers (target, region, value, share) and
    notes."""
    down, down_regions = tuple(down), tuple(down_regions)
    ev = Evaluator(tree.records, tree.zone_id, health_for(tree.records, down, down_regions),
                   down_regions, tree.latency)
    out = ev.resolve(hostname, origin)
    notes = list(out.notes)
    if tree.state and origin in tree.state.evacuated:
        notes.insert(0, f"{origin} is evacuated: Route53 has no latency record for it")
    return {"answers": [{"target": a.target, "region": a.region, "value": a.value,
                         "share": float(a.share)} for a in out.answers],
            "notes": notes}


def parse_weight(text: str, where: str) -> int:
    if not text.isdigit() or int(text) > WEIGHT_MAX:
        fail(f"{where}: {text!r} is not a weight. Fix: give a whole number from 0 to "
             f"{WEIGHT_MAX} (0 = standby: traffic only when every other proxy of its region "
             "is down)")
    return int(text)


class StepDisplay:
    """An apply's steps on stderr: a progress bar on a terminal, else plain lines (CI, cron,
    Ansible), ``... [done/total] message``, one per step that has a message."""

    def __init__(self, tty: bool | None = None) -> None:
        self.tty = sys.stderr.isatty() if tty is None else tty
        self._bar: Any = None
        self._label = ""

    def __call__(self, step: Step) -> None:
        if not self.tty:
            if step.message:
                click.echo(f"... [{step.done}/{step.total}] {step.message}", err=True)
            return
        if self._bar is None:
            self._bar = click.progressbar(length=max(step.total, 1), label="applying",
                                          file=sys.stderr, show_pos=True, show_eta=False,
                                          item_show_func=lambda _: self._label or None)
            self._bar.__enter__()
        self._label = step.message or self._label
        if step.done > self._bar.pos:
            self._bar.update(step.done - self._bar.pos)
        else:
            self._bar.render_progress()  # a new label without a step

    def __enter__(self) -> StepDisplay:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
            self._bar = None

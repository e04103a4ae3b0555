"""georelay-rollout: staged one-box rollouts across the fleet (docs/ROLLOUT.md).

    georelay-rollout start SERVICE --release R --steps 5,10,25,50,100 --bake 10m [--region R]
    georelay-rollout status [SERVICE] [--live]     georelay-rollout pause|abort|promote SERVICE
    georelay-rollout resume SERVICE --release R    georelay-rollout release SERVICE

start and resume drive the rollout in the foreground (run them in tmux, screen or a
systemd-run unit) until it completes, aborts or is paused. pause, abort and promote ask the
running controller, which acts within a second; with no controller running they act
themselves. Every command says what it did and the command that undoes it.

Exit codes: 0 done, 1 error or refusal or an aborted rollout, 3 paused, 64 usage error.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

from georelay_dns.cli_common import echo_json, output_option
from georelay_dns.cli_support import cli_group, inventory_option
from georelay_model import Fleet, InventoryError, fleet_from_hostvars, load_inventory
from georelay_model.fleet import Service
from georelay_model.inventory import InventoryReadError
from georelay_rollout import proxies
from georelay_rollout.controller import Commands, Controller, Runner, duration
from georelay_rollout.rules import Thresholds
from georelay_rollout.state import (
    LeaseHeld,
    Rollout,
    StateError,
    Store,
    check_release,
    default_dir,
    describe_holder,
    now_utc,
    who,
)

EXIT_PAUSED = 3
REQUEST_WAIT = 300.0  # seconds a pause/abort/promote waits for the running controller


def fail(message: str) -> NoReturn:
    click.echo(f"georelay-rollout: {message}", err=True)
    sys.exit(1)


def parse_duration(text: str, what: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r}: a duration like 90s, 10m or 1h", param_hint=what)
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        steps = []
    if (not steps or any(not 1 <= s <= 100 for s in steps)
            or any(b <= a for a, b in itertools.pairwise(steps))):
        raise click.BadParameter(f"{text!r}: rising whole percentages from 1 to 100, "
                                 "e.g. 5,10,25,50,100", param_hint="--steps")
    return steps


def read_fleet(inventory: str) -> Fleet:
    try:
        return fleet_from_hostvars(load_inventory(inventory), rendered=False)
    except (InventoryError, InventoryReadError) as e:
        fail(str(e))


def service_of(fleet: Fleet, name: str) -> Service:
    names = [s.hostname for s in fleet.services]
    for s in fleet.services:
        if s.hostname == name:
            if s.onebox_domain_pattern is None:
                fail(f"{name} has no one-box. Fix: give its georelay_services entry an "
                     "onebox_domain such as '{region}-onebox-" + name + "'")
            return s
    fail(f"{name!r} is not a service of the inventory (georelay_services: "
         f"{', '.join(names) or 'none'}). Fix: name one of them")


def targets(fleet: Fleet, service: Service, regions: list[str] | None) -> list[str]:
    """The proxies a rollout sets: those of the regions named (default every region) whose
    one-box is switched on."""
    known = [r.name for r in fleet.regions]
    for name in regions or []:
        if name not in known:
            fail(f"--region {name}: not a region of the inventory ({', '.join(known)})")
    hosts = [p.name for r in fleet.regions if regions is None or r.name in regions
             if fleet.onebox_domain(service, r.name) for p in r.proxies]
    if not hosts:
        fail(f"no proxy has a one-box of {service.hostname} in "
             f"{', '.join(regions or known)} (georelay_onebox_enabled is false there)")
    return hosts


def runner(inventory: str, service: str, hosts: list[str]) -> Runner:
    def run(percent: int | None, hold: str | None) -> Mapping[str, proxies.Reading]:
        try:
            got = proxies.run(inventory, service, percent=percent, hold=hold,
                             limit=",".join(hosts))
        except proxies.ProxiesError as e:
            fail(str(e))
        return {h: r for h, r in got.items() if h in hosts}

    return run


def store_of(fleet: Fleet, state_dir: str | None) -> Store:
    return Store(Path(state_dir) / fleet.dns.owner if state_dir else default_dir(fleet.dns.owner))


state_dir_option = click.option(
    "--state-dir", default=None, metavar="DIR",
    help="Where rollouts are kept [default: $GEORELAY_ROLLOUT_STATE_DIR, else "
         "~/.local/state/georelay/rollout]; one subdirectory per georelay_dns_owner")


def _drive(store: Store, rollout: Rollout, run: Runner, command: str) -> None:
    """Hold the lease, save the state under it and drive the rollout to its end."""
    try:
        with store.lease(rollout.service, command):
            store.save(rollout)
            status = Controller(store, rollout, run, click.echo).run()
    except LeaseHeld as e:
        fail(f"{e}. Fix: wait for it, or ask it: georelay-rollout pause|abort {rollout.service}")
    sys.exit({"completed": 0, "paused": EXIT_PAUSED}.get(status, 1))


@cli_group("georelay-rollout", distribution="georelay")
def main() -> None:
    """Staged one-box rollouts across the fleet: set a share of users on the one-box on
    every proxy, bake, watch the one-box's errors, advance or abort."""


@main.command("start")
@click.argument("service")
@click.option("--release", required=True, help="What is on the one-box (e.g. v42); resume "
              "refuses another")
@click.option("--steps", default="5,10,25,50,100", show_default=True,
              help="The percentages of users on the one-box, one step after another")
@click.option("--bake", default="10m", show_default=True, help="How long each step is watched")
@click.option("--interval", default="30s", show_default=True, help="Between evaluations")
@click.option("--region", "regions", multiple=True, help="Only these regions (repeatable); "
              "the others keep their percentage")
@click.option("--min-requests", type=click.IntRange(1), default=200, show_default=True,
              help="One-box requests a step needs before it is judged; fewer: it holds")
@click.option("--consecutive", type=click.IntRange(1), default=3, show_default=True,
              help="Bad evaluations in a row that abort")
@click.option("--hook", default=None, metavar="CMD",
              help="A shell command run at every evaluation (e.g. a CloudWatch alarm "
                   "check); exit status other than 0 aborts")
@inventory_option()
@state_dir_option
def start_cmd(service: str, release: str, steps: str, bake: str, interval: str,
              regions: tuple[str, ...], min_requests: int, consecutive: int, hook: str | None,
              inventory: str, state_dir: str | None) -> None:
    """Start a rollout of SERVICE's one-box and drive it to the end."""
    try:
        check_release(release)
    except StateError as e:
        fail(str(e))
    step_list = parse_steps(steps)
    bake_s, interval_s = parse_duration(bake, "--bake"), parse_duration(interval, "--interval")
    fleet = read_fleet(inventory)
    svc = service_of(fleet, service)
    hosts = targets(fleet, svc, list(regions) or None)
    store = store_of(fleet, state_dir)
    try:
        old = store.load(service)
    except StateError as e:
        fail(str(e))
    if old is not None and old.active:
        fail(f"{service} already has a rollout ({old.release}, {old.status} at "
             f"{old.percent}%). Fix: {Commands(service, old.release, inventory).abort} or "
             "resume it; one rollout per service at a time")
    rollout = Rollout(service=service, release=release, steps=step_list, bake_s=bake_s,
                      interval_s=interval_s, regions=list(regions) or None,
                      thresholds=Thresholds(min_requests=min_requests, consecutive=consecutive),
                      hook=hook, inventory=inventory, started_by=who(), started_at=now_utc())
    rollout.event("started", by=rollout.started_by, steps=step_list, proxies=hosts)
    undo = Commands(service, release, inventory).abort
    click.echo(f"rollout of {service} ({release}): steps {', '.join(f'{s}%' for s in step_list)}, "
               f"bake {duration(bake_s)} each, on {len(hosts)} proxies; state in "
               f"{store.path(service, 'json')} (undo: {undo})")
    store.clear_request(service)
    _drive(store, rollout, runner(inventory, service, hosts), "start")


def _load(store: Store, service: str) -> Rollout:
    try:
        r = store.load(service)
    except StateError as e:
        fail(str(e))
    if r is None:
        fail(f"{service} has no rollout in {store.dir}. Fix: georelay-rollout start {service} "
             "--release R (or --state-dir where it was started)")
    return r


@main.command("resume")
@click.argument("service")
@click.option("--release", required=True, help="The release the rollout was started with")
@inventory_option()
@state_dir_option
def resume_cmd(service: str, release: str, inventory: str, state_dir: str | None) -> None:
    """Resume a paused or interrupted rollout: re-apply its step, bake it again."""
    fleet = read_fleet(inventory)
    svc = service_of(fleet, service)
    store = store_of(fleet, state_dir)
    r = _load(store, service)
    if r.release != release:
        fail(f"the rollout of {service} is of release {r.release}, not {release}. Fix: "
             f"--release {r.release}, or abort it and start {release}")
    if r.status not in ("running", "paused"):
        fail(f"the rollout of {service} ({r.release}) is {r.status}: nothing to resume. "
             f"Start a new one: georelay-rollout start {service} --release R")
    hosts = targets(fleet, svc, r.regions)
    r.applied, r.baked_s = False, 0.0
    r.event("resumed", by=who(), step=r.step + 1)
    click.echo(f"resuming {service} ({r.release}) at step {r.step + 1}/{len(r.steps)} "
               f"({r.percent}%): re-applied, then baked again from zero "
               f"(undo: {Commands(service, r.release, inventory).pause})")
    store.clear_request(service)
    _drive(store, r, runner(inventory, service, hosts), "resume")


def _ask(store: Store, r: Rollout, action: str, reason: str, act: Callable[[Controller], Any],
         run: Runner) -> None:
    """Hand action to the running controller, or do it here when none runs."""
    holder = store.holder(r.service)
    if holder is not None:
        store.request(r.service, action, reason)
        click.echo(f"asked the controller ({describe_holder(holder)}) to {action}; waiting")
        end = time.monotonic() + REQUEST_WAIT
        while time.monotonic() < end:
            time.sleep(0.5)
            if store.holder(r.service) is None:  # the controller acted on it and ended
                break
        done = _load(store, r.service)
        where = ("0% on every proxy" if done.status == "aborted"
                 else f"{done.percent}%")
        click.echo(f"{r.service} ({done.release}) is now {done.status} ({where})"
                   + (f": {done.reason}" if done.reason else ""))
        return
    try:
        with store.lease(r.service, action):
            act(Controller(store, r, run, click.echo))
    except LeaseHeld as e:
        fail(f"{e}. Fix: run the command again")


def _lever(service: str, inventory: str, state_dir: str | None, reason: str, action: str,
           allowed: tuple[str, ...], act: Callable[[Controller], Any]) -> None:
    fleet = read_fleet(inventory)
    svc = service_of(fleet, service)
    store = store_of(fleet, state_dir)
    r = _load(store, service)
    if r.status not in allowed:
        fail(f"the rollout of {service} ({r.release}) is {r.status}: cannot {action} it")
    _ask(store, r, action, reason, act,
         runner(inventory, service, targets(fleet, svc, r.regions)))
    final = _load(store, service)
    sys.exit(0 if final.status != "aborting" else 1)


reason_option = click.option("--reason", default="", help="Said in the history and status")


@main.command("pause")
@click.argument("service")
@reason_option
@inventory_option()
@state_dir_option
def pause_cmd(service: str, reason: str, inventory: str, state_dir: str | None) -> None:
    """Stop advancing; the current percentage stays."""
    _lever(service, inventory, state_dir, reason, "pause", ("running",),
           lambda c: c.pause(f"pause by {who()}" + (f": {reason}" if reason else "")))


@main.command("abort")
@click.argument("service")
@reason_option
@inventory_option()
@state_dir_option
def abort_cmd(service: str, reason: str, inventory: str, state_dir: str | None) -> None:
    """0% on every proxy, read back: every user back on regular."""
    _lever(service, inventory, state_dir, reason, "abort",
           ("running", "paused", "aborting", "aborted", "completed"),
           lambda c: c.abort(f"abort by {who()}" + (f": {reason}" if reason else "")))


@main.command("promote")
@click.argument("service")
@reason_option
@inventory_option()
@state_dir_option
def promote_cmd(service: str, reason: str, inventory: str, state_dir: str | None) -> None:
    """Skip the remaining steps: 100% on every proxy, read back; the rollout completes."""
    _lever(service, inventory, state_dir, reason, "promote", ("running", "paused"),
           lambda c: c.promote(f"promote by {who()}" + (f": {reason}" if reason else "")))


@main.command("release")
@click.argument("service")
@inventory_option()
@state_dir_option
def release_cmd(service: str, inventory: str, state_dir: str | None) -> None:
    """After a rollout: hand every proxy back to the inventory's onebox_percent."""
    fleet = read_fleet(inventory)
    svc = service_of(fleet, service)
    store = store_of(fleet, state_dir)
    r = _load(store, service)
    if r.active:
        fail(f"the rollout of {service} ({r.release}) is {r.status}. Fix: abort it first "
             f"({Commands(service, r.release, inventory).abort})")
    hosts = targets(fleet, svc, r.regions)
    got = runner(inventory, service, hosts)(svc.onebox_percent, None)
    bad = sorted(h for h, x in got.items() if not x.ok or x.percent != svc.onebox_percent)
    if bad:
        fail(f"not confirmed on {', '.join(bad)}; run it again once they answer")
    r.event("released", by=who(), percent=svc.onebox_percent)
    store.save(r)
    click.echo(f"released: {svc.onebox_percent}% (the inventory's onebox_percent) on "
               f"{len(got)} proxies, read back; playbook runs manage it again")


@main.command("status")
@click.argument("service", required=False)
@click.option("--live", is_flag=True, help="Also read every targeted proxy now")
@output_option
@inventory_option()
@state_dir_option
def status_cmd(service: str | None, live: bool, output: str, inventory: str,
               state_dir: str | None) -> None:
    """What each rollout is doing, who drives it and what to run next."""
    fleet = read_fleet(inventory)
    store = store_of(fleet, state_dir)
    names = [service_of(fleet, service).hostname] if service else store.services()
    docs = []
    for name in names:
        try:
            r = store.load(name)
        except StateError as e:
            fail(str(e))
        if r is None:
            continue
        holder = store.holder(name)
        doc: dict[str, Any] = {**r.to_dict(), "controller": holder}
        if live:
            hosts = targets(fleet, service_of(fleet, name), r.regions)
            doc["proxies"] = {h: dataclasses.asdict(x) for h, x in
                              runner(inventory, name, hosts)(None, None).items()}
        docs.append((r, doc))
    if output == "json":
        echo_json({"state_dir": str(store.dir), "rollouts": [d for _, d in docs]})
        return
    if not docs:
        click.echo(f"no rollout in {store.dir}")
    for r, doc in docs:
        _show(r, doc, Commands(r.service, r.release, inventory))


def _show(r: Rollout, doc: dict[str, Any], cmd: Commands) -> None:
    share = (f"the step's {r.percent}%; the proxies run 0%" if r.status == "aborted"
             else f"{r.percent}%")
    click.echo(f"{r.service}: release {r.release}, {r.status} at step {r.step + 1}/"
               f"{len(r.steps)} ({share}), steps {','.join(map(str, r.steps))}, "
               f"baked {duration(r.baked_s)} of {duration(r.bake_s)}"
               + (f"; {r.reason}" if r.reason else ""))
    click.echo(f"  started {r.started_at} by {r.started_by}")
    holder = doc["controller"]
    if holder is not None:
        click.echo(f"  controller: {describe_holder(holder)}")
    elif r.status == "running":
        click.echo(f"  no controller is running it (stopped or killed); the proxies stay at "
                   f"{r.percent}%. Next: {cmd.resume}, or {cmd.abort}")
    if r.last:
        click.echo(f"  last evaluation: {r.last['action']}: {r.last['reason']}")
    for h, x in sorted(doc.get("proxies", {}).items()):
        click.echo(f"  {h}: " + (f"{x['percent']}%, one-box servers {x['usable_servers']}, "
                                 f"one-box {x['onebox_5xx']}/{x['onebox_requests']} 5xx, "
                                 f"regular {x['regular_5xx']}/{x['regular_requests']}, "
                                 f"fallback {x['fallback_requests']}"
                                 if x["ok"] else f"no answer: {x['error']}"))
    released = next((e for e in reversed(r.history) if e["event"] == "released"), None)
    if released is not None and not r.active:
        click.echo(f"  released {released['at']} by {released.get('by')}: the proxies run the "
                   f"inventory's onebox_percent ({released.get('percent')}%) again")
    next_step = {"running": f"{cmd.pause} | {cmd.abort} | {cmd.line('promote')}",
                 "paused": f"{cmd.resume} | {cmd.abort}",
                 "aborting": cmd.abort, "aborted": cmd.release_cmd,
                 "completed": cmd.release_cmd}.get(r.status)
    if released is not None and not r.active:
        next_step = f"georelay-rollout start {r.service} --release R -i {cmd.inventory}"
    if next_step:
        click.echo(f"  next: {next_step}")

"""georelay-lab: the local stand-ins for AWS pieces that the demo and the tests run on."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource

from georelay_dns.cli_support import cli_group, inventory_option
from georelay_lab import hosts as hosts_lab
from georelay_lab import nginx_gateway, onebox_demo, processes, stand_ins
from georelay_lab import prometheus as lab_prometheus
from georelay_lab.gateway import serve


@cli_group("georelay-lab", distribution="georelay-lab")
def main() -> None:
    """Local stand-ins for AWS: a lab CA, API Gateway regional endpoints, Route53; real
    Debian 12 hosts (`hosts`). Development only: the demo and the tests run on it."""


def _report(results: Iterable[tuple[str, bool]]) -> NoReturn:
    """Print each line; exit 1 if any of them failed, else 0."""
    failures = 0
    for line, ok in results:
        click.echo(line)
        failures += not ok
    sys.exit(1 if failures else 0)


def _inventory(inventory: str) -> str:
    """The inventory path, or a usage error (exit 64) naming it when it does not exist."""
    if not Path(inventory).exists():
        raise click.UsageError(f"no inventory at {inventory}: give -i PATH of an Ansible "
                               "inventory (file or directory), e.g. -i inventories/demo")
    return inventory


@main.command()
@click.option("--region", required=True, help="AWS region this gateway stands in for.")
@click.option("--listen", required=True, help="ip:port to listen on.")
@click.option("--domain", "domains", multiple=True, required=True,
              help="A custom domain it serves (repeat).")
@click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False),
              help="PEM with certificate chain and key covering every domain.")
@click.option("--faults", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Fault file to follow (gateway-fault writes it; it may not exist yet).")
def gateway(region: str, listen: str, domains: tuple[str, ...], cert: str,
            faults: Path | None) -> None:
    """Run one stand-in regional API Gateway in the foreground."""
    host, _, port = listen.rpartition(":")
    serve((host.strip("[]"), int(port)), region, list(domains), cert, faults)


@main.command("gateway-fault")
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--domain", default=None, metavar="DOMAIN",
              help="Custom domain a stand-in gateway serves, e.g. "
                   "us-east-1-onebox-fast.example.com.")
@click.option("--status", type=click.IntRange(100, 599), default=None,
              help="HTTP status to answer, e.g. 503.")
@click.option("--share", type=click.FloatRange(0.0, 1.0), default=1.0, show_default=True,
              help="Share of the domain's requests that get it (0.3: 3 in 10, counted, not "
                   "random).")
@click.option("--health-checks", is_flag=True,
              help="Fail /ping too (HAProxy's health checks); spared by default.")
@click.option("--clear", is_flag=True, help="Remove the fault of --domain (alone: every fault).")
def gateway_fault(inventory: str, lab_dir: str, domain: str | None, status: int | None,
                  share: float, health_checks: bool, clear: bool) -> None:
    """Make a running stand-in gateway answer STATUS to a share of one domain's requests, or
    stop it (--clear); no restart. Python gateways only."""
    if clear == (status is not None):
        raise click.UsageError("give --status CODE (with --domain) to set a fault, or --clear "
                               "to remove one")
    if status is not None and domain is None:
        raise click.UsageError("--status needs --domain DOMAIN: the custom domain to fail")
    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir))
    try:
        if status is not None and domain is not None:
            lines = lab.set_fault(domain, status, share, health_checks=health_checks)
        else:
            lines = lab.clear_fault(domain)
    except stand_ins.FaultError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from exc
    for line in lines:
        click.echo(line)


@main.command()
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--gateway", "gateway_kind", type=click.Choice(stand_ins.GATEWAY_KINDS),
              default=None, help="Stand-in gateway: python (HTTP/1.1, fault knobs) or nginx "
              "(HTTP/2 and HTTP/1.1). Default: the kind each region last ran, else python.")
@click.option("--gateway-keepalive-requests", type=click.IntRange(min=1),
              default=nginx_gateway.KEEPALIVE_REQUESTS, show_default=True,
              help="nginx gateways: close each connection after this many requests (HTTP/2: "
              "GOAWAY), as load balancers in front of real gateways do.")
@click.option("--gateway-keepalive-timeout", type=click.FloatRange(min=0.001),
              default=nginx_gateway.KEEPALIVE_TIMEOUT_S, show_default=True, metavar="SECONDS",
              help="nginx gateways: close a connection idle this long (HTTP/2: GOAWAY).")
def up(inventory: str, lab_dir: str, gateway_kind: str | None,
       gateway_keepalive_requests: int, gateway_keepalive_timeout: float) -> None:
    """Create the lab CA and certificates, and start a stand-in gateway per region."""
    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir), gateway_kind,
                                            gateway_keepalive_requests,
                                            gateway_keepalive_timeout)
    for line in lab.up():
        click.echo(line)


@main.command()
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--hosts-lab", "hosts_lab_name", default=None, metavar="NAME",
              help="The proxies are hosts of this host lab: run the check on them over SSH.")
def health(inventory: str, lab_dir: str, hosts_lab_name: str | None) -> None:
    """Each proxy's /healthz through its public listener, and its agent's Nagios check."""
    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir))
    check = None
    if hosts_lab_name is not None:
        hl = _host_lab(hosts_lab_name, hosts_lab.DEFAULT_SUBNET)

        def check(proxy: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
            return hl.ssh(proxy, "sudo -n " + shlex.join(argv), check=False)

    _report(lab.health(check))


@main.command()
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--listen", default="127.0.9.1:5300", show_default=True,
              help="ip:port for the Route53 stand-in.")
def route53(inventory: str, lab_dir: str, listen: str) -> None:
    """Start a Route53 stand-in (moto_server) holding the inventory's hosted zone."""
    from georelay_lab import route53 as r53

    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir))
    for line in r53.start(lab.lab_dir, listen, lab.fleet.zone):
        click.echo(line)


@main.command()
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--listen", default=lab_prometheus.DEFAULT_LISTEN, show_default=True,
              help="ip:port for Prometheus's web UI and HTTP API.")
@click.option("--stop", is_flag=True, help="Stop the lab's Prometheus instead.")
def prometheus(inventory: str, lab_dir: str, listen: str, stop: bool) -> None:
    """Start Debian's Prometheus scraping every proxy's management listener (HAProxy's
    exporter and the agent), with the rules of monitoring/rules loaded (lab time: each
    `for` / 20); print its URL. Again: reload its config from the inventory."""
    if stop:
        pid_file = Path(lab_dir) / "prometheus/prometheus.pid"
        click.echo("stopped prometheus" if processes.stop(pid_file)
                   else "prometheus was not running")
        return
    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir))
    for line in lab_prometheus.start(lab.lab_dir, listen, lab.fleet):
        click.echo(line)
    for line in lab_prometheus.scraped(f"http://{listen}",
                                       len(lab_prometheus.scrape_targets(lab.fleet))):
        click.echo(line)


@main.command()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
def down(lab_dir: str) -> None:
    """Stop everything the lab started (gateways, proxies, agents, Route53 stand-in)."""
    for line in stand_ins.down(Path(lab_dir)):
        click.echo(line)


@main.command()
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--path", default="/anything", show_default=True)
def show(inventory: str, lab_dir: str, path: str) -> None:
    """Send a request through every proxy for every service; show what the gateway got."""
    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir))
    _report(lab.show(path))


@main.command("onebox-split")
@inventory_option()
@click.option("--lab-dir", default=".lab", show_default=True, type=click.Path())
@click.option("--service", default=None, metavar="HOSTNAME",
              help="Public name whose split to show. Default: the first with a one-box.")
@click.option("--proxy", default=None, metavar="NAME",
              help="Proxy to send the users through. Default: the first of a region with "
                   "one-box on.")
@click.option("--users", type=click.IntRange(1, 100), default=8, show_default=True,
              help="Simulated users to show, two requests each.")
@click.option("--measure", type=click.IntRange(0, 100000), default=1000, show_default=True,
              help="Users whose first request measures the split (0: none).")
def onebox_split(inventory: str, lab_dir: str, service: str | None, proxy: str | None,
                 users: int, measure: int) -> None:
    """Simulated users through a proxy: each one's bucket, partition, answering gateway and
    headers (Set-Cookie on the first response only, Vary), then the split measured."""
    lab = stand_ins.StandIns.from_inventory(_inventory(inventory), Path(lab_dir))
    try:
        split = onebox_demo.Split.of(lab, service, proxy)
    except onebox_demo.SplitError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.field}") from exc
    _report(split.lines(users, measure))


@main.group()
def hosts() -> None:
    """Real Debian 12 hosts on this machine (systemd-nspawn, SSH, a private bridge)."""


def _host_lab(name: str, subnet: str) -> hosts_lab.HostLab:
    try:
        return hosts_lab.HostLab(name, subnet)
    except hosts_lab.HostLabError as exc:
        raise click.UsageError(str(exc)) from exc
    except ValueError as exc:  # ipaddress: not a network
        raise click.BadParameter(f"{exc}. Fix: give an IPv4 network such as 10.213.0.0/24",
                                 param_hint="--subnet") from exc


_lab_name = click.option("--lab", "lab_name", default=hosts_lab.DEFAULT_LAB, show_default=True,
                         help="Name of this host lab (its bridge is gr-<name>).")
_subnet = click.option("--subnet", default=hosts_lab.DEFAULT_SUBNET, show_default=True,
                       help="IPv4 subnet of the bridge; this machine takes its first address, "
                       "hosts the ones from .11 on.")


@hosts.command("up")
@click.argument("count", type=click.IntRange(1, 40), required=False)
@inventory_option(required=False,
                  help_text="Bring up the inventory's hosts that set an ansible_host in the subnet")
@_lab_name
@_subnet
@click.option("--timeout", default=60.0, show_default=True, help="seconds to wait for SSH")
def hosts_up(count: int | None, inventory: str | None, lab_name: str, subnet: str,
             timeout: float) -> None:
    """Bring up COUNT hosts (h1..hN), or the inventory's hosts; replaces this lab's earlier ones."""
    given = click.get_current_context().get_parameter_source("inventory")
    if count is not None and given is not ParameterSource.COMMANDLINE:
        inventory = None  # COUNT wins over $ANSIBLE_INVENTORY
    if (count is None) == (inventory is None):
        raise click.UsageError("give either COUNT or -i INVENTORY (or $ANSIBLE_INVENTORY)")
    lab = _host_lab(lab_name, subnet)
    if inventory is not None:
        names, addresses = hosts_lab.hosts_of_inventory(_inventory(inventory), lab)
    else:
        names, addresses = [f"h{i + 1}" for i in range(count or 0)], None
    try:
        for line in lab.up(names, addresses, timeout=timeout):
            click.echo(line)
    except hosts_lab.HostLabError as exc:
        raise click.ClickException(str(exc)) from exc


@hosts.command("down")
@_lab_name
def hosts_down(lab_name: str) -> None:
    """Remove the lab's hosts, cgroups, mounts and bridge (safe to repeat)."""
    try:
        for line in hosts_lab.HostLab(lab_name).down():
            click.echo(line)
    except hosts_lab.HostLabError as exc:
        raise click.ClickException(str(exc)) from exc


@hosts.command("status")
@_lab_name
def hosts_status(lab_name: str) -> None:
    """Each host of the lab and what its systemd says."""
    for line in hosts_lab.HostLab(lab_name).status():
        click.echo(line)

"""`make drill` (`georelay-tools drill`): fail parts of the running demo one at a time and
show what happens.

Against the fleet `make demo` runs (or any lab fleet: -i INVENTORY --lab-dir DIR), in order:

1. kill one proxy's HAProxy, then start it again;
2. stop one region's stand-in API Gateway, then start it again;
3. evacuate that region in Route53 (`georelay-dns evacuate`), then restore it.

Before, during and after each step it prints what Route53 would answer users near each
region (`georelay-dns simulate --live`: the live records, each proxy's health as its agent
answers it), what every agent answers on /healthz through the proxy's public listener (what
Route53's health checks ask), and a real request through every proxy (status, and which
region's gateway answered: the stand-in gateways say so), and, when the lab's Prometheus
runs (`georelay-lab prometheus`; make demo starts it), the alerts pending and firing: the
proxy kill must fire GeorelayProxyUnhealthy and the gateway stop GeorelayBridgingViaBackup
for the proxies it hit, each within its `for` plus one evaluation interval of its
expression holding, and each must resolve after the repair. Everything it broke is put back,
also when it is interrupted; it exits 1 if anything did not behave as the step expects.

Route53 is reached the standard boto3 way (AWS_ENDPOINT_URL_ROUTE_53 and friends; `make
drill` sets them for the demo's moto_server).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from georelay_lab import client, processes
from georelay_lab.processes import haproxy_running, start_haproxy, stop_haproxy
from georelay_lab.stand_ins import StandIns
from georelay_model import Proxy, Region
from georelay_model.facts import paths_below
from georelay_tools.drill_alerts import Alerts, lab_for, watch

POLL = 0.25
# The alerts each step must fire and resolve (monitoring/rules/georelay-alerts.yml).
PROXY_UNHEALTHY = "GeorelayProxyUnhealthy"
BRIDGING = "GeorelayBridgingViaBackup"


class DrillError(RuntimeError):
    """The lab is not in a state the drill can run on (message says what to do)."""


def _tool(name: str) -> str:
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else (shutil.which(name) or name)


def proxy_root(lab: StandIns, proxy: Proxy) -> Path:
    """The lab's georelay_root of a proxy (the demo's inventory puts it there too)."""
    return lab.lab_dir / "proxies" / proxy.name


# ---- what users, agents and Route53 see ----------------------------------------------

@dataclass(frozen=True)
class Seen:
    """One request through a proxy: HTTP status (None: no answer) and what answered."""

    status: int | None
    text: str  # the body's first line, the gateway's region, or the error

    def __str__(self) -> str:
        return f"{self.status} {self.text}" if self.status is not None else f"FAILED {self.text}"


def healthz(lab: StandIns, proxy: Proxy, hostname: str) -> Seen:
    """/healthz through the public listener: what Route53's health check gets."""
    try:
        reply = client.fetch(proxy.public_address, proxy.https_port, hostname, "/healthz",
                             ca_file=str(lab.ca_file), timeout=5)
    except OSError as exc:
        return Seen(None, str(exc) or type(exc).__name__)
    return Seen(reply.status, reply.body.decode(errors="replace").strip().splitlines()[0]
                if reply.body.strip() else "")


def request(lab: StandIns, proxy: Proxy, hostname: str, path: str = "/anything") -> Seen:
    """A real request through the proxy; the stand-in gateway says which region it is."""
    try:
        reply = client.fetch(proxy.public_address, proxy.https_port, hostname, path,
                             ca_file=str(lab.ca_file), timeout=10)
    except OSError as exc:
        return Seen(None, str(exc) or type(exc).__name__)
    region = reply.headers.get("x-lab-region")
    return Seen(reply.status, f"from gateway {region}" if region else
                reply.body.decode(errors="replace").strip()[:80])


ANSWER = re.compile(r"^ +(\S+) +(\S+) +(\S+) +([0-9.]+)%$", re.M)


@dataclass(frozen=True)
class Answer:
    """One record Route53 hands out to users near a region, with its share of them."""

    proxy: str
    region: str
    share: float


def route53(inventory: str, origin: str, hostname: str,
            down: list[str]) -> tuple[int, str, list[Answer]]:
    """`georelay-dns simulate --live`: Route53's rules over the records and operator state
    it holds, with the proxies whose health check fails (`down`) marked as such."""
    cmd = [_tool("georelay-dns"), "simulate", "-i", inventory, "--from", origin, "--live",
           "--service", hostname]
    for host in down:
        cmd += ["--down", host]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    text = (proc.stdout + proc.stderr).rstrip()
    answers = [Answer(m.group(1), m.group(2), float(m.group(4)))
               for m in ANSWER.finditer(proc.stdout)]
    return proc.returncode, text, answers


def georelay_dns(*args: str) -> tuple[int, str]:
    proc = subprocess.run([_tool("georelay-dns"), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).rstrip()


# ---- the drill ------------------------------------------------------------------------

@dataclass
class View:
    """What the drill saw at one moment."""

    route53: dict[str, list[Answer]]  # client region -> what Route53 answers there
    health: dict[str, Seen]  # proxy -> /healthz through its public listener
    requests: dict[str, Seen]  # proxy -> a real request through it

    def answered(self, origin: str) -> set[str]:
        return {a.proxy for a in self.route53.get(origin, [])}


@dataclass
class Drill:
    lab: StandIns
    inventory: str
    out: Callable[[str], None] = print
    settle_timeout: float = 45.0  # seconds a step may take to show (checks, rise/fall)
    problems: list[str] = field(default_factory=list)
    alerts: Alerts | None = None  # the lab's Prometheus, when one runs (drill_alerts.py)
    broke: float = 0.0  # monotonic time of the step's break, and of its repair
    repaired: float = 0.0

    @property
    def hostname(self) -> str:
        return self.lab.fleet.services[0].hostname

    @property
    def regions(self) -> tuple[Region, ...]:
        return self.lab.fleet.regions

    def say(self, text: str = "") -> None:
        self.out(text)

    def expect(self, ok: bool, what: str) -> None:
        self.say(f"  [{'ok' if ok else 'UNEXPECTED'}] {what}")
        if not ok:
            self.problems.append(what)

    # -- preflight

    def preflight(self) -> None:
        """Refuse unless the demo's gateways, proxies and Route53 answer as they should."""
        demo = "run `make demo` first (it starts the gateways, the proxies and Route53)"
        if len(self.regions) < 2 or len(self.regions[0].proxies) < 1:
            raise DrillError("the drill needs at least two regions with proxies")
        for region in self.regions:
            address = region.apigw_address
            if address is None or not processes.wait_port(address.host, address.port, 1):
                raise DrillError(f"the stand-in gateway of {region.name} does not answer on "
                                 f"{address.haproxy if address else '?'}: {demo}")
        for proxy in self.lab.fleet.proxies:
            root = proxy_root(self.lab, proxy)
            if not haproxy_running(root):
                raise DrillError(f"proxy {proxy.name} is not running (no HAProxy master on "
                                 f"{paths_below(str(root))['master_socket']}): {demo}")
        endpoint = os.environ.get("AWS_ENDPOINT_URL_ROUTE_53", "the AWS default")
        code, text, answers = route53(self.inventory, self.regions[0].name, self.hostname, [])
        if code != 0 or not answers:
            last = text.splitlines()[-1] if text else ""
            raise DrillError(f"Route53 at {endpoint} does not hold the fleet's records "
                             f"(georelay-dns simulate --live exit {code}: {last}): {demo}")
        if "operator state in Route53: none" not in text:
            raise DrillError("Route53 holds an evacuation or weight override already; undo "
                             "it first (georelay-dns restore REGION / weight HOST --reset):\n"
                             + text)
        unhealthy = [p.name for p in self.lab.fleet.proxies
                     if healthz(self.lab, p, self.hostname).status != 200]
        if unhealthy:
            raise DrillError(f"not every proxy is healthy before the drill: "
                             f"{', '.join(unhealthy)} (see `georelay-lab health`)")

    # -- views

    def look(self, title: str) -> View:
        """Print and return the three views: agents, Route53 per client region, requests."""
        self.say(f"\n--- {title}")
        health = {p.name: healthz(self.lab, p, self.hostname) for p in self.lab.fleet.proxies}
        down = [name for name, seen in health.items() if seen.status != 200]
        self.say(f"Agents: https://{self.hostname}/healthz through each proxy (what Route53's "
                 "health checks get):")
        for p in self.lab.fleet.proxies:
            self.say(f"  {p.name:<10} {p.region:<12} {health[p.name]}")
        self.say("Route53: what users near each region get (georelay-dns simulate --live"
                 + (f" --down {' --down '.join(down)}" if down else "") + "):")
        answers: dict[str, list[Answer]] = {}
        with ThreadPoolExecutor(4) as pool:  # one simulate per client region, at once
            results = list(pool.map(
                lambda r: route53(self.inventory, r.name, self.hostname, down), self.regions))
        for region, (code, text, got) in zip(self.regions, results, strict=True):
            answers[region.name] = got
            if code != 0:
                self.problems.append(f"georelay-dns simulate --from {region.name} exit {code}")
            shown = ", ".join(f"{a.proxy}@{a.region} {a.share:.0f}%" for a in got)
            self.say(f"  near {region.name:<12} {shown or text}")
            for line in text.splitlines():
                if "note:" in line:
                    self.say(f"    {line.strip()}")
        self.say(f"Requests: https://{self.hostname}/anything through each proxy:")
        seen = {p.name: request(self.lab, p, self.hostname) for p in self.lab.fleet.proxies}
        for p in self.lab.fleet.proxies:
            self.say(f"  {p.name:<10} {p.region:<12} {seen[p.name]}")
        if self.alerts:
            self.say(f"Alerts: pending and firing in Prometheus ({self.alerts.url}/alerts):")
            for line in self.alerts.lines():
                self.say(line)
        return View(answers, health, seen)

    def alert_fires(self, alert: str, proxy: Proxy, since: float) -> None:
        """Expect alert to fire for proxy within its `for` plus one evaluation interval of
        its expression first holding (as polled: + 2 polls)."""
        if not self.alerts:
            return
        limit = lab_for(self.lab.lab_dir, alert) + self.alerts.interval_s
        fired = self.alerts.wait_firing(alert, {"proxy": proxy.name}, since,
                                        self.settle_timeout)
        if fired is None:
            self.expect(False, f"{alert} fires for {proxy.name} within {self.settle_timeout:g}s")
            return
        self.expect(fired.pending_s <= limit + 2 * POLL,
                    f"{alert} fires for {proxy.name} {fired.after_s:g}s after the break, "
                    f"{fired.pending_s:g}s after its expression held (for + one evaluation: "
                    f"{limit:g}s): {fired.summary}")

    def alert_resolves(self, alert: str, proxy: Proxy, since: float) -> None:
        if not self.alerts:
            return
        took = self.alerts.wait_resolved(alert, {"proxy": proxy.name}, self.settle_timeout,
                                         since)
        self.expect(took is not None, f"{alert} resolves for {proxy.name}"
                    + (f" {took:g}s after the repair" if took is not None else
                       f" within {self.settle_timeout:g}s"))

    def wait(self, what: str, predicate: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + self.settle_timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(POLL)
        self.expect(False, f"{what} within {self.settle_timeout:g}s")
        return False

    def status(self, proxy: Proxy) -> int | None:
        return healthz(self.lab, proxy, self.hostname).status

    # -- steps

    @contextmanager
    def proxy_killed(self, proxy: Proxy) -> Iterator[None]:
        root = proxy_root(self.lab, proxy)
        self.say(f"\n=== 1. Kill proxy {proxy.name} ({proxy.region}): its HAProxy stops")
        self.broke = time.monotonic()
        stop_haproxy(root)
        try:
            yield
        finally:
            if not haproxy_running(root):
                self.say(f"... starting {proxy.name}'s HAProxy again")
                self.repaired = time.monotonic()
                start_haproxy(root)

    @contextmanager
    def gateway_stopped(self, region: Region) -> Iterator[None]:
        self.say(f"\n=== 2. Stop the API Gateway of {region.name}")
        self.broke = time.monotonic()
        self.lab.stop_gateway(region.name)
        try:
            yield
        finally:
            self.say(f"... starting the {region.name} gateway again")
            self.repaired = time.monotonic()
            self.lab.start_gateway(region)

    @contextmanager
    def region_evacuated(self, region: Region) -> Iterator[None]:
        self.say(f"\n=== 3. Evacuate {region.name} in Route53: georelay-dns evacuate "
                 f"{region.name}")
        code, text = georelay_dns("evacuate", region.name, "--reason", "georelay drill",
                                  "--yes", "-i", self.inventory)
        for line in text.splitlines():
            self.say(f"  | {line}")
        self.expect(code == 0, f"georelay-dns evacuate {region.name} succeeds (exit {code})")
        try:
            yield
        finally:
            self.say(f"... georelay-dns restore {region.name}")
            code, text = georelay_dns("restore", region.name, "-i", self.inventory)
            for line in text.splitlines():
                self.say(f"  | {line}")
            self.expect(code == 0, f"georelay-dns restore {region.name} succeeds (exit {code})")

    def run(self) -> int:
        self.preflight()
        self.alerts = watch(self.lab.lab_dir, self.say)
        home, other = self.regions[0], self.regions[1]
        victim = home.proxies[0]
        siblings = {p.name for p in home.proxies if p != victim}
        home_names = {p.name for p in home.proxies}
        other_names = {p.name for p in other.proxies}
        base = self.look("Before: everything up")

        with self.proxy_killed(victim):
            if self.wait(f"{victim.name} stops answering", lambda: self.status(victim) is None):
                view = self.look(f"{victim.name} killed")
                self.expect(victim.name not in view.answered(home.name),
                            f"Route53 no longer hands out {victim.name} to users near "
                            f"{home.name}")
                want = siblings or other_names
                self.expect(bool(view.answered(home.name)) and
                            view.answered(home.name) <= want,
                            f"users near {home.name} get {', '.join(sorted(want))}")
                self.expect(all(view.requests[n].status == 200 for n in siblings),
                            f"{home.name}'s other proxies still serve")
                self.alert_fires(PROXY_UNHEALTHY, victim, self.broke)
        self.wait(f"{victim.name} healthy again", lambda: self.status(victim) == 200)
        self.alert_resolves(PROXY_UNHEALTHY, victim, self.repaired)

        with self.gateway_stopped(home):
            if self.wait(f"{home.name}'s agents report their gateway down",
                         lambda: all(self.status(p) == 503 for p in home.proxies)):
                view = self.look(f"{home.name}'s gateway stopped")
                for p in home.proxies:
                    self.say(f"  {p.name} says: {view.health[p.name].text}")
                    self.expect(view.requests[p.name].status == 200 and
                                view.requests[p.name].text != f"from gateway {home.name}",
                                f"{p.name} still serves, bridging through another region's "
                                f"gateway ({view.requests[p.name]})")
                self.expect(bool(view.answered(home.name)) and
                            not view.answered(home.name) & home_names,
                            f"Route53 sends users near {home.name} to another region")
                for p in home.proxies:
                    self.alert_fires(BRIDGING, p, self.broke)
        self.wait("every agent healthy again", lambda: all(
            self.status(p) == 200 for p in self.lab.fleet.proxies))
        for p in home.proxies:
            self.alert_resolves(BRIDGING, p, self.repaired)

        with self.region_evacuated(home):
            view = self.look(f"{home.name} evacuated")
            self.expect(bool(view.answered(home.name)) and
                        view.answered(home.name) <= other_names,
                        f"users near {home.name} get {other.name}, though every proxy is "
                        "healthy")
            self.expect(all(view.requests[p.name].text == f"from gateway {home.name}"
                            for p in home.proxies),
                        f"{home.name}'s proxies still serve whoever reaches them, through "
                        "their own gateway")

        after = self.look("After: everything restored")
        self.expect(after.route53 == base.route53,
                    "Route53 answers every client region as before the drill")
        self.expect(all(s.status == 200 for s in after.health.values()),
                    "every agent answers 200 again")
        if self.problems:
            self.say(f"\nDRILL FAILED: {len(self.problems)} unexpected result(s):")
            for problem in self.problems:
                self.say(f"  - {problem}")
            return 1
        self.say("\nDRILL PASSED: each failure was handled as expected, and the fleet is back "
                 "as it was.")
        return 0

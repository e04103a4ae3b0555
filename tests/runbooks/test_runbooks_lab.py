"""Every command of every runbook, run in order against a lab fleet in the runbook's situation.

Per runbook: stage the situation (stop a gateway, kill HAProxy, break a reload, ...), run the
```sh blocks of Diagnosis and Mitigation, let the cause go away where the runbook waits for
that (the gateway comes back), run Rollback and Verification; every block must exit as its
fence says and print what its `expect=` says. Afterwards the fleet must be as before: the
runbook itself must have undone what it did (`reset` finds nothing to fix).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from test_runbook_docs import SITUATIONS

from georelay_agent.haproxy_api import parse_stat
from georelay_agent.haproxy_runtime import ProcInfo, send, show_proc
from georelay_lab import certs, processes
from georelay_lab import prometheus as lab_prometheus
from georelay_testing.runbook_doc import REPO, Block, Runbook, runbooks
from georelay_testing.runbook_lab import RunbookFleet

USAGE_ERRORS = re.compile(r"No such option|No such command|unrecognized arguments|"
                          r"invalid choice|Usage: |usage: |option .* is unknown")
Hook = Callable[[RunbookFleet, dict[str, str]], None]


def _nothing(_fleet: RunbookFleet, _vars: dict[str, str]) -> None:
    return None


@dataclass
class Situation:
    host: str
    stage: Hook = _nothing  # before Diagnosis
    heal: Hook = _nothing  # the cause goes away: before Rollback
    cleanup: Hook = _nothing  # what the lab must put back that is no runbook's job
    order: tuple[str, ...] = ("Diagnosis", "Mitigation", "Rollback", "Verification")
    extra: dict[str, str] = field(default_factory=dict)


# -- staging ------------------------------------------------------------------------------

def kill(*hosts: str) -> Hook:
    def stage(fleet: RunbookFleet, _v: dict[str, str]) -> None:
        for host in hosts:
            fleet.kill_proxy(host)
        for host in hosts:
            fleet.wait_healthz(host, None)
    return stage


def gateways(action: str, *regions: str, then: tuple[str, ...] = ()) -> Hook:
    def hook(fleet: RunbookFleet, _v: dict[str, str]) -> None:
        lab = fleet.lab()
        for region in regions:
            if action == "stop":
                assert lab.stop_gateway(region), f"gateway {region} was not running"
            else:
                lab.start_gateway(lab.fleet.region(region))
        for host in then:
            fleet.wait_healthz(host, 503 if action == "stop" else 200)
    return hook


def boot(*hosts: str) -> Hook:
    """The hosts come back: systemd starts HAProxy at boot (the lab starts it the same way
    the role does in process mode)."""
    def heal(fleet: RunbookFleet, _v: dict[str, str]) -> None:
        for host in hosts:
            fleet.start_proxy(host)
        for host in hosts:
            fleet.wait_healthz(host, 200)
    return heal


def both(*hooks: Hook) -> Hook:
    def hook(fleet: RunbookFleet, v: dict[str, str]) -> None:
        for h in hooks:
            h(fleet, v)
    return hook


def agent(fleet: RunbookFleet, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = fleet.root(host) / "opt/georelay-agent/venv/bin/georelay-agent"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def proc_info(fleet: RunbookFleet, host: str) -> ProcInfo:
    info = show_proc(str(fleet.master_socket(host)))
    assert info is not None, f"{host}: no master answers on {fleet.master_socket(host)}"
    return info


def master_answers(fleet: RunbookFleet, host: str, test: Callable[[ProcInfo], bool]) -> bool:
    """test(show proc), False while no master answers (it re-executes itself on a reload)."""
    info = show_proc(str(fleet.master_socket(host)))
    return info is not None and test(info)


def master_reload(fleet: RunbookFleet, host: str) -> None:
    before = proc_info(fleet, host).reloads
    send(str(fleet.master_socket(host)), "reload")
    wait_for(f"{host} to reload",
             lambda: master_answers(fleet, host, lambda info: info.reloads > before))


def failed_reloads(fleet: RunbookFleet, host: str) -> int:
    return proc_info(fleet, host).failed_reloads


def break_reload(host: str) -> Hook:
    """A hand edit HAProxy rejects, then a reload: the master keeps the old workers."""
    def stage(fleet: RunbookFleet, _v: dict[str, str]) -> None:
        agent(fleet, host, "check")  # monitoring ran before the failure (the cron does)
        before = failed_reloads(fleet, host)
        with fleet.config(host).open("a") as cfg:
            cfg.write("    option this-option-does-not-exist\n")
        send(str(fleet.master_socket(host)), "reload")
        wait_for(f"{host}'s master to count the failed reload", lambda: master_answers(
            fleet, host, lambda info: info.failed_reloads > before))
    return stage


def forget_check_history(host: str) -> Hook:
    """`check` warns for an hour after a failed reload; the lab's later pages need OK."""
    def cleanup(fleet: RunbookFleet, _v: dict[str, str]) -> None:
        (fleet.root(host) / "var/lib/georelay-agent/check/check-state.json").unlink(
            missing_ok=True)
    return cleanup


def _pem(fleet: RunbookFleet, days: int) -> bytes:
    ca = certs.load_authority(fleet.lab_dir / "certs", "lab-ca")
    assert ca is not None
    return certs.issue(ca, [s["hostname"] for s in fleet.services], days=days)


def _deploy_pem_directly(fleet: RunbookFleet, host: str, pem: bytes) -> None:
    (fleet.root(host) / "etc/haproxy/certs/georelay.pem").write_bytes(pem)
    master_reload(fleet, host)


ORIGINAL_PEM: dict[str, bytes] = {}


def expiring_certificate(host: str) -> Hook:
    """The inventory's PEM expires in 10 days and $HOST serves it; a renewed one waits."""
    def stage(fleet: RunbookFleet, v: dict[str, str]) -> None:
        tls = Path(v["TLS_PEM"])
        ORIGINAL_PEM["pem"] = tls.read_bytes()
        short = _pem(fleet, days=10)
        tls.write_bytes(short)
        _deploy_pem_directly(fleet, host, short)
        wait_for(f"{host}'s agent to see the expiring certificate",
                 lambda: "certificate expires in" in agent(fleet, host, "check").stdout)
        Path(v["NEW_PEM"]).write_bytes(_pem(fleet, days=90))
    return stage


def original_certificate(fleet: RunbookFleet, v: dict[str, str]) -> None:
    tls = Path(v["TLS_PEM"])
    tls.write_bytes(ORIGINAL_PEM["pem"])
    Path(v["TLS_PEM"] + ".previous").unlink(missing_ok=True)
    for host in fleet.proxy_names():
        _deploy_pem_directly(fleet, host, ORIGINAL_PEM["pem"])


def interrupted_apply(fleet: RunbookFleet, _v: dict[str, str]) -> None:
    """An apply that stopped half-way: one of georelay's records still has the value of an
    older inventory (weight 7 where the inventory says 1)."""
    env = fleet.aws_env()
    r53 = boto3.client("route53", endpoint_url=env["AWS_ENDPOINT_URL_ROUTE_53"],
                       aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                       region_name=env["AWS_DEFAULT_REGION"])
    zone = next(z["Id"] for z in r53.list_hosted_zones()["HostedZones"]
                if z["Name"] == "example.com.")
    records = r53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    victim = next(r for r in records
                  if r.get("SetIdentifier") == "georelay:w:fast.example.com:e1")
    r53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {**victim, "Weight": 7}}]})


ROLLOUT = str(Path(sys.executable).with_name("georelay-rollout"))


def onebox_domains(fleet: RunbookFleet, service: str) -> list[str]:
    pattern = next(s["onebox_domain"] for s in fleet.services if s["hostname"] == service)
    return [pattern.format(region=region) for region in fleet.regions]


def rollout_doc(fleet: RunbookFleet, service: str) -> dict[str, object]:
    path = fleet.rollout_state_dir / "georelay" / f"{service}.json"
    try:
        return dict(json.loads(path.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def onebox_usable(fleet: RunbookFleet, host: str) -> int:
    """The usable servers of $HOST's one-box backends (HAProxy's `show stat`)."""
    backends = parse_stat(fleet.show_stat(host)).values()
    return min(b.usable_servers for b in backends if b.name.endswith("_onebox"))


def failing_canary(fleet: RunbookFleet, v: dict[str, str]) -> None:
    """A rollout of $SERVICE at its first step (20%) whose controller was killed (kill -9);
    then the one-box gateways of every region fail, their health checks included: every
    proxy's one-box backend has no usable server, and nothing aborts."""
    service = v["SERVICE"]
    proc = subprocess.Popen(
        [ROLLOUT, "start", service, "--release", "v43", "--steps", "20,50,100", "--bake", "10m",
         "--interval", "2s", "-i", v["INVENTORY"]], cwd=REPO, env=fleet.env(v),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for("the rollout's first step applied and read back",
                 lambda: rollout_doc(fleet, service).get("applied") is True, timeout=120)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
    assert "step 1/3: 20% of users on the one-box" in out, out[-3000:]
    lab = fleet.lab()
    for domain in onebox_domains(fleet, service):
        lab.set_fault(domain, 503, 1.0, health_checks=True)
    for host in fleet.proxy_names():
        wait_for(f"{host}'s agent to see the one-box without a usable server",
                 lambda h=host: "has no usable server" in agent(fleet, h, "check").stdout)


def onebox_fixed(fleet: RunbookFleet, v: dict[str, str]) -> None:
    """The one-box release is fixed: its gateways answer again and HAProxy takes them back."""
    fleet.lab().clear_fault()
    for host in fleet.proxy_names():
        wait_for(f"{host}'s one-box backend to have its servers back",
                 lambda h=host: onebox_usable(fleet, h) > 0)


def forget_rollouts(fleet: RunbookFleet, _v: dict[str, str]) -> None:
    """The lab's faults and the rollout's state on the control node (not the page's job)."""
    fleet.lab().clear_fault()
    shutil.rmtree(fleet.rollout_state_dir, ignore_errors=True)


EDGE_SERVICE = "api.example.com"  # the lab's service with edge rules (runbook_lab.EDGE)


def running_version(fleet: RunbookFleet, host: str) -> str:
    map_file = fleet.root(host) / "etc/haproxy/edge-version.map"
    answer = send(str(fleet.admin_socket(host)), f"get map {map_file} {EDGE_SERVICE}")
    m = re.search(r'value="([^"]*)"', answer)
    return m.group(1) if m else "1"


def missed_bump(host: str) -> Hook:
    """A release's bump that reached every proxy but host (down at the time): the others run
    the next version, host the previous one."""
    def stage(fleet: RunbookFleet, v: dict[str, str]) -> None:
        before = running_version(fleet, host)
        others = [h for h in fleet.proxy_names() if h != host]
        got = subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-i", v["INVENTORY"],
             "playbooks/edge_version.yml", "-l", ",".join(others), "-e",
             f"edge_service={EDGE_SERVICE}", "-e", f"edge_version={int(before) + 1}"],
            cwd=REPO, env=fleet.env(v), capture_output=True, text=True, timeout=300,
            check=False)
        assert got.returncode == 0, got.stdout[-3000:]
        assert [running_version(fleet, h) for h in others] == [str(int(before) + 1)] * 3
        assert running_version(fleet, host) == before

    return stage


def newer_ip_ranges(fleet: RunbookFleet, _v: dict[str, str]) -> None:
    """AWS published a newer ip-ranges.json (a syncToken later, one prefix more) and the
    control node downloaded it to the inventory's georelay_ip_ranges_file; no sync ran."""
    doc = json.loads(fleet.ip_ranges_file.read_text())
    doc["syncToken"] = str(int(doc["syncToken"]) + 86400)
    doc["prefixes"].append({"ip_prefix": "52.94.0.0/22", "region": "us-east-1",
                            "service": "EC2"})
    fleet.ip_ranges_file.write_text(json.dumps(doc))


def prometheus_query(url: str, expr: str) -> list[dict[str, object]]:
    """The instant vector of expr (the lab's Prometheus HTTP API, as the runbooks ask it)."""
    found: list[dict[str, object]] = lab_prometheus.api(
        url, "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["result"]
    return found


def _prometheus_pid_file(fleet: RunbookFleet) -> Path:
    return fleet.lab_dir / "prometheus/prometheus.pid"


PROMETHEUS_STARTED: set[str] = set()  # by a situation's stage (else by the fixture, or none)


def own_prometheus(fleet: RunbookFleet, v: dict[str, str]) -> None:
    """The lab's Prometheus (conftest's `prometheus` fixture, but for one situation of this
    module's parametrized test): started on fresh data unless it runs, then scraping every
    target. `no_prometheus` stops it again if this started it."""
    if processes.running(_prometheus_pid_file(fleet)) is None:
        shutil.rmtree(fleet.lab_dir / "prometheus/data", ignore_errors=True)
        lab_prometheus.start(fleet.lab_dir, fleet.prometheus_listen, fleet.lab().fleet)
        PROMETHEUS_STARTED.add(fleet.prometheus_listen)
    count = 2 * len(fleet.proxy_names())
    wait_for("Prometheus to scrape every proxy", lambda: [
        t["health"] for t in lab_prometheus.targets(v["PROMETHEUS"])] == ["up"] * count)


def no_prometheus(fleet: RunbookFleet, _v: dict[str, str]) -> None:
    if fleet.prometheus_listen in PROMETHEUS_STARTED:
        processes.stop(_prometheus_pid_file(fleet))
        PROMETHEUS_STARTED.discard(fleet.prometheus_listen)


BURN_SHARE = 0.5  # of the requests to the region's gateway of $SERVICE (not /ping)
BURN_REQUESTS = 40  # per proxy of the region


def burning_budget(fleet: RunbookFleet, v: dict[str, str]) -> None:
    """The API's deployment behind $REGION's gateway of $SERVICE answers 503 to half of the
    requests, /ping spared (HAProxy's checks pass: nothing fails over); users' requests
    through every proxy of the region; the lab's Prometheus until the burn-rate rules see
    them (rate() over 5m needs two scrapes of the counters that moved)."""
    own_prometheus(fleet, v)
    region, service = v["REGION"], v["SERVICE"]
    hosts = fleet.regions[region]
    for host in hosts:
        agent(fleet, host, "check")  # monitoring ran before the errors (the cron does)
    fleet.lab().set_fault(v["GATEWAY"], 503, BURN_SHARE)
    for host in hosts:
        statuses = [fleet.fetch(host, service, v["API_PATH"]).status
                    for _ in range(BURN_REQUESTS)]
        assert statuses.count(503) == BURN_REQUESTS * BURN_SHARE, f"{host}: {statuses}"
    url = v["PROMETHEUS"]
    wait_for(f"the fast burn rate of {service} in {region}", lambda: prometheus_query(
        url, "service_region:georelay_error_budget_burn:ratio_rate5m"
             f'{{service="{service}",region="{region}"}} > 14.4'), timeout=30)
    for host in hosts:
        wait_for(f"the 5xx ratio through {host}", lambda h=host: prometheus_query(
            url, "proxy_service:georelay_agent_backend_http_5xx_per_request:ratio_rate5m"
                 f'{{service="{service}",proxy="{h}"}} > 0'), timeout=30)


def budget_burn_fixed(fleet: RunbookFleet, v: dict[str, str]) -> None:
    """The API's deployment in $REGION is fixed: its gateway answers every request again, and
    a minute later (the window of the runbook's verification) no 5xx are left in it."""
    fleet.lab().clear_fault(v["GATEWAY"])
    service = v["SERVICE"]

    def clean() -> bool:
        ratios = prometheus_query(
            v["PROMETHEUS"],
            f'sum by (service, region) (rate(georelay_agent_backend_http_5xx_total'
            f'{{service="{service}"}}[1m])) / sum by (service, region) '
            f'(rate(georelay_agent_backend_requests_total{{service="{service}"}}[1m]))')
        values = [r["value"][1] for r in ratios]  # type: ignore[index]
        return len(values) == len(fleet.regions) and set(values) == {"0"}

    wait_for("a minute without 5xx in Prometheus", clean, timeout=120)


def forget_budget_burn(fleet: RunbookFleet, v: dict[str, str]) -> None:
    """The lab's fault and Prometheus; the proxies' check history, which counted the 5xx
    (a later page's `check` must not warn about them)."""
    fleet.lab().clear_fault()
    no_prometheus(fleet, v)
    for host in fleet.regions[v["REGION"]]:
        forget_check_history(host)(fleet, v)


SITUATIONS_STAGED: dict[str, Situation] = {
    "maintenance-proxy.md": Situation("w1"),
    "maintenance-region.md": Situation("e1"),
    "proxy-unhealthy.md": Situation("e1", stage=kill("e1")),
    "region-gateway-down.md": Situation(
        "e1", stage=gateways("stop", "us-east-1", then=("e1", "e2")),
        heal=gateways("start", "us-east-1", then=("e1", "e2"))),
    "region-lost.md": Situation(
        "w1", stage=both(gateways("stop", "us-west-2"), kill("w1", "w2")),
        heal=both(gateways("start", "us-west-2"), boot("w1", "w2"))),
    "all-regions-unhealthy.md": Situation(
        "e2", stage=gateways("stop", "us-east-1", "us-west-2", then=("e1", "e2", "w1", "w2")),
        heal=gateways("start", "us-east-1", "us-west-2", then=("e1", "e2", "w1", "w2"))),
    "route53-throttled.md": Situation("e1", stage=interrupted_apply),
    "canary-unhealthy.md": Situation("e2", stage=failing_canary, heal=onebox_fixed,
                                     cleanup=forget_rollouts),
    "reload-failed.md": Situation("w2", stage=break_reload("w2"),
                                  cleanup=forget_check_history("w2")),
    "deploy-version-not-picked-up.md": Situation("w2", stage=missed_bump("w2"),
                                                 extra={"SERVICE": EDGE_SERVICE}),
    "ip-ranges-map-stale.md": Situation("e1", stage=newer_ip_ranges),
    # Its rollback puts the expiring certificate back: verify the renewal before it.
    "certificate-expiring.md": Situation(
        "e2", stage=expiring_certificate("e2"), cleanup=original_certificate,
        order=("Diagnosis", "Mitigation", "Verification", "Rollback")),
    # The lab's Prometheus runs for this page only (started and stopped by its hooks).
    "error-budget-burn.md": Situation("e1", stage=burning_budget, heal=budget_burn_fixed,
                                      cleanup=forget_budget_burn),
}
BOOKS = {b.name: b for b in runbooks()}


def test_every_runbook_has_a_staged_situation() -> None:
    assert set(BOOKS) == set(SITUATIONS_STAGED)
    assert set(SITUATIONS_STAGED) >= SITUATIONS


def _pattern(regex: str, variables: dict[str, str]) -> re.Pattern[str]:
    bound = re.sub(r"\$\{?([A-Z][A-Z0-9_]*)\}?",
                   lambda m: re.escape(variables[m.group(1)]), regex)
    return re.compile(bound, re.M)


def run_block(fleet: RunbookFleet, block: Block, variables: dict[str, str]) -> str:
    code, out = fleet.run_block(block, variables)
    shown = f"{block.where} ({block.section}):\n{block.code}-> exit {code}\n{out[-4000:]}"
    assert code in block.exit_codes, f"expected exit {sorted(block.exit_codes)}: {shown}"
    if code != 0:
        assert not USAGE_ERRORS.search(out), f"a usage error, not the situation: {shown}"
    for regex in block.expect:
        assert _pattern(regex, variables).search(out), f"no match for {regex!r}: {shown}"
    for regex in block.absent:
        assert not _pattern(regex, variables).search(out), f"{regex!r} matched: {shown}"
    return out


def run_runbook(fleet: RunbookFleet, book: Runbook, situation: Situation,
                variables: dict[str, str]) -> list[str]:
    ran = []
    situation.stage(fleet, variables)
    for section in situation.order:
        if section == "Rollback":
            situation.heal(fleet, variables)
        for block in book.section_blocks(section):
            run_block(fleet, block, variables)
            ran.append(block.where)
    return ran


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SITUATIONS_STAGED))
def test_runbook_in_its_situation(fleet: RunbookFleet, name: str, tmp_path: Path) -> None:
    book, situation = BOOKS[name], SITUATIONS_STAGED[name]
    variables = fleet.variables(situation.host, NEW_PEM=str(tmp_path / "renewed.pem"),
                                **situation.extra)
    try:
        ran = run_runbook(fleet, book, situation, variables)
    finally:
        situation.cleanup(fleet, variables)
        left = fleet.reset()
    assert len(ran) == len(book.blocks) - sum(b.kind != "run" for b in book.blocks)
    assert left == [], f"{name} left the fleet changed: {left}"

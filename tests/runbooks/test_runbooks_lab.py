"""Every command of every runbook, run in order against a lab fleet in the runbook's situation.

Per runbook: stage the situation (stop a gateway, kill HAProxy, break a reload, ...), run the
```sh blocks of Diagnosis and Mitigation, let the cause go away where the runbook waits for
that (the gateway comes back), run Rollback and Verification; every block must exit as its
fence says and print what its `expect=` says. Afterwards the fleet must be as before: the
runbook itself must have undone what it did (`reset` finds nothing to fix).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from test_runbook_docs import SITUATIONS

from georelay_agent.haproxy_runtime import ProcInfo, send, show_proc
from georelay_lab import certs
from georelay_testing.runbook_doc import Block, Runbook, runbooks
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
    "reload-failed.md": Situation("w2", stage=break_reload("w2"),
                                  cleanup=forget_check_history("w2")),
    # Its rollback puts the expiring certificate back: verify the renewal before it.
    "certificate-expiring.md": Situation(
        "e2", stage=expiring_certificate("e2"), cleanup=original_certificate,
        order=("Diagnosis", "Mitigation", "Verification", "Rollback")),
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

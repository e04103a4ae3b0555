"""The production path on real Debian 12 hosts: Ansible over SSH as a sudo user, systemd.

Three fresh hosts of the host lab (2 regions), as a new user meets them: nothing of georelay,
no haproxy, no python3-apt. The module's fleet is previewed with ``--check --diff`` while the
hosts are fresh, then deployed with the default playbook (one proxy at a time), then probed:
apt installed Debian's haproxy, Debian's haproxy.service runs the generated config with the
master socket, the agent runs as its hardened unit, logs reach journald, cron runs the check,
reloads are hitless under load, and the relay behaves as on loopback.
"""

from __future__ import annotations

import http.client
import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from georelay_lab import certs
from georelay_model.facts import paths_below
from georelay_testing.fleet import SERVICES, Played
from georelay_testing.host_fleet import HostFleet, host_fleet, host_state, play, run_systemd_blocks
from georelay_testing.reliability import record_figures
from georelay_testing.traffic import Traffic

pytestmark = pytest.mark.slow

REGIONS = {"us-east-1": ["e1", "e2"], "us-west-2": ["w1"]}
# The rollout one proxy at a time is tests/hosts/test_rollout.py's; here every proxy at once.
ALL_AT_ONCE = ("-e", "georelay_rollout_batch=3")


@dataclass
class Deployed:
    fleet: HostFleet
    fresh_state: dict[str, str]
    fresh_check: Played
    after_check_state: dict[str, str]
    first: Played
    first_s: float


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    with host_fleet(regions=REGIONS, services=[dict(s) for s in SERVICES]) as fleet:
        names = fleet.proxy_names()
        fresh = {p: host_state(fleet, p) for p in names}
        check = play(fleet, "--check", "--diff", *ALL_AT_ONCE)
        after_check = {p: host_state(fleet, p) for p in names}
        start = time.monotonic()
        first = play(fleet, *ALL_AT_ONCE)
        first_s = time.monotonic() - start
        assert first.rc == 0, first.tail()
        for proxy in names:
            fleet.wait_healthy(proxy)
        yield Deployed(fleet, fresh, check, after_check, first, first_s)


def test_check_mode_on_fresh_hosts_previews_and_changes_nothing(deployed: Deployed) -> None:
    check = deployed.fresh_check
    assert check.rc == 0, check.tail()
    assert all(n > 0 for n in check.changed().values()), check.recap  # it says what it would do
    assert deployed.after_check_state == deployed.fresh_state
    assert "haproxy" in check.text  # the package and the config it would install


def test_apt_installs_debian_haproxy_and_its_unit_runs_the_generated_config(
        deployed: Deployed) -> None:
    fleet = deployed.fleet
    for proxy in fleet.proxy_names():
        assert "haproxy ii" not in deployed.fresh_state[proxy].replace(" install ok ", " ")
        pkg = fleet.ssh(proxy, "dpkg-query -W -f '${Status} ${Version}' haproxy").stdout
        assert pkg.startswith("install ok installed 2.6"), pkg
        unit = fleet.unit(proxy, "haproxy")
        assert (unit["ActiveState"], unit["UnitFileState"]) == ("active", "enabled"), unit
        cmdline = fleet.sudo(proxy, f"tr '\\0' ' ' < /proc/{unit['MainPID']}/cmdline")
        assert "-f /etc/haproxy/haproxy.cfg" in cmdline and "-S /run/haproxy-master.sock" in \
            cmdline, cmdline
        assert fleet.proc(proxy).workers, fleet.show_proc(proxy)
        fleet.sudo(proxy, "haproxy -c -q -f /etc/haproxy/haproxy.cfg")


def test_relay_rewrites_host_and_sni_for_every_service(deployed: Deployed) -> None:
    fleet = deployed.fleet
    for proxy in fleet.proxy_names():
        region = fleet.region_of(proxy)
        for service in fleet.services:
            reply = fleet.fetch(proxy, service["hostname"], "/anything")
            assert reply.status == 200, (proxy, reply.status, reply.body[:300])
            got = json.loads(reply.body)
            want = service["apigw_domain"].format(region=region)
            assert (got["host"], got["sni"], got["region"]) == (want, want, region), got


def test_unknown_host_gets_404_and_http_gets_308(deployed: Deployed) -> None:
    fleet = deployed.fleet
    for proxy in fleet.proxy_names():
        reply = fleet.fetch(proxy, "fast.example.com", "/", headers={"Host": "nobody.example.com"})
        assert reply.status == 404, reply
        conn = http.client.HTTPConnection(fleet.address(proxy), fleet.http_port, timeout=5)
        conn.request("GET", "/x?y=1", headers={"Host": "fast.example.com"})
        resp = conn.getresponse()
        assert resp.status == 308, resp.status
        assert resp.getheader("Location") == "https://fast.example.com/x?y=1"
        conn.close()


def test_gateway_with_a_bad_certificate_is_refused(deployed: Deployed) -> None:
    fleet = deployed.fleet
    lab = fleet.lab()
    good = lab.gateway_pem("us-west-2").read_bytes()
    rogue = certs.issue(certs.new_authority("rogue CA"), ["us-west-2-fast.example.com",
                                                          "us-west-2-api.example.com"])
    try:
        lab.gateway_pem("us-west-2").write_bytes(rogue)
        lab.stop_gateway("us-west-2")
        lab.start_gateway(lab.fleet.region("us-west-2"))
        def served_by() -> str:
            """Where w1's answer came from; 'refused' for a 5xx or a connection w1 closed
            without an answer (while the gateway restarts), never a reason to pass."""
            try:
                r = fleet.fetch("w1", "fast.example.com")
            except (http.client.RemoteDisconnected, ConnectionError):
                return "refused"
            return "refused" if r.status >= 500 else str(r.headers.get("x-lab-region"))

        deadline = time.monotonic() + 10
        got = served_by()
        while got == "us-west-2" and time.monotonic() < deadline:
            got = served_by()  # pooled connections drain first
        replies = [served_by() for _ in range(3)]
        # Refused by w1, or served by its backup region (us-east-1), never by the gateway
        # with the untrusted certificate.
        assert set(replies) <= {"refused", "us-east-1"}, replies
    finally:
        lab.gateway_pem("us-west-2").write_bytes(good)
        lab.stop_gateway("us-west-2")
        lab.start_gateway(lab.fleet.region("us-west-2"))
    fleet.wait_healthy("w1")
    assert fleet.fetch("w1", "fast.example.com").headers.get("x-lab-region") == "us-west-2"


def test_second_run_changes_nothing_and_check_diff_too(deployed: Deployed) -> None:
    fleet = deployed.fleet
    again = play(fleet, *ALL_AT_ONCE).ok()
    assert set(again.changed().values()) == {0}, again.recap
    before = {p: host_state(fleet, p) for p in fleet.proxy_names()}
    check = play(fleet, "--check", "--diff", *ALL_AT_ONCE).ok()
    assert set(check.changed().values()) == {0}, check.recap
    assert {p: host_state(fleet, p) for p in fleet.proxy_names()} == before


def test_agent_runs_as_its_hardened_unit_and_answers_healthz(deployed: Deployed) -> None:
    fleet = deployed.fleet
    for proxy in fleet.proxy_names():
        unit = fleet.unit(proxy, "georelay-agent")
        assert (unit["ActiveState"], unit["UnitFileState"], unit["User"]) == \
            ("active", "enabled", "georelay-agent"), unit
        owner = fleet.ssh(proxy, f"ps -o user= -p {unit['MainPID']}").stdout.strip()
        assert owner == "georelay-agent"
        # Read-only Runtime API: the agent's user may use user.sock, not the admin socket.
        sockets = fleet.sudo(proxy, "stat -c '%U:%G %a %n' /run/haproxy/*.sock")
        assert "admin.sock" in sockets and "user.sock" in sockets, sockets
        admin = fleet.sudo(proxy, "sudo -u georelay-agent test -w /run/haproxy/admin.sock "
                                  "&& echo writable || echo refused")
        assert admin.strip() == "refused", sockets
        code, body = fleet.public_healthz(proxy)
        assert (code, body.strip()) == (200, "georelay-healthy"), body


def test_logs_reach_journald(deployed: Deployed) -> None:
    fleet = deployed.fleet
    for proxy in fleet.proxy_names():
        haproxy = fleet.journal(proxy, "-u", "haproxy")
        assert "Loading success" in haproxy or "haproxy" in haproxy.lower(), haproxy[-2000:]
        agent = fleet.journal(proxy, "-u", "georelay-agent")
        assert agent.strip(), "georelay-agent wrote nothing to the journal"


def test_reloads_under_load_over_ssh_drop_no_request(deployed: Deployed) -> None:
    """20 reloads through the role's own reload path (systemctl reload, proven on the master
    socket), each with a changed config, while kept-alive and new-connection clients run."""
    fleet = deployed.fleet
    proxy = "e1"
    reloads = 20
    before = fleet.failed_reloads(proxy)
    module = {"state": "reloaded", "manager": "systemd", "paths": paths_below("/"),
              "timeout": 30}
    with Traffic(fleet, proxy, "fast.example.com") as traffic:
        traffic.wait_for(20)
        for i in range(reloads):
            fleet.sudo(proxy, f"sed -i 's/^# reload-mark.*//' /etc/haproxy/haproxy.cfg; "
                              f"echo '# reload-mark {i}' >> /etc/haproxy/haproxy.cfg")
            proc = fleet.run_module(proxy, "haproxy_master", module)
            assert proc.returncode == 0, proc.stdout[-3000:]
        time.sleep(0.5)
    summary = traffic.summary()
    record_figures("hosts_reload_under_load", {"reloads": reloads, **summary})
    assert summary["failed"] == 0, summary
    assert summary["sent"] > 100, summary
    assert fleet.failed_reloads(proxy) == before
    # Put the config back as the role renders it.
    play(fleet, "-l", proxy).ok()


def test_cron_runs_the_agent_check(deployed: Deployed) -> None:
    fleet = deployed.fleet
    proxy = "e1"
    entry = fleet.sudo(proxy, "cat /etc/cron.d/georelay-agent-*")
    assert "georelay-agent check" in entry, entry
    path = "/var/lib/georelay-agent/check/last-check.json"
    deadline = time.monotonic() + 130  # every minute, after a fixed per-host sleep < 50 s
    while time.monotonic() < deadline:
        if fleet.sudo(proxy, f"test -s {path} && echo yes || true").strip() == "yes":
            break
        time.sleep(2)
    else:
        raise AssertionError(f"cron never wrote {path}:\n" + fleet.journal(proxy, "-u", "cron"))
    cron_log = fleet.journal(proxy, "-u", "cron")
    assert "georelay-agent check" in cron_log, cron_log[-2000:]
    result = json.loads(fleet.sudo(proxy, f"cat {path}"))
    assert "status" in json.dumps(result), result


def test_host_restart_brings_haproxy_and_the_agent_back(deployed: Deployed) -> None:
    fleet = deployed.fleet
    proxy = "w1"
    seconds = fleet.reboot(proxy)
    for unit in ("haproxy", "georelay-agent"):
        state = fleet.unit(proxy, unit)
        assert (state["ActiveState"], state["UnitFileState"]) == ("active", "enabled"), state
    fleet.wait_healthy(proxy)
    fleet.wait_public(proxy, 200, timeout=10)
    assert fleet.fetch(proxy, "fast.example.com").status == 200
    again = play(fleet, "-l", proxy).ok()
    assert again.changed() == {proxy: 0}, again.recap  # Debian's boot-time dirs are kept
    record_figures("hosts_reboot", {"reboot_to_ssh_s": round(seconds, 1)})


def test_agent_bound_on_a_host_when_the_region_gateway_dies_and_returns(
        deployed: Deployed) -> None:
    fleet = deployed.fleet
    lab = fleet.lab()
    fleet.wait_public("w1", 200, timeout=10)
    lab.stop_gateway("us-west-2")
    try:
        down_s, body = fleet.wait_public("w1", 503, timeout=3)
    finally:
        lab.start_gateway(lab.fleet.region("us-west-2"))
    up_s, _ = fleet.wait_public("w1", 200, timeout=3)
    record_figures("hosts_agent_bound", {"to_503_s": round(down_s, 2), "to_200_s": round(up_s, 2)})
    assert down_s <= 3, (down_s, body)
    assert up_s <= 3, up_s


def test_drain_and_undrain_over_ssh(deployed: Deployed) -> None:
    fleet = deployed.fleet
    reason = "kernel upgrade CHG-1234"
    drained = play(fleet, "-l", "e2", "-e", f"reason={shlex.quote(reason)}",
                   playbook="playbooks/drain.yml").ok()
    assert drained.changed() == {"e2": 1}, drained.recap
    _, body = fleet.wait_public("e2", 503, timeout=5)
    assert reason in body or "drain" in body, body
    fleet.wait_public("e1", 200, timeout=5)  # the others keep serving
    undrained = play(fleet, "-l", "e2", playbook="playbooks/undrain.yml").ok()
    assert undrained.changed() == {"e2": 1}, undrained.recap
    fleet.wait_public("e2", 200, timeout=5)



def test_runbook_systemd_blocks_of_a_stopped_proxy_run_on_a_host(deployed: Deployed) -> None:
    """docs/runbooks/proxy-unhealthy.md on a host whose HAProxy was stopped: its systemd
    Diagnosis blocks show why, its Mitigation blocks bring it back."""
    fleet = deployed.fleet
    proxy = "e1"
    fleet.sudo(proxy, "systemctl stop haproxy")
    try:
        fleet.wait_public(proxy, -1, timeout=5)  # nothing listens
        status, _journal = run_systemd_blocks(fleet, proxy, "proxy-unhealthy.md", "Diagnosis")
        assert "inactive" in status, status
        run_systemd_blocks(fleet, proxy, "proxy-unhealthy.md", "Mitigation")
        assert fleet.unit(proxy, "haproxy")["ActiveState"] == "active"
    finally:
        fleet.sudo(proxy, "systemctl start haproxy")
    fleet.wait_healthy(proxy)
    fleet.wait_public(proxy, 200, timeout=10)

"""Rolling deploys on real hosts: one proxy at a time, and the first failure stops the rollout.

Three lab hosts, e1 and e2 in us-east-1, w1 in us-west-2; the playbook rolls out to the first
proxy of every region, then the second: e1, w1, e2. Each test makes a change that fails on
w1 only, in a way that happens on real fleets: a reload that ``haproxy -c`` cannot foresee
(the new port is taken on that host), an unreachable host, a changed SSH host key, a user
without sudo. Each shows that e1 got the change and serves, that w1 names its cause, that e2
(after it) was not touched, and that every proxy still serves.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Iterator
from typing import Any

import pytest

from georelay_testing.fleet import SERVICES, Played
from georelay_testing.host_fleet import HostFleet, host_fleet, play

pytestmark = pytest.mark.slow

REGIONS = {"us-east-1": ["e1", "e2"], "us-west-2": ["w1"]}
DONE, FAILING, AFTER = "e1", "w1", "e2"  # the rollout order
ALL_AT_ONCE = ("-e", "georelay_rollout_batch=3")  # the set-up deploy only
CONFIG = "/etc/haproxy/haproxy.cfg"


@pytest.fixture(scope="module")
def fleet() -> Iterator[HostFleet]:
    with host_fleet(regions=REGIONS, services=[dict(SERVICES[0])]) as fleet:
        first = play(fleet, *ALL_AT_ONCE).ok()
        assert set(first.changed()) == set(fleet.proxy_names()), first.recap
        yield fleet


def serves(fleet: HostFleet, proxy: str) -> int:
    return fleet.fetch(proxy, "fast.example.com", "/after", timeout=5).status


def shas(fleet: HostFleet) -> dict[str, str]:
    return {p: fleet.file_sha(p, CONFIG) for p in fleet.proxy_names()}


def assert_stopped_at_the_failing_host(fleet: HostFleet, run: Played,
                                       before: dict[str, str], *causes: str) -> None:
    assert run.rc != 0, run.tail()
    assert f"batch: {DONE}" in run.text and f"batch: {AFTER}" in run.text, run.tail()
    assert FAILING in run.text and any(c in run.text for c in causes), run.tail()
    # The rollout stopped at the failing host: the one after it never started.
    deploying = run.stdout.split("TASK [haproxy :", 1)[-1]
    assert not re.search(rf"^(ok|changed|fatal|skipping): \[{AFTER}\]", deploying, re.M), \
        run.tail()
    assert fleet.file_sha(AFTER, CONFIG) == before[AFTER]
    assert fleet.file_sha(DONE, CONFIG) != before[DONE]  # done before the failure
    for proxy in fleet.proxy_names():
        assert serves(fleet, proxy) == 200, proxy


def break_connection(fleet: HostFleet, how: str) -> dict[str, Any]:
    if how == "unreachable":
        return {"ansible_host": fleet.hostlab.address_of(90)}  # nothing there
    if how == "host key":
        # The failing host's address with another host's key: what a changed (or spoofed)
        # host looks like.
        lines = fleet.hostlab.known_hosts.read_text().splitlines()
        other = next(line for line in lines if line.startswith(fleet.address(AFTER) + " "))
        wrong = fleet.base / "known_hosts_wrong"
        wrong.write_text("".join(
            line + "\n" for line in lines if not line.startswith(fleet.address(FAILING) + " "))
            + f"{fleet.address(FAILING)} {other.split(' ', 1)[1]}\n")
        args = fleet.hostlab.ansible_vars()["ansible_ssh_common_args"]
        return {"ansible_ssh_common_args": args.replace(str(fleet.hostlab.known_hosts),
                                                        str(wrong))}
    if how == "no sudo":
        return {"ansible_user": "nosudo"}
    raise AssertionError(how)


CAUSES = {
    "unreachable": ("UNREACHABLE", "No route to host", "timed out"),
    "host key": ("REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed"),
    "no sudo": ("sudo", "password is required", "Missing sudo password"),
}


@pytest.mark.parametrize(("how", "timeout"), [(how, 31 + i) for i, how in enumerate(CAUSES)])
def test_a_host_ansible_cannot_use_stops_the_rollout(fleet: HostFleet, how: str,
                                                     timeout: int) -> None:
    """Each case rolls out a change of its own (one more second of client timeout), so the
    cases follow one another without a clean-up deploy in between."""
    before = shas(fleet)
    fleet.host_vars = {FAILING: break_connection(fleet, how)}
    fleet.write(haproxy_timeout_client=f"{timeout}s")  # the change being rolled out
    run = play(fleet, fresh_connections=True)
    assert_stopped_at_the_failing_host(fleet, run, before, *CAUSES[how])
    assert f"timeout client {timeout}s" in fleet.sudo(DONE, f"cat {CONFIG}")
    assert fleet.file_sha(FAILING, CONFIG) == before[FAILING]  # not reached at all


def test_a_reload_that_fails_on_one_host_stops_the_rollout(fleet: HostFleet) -> None:
    """Last: it leaves the failing host with a new config on disk and its old workers."""
    before = shas(fleet)
    failed_before = fleet.failed_reloads(FAILING)
    # On w1 something else already listens on the port the change moves HAProxy to: the
    # config is valid (haproxy -c passes), only binding it fails.
    fleet.sudo(FAILING, "systemd-run --unit=georelay-test-squatter python3 -m http.server 8081")
    fleet.ssh(FAILING, "for i in $(seq 50); do ss -ltn | grep -q ':8081 ' && exit 0; sleep 0.1; "
                    "done; exit 1")
    fleet.host_vars = {}
    fleet.write(haproxy_http_port=8081)
    run = play(fleet)
    assert_stopped_at_the_failing_host(fleet, run, before, "Address already in use",
                                       "cannot bind")
    assert "old workers" in run.text or "previous workers" in run.text, run.tail()
    # The module saw the address taken before asking for a reload, which HAProxy 2.6 would
    # have retried for 2 s with the old listeners paused: no reload was attempted at all.
    assert "8081" in run.text, run.tail()
    assert fleet.failed_reloads(FAILING) == failed_before
    # The failing host's old workers still answer on the old port; e1 moved to the new one.
    for proxy, port in ((FAILING, 80), (DONE, 8081), (AFTER, 80)):
        conn = http.client.HTTPConnection(fleet.address(proxy), port, timeout=5)
        conn.request("GET", "/", headers={"Host": "fast.example.com"})
        assert conn.getresponse().status == 308, (proxy, port)
        conn.close()

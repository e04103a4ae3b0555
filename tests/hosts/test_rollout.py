"""Rolling deploys on real hosts: one proxy at a time, and the first failure stops the rollout.

Three lab hosts in inventory order e1, e2 (us-east-1), w1 (us-west-2). Each test makes a change
that fails on e2 only, in a way that happens on real fleets: a reload that ``haproxy -c``
cannot foresee (the new port is taken on that host), an unreachable host, a changed SSH host
key, a user without sudo. Each shows that e1 got the change and serves, that e2 names its
cause, that w1 (after it) was not touched, and that every proxy still serves.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

import pytest

from host_support import HostFleet, Played, host_fleet, play, run_systemd_blocks
from support import SERVICES

pytestmark = pytest.mark.slow

REGIONS = {"us-east-1": ["e1", "e2"], "us-west-2": ["w1"]}
CONFIG = "/etc/haproxy/haproxy.cfg"


@pytest.fixture(scope="module")
def fleet() -> Iterator[HostFleet]:
    with host_fleet(regions=REGIONS, services=[dict(SERVICES[0])]) as fleet:
        first = play(fleet).ok()
        assert set(first.changed()) == set(fleet.proxy_names()), first.recap
        yield fleet


@pytest.fixture
def clean(fleet: HostFleet) -> Iterator[HostFleet]:
    """Each test starts from, and leaves, the fleet as deployed from the plain inventory."""
    yield fleet
    fleet.host_vars = {}
    fleet.all_vars = {}
    fleet.sudo("e2", "systemctl stop georelay-test-squatter 2>/dev/null; true")
    fleet.write()
    play(fleet).ok()


def serves(fleet: HostFleet, proxy: str) -> int:
    return fleet.fetch(proxy, "fast.example.com", "/after", timeout=5).status


def shas(fleet: HostFleet) -> dict[str, str]:
    return {p: fleet.file_sha(p, CONFIG) for p in fleet.proxy_names()}


def assert_stopped_at_e2(fleet: HostFleet, run: Played, before: dict[str, str],
                         *causes: str) -> None:
    assert run.rc != 0, run.tail()
    assert "e2" in run.text and any(c in run.text for c in causes), run.tail()
    # The rollout stopped at e2: w1 never started.
    assert "w1" not in run.recap, run.recap
    assert fleet.file_sha("w1", CONFIG) == before["w1"]
    assert fleet.file_sha("e1", CONFIG) != before["e1"]  # done before e2 failed
    for proxy in fleet.proxy_names():
        assert serves(fleet, proxy) == 200, proxy


def test_a_reload_that_fails_on_one_host_stops_the_rollout(clean: HostFleet) -> None:
    fleet = clean
    before = shas(fleet)
    failed_before = fleet.failed_reloads("e2")
    # On e2 something else already listens on the port the change moves HAProxy to: the
    # config is valid (haproxy -c passes), only binding it fails.
    fleet.sudo("e2", "systemd-run --unit=georelay-test-squatter python3 -m http.server 8081")
    fleet.ssh("e2", "for i in $(seq 50); do ss -ltn | grep -q ':8081 ' && exit 0; sleep 0.1; "
                    "done; exit 1")
    fleet.write(haproxy_http_port=8081)
    run = play(fleet)
    assert_stopped_at_e2(fleet, run, before, "Address already in use", "cannot bind")
    assert "old workers" in run.text or "previous workers" in run.text, run.tail()
    assert fleet.failed_reloads("e2") == failed_before + 1
    # docs/runbooks/reload-failed.md's systemd block shows on-call what HAProxy said.
    (journal,) = run_systemd_blocks(fleet, "e2", "reload-failed.md", "Diagnosis")
    assert "8081" in journal, journal[-2000:]
    # e2's old workers still answer on the old port; e1 moved to the new one.
    for proxy, port in (("e2", 80), ("e1", 8081), ("w1", 80)):
        conn = http.client.HTTPConnection(fleet.address(proxy), port, timeout=5)
        conn.request("GET", "/", headers={"Host": "fast.example.com"})
        assert conn.getresponse().status == 308, (proxy, port)
        conn.close()


def break_connection(fleet: HostFleet, how: str) -> dict[str, Any]:
    if how == "unreachable":
        return {"ansible_host": fleet.hostlab.address_of(90)}  # nothing there
    if how == "host key":
        # e2's address with w1's host key: what a changed (or spoofed) host looks like.
        lines = fleet.hostlab.known_hosts.read_text().splitlines()
        w1 = next(line for line in lines if line.startswith(fleet.address("w1") + " "))
        wrong = fleet.base / "known_hosts_wrong"
        wrong.write_text("".join(
            line + "\n" for line in lines if not line.startswith(fleet.address("e2") + " "))
            + f"{fleet.address('e2')} {w1.split(' ', 1)[1]}\n")
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


@pytest.mark.parametrize("how", list(CAUSES))
def test_a_host_ansible_cannot_use_stops_the_rollout(clean: HostFleet, how: str) -> None:
    fleet = clean
    before = shas(fleet)
    fleet.host_vars = {"e2": break_connection(fleet, how)}
    fleet.write(haproxy_timeout_client="31s")  # the change being rolled out
    run = play(fleet)
    assert_stopped_at_e2(fleet, run, before, *CAUSES[how])
    assert "timeout client 31s" in fleet.sudo("e1", f"cat {CONFIG}")
    assert fleet.file_sha("e2", CONFIG) == before["e2"]  # not reached at all

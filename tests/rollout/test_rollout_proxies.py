"""georelay_rollout.proxies.run(): the controller's reach into every proxy, through the real
ansible-playbook (playbook and module georelay.relay.onebox) on a fleet of real haproxy
processes in front of the lab's strict stand-in gateways, which serve the one-box domains.

The fleet: us-east-1 (e1, e2: one-box on) and us-west-2 (w1: one-box switched off by
georelay_onebox_enabled: false); the service's onebox_percent is 20.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from georelay_agent import haproxy_runtime as rt
from georelay_agent import onebox_map as ob
from georelay_rollout import proxies
from georelay_rollout.proxies import ProxiesError, Reading, RequestError
from georelay_testing.fleet import BIN, REPO, DeployedFleet, run, running_fleet, sha, unix_cli

pytestmark = pytest.mark.slow

HOST = "fast.example.com"
SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com",
           "health_path": "/ping", "onebox_domain": "{region}-onebox-fast.example.com",
           "onebox_percent": 20}
ON = ("e1", "e2")
COOKIE = "georelay_partition"


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(regions={"us-east-1": list(ON), "us-west-2": ["w1"]},
                       services=[dict(SERVICE)],
                       host_vars={"w1": {"georelay_onebox_enabled": False}}) as f:
        yield f


@pytest.fixture(autouse=True)
def caller_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller's environment: the checkout's ansible.cfg, as an operator has it."""
    monkeypatch.setenv("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))


def map_file(fleet: DeployedFleet, proxy: str) -> Path:
    return fleet.root(proxy) / "etc/haproxy/onebox-percent.map"


def running(fleet: DeployedFleet, proxy: str) -> int | None:
    return ob.get_onebox_percent(str(fleet.admin_socket(proxy)), str(map_file(fleet, proxy)),
                                 HOST)


@pytest.fixture
def inventory(fleet: DeployedFleet) -> Iterator[str]:
    """The fleet's inventory, every proxy at the inventory's 20% and no hold, before and after."""
    def reset() -> None:
        for proxy in ON:
            ob.set_onebox_percent(str(fleet.admin_socket(proxy)), str(map_file(fleet, proxy)),
                                  HOST, 20, hold=None)
    reset()
    yield str(fleet.inventory)
    reset()


def worker_pid(fleet: DeployedFleet, proxy: str) -> int:
    info = unix_cli(fleet.admin_socket(proxy), "show info")
    return int(next(ln.split(":")[1] for ln in info.splitlines() if ln.startswith("Pid:")))


def request(fleet: DeployedFleet, proxy: str, bucket: int, status: int | None = None) -> str:
    """One request of a user whose cookie holds bucket; the partition the gateway saw."""
    path = "/anything" + (f"?status={status}" if status else "")
    reply = fleet.fetch(proxy, HOST, path, headers={"Cookie": f"{COOKIE}={bucket}"})
    assert reply.status == (status or 200), reply.body
    return json.loads(reply.body)["x_req_partition"][0]


def counts(r: Reading) -> tuple[int, int, int, int, int]:
    return (r.onebox_requests, r.onebox_5xx, r.regular_requests, r.regular_5xx,
            r.fallback_requests)


def test_reads_the_percentage_and_counters_of_every_proxy(fleet: DeployedFleet,
                                                           inventory: str) -> None:
    first = proxies.run(inventory, HOST)
    assert sorted(first) == ["e1", "e2", "w1"]
    for proxy in ON:
        r = first[proxy]
        assert (r.ok, r.unreachable, r.off, r.error) == (True, False, False, None), r
        assert (r.region, r.percent, r.held_by, r.changed) == ("us-east-1", 20, None, False)
        assert r.usable_servers == 1  # the home one-box; us-west-2 has none to back it up
        assert r.process is not None and r.process.startswith(f"{worker_pid(fleet, proxy)}@")
    w1 = first["w1"]
    assert (w1.ok, w1.off, w1.unreachable, w1.region) == (False, True, False, "us-west-2")
    assert "switched off in us-west-2" in (w1.error or "")

    # Users on e1: buckets 5 and 7 are in the one-box at 20%, 50 is not; one of each fails.
    assert request(fleet, "e1", 5) == "one-box"
    assert request(fleet, "e1", 7) == "one-box"
    assert request(fleet, "e1", 5, status=503) == "one-box"
    assert request(fleet, "e1", 50) == "regular"
    assert request(fleet, "e1", 50, status=502) == "regular"
    assert request(fleet, "e1", 60, status=500) == "regular"

    now = proxies.run(inventory, HOST)
    ob, ob_5xx, reg, reg_5xx, fallback = (
        b - a for a, b in zip(counts(first["e1"]), counts(now["e1"]), strict=True))
    # (The agents' end-to-end probes are requests too: at least ours were counted.)
    assert (ob >= 3, ob_5xx, reg >= 3, reg_5xx, fallback) == (True, 1, True, 2, 0)
    e2_before, e2_now = counts(first["e2"]), counts(now["e2"])
    assert (e2_now[1], e2_now[3]) == (e2_before[1], e2_before[3])  # no 5xx through e2
    assert now["e1"].process == first["e1"].process  # the same worker counted both


def test_sets_holds_and_repeats_harmlessly_and_leaves_an_off_region_alone(
        fleet: DeployedFleet, inventory: str) -> None:
    w1_map = sha(map_file(fleet, "w1"))
    w1_running = running(fleet, "w1")

    got = proxies.run(inventory, HOST, percent=25, hold="r1")
    for proxy in ON:
        r = got[proxy]
        assert (r.ok, r.percent, r.held_by, r.changed, r.before) == (True, 25, "r1", True, 20)
        assert running(fleet, proxy) == 25  # read back independently of the module
        lines = map_file(fleet, proxy).read_text().splitlines()
        assert lines[-2:] == [f"#held {HOST} r1", f"{HOST} 25"]
    assert got["w1"].off and not got["w1"].ok
    assert sha(map_file(fleet, "w1")) == w1_map and running(fleet, "w1") == w1_running

    files = {p: (sha(map_file(fleet, p)), map_file(fleet, p).stat().st_mtime_ns) for p in ON}
    again = proxies.run(inventory, HOST, percent=25, hold="r1")
    assert {p: (again[p].changed, again[p].percent) for p in ON} == \
        {p: (False, 25) for p in ON}
    assert {p: (sha(map_file(fleet, p)), map_file(fleet, p).stat().st_mtime_ns)
            for p in ON} == files  # not even rewritten

    # --check says what would change and changes nothing.
    dry = proxies.run(inventory, HOST, percent=40, hold="r1", check=True)
    assert {p: (dry[p].changed, dry[p].percent) for p in ON} == {p: (True, 25) for p in ON}
    assert running(fleet, "e1") == 25

    # A reload keeps the value (it is in the file) and shows as a new worker.
    before = proxies.run(inventory, HOST)
    old_pid = int((before["e1"].process or "").split("@")[0])
    unix_cli(fleet.master_socket("e1"), "reload")
    deadline = time.monotonic() + 10
    while not new_worker(fleet, "e1", old_pid):
        assert time.monotonic() < deadline, "e1 did not reload within 10 s"
        time.sleep(0.1)
    after = proxies.run(inventory, HOST)
    assert after["e1"].process != before["e1"].process
    assert after["e2"].process == before["e2"].process
    assert (after["e1"].percent, after["e1"].held_by) == (25, "r1")

    # Percent without hold releases the hold.
    released = proxies.run(inventory, HOST, percent=25)
    assert {p: (released[p].changed, released[p].held_by) for p in ON} == \
        {p: (True, None) for p in ON}
    assert f"#held {HOST}" not in map_file(fleet, "e1").read_text()


def new_worker(fleet: DeployedFleet, proxy: str, old_pid: int) -> bool:
    """Whether the proxy's master shows a worker other than old_pid (during the reload its
    master socket refuses for a moment)."""
    try:
        pids = fleet.proc(proxy).worker_pids
    except rt.RuntimeAPIError:
        return False
    return bool(pids) and old_pid not in pids


def test_an_unreachable_proxy_does_not_fail_the_others(fleet: DeployedFleet,
                                                        inventory: str) -> None:
    base = fleet.with_unreachable_proxy("us-east-1")

    t = time.monotonic()
    got = proxies.run(str(base), HOST, percent=30, hold="r2", timeout=90)
    assert time.monotonic() - t < 60
    e9 = got["e9"]
    assert (e9.ok, e9.unreachable, e9.region, e9.percent) == (False, True, "us-east-1", None)
    assert e9.error and e9.error.startswith("unreachable: ") and "port" in e9.error, e9.error
    for proxy in ON:
        assert (got[proxy].ok, got[proxy].percent, got[proxy].held_by) == (True, 30, "r2")
        assert running(fleet, proxy) == 30
    assert got["w1"].off


def test_bad_requests_are_refused_before_anything_is_touched(fleet: DeployedFleet,
                                                              inventory: str) -> None:
    files = {p: sha(map_file(fleet, p)) for p in ON}
    for kwargs, words in [({"percent": 101}, "percent: 101 is not a whole number from 0 to 100"),
                          ({"percent": -1}, "percent: -1"),
                          ({"percent": True}, "percent: True"),
                          ({"hold": "r1"}, "hold: needs percent"),
                          ({"percent": 5, "hold": "two words"}, "hold: 'two words'")]:
        with pytest.raises(RequestError, match=words):
            proxies.run(inventory, HOST, **kwargs)  # type: ignore[arg-type]

    with pytest.raises(RequestError) as exc:
        proxies.run(inventory, "slow.example.com", percent=10)
    assert "onebox_service: slow.example.com is not a service with a one-box" in \
        str(exc.value)
    assert f"services with a one-box: {HOST}" in " ".join(str(exc.value).split())

    with pytest.raises(ProxiesError, match="no proxy answered: inventory /nonexistent"):
        proxies.run("/nonexistent/inventory", HOST)
    # A bounded run: cut (with everything ansible-playbook started) when the time is up.
    with pytest.raises(ProxiesError, match=r"did not finish within 0\.5s and no proxy answered"):
        proxies.run(inventory, HOST, percent=10, timeout=0.5)

    # The playbook itself refuses what an operator can type.
    proc = fleet.play("-e", f"onebox_service={HOST}", "-e",
                      "onebox_percent=150", playbook="playbooks/onebox.yml",
                      timeout=120)
    assert proc.returncode != 0
    text = " ".join(proc.stdout.split())
    assert 'onebox_percent: "150" is not a whole number from 0 to 100' in text, text
    assert {p: sha(map_file(fleet, p)) for p in ON} == files
    assert running(fleet, "e1") == 20


def test_the_module_names_the_option_and_the_fix(fleet: DeployedFleet,
                                                 inventory: str) -> None:
    def adhoc(args: dict[str, object]) -> str:
        proc = run([str(BIN / "ansible"), "-i", inventory, "e1", "-m", "georelay.relay.onebox",
                    "-a", json.dumps(args)], timeout=60)
        assert proc.returncode != 0, proc.stdout
        return " ".join(proc.stdout.split())

    paths = {"admin_socket": str(fleet.admin_socket("e1")),
             "map_file": str(map_file(fleet, "e1")), "service": HOST}
    before = sha(map_file(fleet, "e1"))
    assert "percent: 150 is out of range" in adhoc({**paths, "percent": 150})
    assert "hold: needs percent" in adhoc({**paths, "hold": "r1"})
    out = adhoc({**paths, "service": "slow.example.com", "percent": 5})
    assert "service: slow.example.com has no one-box on this proxy" in out
    assert f"services with a one-box here: {HOST}" in out
    out = adhoc({**paths, "map_file": os.path.join(str(fleet.base), "none.map")})
    assert "map_file: " in out and "does not exist" in out
    assert sha(map_file(fleet, "e1")) == before

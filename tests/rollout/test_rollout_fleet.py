"""georelay-rollout against real proxies: real haproxy 2.6, real TLS/SNI, the lab's strict
stand-in gateways (each serving its region's regular and one-box domain), real
ansible-playbook (the controller's only way to the proxies) and simulated users sending
requests the whole time. The controller runs as the CLI, as an operator runs it, with short
bakes and intervals; every run is bounded in time and ends with the users checked.

Fleet: us-east-1 (e1) and us-west-2 (w1), fast.example.com with a one-box, 0% by default.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from georelay_lab.users import Target, Users
from georelay_testing.fleet import REPO, DeployedFleet, running_fleet

pytestmark = pytest.mark.slow

HOST = "fast.example.com"
SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com",
           "health_path": "/ping", "onebox_domain": "{region}-onebox-fast.example.com",
           "onebox_percent": 0}
ROLLOUT = str(Path(sys.executable).with_name("georelay-rollout"))
FAST = ["--bake", "4s", "--interval", "1s", "--min-requests", "30"]


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(regions={"us-east-1": ["e1"], "us-west-2": ["w1"]},
                       services=[dict(SERVICE)]) as f:
        yield f


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "rollouts"


@pytest.fixture
def users(fleet: DeployedFleet) -> Iterator[Users]:
    onebox = frozenset(SERVICE["onebox_domain"].replace("{region}", r) for r in fleet.regions)
    targets = [Target(fleet.address(p), fleet.https_port, HOST, onebox, fleet.ca_file)
               for p in fleet.proxy_names()]
    with Users(targets, count=200, rate=60.0) as u:
        yield u
    fleet.lab().clear_fault()


def cli(fleet: DeployedFleet, state: Path, *args: str, timeout: float = 240) \
        -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROLLOUT, *args, "-i", str(fleet.inventory), "--state-dir",
                           str(state)], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False)


def background(fleet: DeployedFleet, state: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([ROLLOUT, *args, "-i", str(fleet.inventory), "--state-dir",
                             str(state)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def doc(state: Path) -> dict[str, Any]:
    return json.loads((state / "georelay" / f"{HOST}.json").read_text())


def wait_for(state: Path, what: str, pred: Any, timeout: float = 120) -> dict[str, Any]:
    end = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < end:
        try:
            last = doc(state)
        except (FileNotFoundError, ValueError):
            last = {}
        if last and pred(last):
            return last
        time.sleep(0.3)
    raise AssertionError(f"not {what} within {timeout}s: {json.dumps(last)[-3000:]}")


def percents(fleet: DeployedFleet) -> dict[str, str]:
    """Each proxy's map file entry for the service, as written on disk."""
    out = {}
    for p in fleet.proxy_names():
        text = (fleet.root(p) / "etc/haproxy/onebox-percent.map").read_text()
        out[p] = " ".join(ln for ln in text.splitlines() if HOST in ln)
    return out


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"controller still running after {timeout}s:\n{out[-4000:]}") \
            from None
    return out


def evaluations(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in d["history"] if e["event"] in ("applied", "aborting", "completed")]


def test_a_healthy_rollout_completes_and_release_hands_back(fleet, state, users):
    got = cli(fleet, state, "start", HOST, "--release", "v1", "--steps", "20,50", *FAST)
    assert got.returncode == 0, got.stdout[-4000:] + got.stderr[-2000:]
    out = got.stdout
    assert "step 1/2: 20%" in out and "step 2/2: 50%" in out and "completed" in out, out
    assert "undo: georelay-rollout abort fast.example.com" in out
    d = doc(state)
    assert d["status"] == "completed" and d["percent"] == 50
    assert [e["percent"] for e in d["history"] if e["event"] == "applied"] == [20, 50]
    assert all("#held fast.example.com rollout@v1" in v and v.endswith(" 50")
               for v in percents(fleet).values()), percents(fleet)
    assert users.errors == 0 and set(users.statuses) == {200}, (users.errors, users.statuses)
    rel = cli(fleet, state, "release", HOST)
    assert rel.returncode == 0 and "released: 0%" in rel.stdout, rel.stdout + rel.stderr
    assert all("#held" not in v and v.endswith(" 0") for v in percents(fleet).values())


def test_a_failing_one_box_aborts_within_one_evaluation_and_everyone_is_back(
        fleet, state, users):
    proc = background(fleet, state, "start", HOST, "--release", "v2", "--steps", "20,50,100",
                      *FAST)
    try:
        wait_for(state, "at step 2", lambda d: d["step"] == 1 and d["applied"])
        last = doc(state).get("last") or {}
        n_before = last.get("n", 0) if last.get("at_step") == 2 else 0
        lab = fleet.lab()
        for region in fleet.regions:
            lab.set_fault(SERVICE["onebox_domain"].replace("{region}", region), 503, 0.5)
        out = finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, out[-4000:]
    d = doc(state)
    assert d["status"] == "aborted" and d["percent"] == 50, d["reason"]
    assert "spike" in d["reason"] or "5xx" in d["reason"], d["reason"]
    # The first evaluation whose counters hold the fault's requests aborts; one more may have
    # been under way (its readings taken) when the fault was set.
    assert d["last"]["action"] == "abort" and d["last"]["at_step"] == 2
    assert d["last"]["n"] <= n_before + 2, (n_before, d["last"])
    assert "aborted: 0% on 2 proxies, read back" in out, out[-3000:]
    fleet.lab().clear_fault()
    seen = users.everyone_once()
    assert seen == {"regular": 200}, seen
    assert all(v.endswith(" 0") and "rollout@v2" in v for v in percents(fleet).values())
    assert cli(fleet, state, "release", HOST).returncode == 0


def test_low_traffic_holds_and_a_second_controller_is_refused(fleet, state):
    # no users: the step never has its 30 one-box requests
    proc = background(fleet, state, "start", HOST, "--release", "v3", "--steps", "10,20",
                      "--bake", "1s", "--interval", "1s", "--min-requests", "30")
    try:
        d = wait_for(state, "three evaluations", lambda d: d["applied"] and d.get("last")
                     and d["baked_s"] >= 3)
        assert d["step"] == 0 and d["last"]["action"] == "hold", d["last"]
        assert "too little traffic" in d["last"]["reason"]
        again = cli(fleet, state, "start", HOST, "--release", "v4", "--steps", "10")
        assert again.returncode == 1 and "already has a rollout" in again.stderr, again.stderr
        twice = cli(fleet, state, "resume", HOST, "--release", "v3")
        assert twice.returncode == 1 and "another controller drives" in twice.stderr, \
            twice.stderr
        st = cli(fleet, state, "status", HOST)
        assert "controller: pid" in st.stdout and "running at step 1/2 (10%)" in st.stdout, \
            st.stdout
        ab = cli(fleet, state, "abort", HOST, "--reason", "test over")
        assert ab.returncode == 0, ab.stdout + ab.stderr
        assert "is now aborted (0% on every proxy)" in ab.stdout, ab.stdout
        finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    d = doc(state)
    assert d["status"] == "aborted" and "abort by" in d["reason"] and "test over" in d["reason"]
    assert doc(state)["step"] == 0  # never advanced
    assert all(v.endswith(" 0") for v in percents(fleet).values())
    assert cli(fleet, state, "release", HOST).returncode == 0


def test_kill_9_then_resume_reapplies_the_step_without_a_double_step(fleet, state, users):
    proc = background(fleet, state, "start", HOST, "--release", "v5", "--steps", "10,20,30",
                      "--bake", "30s", "--interval", "1s", "--min-requests", "30")
    try:
        wait_for(state, "at step 2", lambda d: d["step"] == 1 and d["applied"], timeout=150)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    st = cli(fleet, state, "status", HOST)
    assert "no controller is running it" in st.stdout, st.stdout
    assert "georelay-rollout resume --release v5 fast.example.com" in st.stdout
    other = cli(fleet, state, "resume", HOST, "--release", "v6")
    assert other.returncode == 1 and "is of release v5, not v6" in other.stderr
    res = background(fleet, state, "resume", HOST, "--release", "v5")
    try:
        d = wait_for(state, "step 2 re-applied", lambda d: [
            e["step"] for e in d["history"] if e["event"] == "applied"] == [1, 2, 2])
        assert d["step"] == 1 and d["baked_s"] < 30
        assert cli(fleet, state, "abort", HOST).returncode == 0
        finish(res, 60)
    finally:
        if res.poll() is None:
            os.killpg(res.pid, signal.SIGKILL)
    applied = [e["step"] for e in doc(state)["history"] if e["event"] == "applied"]
    assert applied == [1, 2, 2], applied  # step 3 never applied, step 2 re-applied once
    assert cli(fleet, state, "release", HOST).returncode == 0


def test_a_proxy_that_does_not_answer_holds_the_rollout(fleet, state, users):
    proc = background(fleet, state, "start", HOST, "--release", "v7", "--steps", "10,20",
                      "--bake", "60s", "--interval", "1s", "--min-requests", "30")
    sock = fleet.admin_socket("w1")
    moved = sock.with_name("admin.sock.away")
    try:
        wait_for(state, "step 1 applied", lambda d: d["applied"])
        sock.rename(moved)  # w1's Runtime API is gone: the module fails there
        d = wait_for(state, "a hold on w1", lambda d: (d.get("last") or {}).get("action")
                     == "hold" and "w1" in d["last"]["reason"])
        baked = d["baked_s"]
        time.sleep(4)
        d = doc(state)
        assert d["baked_s"] == pytest.approx(baked, abs=1.5), "the bake clock went on"
        assert d["status"] == "running" and d["step"] == 0
        moved.rename(sock)
        wait_for(state, "evaluations again", lambda d: (d.get("last") or {}).get("action")
                 != "hold" or "w1" not in d["last"]["reason"])
        assert cli(fleet, state, "abort", HOST).returncode == 0
        finish(proc, 60)
    finally:
        if moved.exists():
            moved.rename(sock)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert cli(fleet, state, "release", HOST).returncode == 0


def test_bad_input_is_refused_naming_the_fix(fleet, state):
    got = cli(fleet, state, "start", "nope.example.com", "--release", "v1")
    assert got.returncode == 1 and "not a service of the inventory" in got.stderr
    assert "fast.example.com" in got.stderr
    got = cli(fleet, state, "start", HOST, "--release", "v1", "--steps", "50,20")
    assert got.returncode == 64 and "--steps" in got.stderr, got.stderr
    got = cli(fleet, state, "start", HOST, "--release", "bad release")
    assert got.returncode == 1 and "--release" in got.stderr
    assert not (state / "georelay" / f"{HOST}.json").exists()


def test_the_rollout_demo_aborts_at_step_2_and_everyone_is_back(fleet):
    """make demo-rollout (georelay-tools rollout-demo), on this fleet."""
    tools = str(Path(sys.executable).with_name("georelay-tools"))
    got = subprocess.run([tools, "rollout-demo", "-i", str(fleet.inventory), "--lab-dir",
                          str(fleet.lab_dir)], cwd=REPO, capture_output=True, text=True,
                         timeout=400, check=False)
    out = got.stdout
    assert got.returncode == 0, out[-5000:] + got.stderr[-2000:]
    assert "ROLLOUT DEMO PASSED" in out and "[UNEXPECTED]" not in out
    assert "the controller aborted the rollout at step 2" in out
    assert "{'regular': 200}" in out
    assert not fleet.lab().faults()  # the fault it set is cleared

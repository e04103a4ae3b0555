"""`make drill` against a lab fleet of the demo's shape: the drill itself, as a subprocess,
with Route53 at the fleet's moto_server. It must pass each step and leave the fleet as it
found it; without a running fleet it must refuse with a message that says what to do."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from georelay_testing.fleet import REPO
from georelay_testing.runbook_lab import RunbookFleet

TOOLS = str(Path(sys.executable).with_name("georelay-tools"))  # make drill runs it


def drill(fleet: RunbookFleet, *args: str, timeout: float = 240) \
        -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLS, "drill", "-i",
                           str(fleet.inventory), "--lab-dir", str(fleet.lab_dir), *args],
                          cwd=REPO, env=fleet.env({}), capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_the_drill_passes_every_step_and_leaves_the_fleet_as_it_was(
        fleet: RunbookFleet, prometheus: str) -> None:
    got = drill(fleet)
    out = got.stdout
    assert got.returncode == 0, out[-6000:] + got.stderr[-2000:]
    assert "DRILL PASSED" in out and "[UNEXPECTED]" not in out, out[-3000:]
    # each step shows the three views, as they really were
    steps = re.split(r"^--- ", out, flags=re.M)[1:]
    assert [s.splitlines()[0] for s in steps] == [
        "Before: everything up", "e1 killed", "us-east-1's gateway stopped",
        "us-east-1 evacuated", "After: everything restored"]
    killed, gateway, evacuated = steps[1], steps[2], steps[3]
    assert re.search(r"^  e1 +us-east-1 +FAILED", killed, re.M), killed
    assert re.search(r"near us-east-1 +e2@us-east-1 100%$", killed, re.M), killed
    assert re.search(r"^  e1 +us-east-1 +503 home gateway down, bridging via backup us-west-2",
                     gateway, re.M), gateway
    assert re.search(r"^  e2 +us-east-1 +200 from gateway us-west-2$", gateway, re.M), gateway
    assert re.search(r"near us-east-1 +w1@us-west-2 50%, w2@us-west-2 50%$", gateway,
                     re.M), gateway
    assert "us-east-1 is evacuated" in evacuated
    assert re.search(r"^  e1 +us-east-1 +200 from gateway us-east-1$", evacuated, re.M)
    # the lab's Prometheus saw each break: each alert fired within its `for` plus one
    # evaluation of its expression holding (the drill says [ok] only when it measured so;
    # "[UNEXPECTED]" is absent above), and resolved after the repair
    assert f"Alerts: pending and firing in Prometheus ({prometheus}/alerts):" in out
    for alert, proxies in (("GeorelayProxyUnhealthy", ["e1"]),
                           ("GeorelayBridgingViaBackup", ["e1", "e2"])):
        for proxy in proxies:
            for what in ("fires", "resolves"):
                assert re.search(rf"^  \[ok\] {alert} {what} for {proxy} ", out, re.M), \
                    (alert, what, proxy, out[-4000:])
    assert "(none pending or firing)" in steps[-1], steps[-1]
    # and the fleet is back: nothing for the lab to fix
    assert fleet.reset() == []


def test_the_drill_refuses_a_fleet_that_is_not_running(fleet: RunbookFleet) -> None:
    lab = fleet.lab()
    assert lab.stop_gateway("us-west-2")
    try:
        got = drill(fleet, timeout=60)
    finally:
        lab.start_gateway(lab.fleet.region("us-west-2"))
    assert got.returncode == 69, got.stdout + got.stderr  # EX_UNAVAILABLE
    assert "does not answer" in got.stderr and "run `make demo` first" in got.stderr, \
        got.stderr
    assert "=== 1." not in got.stdout  # it broke nothing
    assert fleet.reset() == []

"""`molecule test` of the roles (molecule/default/) on real Debian 12 hosts of the host lab.

The scenario brings up its own lab (`molecule`, 10.213.2.0/24) and stand-in gateways, applies
playbooks/proxies.yml, applies it again expecting no change, verifies the hosts and requests
through them, and removes it all. The test runs it as a developer does and checks that each of
those stages ran and passed; whatever happens, the lab is removed afterwards.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from georelay_lab.hosts import HostLab
from georelay_lab.stand_ins import down as lab_down
from georelay_testing.fleet import BIN, REPO

pytestmark = pytest.mark.slow

LAB = "molecule"  # molecule/default/inventory/group_vars/all.yml: molecule_lab_name
SUBNET = "10.213.2.0/24"
LAB_DIR = REPO / ".lab-molecule"  # the scenario's lab CA and stand-in gateways (georelay_lab_dir)
STAGES = ("destroy", "syntax", "create", "converge", "idempotence", "verify")
HOSTS = ("mol-use1", "mol-usw2")  # molecule/default/inventory/hosts.yml
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A PLAY RECAP line, e.g. "mol-use1   : ok=30   changed=0   unreachable=0   failed=0 ..."
RECAP = re.compile(r"^\W*(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.M)


def section(out: str, stage: str) -> str:
    """What molecule printed while running one stage ("default ➜ verify: Executing" on a
    terminal, "[default > verify] Executing" otherwise)."""
    start = re.search(rf"default (?:➜|>) {stage}\]?:? Executing", out)
    assert start, f"stage {stage} did not start:\n{out[-6000:]}"
    end = re.compile(rf"default (?:➜|>) {stage}\]?:? Executed").search(out, start.end())
    assert end, f"stage {stage} did not end:\n{out[-6000:]}"
    return out[start.end():end.start()]


def recaps(text: str) -> dict[str, dict[str, int]]:
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in RECAP.finditer(text)}


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="the host lab needs root (systemd-nspawn, bridges, overlayfs)")
def test_molecule_test_converges_idempotently_and_verifies() -> None:
    molecule = BIN / "molecule"
    assert molecule.exists(), (f"{molecule} is missing: install the dev extra "
                               "(`make setup`, or pip install -e '.[dev]')")
    started = time.monotonic()
    try:
        # One stream, unbuffered: molecule's stage lines (stderr) stay in order with the
        # playbooks' output (stdout).
        proc = subprocess.run(
            [str(molecule), "test"], cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=900, check=False,
            env={**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                 "PYTHONUNBUFFERED": "1", "NO_COLOR": "1", "PY_COLORS": "0",
                 "ANSIBLE_NOCOLOR": "1", "COLUMNS": "200"})
        left_behind = HostLab(LAB, SUBNET).hosts()
    finally:  # also when molecule died before its destroy, or the run timed out
        lab_down(LAB_DIR)
        HostLab(LAB, SUBNET).down(quiet=True)
    took = time.monotonic() - started
    out = ANSI.sub("", proc.stdout)
    assert proc.returncode == 0, f"molecule test exited {proc.returncode}:\n{out[-12000:]}"
    for stage in STAGES:
        assert re.search(rf"^default (?:➜|>) {stage}: Executed: Successful", out, re.M), \
            f"stage {stage} did not run and pass:\n{out[-6000:]}"
    # The second converge changed nothing on either host, and verify ran on both.
    for stage, changed in (("converge", None), ("idempotence", 0), ("verify", 0)):
        counts = recaps(section(out, stage))
        assert set(HOSTS) <= set(counts), f"{stage} did not run on {HOSTS}:\n{out[-6000:]}"
        for host in HOSTS:
            assert counts[host]["failed"] == counts[host]["unreachable"] == 0, counts
            if changed is not None:
                assert counts[host]["changed"] == changed, (stage, counts)
    assert not left_behind, f"molecule's destroy left hosts behind: {left_behind}"
    print(f"molecule test: {took:.0f} s")

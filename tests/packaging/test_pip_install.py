"""The control-node package from the user's side: `pip install` of the checkout into the
Python that already runs a user's Ansible leaves that ansible-core as it is (neither upgraded
nor downgraded), gives a working georelay-dns, and brings neither the lab nor the tools
(development-only distributions of their own) nor the agent (a wheel for proxy hosts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from georelay_testing.fleet import REPO

USERS_ANSIBLE = "ansible-core==2.18.*"  # a release the user already runs, not the newest
NOT_SHIPPED = ("georelay_lab", "georelay_tools", "georelay_agent")


def run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd="/", check=False)


def installed(python: Path) -> dict[str, str]:
    got = run([str(python), "-m", "pip", "list", "--format", "json"], timeout=120)
    assert got.returncode == 0, got.stderr
    return {p["name"].lower(): p["version"] for p in json.loads(got.stdout)}


@pytest.mark.slow
def test_pip_install_keeps_the_users_ansible_core(tmp_path: Path,
                                                  record_property: pytest.RecordProperty
                                                  ) -> None:
    started = time.monotonic()
    venv = tmp_path / "users-ansible"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert made.returncode == 0, made.stderr
    python, bin_dir = venv / "bin/python", venv / "bin"
    users = run([str(python), "-m", "pip", "install", "-q", USERS_ANSIBLE])
    assert users.returncode == 0, users.stdout + users.stderr
    before = installed(python)["ansible-core"]
    assert before.startswith("2.18."), before

    got = run([str(python), "-m", "pip", "install", "-q", str(REPO)])
    assert got.returncode == 0, got.stdout + got.stderr
    after = installed(python)
    assert after["ansible-core"] == before, \
        f"pip install georelay changed the user's ansible-core {before} -> " \
        f"{after['ansible-core']}"
    assert after["georelay"] == "0.2.0"
    assert not {"georelay-lab", "georelay-tools", "georelay-agent"} & after.keys()
    consistent = run([str(python), "-m", "pip", "check"], timeout=120)
    assert consistent.returncode == 0, consistent.stdout + consistent.stderr

    version = run([str(bin_dir / "georelay-dns"), "--version"], timeout=60)
    assert (version.returncode, version.stdout.strip()) == (0, "georelay-dns 0.2.0"), \
        version.stdout + version.stderr
    for tool in ("georelay-rollout", "georelay-edge"):
        got = run([str(bin_dir / tool), "--version"], timeout=60)
        assert (got.returncode, got.stdout.strip()) == (0, f"{tool} 0.2.0"), got.stderr
    helped = run([str(bin_dir / "georelay-dns"), "-h"], timeout=60)
    assert helped.returncode == 0 and "plan" in helped.stdout, helped.stderr
    assert not (bin_dir / "georelay-lab").exists()
    assert not (bin_dir / "georelay-tools").exists()

    imports = run([str(python), "-c", "import georelay_model, georelay_dns.cli; print('ok')"],
                  timeout=60)
    assert imports.stdout.strip() == "ok", imports.stderr
    for package in NOT_SHIPPED:
        probe = run([str(python), "-c", f"import {package}"], timeout=60)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, \
            f"{package} is importable from the runtime distribution: {probe.stderr}"

    seconds = time.monotonic() - started
    record_property("pip_install_seconds", round(seconds, 1))
    print(f"\nfresh venv + {USERS_ANSIBLE} + pip install georelay: {seconds:.0f} s")

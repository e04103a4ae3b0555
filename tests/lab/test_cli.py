"""georelay-lab and georelay-tools follow georelay's command-line rules: --version from the
package metadata, -h everywhere, usage errors exit 64 (EX_USAGE), -i falls back to
$ANSIBLE_INVENTORY; the drill has one entry point, georelay-tools drill, which make drill runs."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from georelay_testing.fleet import REPO, run

BIN = Path(sys.executable).parent
LAB_COMMANDS = [[], ["up"], ["health"], ["route53"], ["down"], ["show"], ["gateway"],
                ["gateway-fault"], ["hosts"], ["hosts", "up"], ["hosts", "down"],
                ["hosts", "status"]]
TOOLS_COMMANDS = [[], ["bench"], ["drill"], ["scale"], ["bench-plan"], ["bench-healthz"],
                  ["bench-rules"], ["bench-slow-readers"]]


def cli(*argv: str, env: dict[str, str] | None = None,
        cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "ANSIBLE_INVENTORY"}
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**base, **(env or {})}, check=False)


@pytest.mark.parametrize("tool", ["georelay-lab", "georelay-tools"])
def test_version_is_the_distributions(tool: str) -> None:
    got = cli(tool, "--version")
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == f"{tool} {importlib.metadata.version(tool)}" == f"{tool} 0.2.0"


@pytest.mark.parametrize("sub", [" ".join(c) for c in LAB_COMMANDS])
def test_lab_dash_h_everywhere(sub: str) -> None:
    got = cli("georelay-lab", *sub.split(), "-h")
    assert got.returncode == 0 and got.stdout.startswith("Usage: georelay-lab"), got.stderr


@pytest.mark.parametrize("sub", [" ".join(c) for c in TOOLS_COMMANDS])
def test_tools_dash_h_everywhere(sub: str) -> None:
    got = cli("georelay-tools", *sub.split(), "-h")
    assert got.returncode == 0 and got.stdout.startswith("Usage: georelay-tools"), got.stderr


def test_tools_lists_its_subcommands_and_each_has_its_version() -> None:
    listed = cli("georelay-tools", "-h").stdout
    for name in ("bench", "drill", "scale", "bench-plan", "bench-healthz"):
        assert f"\n  {name} " in listed, listed
    got = cli("georelay-tools", "scale", "--version")
    assert (got.returncode, got.stdout.strip()) == (0, "georelay-tools scale 0.2.0")


@pytest.mark.parametrize("argv, says", [
    (["georelay-lab", "--no-such-option"], "No such option"),
    (["georelay-lab", "no-such-command"], "No such command"),
    (["georelay-lab", "show"], "no inventory: give -i/--inventory PATH or set ANSIBLE_INVENTORY"),
    (["georelay-lab", "show", "-i", "/nonexistent/inventory"], "no inventory at"),
    (["georelay-lab", "up", "-i", "inventories/demo", "--gateway", "apache"], "apache"),
    (["georelay-lab", "gateway-fault", "-i", "inventories/demo", "--status", "503"],
     "--status needs --domain"),
    (["georelay-lab", "gateway-fault", "-i", "inventories/demo", "--domain", "nowhere.example",
      "--status", "503"], "no stand-in gateway of this lab serves 'nowhere.example'"),
    (["georelay-lab", "hosts", "up"], "give either COUNT or -i INVENTORY"),
    (["georelay-lab", "hosts", "up", "3", "--subnet", "300.0.0.0/24"], "--subnet"),
    (["georelay-tools", "no-such-command"], "No such command"),
    (["georelay-tools", "drill"], "no inventory: give -i/--inventory PATH"),
    (["georelay-tools", "scale", "--sizes", "50"], "write SERVICESxREGIONS"),
    (["georelay-tools", "bench", "--variant", "tuned"], "write NAME:VAR=VALUE"),
    (["georelay-tools", "bench-plan", "--sizes", "many"], "write proxy counts"),
    (["georelay-tools", "bench-healthz"], "give --url"),
    (["georelay-tools", "--repo", "/tmp", "scale"], "not a georelay checkout"),
])
def test_usage_errors_exit_64(argv: list[str], says: str) -> None:
    got = cli(*argv)
    assert got.returncode == 64, (got.returncode, got.stdout, got.stderr)
    assert says in got.stderr, got.stderr


def test_inventory_falls_back_to_ansible_inventory(tmp_path: Path) -> None:
    """show reads $ANSIBLE_INVENTORY's fleet: its one proxy, where nothing listens, fails."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"georelay_zone": "example.com",
                 "georelay_services": [{"hostname": "fast.example.com",
                                        "apigw_domain": "{region}-fast.example.com"}],
                 "georelay_tls_pem": str(tmp_path / "public.pem"),
                 "georelay_backend_ca": str(tmp_path / "lab-ca.pem")},
        "children": {"eu_west_1": {
            "vars": {"aws_region": "eu-west-1", "georelay_apigw_address": "127.0.250.9:8443"},
            "hosts": {"lonely": {"public_ip": "127.0.250.1"}}}}}}))
    got = cli("georelay-lab", "show", "--lab-dir", str(tmp_path / "lab"),
              env={"ANSIBLE_INVENTORY": str(inventory)})
    assert got.returncode == 1, got.stdout + got.stderr
    assert got.stdout.startswith("lonely   127.0.250.1:443 https://fast.example.com/anything"
                                 " -> FAILED"), got.stdout + got.stderr


def test_lab_lists_its_subcommands() -> None:
    listed = cli("georelay-lab", "-h").stdout
    for name in ("up", "down", "show", "health", "route53", "gateway", "gateway-fault", "hosts"):
        assert f"\n  {name} " in listed, listed


def test_the_drill_has_one_entry_point() -> None:
    assert "drill" not in cli("georelay-lab", "-h").stdout
    gone = subprocess.run([sys.executable, "-m", "georelay_lab.drill"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert gone.returncode != 0 and "No module named georelay_lab.drill" in gone.stderr
    planned = run(["make", "-n", "--no-print-directory", "drill"], check=True).stdout
    assert "/georelay-tools drill -i inventories/demo --lab-dir .lab" in planned, planned


def test_the_tools_find_the_checkout_from_the_working_directory(tmp_path: Path) -> None:
    """Outside a checkout (and with the tools installed from one) the checkout they were
    installed from is used; --repo names another one explicitly."""
    got = subprocess.run([sys.executable, "-c", "from georelay_lab.checkout import checkout;"
                          " print(checkout())"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path, check=False,
                         env={k: v for k, v in os.environ.items() if k != "GEORELAY_CHECKOUT"})
    assert got.stdout.strip() == str(REPO.resolve()), got.stderr
    named = subprocess.run([sys.executable, "-c", "from georelay_lab.checkout import checkout;"
                            " print(checkout())"], capture_output=True, text=True, timeout=60,
                           cwd=tmp_path, check=False,
                           env={**os.environ, "GEORELAY_CHECKOUT": str(tmp_path)})
    assert named.returncode != 0 and "is not a georelay checkout" in named.stderr

"""Command-line hygiene of georelay-dns (and of cli_support, which every georelay click CLI
uses): --version, -h, usage errors exit 64 (never 2, "changes pending"), -i falls back to
ANSIBLE_INVENTORY. The installed console script runs, as users run it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from georelay_dns.cli_support import EX_USAGE, cli_group, inventory_option
from georelay_testing.dns_zone import Zone, fleet, write_inventory

CLI = Path(sys.executable).with_name("georelay-dns")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "ANSIBLE_INVENTORY"}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, check=False,
                          env={**base, **(env or {})}, timeout=120)


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "eu-west-1": 2}))


def test_version_reads_the_installed_distribution() -> None:
    res = run("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"georelay-dns {importlib.metadata.version('georelay')}\n"


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["plan", "-h"], ["weight", "-h"],
                                  ["simulate", "--help"]])
def test_h_and_help_show_usage(args: list[str]) -> None:
    res = run(*args)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: georelay-dns")
    assert "-h, --help" in res.stdout


@pytest.mark.parametrize(("args", "words"), [
    (["plan", "--bogus"], "No such option '--bogus'"),
    (["plna"], "No such command 'plna'"),
    (["plan", "-i", "x", "--output", "yaml"], "'yaml' is not one of"),
    (["simulate", "-i", "x"], "Missing option '--from'"),
    (["evacuate", "-i", "x", "--reason", "r"], "Missing argument 'REGION'"),
    (["apply", "-i", "x", "--wait-timeout", "soon"], "'soon' is not a valid float"),
])
def test_usage_errors_exit_64_not_2(args: list[str], words: str) -> None:
    res = run(*args)
    assert res.returncode == EX_USAGE, (res.returncode, res.stderr)
    assert words in res.stderr


def test_without_inventory_the_error_names_both_ways_to_give_one() -> None:
    res = run("plan")
    assert res.returncode == EX_USAGE
    assert "give -i/--inventory PATH or set ANSIBLE_INVENTORY=PATH" in res.stderr


def test_inventory_falls_back_to_ansible_inventory(inventory: Path) -> None:
    given = run("simulate", "-i", str(inventory), "--from", "eu-west-1")
    from_env = run("simulate", "--from", "eu-west-1", env={"ANSIBLE_INVENTORY": str(inventory)})
    assert given.returncode == from_env.returncode == 0, from_env.stderr
    assert from_env.stdout == given.stdout
    assert "eu-west-1-p0" in from_env.stdout


def test_i_wins_over_ansible_inventory(inventory: Path, tmp_path: Path) -> None:
    res = run("simulate", "-i", str(inventory), "--from", "eu-west-1",
              env={"ANSIBLE_INVENTORY": str(tmp_path / "missing")})
    assert res.returncode == 0, res.stderr


def test_several_sources_in_ansible_inventory_are_refused(inventory: Path) -> None:
    res = run("simulate", "--from", "eu-west-1",
              env={"ANSIBLE_INVENTORY": f"{inventory},{inventory}"})
    assert res.returncode == EX_USAGE
    assert "names 2 inventory sources" in res.stderr and "-i/--inventory" in res.stderr


def test_plan_from_ansible_inventory_exits_2_with_changes_pending(zone: Zone,
                                                                  inventory: Path) -> None:
    """What playbooks/dns.yml relies on: 2 is a plan to apply, a typo is 64."""
    env = {k: os.environ[k] for k in os.environ if k.startswith("AWS_")}
    res = run("plan", env={**env, "ANSIBLE_INVENTORY": str(inventory)})
    assert res.returncode == 2, res.stderr
    assert "create" in res.stdout
    assert run("plan", "--outptu", "json", env={**env, "ANSIBLE_INVENTORY": str(inventory)}
               ).returncode == EX_USAGE


# ---- cli_support as another CLI uses it: nested groups, its own distribution ----

@cli_group("demo-tool", distribution="click")
def demo() -> None:
    """A CLI shaped like georelay-lab's: a group with a subgroup."""


@demo.group("hosts")
def demo_hosts() -> None:
    """Hosts."""


@demo_hosts.command("up")
@click.argument("count", type=int)
@inventory_option(required=False)
def demo_up(count: int, inventory: str | None) -> None:
    click.echo(f"up {count} {inventory}")


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--version"], 0, f"demo-tool {importlib.metadata.version('click')}"),
    (["hosts", "up", "-h"], 0, "Usage: demo-tool hosts up"),
    (["hosts", "up", "three"], EX_USAGE, "'three' is not a valid integer"),
    (["hosts", "down"], EX_USAGE, "No such command 'down'"),
    (["hosts", "up", "3"], 0, "up 3 None"),
])
def test_cli_support_in_a_nested_group(args: list[str], code: int, words: str) -> None:
    res = CliRunner().invoke(demo, args, prog_name="demo-tool", env={"ANSIBLE_INVENTORY": ""})
    assert res.exit_code == code, res.output
    assert words in res.output


def test_cli_support_optional_inventory_takes_the_environment() -> None:
    res = CliRunner().invoke(demo, ["hosts", "up", "2"], prog_name="demo-tool",
                             env={"ANSIBLE_INVENTORY": "inventories/demo"})
    assert res.exit_code == 0 and res.output == "up 2 inventories/demo\n"


def test_a_distribution_that_is_not_installed_is_named() -> None:
    @cli_group("ghost", distribution="georelay-no-such-distribution")
    def ghost() -> None:
        """Nothing."""

    res = CliRunner().invoke(ghost, ["--version"])
    assert res.exit_code == 1
    assert "'georelay-no-such-distribution' is not installed" in res.output

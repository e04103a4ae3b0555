"""Command-line hygiene of georelay-dns (and of cli_support, which every georelay click CLI
uses): --version, -h, usage errors exit 64 (never 2, "changes pending"), -i falls back to
ANSIBLE_INVENTORY; --output json, apply's progress (plain lines, or a bar on a terminal),
shell completion. The installed console script runs, as users run it."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from georelay_dns.cli_support import EX_USAGE, cli_group, inventory_option
from georelay_testing.dns_drive import cli_streams
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


# ---- --output json, progress, shell completion ----

STEP = re.compile(r"^\.\.\. \[(\d+)/(\d+)\] (.+)$")


def test_apply_output_json_and_plain_progress_lines(zone: Zone, inventory: Path) -> None:
    """Not on a terminal (CI, cron, Ansible): one plain line per step on stderr, counted
    against a total known from the start; stdout holds the one JSON document."""
    code, out, err = cli_streams("apply", "-i", str(inventory), "--yes", "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    checks = {h["Id"] for h in zone.health_checks()}
    assert doc["applied"] is True and doc["checksum"].startswith("sha256:")
    assert set(doc["result"]) == {"healthchecks_created", "healthchecks_updated",
                                  "record_batches", "change_ids", "healthchecks_deleted"}
    assert set(doc["result"]["healthchecks_created"].values()) == checks
    assert len(checks) == len(doc["healthcheck_creates"]) == doc["counts"]["healthcheck_create"]
    assert doc["result"]["record_batches"] == 1 and len(doc["result"]["change_ids"]) == 1
    steps = [STEP.match(line) for line in err.splitlines()]
    assert steps and all(steps), err
    done = [int(m.group(1)) for m in steps if m]
    totals = {int(m.group(2)) for m in steps if m}
    assert totals == {len(checks) + 2}  # each check, the batch submitted, the batch INSYNC
    assert done == sorted(done) and done[-1] == len(checks) + 2
    messages = [m.group(3) for m in steps if m]
    assert f"health checks created: {len(checks)}/{len(checks)}" in messages
    assert "record batch 1/1: " in "\n".join(messages) and messages[-1] == "all changes INSYNC"

    code, out, err = cli_streams("apply", "-i", str(inventory), "--yes", "--output", "json")
    assert code == 0 and err == ""
    again = json.loads(out)
    assert again["applied"] is False and again["result"] is None
    assert again["records"] == [] and sum(again["counts"].values()) == 0


def test_apply_output_json_refusal_is_stderr_only(zone: Zone, inventory: Path) -> None:
    code, out, err = cli_streams("apply", "-i", str(inventory), "--output", "json")
    assert code == 1 and out == ""
    assert "refusing without --yes or --checksum" in err
    assert zone.health_checks() == []


def test_apply_shows_a_progress_bar_on_a_terminal(zone: Zone, inventory: Path) -> None:
    """stderr is a real pseudo-terminal here, as in an operator's shell."""
    parent, child = os.openpty()
    base = {k: v for k, v in os.environ.items() if k != "ANSIBLE_INVENTORY"}
    proc = subprocess.Popen([str(CLI), "apply", "-i", str(inventory), "--yes"],
                            stdout=subprocess.PIPE, stderr=child, text=True,
                            env={**base, "COLUMNS": "120"})
    os.close(child)
    screen = b""
    while True:
        try:
            chunk = os.read(parent, 4096)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        screen += chunk
    os.close(parent)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, screen
    text = screen.decode(errors="replace")
    assert "applying" in text and "\r" in text  # one line redrawn in place
    assert "all changes INSYNC" in text and "... [" not in text
    total = len(zone.health_checks()) + 2
    assert f"{total}/{total}" in text
    assert "applied: " in out


def test_simulate_output_json(inventory: Path) -> None:
    res = run("simulate", "-i", str(inventory), "--from", "eu-west-1", "--output", "json",
              "--evacuate", "eu-west-1", "--service", "fast.example.com")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"from", "down", "down_regions", "change", "operator_state",
                        "services"}
    assert doc["from"] == "eu-west-1" and doc["change"] == "--evacuate eu-west-1"
    assert doc["operator_state"] is None  # not --live
    [svc] = doc["services"]
    assert svc["hostname"] == "fast.example.com"
    before, after = svc["before"]["answers"], svc["after"]["answers"]
    assert {a["region"] for a in before} == {"eu-west-1"}
    assert {a["region"] for a in after} == {"us-east-1"}
    assert sum(a["share"] for a in before) == pytest.approx(1.0)
    assert svc["after"]["notes"][0] == ("eu-west-1 is evacuated: Route53 has no latency "
                                        "record for it")
    plain = json.loads(run("simulate", "-i", str(inventory), "--from", "eu-west-1",
                           "--output", "json", "--down", "eu-west-1-p0").stdout)
    assert [s["after"] for s in plain["services"]] == [None, None]
    assert plain["down"] == ["eu-west-1-p0"]
    assert {a["target"] for s in plain["services"] for a in s["before"]["answers"]} == {
        "eu-west-1-p1"}


@pytest.mark.parametrize(("shell", "words"), [
    ("bash", "complete -o nosort -F _georelay_dns_completion georelay-dns"),
    ("zsh", "#compdef georelay-dns"),
    ("fish", "complete --no-files --command georelay-dns"),
])
def test_shell_completion_script(shell: str, words: str) -> None:
    res = run(env={"_GEORELAY_DNS_COMPLETE": f"{shell}_source"})
    assert res.returncode == 0, res.stderr
    assert words in res.stdout and "_GEORELAY_DNS_COMPLETE" in res.stdout


@pytest.mark.parametrize(("words", "cword", "expect"), [
    ("georelay-dns ev", 1, {"evacuate"}),
    ("georelay-dns plan --output ", 3, {"text", "json"}),
    ("georelay-dns weight --", 2, {"--inventory", "--reset", "--dry-run", "--output"}),
])
def test_shell_completion_answers(words: str, cword: int, expect: set[str]) -> None:
    """What bash asks at each TAB; -i's ANSIBLE_INVENTORY fallback stays out of the way."""
    res = run(env={"_GEORELAY_DNS_COMPLETE": "bash_complete", "COMP_WORDS": words,
                   "COMP_CWORD": str(cword), "ANSIBLE_INVENTORY": "a,b"})
    assert res.returncode == 0, res.stderr
    got = {line.split(",", 1)[1] for line in res.stdout.splitlines()}
    assert expect <= got

"""The runbooks follow their convention, and name only commands, flags, playbooks and
variables that exist (docs/runbooks/README.md, "How these runbooks stay true").

No fleet here: these checks read the pages and ask each tool's --help.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from georelay_testing.cli_check import HELP, check_command, simple_commands
from georelay_testing.runbook_doc import (
    RUNBOOKS,
    SECTIONS,
    Runbook,
    index,
    index_variables,
    runbooks,
)

SITUATIONS = {"proxy-unhealthy.md", "region-gateway-down.md", "region-lost.md",
              "all-regions-unhealthy.md", "certificate-expiring.md", "reload-failed.md",
              "route53-throttled.md", "maintenance-proxy.md", "maintenance-region.md",
              "canary-unhealthy.md", "deploy-version-not-picked-up.md", "ip-ranges-map-stale.md",
              "error-budget-burn.md"}
BOOKS = runbooks()
IDS = [b.name for b in BOOKS]
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


def test_the_required_situations_have_a_runbook_and_the_index_lists_each() -> None:
    names = {b.name for b in BOOKS}
    assert names >= SITUATIONS, f"missing: {sorted(SITUATIONS - names)}"
    listed = set(index().links)
    assert names <= listed, f"not in docs/runbooks/README.md: {sorted(names - listed)}"
    assert {n for n in listed if "/" not in n} <= names | {"README.md"}, listed


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_sections_are_the_six_in_order(book: Runbook) -> None:
    assert book.title, f"{book.name}: no '# title'"
    assert book.sections == list(SECTIONS), f"{book.name}: ## sections {book.sections}"


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_diagnosis_mitigation_and_verification_have_commands(book: Runbook) -> None:
    for section in ("Diagnosis", "Mitigation", "Verification"):
        assert book.section_blocks(section), f"{book.name}: no ```sh command in {section}"
    assert not [b for b in book.blocks if b.kind == "example"], \
        f"{book.name}: `sh example` blocks belong in the index only"


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_variables_are_declared_and_documented(book: Runbook) -> None:
    documented = index_variables()
    used = book.used()
    assert book.declared, f"{book.name}: no **Variables:** line"
    assert used <= set(book.declared), \
        f"{book.name}: used but not on its Variables line: {sorted(used - set(book.declared))}"
    if used & {"ADDR", "ON_HOST", "ROOT", "AGENT"}:
        used = used | {"HOST"}  # they are $HOST's: naming it tells the reader which proxy
    assert set(book.declared) <= used, \
        f"{book.name}: declared but unused: {sorted(set(book.declared) - used)}"
    assert set(book.declared) <= set(documented), \
        f"{book.name}: not in the index's table: {sorted(set(book.declared) - set(documented))}"


def test_the_index_example_sets_every_variable_and_nothing_else() -> None:
    documented = index_variables()
    examples = [b for b in index().blocks if b.kind == "example"]
    assert len(examples) == 1, "the index has one ```sh example block"
    assigned: list[str] = []
    for line in examples[0].commands():
        words = shlex.split(line)
        assert words[0] == "export", line
        assigned += [w.split("=", 1)[0] for w in words[1:]]
    assert sorted(assigned) == sorted(documented), (sorted(assigned), sorted(documented))
    # $AGENT is what the table says it is
    assert 'AGENT="$ON_HOST $ROOT/opt/georelay-agent/venv/bin/georelay-agent"' in \
        examples[0].code
    check = subprocess.run(["bash", "-n"], input=examples[0].code, text=True,
                           capture_output=True, check=False)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_every_block_is_valid_bash(book: Runbook) -> None:
    for block in book.blocks:
        got = subprocess.run(["bash", "-n"], input=block.code, text=True, capture_output=True,
                             check=False)
        assert got.returncode == 0, f"{block.where}: {got.stderr}"


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_commands_subcommands_flags_and_playbooks_exist(book: Runbook) -> None:
    problems = []
    for block in book.blocks:
        for command in block.commands():
            problems += [f"{block.where}: {p}" for p in
                         check_command(command, systemd=block.kind == "systemd")]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_systemd_blocks_are_followed_by_a_block_for_any_host(book: Runbook) -> None:
    blocks = book.blocks
    for i, block in enumerate(blocks):
        if block.kind != "systemd":
            continue
        j = i
        while j < len(blocks) and blocks[j].kind == "systemd":
            j += 1
        assert j < len(blocks) and blocks[j].kind == "run" and \
            blocks[j].section == block.section, \
            f"{block.where}: a `sh systemd` block needs a ```sh block after it, in the same " \
            "section, that does the same on hosts without systemd"
        tools = {argv[0] for cmd in block.commands() for argv in simple_commands(cmd)}
        assert tools <= {"systemctl", "journalctl"}, f"{block.where}: {tools}"


@pytest.mark.parametrize("book", BOOKS, ids=IDS)
def test_a_block_with_an_exit_status_holds_one_command(book: Runbook) -> None:
    for block in book.blocks:
        if block.exit_codes != {0}:
            assert len(block.commands()) == 1, \
                f"{block.where}: exit={sorted(block.exit_codes)} is for a single command"


@pytest.mark.parametrize("book", [*BOOKS, index()], ids=[*IDS, "README.md"])
def test_commands_in_the_prose_are_real_and_none_is_left_unrun(book: Runbook) -> None:
    """An inline command with variables belongs in a ```sh block (so it is run); a tool
    named in the prose with a subcommand or flags must have them."""
    text = book.path.read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    prose = re.sub(r"^\| `\$[A-Z_]+` \|.*$", "", prose, flags=re.M)  # the variables table
    problems = []
    for span in INLINE.findall(prose):
        words = span.split()
        if not words or words[0].lstrip("$") not in {*HELP, "ON_HOST", "AGENT"}:
            continue
        if re.search(r"\$[A-Z]", span) and len(words) > 1:
            problems.append(f"`{span}`: a command with variables belongs in a ```sh block")
            continue
        if words[0] in HELP and len(words) > 1:
            problems += [f"`{span}`: {p}" for p in check_command(span.replace("…", ""))]
    assert not problems, f"{book.name}:\n" + "\n".join(problems)


def test_runbooks_live_in_docs_runbooks() -> None:
    assert (RUNBOOKS / "README.md").is_file()
    assert len(BOOKS) >= len(SITUATIONS)


@pytest.mark.parametrize(("command", "problem"), [
    ("georelay-dns evacuate us-east-1 --reason x -i inv --no-such-flag", "no option"),
    ("georelay-dns no-such-command -i inv", "does not exist"),
    ("$AGENT check --no-such-flag", "no option --no-such-flag"),
    ("curl -sS --no-such-curl-flag https://x", "no option"),
    ("ansible-playbook -i inv playbooks/no-such.yml", "no playbook"),
    ("ansible-playbook -i inv playbooks/drain.yml -e no_such_var=1", "not read by the playbook"),
    ("no-such-tool --help", "no such command"),
    ("echo $(date)", "command substitution"),
    ("$INVENTORY -x", "a variable used as a command"),
])
def test_the_checker_catches_what_does_not_exist(command: str, problem: str) -> None:
    got = check_command(command)
    assert any(problem in p for p in got), got


def test_the_checker_holds_systemd_blocks_to_the_roles_units() -> None:
    assert check_command("$ON_HOST systemctl restart haproxy", systemd=True) == []
    assert any("not one the roles install" in p for p in
               check_command("$ON_HOST systemctl restart nginx", systemd=True))
    assert any("verb" in p for p in check_command("systemctl frobnicate haproxy",
                                                  systemd=True))
    assert any("holds only" in p for p in check_command("curl -sS x", systemd=True))

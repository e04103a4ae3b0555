"""Does a runbook command name only commands, subcommands, flags and playbooks that exist?

Each command line is split into simple commands (pipes, `;`, `&&`, `||`); for the tools an
on-call engineer drives georelay with, the subcommand must answer `--help` and every flag
must appear in that help; ansible-playbook's playbooks must exist, and `-e name=...` must
name a variable the playbook reads.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from georelay_testing.runbook_doc import REPO

BIN = Path(sys.executable).parent
PATH = os.pathsep.join([str(BIN), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                        "/sbin", "/bin"])
# tool -> (its subcommand's words: 0 none, 1 `tool sub`, 2 `tool group sub`; the help arguments)
HELP: dict[str, tuple[int, tuple[str, ...]]] = {
    "georelay-dns": (True, ("--help",)),
    "georelay-lab": (True, ("--help",)),
    "georelay-tools": (True, ("--help",)),
    "georelay-agent": (True, ("--help",)),
    "georelay-rollout": (True, ("--help",)),
    "georelay-edge": (2, ("--help",)),
    "ansible-playbook": (False, ("--help",)),
    "ansible": (False, ("--help",)),
    "ansible-inventory": (False, ("--help",)),
    "curl": (False, ("--help", "all")),
    "systemctl": (False, ("--help",)),
    "journalctl": (False, ("--help",)),
    "haproxy": (False, ("-h",)),
    "openssl": (True, ("-help",)),
}
# Variables that stand for a command (README "Variables").
COMMAND_VARIABLES = {"$AGENT": ["georelay-agent"], "$ON_HOST": []}
SHELL_WORDS = {"for", "in", "do", "done", "if", "then", "elif", "else", "fi", "while", "until",
               "!", "{", "}"}
BUILTINS = {"cd", "echo", "export", "printf", "test", "[", "true", "false", "read", "set"}
SEPARATORS = {"|", "||", "&&", ";", "&", "\n"}
SYSTEMD_VERBS = {"status", "restart", "reload", "start", "stop", "is-active", "show", "cat"}


def simple_commands(command: str) -> list[list[str]]:
    """`a -x | b; c` -> [['a', '-x'], ['b'], ['c']] (quotes resolved, $VARS kept)."""
    if "$(" in command or "`" in command:
        raise ValueError("command substitution: write the value into a variable of the "
                         "runbook instead, so the command can be checked")
    lex = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    out: list[list[str]] = [[]]
    for token in lex:
        if token in SEPARATORS:
            out.append([])
        else:
            out[-1].append(token)
    cmds = []
    for argv in out:
        while argv and (argv[0] in SHELL_WORDS or re.match(r"^[A-Za-z_]\w*=", argv[0])):
            if argv[0] == "for":  # for NAME in WORDS ... do: the loop head is no command
                argv = argv[argv.index("do") + 1:] if "do" in argv else []
                continue
            argv = argv[1:]
        while argv and argv[0] in COMMAND_VARIABLES:
            argv = COMMAND_VARIABLES[argv[0]] + argv[1:]
        if argv:
            cmds.append(argv)
    return cmds


@functools.cache
def help_text(tool: str, sub: str | None) -> tuple[int, str]:
    args = [tool, *(sub.split() if sub else []), *HELP[tool][1]]
    exe = shutil.which(tool, path=PATH) or tool
    proc = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": PATH, "PYTHONPATH": str(REPO / "agent")},
                          cwd=REPO, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def flags_in(text: str) -> set[str]:
    flags: set[str] = set()
    for line in text.splitlines():
        if re.match(r"^\s+-", line):
            head = re.split(r"\s{2,}", line.strip())[0]
            flags.update(re.findall(r"(?<![\w-])(--?[A-Za-z0-9][\w-]*)", head))
    # usage lines: [-f <file>], [--flag]
    flags.update(re.findall(r"\[\s*(--?[A-Za-z0-9][\w-]*)", text))
    return flags


def _flag_ok(arg: str, flags: set[str]) -> bool:
    name = arg.split("=", 1)[0]
    if name in flags:
        return True
    return bool(re.fullmatch(r"-[A-Za-z]{2,}", name)) and all(f"-{c}" in flags
                                                               for c in name[1:])


@functools.cache
def systemd_units() -> frozenset[str]:
    """Units the roles manage (ansible.builtin.systemd_service name:)."""
    units = set()
    for path in (REPO / "roles").glob("*/tasks/*.yml"):
        text = path.read_text()
        for block in re.split(r"\n- name:", text):
            if "systemd_service:" in block:
                units.update(re.findall(r"^\s+name:\s*([\w@.-]+)\s*$", block, re.M))
    return frozenset(units)


def check_argv(argv: list[str], *, systemd: bool = False) -> list[str]:
    """Problems with one simple command (empty: it names only what exists)."""
    tool, args = argv[0], argv[1:]
    if tool.startswith("$"):
        return [f"{tool}: a variable used as a command (only $AGENT and $ON_HOST are)"]
    if tool not in BUILTINS and shutil.which(tool, path=PATH) is None:
        return [f"{tool}: no such command here"]
    problems: list[str] = []
    if systemd and tool not in ("systemctl", "journalctl"):
        problems.append(f"{tool}: a `sh systemd` block holds only systemctl and journalctl")
    if tool not in HELP:
        return problems
    depth = int(HELP[tool][0])
    sub = None
    if depth:
        words = args[:depth]
        if len(words) < depth or any(w.startswith("-") for w in words):
            return [*problems, f"{tool}: no subcommand"]
        sub, args = " ".join(words), args[depth:]
    code, text = help_text(tool, sub)
    if code != 0 and tool != "haproxy":
        return [*problems, f"{tool} {sub or ''}: does not exist ({text.strip()[-200:]})"]
    flags = flags_in(text)
    for arg in args:
        if arg.startswith("-") and len(arg) > 1 and not re.fullmatch(r"-\d+", arg) \
                and not _flag_ok(arg, flags):
            problems.append(f"{tool} {sub or ''}: no option {arg.split('=', 1)[0]}".replace(
                "  ", " "))
    if tool == "ansible-playbook":
        problems += _playbook(args)
    if tool == "systemctl":
        words = [a for a in args if not a.startswith("-")]
        if not words or words[0] not in SYSTEMD_VERBS:
            problems.append(f"systemctl: verb {words[:1]} is not one of {sorted(SYSTEMD_VERBS)}")
        for unit in words[1:]:
            if unit.removesuffix(".service") not in systemd_units():
                problems.append(f"systemctl: unit {unit} is not one the roles install "
                                f"({', '.join(sorted(systemd_units()))})")
    if tool == "journalctl":
        for i, arg in enumerate(args):
            if arg in ("-u", "--unit") and i + 1 < len(args) and \
                    args[i + 1].removesuffix(".service") not in systemd_units():
                problems.append(f"journalctl: unit {args[i + 1]} is not one the roles install")
    return problems


def _playbook(args: list[str]) -> list[str]:
    problems = []
    books = [a for a in args if a.endswith((".yml", ".yaml"))]
    if len(books) != 1:
        return [f"ansible-playbook: expected one playbook, got {books}"]
    path = REPO / books[0]
    if not path.is_file():
        return [f"ansible-playbook: no playbook {books[0]}"]
    text = path.read_text()
    for i, arg in enumerate(args):
        if arg in ("-e", "--extra-vars") and i + 1 < len(args):
            for name in re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", args[i + 1]):
                if not re.search(rf"\b{name}\b", text):
                    problems.append(f"ansible-playbook {books[0]}: -e {name}=... is not "
                                    "read by the playbook")
    return problems


def check_command(command: str, *, systemd: bool = False) -> list[str]:
    try:
        argvs = simple_commands(command)
    except ValueError as exc:
        return [f"{command!r}: {exc}"]
    return [p for argv in argvs for p in check_argv(argv, systemd=systemd)]

"""The runbooks in docs/runbooks/ as data: variables, sections and fenced shell blocks.

The convention (docs/runbooks/README.md, "How these runbooks stay true"):

* a fence ```` ```sh ```` is a command an on-call engineer runs; the tests run it, in order,
  against a lab fleet in the situation of the runbook. Attributes after ``sh``:
  ``exit=N`` (or ``exit=N,M``): the exit status in that situation (default 0);
  ``expect=REGEX`` (repeatable): its output (stdout and stderr) must match;
  ``absent=REGEX`` (repeatable): its output must not match (regexes are multi-line, and
  ``$VARIABLE`` in them stands for the variable's value);
  ``timeout=SECONDS`` (default 120).
* ```` ```sh systemd ```` runs only on hosts with ``georelay_service_manager: systemd``; the
  loopback lab has no systemd. Its syntax, verbs, flags and unit names are checked here, the
  tests of tests/hosts/ run proxy-unhealthy.md's on a real Debian 12 host in that situation, and the
  block right after it must be a plain ```` ```sh ```` block that does the same on any host
  (that one is run on the loopback lab).
* ```` ```sh example ```` sets variables to example values (the index's variables block); it
  is checked for syntax only. ```` ```text ```` is sample output: never run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks"
SECTIONS = ("Meaning", "Impact", "Diagnosis", "Mitigation", "Rollback", "Verification")
KINDS = ("run", "systemd", "example")
DEFAULT_TIMEOUT = 120.0
FENCE = re.compile(r"^```(.*)$")
VARIABLE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)\}?")
DECLARED = re.compile(r"`\$([A-Z][A-Z0-9_]*)`")


class RunbookError(ValueError):
    """A runbook does not follow the convention (the message names file and line)."""


@dataclass(frozen=True)
class Block:
    runbook: str
    section: str  # the first word of the ## heading it is under
    line: int  # line of the opening fence, 1-based
    kind: str  # run, systemd or example
    code: str
    exit_codes: frozenset[int] = frozenset({0})
    expect: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT

    @property
    def where(self) -> str:
        return f"docs/runbooks/{self.runbook}:{self.line}"

    def commands(self) -> list[str]:
        """The block's commands: comments dropped, continuation lines joined."""
        out: list[str] = []
        pending = ""
        for raw in self.code.splitlines():
            line = raw.rstrip()
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            out.append((pending + line).strip())
            pending = ""
        if pending:
            out.append(pending.strip())
        return out


@dataclass
class Runbook:
    path: Path
    title: str
    declared: list[str]  # variables named on its "Variables:" line
    sections: list[str] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name

    def used(self) -> set[str]:
        return {v for b in self.blocks for v in VARIABLE.findall(b.code)}

    def section_blocks(self, section: str, kind: str = "run") -> list[Block]:
        return [b for b in self.blocks if b.section == section and b.kind == kind]


def _attributes(info: str, where: str) -> dict[str, object]:
    try:
        words = shlex.split(info)
    except ValueError as exc:
        raise RunbookError(f"{where}: fence {info!r}: {exc}") from exc
    lang, rest = (words[0], words[1:]) if words else ("", [])
    attrs: dict[str, object] = {"lang": lang, "kind": "run", "expect": [], "absent": []}
    if lang != "sh":
        return attrs
    for word in rest:
        key, eq, value = word.partition("=")
        if not eq:
            if key not in KINDS[1:]:
                raise RunbookError(f"{where}: unknown fence word {key!r} (kinds: "
                                   f"{', '.join(KINDS[1:])})")
            attrs["kind"] = key
        elif key == "exit":
            try:
                attrs["exit"] = frozenset(int(v) for v in value.split(","))
            except ValueError as exc:
                raise RunbookError(f"{where}: exit={value!r} is not N or N,M") from exc
        elif key in ("expect", "absent"):
            try:
                re.compile(value)
            except re.error as exc:
                raise RunbookError(f"{where}: {key}={value!r}: {exc}") from exc
            attrs[key].append(value)  # type: ignore[union-attr]
        elif key == "timeout":
            attrs["timeout"] = float(value)
        else:
            raise RunbookError(f"{where}: unknown fence attribute {key!r} "
                               "(exit=, expect=, absent=, timeout=)")
    return attrs


def parse(path: Path) -> Runbook:
    lines = path.read_text().splitlines()
    title = next((ln[2:].strip() for ln in lines if ln.startswith("# ")), "")
    declared: list[str] = []
    for ln in lines:
        if ln.startswith("**Variables:**"):
            declared = DECLARED.findall(ln)
            break
    book = Runbook(path, title, declared)
    book.links = re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", path.read_text())
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:].split()[0] if line[3:].split() else ""
            book.sections.append(section)
        m = FENCE.match(line)
        if m:
            where = f"docs/runbooks/{path.name}:{i + 1}"
            attrs = _attributes(m.group(1).strip(), where)
            body: list[str] = []
            i += 1
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise RunbookError(f"{where}: fence never closed")
            if attrs["lang"] == "sh":
                book.blocks.append(Block(
                    path.name, section, int(where.rsplit(":", 1)[1]), str(attrs["kind"]),
                    "\n".join(body) + "\n",
                    attrs.get("exit", frozenset({0})),  # type: ignore[arg-type]
                    tuple(attrs["expect"]),  # type: ignore[arg-type]
                    tuple(attrs["absent"]),  # type: ignore[arg-type]
                    float(attrs.get("timeout", DEFAULT_TIMEOUT))))  # type: ignore[arg-type]
        i += 1
    return book


def index() -> Runbook:
    return parse(RUNBOOKS / "README.md")


def runbooks() -> list[Runbook]:
    return [parse(p) for p in sorted(RUNBOOKS.glob("*.md")) if p.name != "README.md"]


def index_variables() -> dict[str, str]:
    """The index's variables table: name -> meaning."""
    out: dict[str, str] = {}
    for line in (RUNBOOKS / "README.md").read_text().splitlines():
        m = re.match(r"^\|\s*`\$([A-Z][A-Z0-9_]*)`\s*\|(.*)\|\s*$", line)
        if m:
            out[m.group(1)] = m.group(2).strip()
    return out

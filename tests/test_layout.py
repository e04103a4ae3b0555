"""The layout rules the code must keep: no import cycle in the fleet model, georelay-dns or
the agent, and the runtime packages import nothing of the lab, the tools or the tests.

Imports are read with ast, every one of them: at module level, inside functions and under
``if TYPE_CHECKING:`` (a cycle that only type checkers see is still a cycle of the design).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {
    "georelay_model": REPO / "model/georelay_model",
    "georelay_dns": REPO / "dns/georelay_dns",
    "georelay_rollout": REPO / "rollout/georelay_rollout",
    "georelay_edge": REPO / "edge/georelay_edge",
    "georelay_agent": REPO / "agent/georelay_agent",
}
RUNTIME = ("georelay_model", "georelay_dns", "georelay_rollout", "georelay_edge")
DEV_ONLY = ("georelay_lab", "georelay_tools", "tests")


def modules(package: str, root: Path) -> dict[str, Path]:
    """Module name -> file; a package's own __init__ is the package name itself."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join([package, *parts])] = path
    return out


def imported(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """The modules of ``known`` that module ``name`` (file ``path``) imports, with the line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        for target in targets:
            while target and target not in known:  # import a.b.c -> the module a.b.c or a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def import_graph(packages: dict[str, Path]) -> dict[str, dict[str, int]]:
    files: dict[str, Path] = {}
    for package, root in packages.items():
        files.update(modules(package, root))
    known = set(files)
    graph: dict[str, dict[str, int]] = {name: {} for name in files}
    for name, path in files.items():
        for target, line in imported(name, path, known):
            graph[name].setdefault(target, line)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(cycle) + "  (" + ", ".join(
        f"{a} line {graph[a][b]}" for a, b in itertools.pairwise(cycle)) + ")"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    graph = import_graph({package: PACKAGES[package]})
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle in {package}: {describe(cycle, graph)}. Fix: move " \
        "the value types the modules share into a leaf module that imports neither"


def test_no_import_cycle_across_the_packages() -> None:
    graph = import_graph(PACKAGES)
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe(cycle, graph)}"


def test_the_runtime_packages_import_nothing_of_the_lab_tools_or_tests() -> None:
    test_modules = {p.stem for p in (REPO / "tests").rglob("*.py")} | {
        p.name for p in (REPO / "tests").rglob("*") if p.is_dir() and (p / "__init__.py").exists()}
    forbidden = set(DEV_ONLY) | test_modules
    bad: list[str] = []
    for package in RUNTIME:
        for name, path in modules(package, PACKAGES[package]).items():
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level \
                    else []
                bad += [f"{name} line {node.lineno}: imports {n}" for n in names
                        if n.split(".")[0] in forbidden]
    assert not bad, "runtime code imports dev-only code (the lab, the tools or the tests): " \
        + "; ".join(bad) + ". Fix: move what it needs into the runtime package"


def test_the_cycle_check_finds_a_cycle_and_names_it(tmp_path: Path) -> None:
    """The check itself can fail: the cycle the DNS tool once had, rebuilt in small."""
    pkg = tmp_path / "demo_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "operator_state.py").write_text("from demo_pkg.route53_read import Live\n")
    (pkg / "route53_read.py").write_text("from demo_pkg.tree import Record\n")
    (pkg / "tree.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                 "    from demo_pkg.operator_state import OperatorState\n")
    (pkg / "leaf.py").write_text("from . import tree\nfrom .tree import Record\n")
    graph = import_graph({"demo_pkg": pkg})
    assert graph["demo_pkg.leaf"] == {"demo_pkg.tree": 1}
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 4
    assert set(cycle) == {"demo_pkg.operator_state", "demo_pkg.route53_read", "demo_pkg.tree"}
    assert "demo_pkg.tree line 3" in describe(cycle, graph)
    (pkg / "tree.py").write_text("RECORD = 1\n")
    assert find_cycle(import_graph({"demo_pkg": pkg})) is None

"""The agent's command line: --version, -h, exit codes, where it finds its config, imports.

Every case runs the real `georelay-agent` (python -m georelay_agent) in a subprocess. A
usage error exits 64 (EX_USAGE), never argparse's 2, which `check` uses for CRITICAL.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

from georelay_agent.config import default_config_path
from georelay_testing.agent_fleet import AGENT_CMD, agent_env, run_agent
from georelay_testing.fleet import REPO

EX_USAGE = 64
COMMANDS = ("serve", "supervise", "check", "drain", "undrain", "drains", "validate", "schema")
PACKAGE = REPO / "agent/georelay_agent"


def write_config(path: Path, root: Path, proxy: str = "p1") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "schema_version": 1, "proxy": proxy, "region": "us-east-1",
        "haproxy": {"stats_socket": str(root / "run/haproxy/user.sock")},
        "services": [{"hostname": "fast.example.com", "backend": "be_fast_example_com",
                      "domain": "us-east-1-fast.example.com"}],
        "probe": {"enabled": False}, "drain_dir": str(root / "var/lib/georelay-agent/drains"),
        "check": {"state_dir": str(root / "var/lib/georelay-agent/check")}}))
    return path


def no_config_env() -> dict[str, str]:
    env = agent_env()
    env.pop("GEORELAY_AGENT_CONFIG", None)
    return env


def test_version_is_the_installed_distributions() -> None:
    out = run_agent("--version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"georelay-agent {version('georelay-agent')}"
    assert "unknown" not in out.stdout


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_works_everywhere(command: str) -> None:
    for flag in ("-h", "--help"):
        out = run_agent(*([command] if command else []), flag)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith(f"usage: georelay-agent {command}".rstrip()), out.stdout
        assert out.stderr == ""
    if command not in ("", "schema"):
        assert "--config FILE" in out.stdout


@pytest.mark.parametrize("args, message", [
    ((), "the following arguments are required: COMMAND"),
    (("nosuch",), "invalid choice: 'nosuch'"),
    (("--bogus",), "the following arguments are required: COMMAND"),
    (("check", "--bogus"), "unrecognized arguments: --bogus"),
    (("check", "--write"), "argument --write: expected one argument"),
    (("serve", "--log-level", "loud"), "argument --log-level: invalid choice: 'loud'"),
    (("drain",), "the following arguments are required: --reason"),
    (("undrain", "a", "b"), "unrecognized arguments: b"),
])
def test_usage_errors_exit_64_with_the_usage(args: tuple[str, ...], message: str) -> None:
    out = run_agent(*args)
    assert out.returncode == EX_USAGE, (out.returncode, out.stderr)
    assert out.stderr.startswith("usage: georelay-agent"), out.stderr
    assert message in out.stderr, out.stderr
    assert out.stdout == ""


def test_drain_errors_say_what_to_fix_and_exit_by_kind(tmp_path: Path) -> None:
    config = str(write_config(tmp_path / "agent.json", tmp_path))
    out = run_agent("drain", "--config", config, "--reason", "x", "--expires", "0x")
    assert out.returncode == EX_USAGE, out.stderr
    assert "--expires '0x': give a duration such as 30m, 2h or 1d" in out.stderr
    out = run_agent("drain", "--config", config, "--reason", "x", "--id", "Bad Id")
    assert out.returncode == EX_USAGE and "--id 'Bad Id'" in out.stderr, out.stderr
    out = run_agent("undrain", "--config", config, "nosuch")
    assert out.returncode == 1, out.stderr
    assert "no drain 'nosuch'" in out.stderr and "--missing-ok" in out.stderr
    assert run_agent("undrain", "--config", config, "nosuch", "--missing-ok").returncode == 0


def test_default_config_rule() -> None:
    assert default_config_path("/opt/georelay-agent/venv") == "/etc/georelay-agent/agent.json"
    assert default_config_path("/srv/lab/p1/opt/georelay-agent/venv") == \
        "/srv/lab/p1/etc/georelay-agent/agent.json"
    for other in ("/usr", "/work/.venv", "/opt/georelay-agent", "/opt/other/venv",
                  "opt/georelay-agent/venv"):
        assert default_config_path(other) == "/etc/georelay-agent/agent.json", other


def test_an_agent_venv_below_a_root_reads_that_roots_config(tmp_path: Path) -> None:
    """A real virtualenv at <root>/opt/georelay-agent/venv: without --config and without
    $GEORELAY_AGENT_CONFIG the agent reads <root>/etc/georelay-agent/agent.json; the
    variable wins over that, --config over both."""
    root = tmp_path / "p1"
    venv_dir = root / "opt/georelay-agent/venv"
    venv.EnvBuilder(with_pip=False).create(venv_dir)
    python = str(venv_dir / "bin/python")
    own = write_config(root / "etc/georelay-agent/agent.json", root, "own")
    env = no_config_env()
    out = subprocess.run([python, "-m", "georelay_agent", "validate"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (out.returncode, out.stdout) == (0, f"{own}: valid (1 service(s))\n"), out.stderr
    out = subprocess.run([python, "-m", "georelay_agent", "-h"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert f"Here: {own}\n" in out.stdout, out.stdout

    named = write_config(tmp_path / "named.json", root, "named")
    given = write_config(tmp_path / "given.json", root, "given")
    out = subprocess.run([python, "-m", "georelay_agent", "validate"],
                         env={**env, "GEORELAY_AGENT_CONFIG": str(named)},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout == f"{named}: valid (1 service(s))\n", out.stderr
    out = subprocess.run([python, "-m", "georelay_agent", "validate", "--config", str(given)],
                         env={**env, "GEORELAY_AGENT_CONFIG": str(named)},
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout == f"{given}: valid (1 service(s))\n", out.stderr

    own.unlink()  # no config there: it says which file it looked for, exit 78
    out = subprocess.run([python, "-m", "georelay_agent", "validate"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 78
    assert out.stderr == f"georelay-agent: cannot read config {own}: No such file or " \
        "directory\n"


def test_any_other_interpreter_reads_etc() -> None:
    out = subprocess.run([*AGENT_CMD, "-h"], env=no_config_env(), capture_output=True,
                         text=True, timeout=60, check=False)
    assert sys.prefix != "/opt/georelay-agent/venv"
    assert "Here: /etc/georelay-agent/agent.json\n" in out.stdout, out.stdout


def test_check_imports_neither_the_http_server_nor_the_collector_thread() -> None:
    code = ("import sys, georelay_agent.check; "
            "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('georelay_agent', 'prometheus_client'))))")
    out = subprocess.run([*AGENT_CMD[:1], "-c", code], env=agent_env(), capture_output=True,
                         text=True, timeout=60, check=True)
    loaded = set(out.stdout.split())
    assert "georelay_agent.check" in loaded and "georelay_agent.health" in loaded
    for module in ("georelay_agent.server", "georelay_agent.collector",
                   "georelay_agent.metrics", "prometheus_client"):
        assert module not in loaded, sorted(loaded)


def _imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (anywhere in it)."""
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for name in modules:
        deps: set[str] = set()
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                parts = node.module.split(".")
                if parts == ["georelay_agent"]:
                    deps |= {a.name for a in node.names if a.name in modules}
                elif parts[0] == "georelay_agent":
                    deps.add(parts[1])
            elif isinstance(node, ast.ImportFrom) and node.level:
                deps |= {node.module.split(".")[0]} if node.module else \
                    {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names
                         if a.name.startswith("georelay_agent.")}
        graph[name] = deps - {name, "__init__"}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name):], name]
        if name in done:
            return None
        for dep in sorted(graph.get(name, ())):
            found = visit(dep, [*path, name])
            if found:
                return found
        done.add(name)
        return None

    return next((c for c in (visit(n, []) for n in sorted(graph)) if c), None)


def test_the_package_has_no_import_cycle() -> None:
    graph = _imports()
    assert {"check", "health", "snapshot", "observation", "gather"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
    # the value types are leaves; the one-shot check never needs the daemon's parts
    assert graph["snapshot"] == set() and graph["config"] == set()
    assert not graph["check"] & {"server", "collector", "metrics", "cli"}
    # the cycle finder finds one where there is one
    assert set(_cycle({**graph, "snapshot": {"health"}}) or ()) == {"health", "snapshot"}


def test_no_module_is_over_450_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.glob("*.py")
             if not p.is_symlink()}
    assert max(sizes.values()) <= 450, sizes

"""georelay.relay.agent_wheel: the agent's wheel, built on the control node, is a real wheel.

The action runs in a real ansible-playbook. Its wheel is reproducible (the same bytes twice,
fixed zip timestamps, a RECORD that hashes every file), installs with pip into a fresh
virtualenv (with the hash-pinned requirements, --require-hashes) into a working
`georelay-agent`, and holds the same files and metadata as the wheel `pip wheel ./agent`
builds with setuptools. A requirements file, a wheelhouse or a pyproject.toml it cannot use
fails the task, naming the field and the fix.
"""

from __future__ import annotations

import base64
import configparser
import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
import yaml

from georelay_testing.fleet import BIN, REPO, run

pytestmark = pytest.mark.slow

AGENT = REPO / "agent"
REQUIREMENTS = AGENT / "requirements-host.txt"


def play(tmp: Path, builds: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Run georelay.relay.agent_wheel once per args of builds (on localhost, a failure not
    ending the play); each run's result."""
    n = len(list(tmp.glob("play-*.yml")))
    playbook, saved = tmp / f"play-{n}.yml", tmp / f"results-{n}.json"
    tasks: list[dict[str, Any]] = [
        {"name": f"Build {i}", "georelay.relay.agent_wheel": args, "register": f"build_{i}",
         "ignore_errors": True} for i, args in enumerate(builds)]
    tasks.append({"name": "Save the results", "ansible.builtin.copy": {
        "content": "{{ [" + ", ".join(f"build_{i}" for i in range(len(builds))) + "] | to_json }}",
        "dest": str(saved), "mode": "0644"}})
    playbook.write_text(yaml.safe_dump([{"name": "Agent wheel", "hosts": "localhost",
                                         "gather_facts": False, "connection": "local",
                                         "tasks": tasks}]))
    out = run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)], timeout=120,
              env={"ANSIBLE_PYTHON_INTERPRETER": sys.executable})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    results: list[dict[str, Any]] = json.loads(saved.read_text())
    return results


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Three builds: into a, into a again, into b."""
    tmp = tmp_path_factory.mktemp("wheel")
    results = play(tmp, [{"dest": str(tmp / "a")}, {"dest": str(tmp / "a")},
                         {"dest": str(tmp / "b")}])
    assert not any(r.get("failed") for r in results), results
    return results


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_the_wheel_is_reproducible_and_its_record_hashes_every_file(built) -> None:
    first, again, other = built
    assert first["filename"] == "georelay_agent-0.2.0-py3-none-any.whl"
    assert (first["name"], first["version"]) == ("georelay-agent", "0.2.0")
    assert again["changed"] is False  # the same bytes are there already
    assert first["sha256"] == again["sha256"] == other["sha256"]
    assert Path(first["path"]).read_bytes() == Path(other["path"]).read_bytes()
    assert hashlib.sha256(Path(first["path"]).read_bytes()).hexdigest() == first["sha256"]
    with zipfile.ZipFile(first["path"]) as archive:
        infos = archive.infolist()
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    files = members(Path(first["path"]))
    record_name = "georelay_agent-0.2.0.dist-info/RECORD"
    rows = list(csv.reader(io.StringIO(files[record_name].decode())))
    assert [r[0] for r in rows] == list(files), "RECORD lists every file, in archive order"
    for name, digest, size in rows:
        if name == record_name:
            assert digest == size == ""
            continue
        want = base64.urlsafe_b64encode(hashlib.sha256(files[name]).digest()).rstrip(b"=")
        assert (digest, int(size)) == (f"sha256={want.decode()}", len(files[name])), name
    # Every module of the package, a symlinked one (haproxy_runtime.py) by its target's text.
    modules = sorted((AGENT / "georelay_agent").glob("*.py"))
    for module in modules:
        assert files[f"georelay_agent/{module.name}"] == module.read_bytes(), module.name
    assert first["pins"] == ["prometheus-client==0.26.0"]
    assert first["requirements"] == str(REQUIREMENTS)


def test_pip_installs_it_into_a_fresh_virtualenv_as_a_working_agent(built, tmp_path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin/python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    deps = subprocess.run([*pip, "install", "--require-hashes", "-r", str(REQUIREMENTS)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert deps.returncode == 0, deps.stderr[-3000:]
    wheel = subprocess.run([*pip, "install", "--no-deps", "--no-index", built[0]["path"]],
                           capture_output=True, text=True, timeout=120, check=False)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    agent = venv / "bin/georelay-agent"
    helped = subprocess.run([str(agent), "--help"], capture_output=True, text=True,
                            timeout=30, check=False)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: georelay-agent")
    version = subprocess.run([str(agent), "--version"], capture_output=True, text=True,
                             timeout=30, check=False)
    assert version.stdout.strip() == "georelay-agent 0.2.0", version.stdout + version.stderr
    shown = subprocess.run([*pip[:-1], "show", "georelay-agent"], capture_output=True,
                           text=True, timeout=60, check=False)
    assert "Requires: prometheus-client" in shown.stdout, shown.stdout


def metadata(text: bytes) -> dict[str, list[str]]:
    """Core metadata fields (Metadata-Version aside: the builders may write newer ones)."""
    message = Parser().parsestr(text.decode())
    return {k: sorted(message.get_all(k) or []) for k in set(message.keys())
            if k != "Metadata-Version"}


def test_it_agrees_with_the_wheel_pip_builds_from_agent(built, tmp_path) -> None:
    src = tmp_path / "agent"
    shutil.copytree(AGENT, src, ignore=shutil.ignore_patterns("*.egg-info", "build",
                                                              "__pycache__"))
    out = subprocess.run([str(BIN / "pip"), "wheel", "--no-deps", "-q", "-w",
                          str(tmp_path / "out"), str(src)], capture_output=True, text=True,
                         timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    (theirs_path,) = (tmp_path / "out").glob("*.whl")
    assert theirs_path.name == built[0]["filename"]
    ours, theirs = members(Path(built[0]["path"])), members(theirs_path)
    assert sorted(ours) == sorted(theirs)
    info = "georelay_agent-0.2.0.dist-info"
    for name in theirs:
        if not name.startswith(info):
            assert ours[name] == theirs[name], name
    assert metadata(ours[f"{info}/METADATA"]) == metadata(theirs[f"{info}/METADATA"])
    points = []
    for files in (ours, theirs):
        parser = configparser.ConfigParser()
        parser.read_string(files[f"{info}/entry_points.txt"].decode())
        points.append({s: dict(parser[s]) for s in parser.sections()})
    assert points[0] == points[1] == {"console_scripts": {
        "georelay-agent": "georelay_agent.cli:main"}}
    wheel = [Parser().parsestr(f[f"{info}/WHEEL"].decode()) for f in (ours, theirs)]
    for key in ("Wheel-Version", "Root-Is-Purelib", "Tag"):
        assert wheel[0].get_all(key) == wheel[1].get_all(key), key
    assert ours[f"{info}/top_level.txt"] == theirs[f"{info}/top_level.txt"]


def failure(tmp: Path, **args: str) -> str:
    (result,) = play(tmp, [{"dest": str(tmp / "w"), **args}])
    assert result.get("failed"), result
    return " ".join(result["msg"].split())


def test_requirements_it_cannot_use_fail_naming_the_field(tmp_path) -> None:
    unhashed = tmp_path / "unhashed.txt"
    unhashed.write_text("prometheus-client==0.26.0\n")
    msg = failure(tmp_path, requirements=str(unhashed))
    assert "georelay_agent_requirements" in msg and "--hash=sha256" in msg, msg
    too_old = tmp_path / "old.txt"
    too_old.write_text("prometheus-client==0.16.0 --hash=sha256:" + "0" * 64 + "\n")
    msg = failure(tmp_path, requirements=str(too_old))
    assert "does not satisfy the agent's dependency prometheus-client>=0.17" in msg, msg
    assert "pinned: 0.16.0" in msg, msg
    msg = failure(tmp_path, requirements=str(tmp_path / "missing.txt"))
    assert "georelay_agent_requirements: cannot read" in msg, msg


def test_a_wheelhouse_of_the_pinned_files_passes(tmp_path) -> None:
    wheelhouse = tmp_path / "wheelhouse"
    got = subprocess.run([str(BIN / "pip"), "download", "-q", "--require-hashes", "-r",
                          str(REQUIREMENTS), "--only-binary", ":all:", "-d", str(wheelhouse)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert got.returncode == 0, got.stderr[-3000:]
    (result,) = play(tmp_path, [{"dest": str(tmp_path / "w"), "wheelhouse": str(wheelhouse)}])
    assert not result.get("failed"), result


def test_a_wheelhouse_without_the_pinned_files_fails_naming_the_field(tmp_path) -> None:
    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    (empty / "prometheus_client-0.26.0-py3-none-any.whl").write_bytes(b"not the real one")
    msg = failure(tmp_path, wheelhouse=str(empty))
    assert "georelay_agent_wheelhouse" in msg and "prometheus_client==0.26.0" in msg, msg
    assert "pip download --require-hashes" in msg, msg
    msg = failure(tmp_path, wheelhouse=str(tmp_path / "nowhere"))
    assert "is not a directory on the control node" in msg, msg


def test_a_pyproject_it_cannot_write_fails_naming_the_field(tmp_path) -> None:
    src = tmp_path / "agent"
    shutil.copytree(AGENT, src, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    text = (src / "pyproject.toml").read_text()
    (src / "pyproject.toml").write_text(text.replace("[project]\n",
                                                     "[project]\nreadme = 'README.md'\n"))
    msg = failure(tmp_path, src=str(src))
    assert "[project] fields readme are not written by agent_wheel" in msg, msg
    (src / "pyproject.toml").write_text(text.replace('version = "0.2.0"', 'version = "two"'))
    msg = failure(tmp_path, src=str(src))
    assert "[project].version" in msg and "PEP 440" in msg, msg

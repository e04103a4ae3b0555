"""roles/georelay_agent's monitoring outputs through real ansible-playbook (on localhost, in a
temporary root): the cron entry (run by sh: its output reaches logger at the priority of the
check's status, and it exits with that status), the textfile link into node_exporter's
directory, NRPE's command and its sudoers rule, agent.json's edge settings, and the errors
naming the variable and the fix when a directory they need is missing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from georelay_agent.config import EdgeCache, parse
from georelay_testing.fleet import BIN, REPO, recap, require_program, run

ROLE = REPO / "roles/georelay_agent"
HOST = "fast.example.com"
PRIORITY = {0: "info", 1: "warning", 2: "crit", 3: "err", 78: "err"}


def fact(root: str) -> dict[str, Any]:
    """The georelay_proxy fact's parts the agent's templates read."""
    def backend(host: str, cached: bool) -> dict[str, Any]:
        return {"name": "be_" + host.replace(".", "_"), "hostname": host,
                "domain": f"us-east-1-{host}", "health_path": "/ping", "backups": [],
                "onebox": None, "edge": {"cache": {"name": "georelay_x"} if cached else None}}

    return {"name": "p1", "region": "us-east-1", "https_port": 443, "healthz_path": "/healthz",
            "probe_address": "127.0.0.1", "service_manager": "process", "root": root,
            "agent": {"address": "127.0.0.1", "port": 8405},
            "paths": {"user_socket": f"{root}/run/haproxy/user.sock",
                      "master_socket": f"{root}/run/haproxy-master.sock",
                      "config": f"{root}/etc/haproxy/haproxy.cfg"},
            "onebox": {"map_file": f"{root}/etc/haproxy/onebox-percent.map"},
            "edge": {"version_map": f"{root}/etc/haproxy/edge-version.map",
                     "ip_map": f"{root}/etc/haproxy/aws-ip-ranges.map", "redirecting": True},
            "backends": [backend(HOST, True), backend("api.example.com", False)]}


def play_vars(tmp_path: Path) -> dict[str, Any]:
    root = str(tmp_path / "root")
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    return {**{k: v for k, v in defaults.items() if "{{" not in str(v)},
            "georelay_proxy": fact(root), "georelay_agent_systemd": False,
            "georelay_agent_check_user": "root",
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "georelay_agent_nrpe_dir": f"{root}/etc/nagios/nrpe.d",
            "georelay_agent_textfile_dir": str(tmp_path / "node-exporter"),
            "georelay_agent_paths": {
                "command": str(tmp_path / "fake-agent"), "check_dir": f"{root}/check",
                "drain_dir": f"{root}/drains", "probe_ca": f"{root}/probe-ca.pem",
                "textfile_dir": f"{root}/textfile",
                "textfile": f"{root}/textfile/georelay-agent.prom",
                "sudoers_dir": f"{root}/etc/sudoers.d"}}


def playbook(tmp_path: Path, tasks: list[dict[str, Any]], *extra: str) -> \
        subprocess.CompletedProcess[str]:
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": play_vars(tmp_path), "tasks": tasks}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    return run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(path), *extra],
               timeout=120)


def template(name: str, dest: Path, **task_vars: Any) -> dict[str, Any]:
    return {"ansible.builtin.template": {"src": str(ROLE / "templates" / name),
                                         "dest": str(dest)}, "vars": task_vars}


def include(name: str) -> dict[str, Any]:
    """The role's tasks file `name` (with its templates and handlers)."""
    return {"ansible.builtin.include_role": {"name": "georelay_agent", "tasks_from": name}}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The templates and the textfile and NRPE tasks, run twice (the second run changes
    nothing), in one temporary root shared by the module's tests."""
    tmp_path = tmp_path_factory.mktemp("role")
    for d in ("node-exporter", "root/etc/nagios/nrpe.d", "root/etc/sudoers.d"):
        (tmp_path / d).mkdir(parents=True)
    tasks = [template("georelay-agent.cron.j2", tmp_path / "cron-plain",
                      georelay_agent_textfile_dir=""),
             template("georelay-agent.cron.j2", tmp_path / "cron-textfile"),
             template("georelay-agent.json.j2", tmp_path / "agent.json"),
             include("textfile.yml"), include("nrpe.yml")]
    out = playbook(tmp_path, tasks)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    again = playbook(tmp_path, tasks)
    assert again.returncode == 0 and recap(again.stdout)["localhost"]["changed"] == 0, \
        again.stdout[-4000:]
    return tmp_path


def cron_command(cron: Path) -> str:
    """The cron entry's command as cron hands it to /bin/sh, without the per-host sleep."""
    (entry,) = [x for x in cron.read_text().splitlines() if x.startswith("*/")]
    assert "%" not in entry  # cron would turn it into a newline
    fields = entry.split(None, 6)
    assert fields[:6] == ["*/1", "*", "*", "*", "*", "root"], entry
    sleep, command = fields[6].split("; ", 1)
    assert re.fullmatch(r"sleep \d+", sleep), entry
    return command


def test_the_cron_entry_logs_through_logger_at_the_priority_of_the_status(
        rendered: Path) -> None:
    tmp = rendered
    plain, textfile = cron_command(tmp / "cron-plain"), cron_command(tmp / "cron-textfile")
    assert "--textfile" not in plain and "/dev/null" not in plain
    assert f"--textfile {tmp}/root/textfile/georelay-agent.prom 2>&1)" in textfile
    agent = tmp / "fake-agent"  # the agent: its Nagios line, a log line, the status as exit
    agent.write_text("#!/bin/sh\necho \"$*\" > \"$ARGS_OUT\"\n"
                     "echo \"GEORELAY-AGENT WORD - p1 (us-east-1): summary | up=1;;1:\"\n"
                     "echo 'level=error msg=\"a \\\\\"quoted\\\\\" log line\"' >&2\n"
                     "exit \"$FAKE_RC\"\n")
    agent.chmod(0o755)
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    logger = bin_dir / "logger"
    logger.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$LOGGER_OUT\"\n")
    logger.chmod(0o755)
    sh = require_program("sh")
    for rc, priority in PRIORITY.items():
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE_RC": str(rc),
               "LOGGER_OUT": str(tmp / "logged"), "ARGS_OUT": str(tmp / "args")}
        out = subprocess.run([sh, "-c", textfile], env=env, capture_output=True, text=True,
                             timeout=30, check=False)
        assert out.returncode == rc, out  # the entry exits with the check's status
        assert (out.stdout, out.stderr) == ("", "")  # everything went to logger
        args = (tmp / "logged").read_text().split("\0")[:-1]
        assert args == ["-t", "georelay-agent-check", "-p", f"user.{priority}", "--size",
                        "8192", "--",
                        "GEORELAY-AGENT WORD - p1 (us-east-1): summary | up=1;;1:\n"
                        'level=error msg="a \\"quoted\\" log line"'], args
    assert (tmp / "args").read_text().split() == [
        "check", "--write", f"{tmp}/root/check/last-check.json", "--textfile",
        f"{tmp}/root/textfile/georelay-agent.prom"]


def test_the_textfile_is_linked_into_node_exporters_directory(rendered: Path) -> None:
    link = rendered / "node-exporter/georelay-agent.prom"
    target = rendered / "root/textfile/georelay-agent.prom"
    assert link.is_symlink() and Path(os.readlink(link)) == target
    assert target.read_text().startswith("# georelay-agent check has not run here yet")
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert oct(target.parent.stat().st_mode & 0o777) == "0o755"
    promtool = require_program("promtool")
    out = subprocess.run([promtool, "check", "metrics"], input=link.read_text(),
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out


def test_nrpe_gets_its_command_and_only_that_through_sudo(rendered: Path) -> None:
    tmp = rendered
    cfg = (tmp / "root/etc/nagios/nrpe.d/georelay-agent.cfg").read_text()
    commands = [x for x in cfg.splitlines() if not x.startswith("#")]
    assert commands == [f"command[check_georelay_agent]=/usr/bin/sudo -n -u root "
                        f"{tmp}/fake-agent check"]
    sudoers = tmp / "root/etc/sudoers.d/georelay-agent-nrpe"
    rules = [x for x in sudoers.read_text().splitlines() if not x.startswith("#")]
    assert rules == [f"nagios ALL=(root) NOPASSWD: {tmp}/fake-agent check"]
    assert oct(sudoers.stat().st_mode & 0o777) == "0o440"


def test_agent_json_names_the_edge_maps(rendered: Path) -> None:
    c = parse(json.loads((rendered / "agent.json").read_text()))
    root = rendered / "root"
    assert [(s.hostname, s.edge_cache) for s in c.services] == [
        (HOST, EdgeCache(f"{root}/etc/haproxy/edge-version.map")), ("api.example.com", None)]
    assert c.ip_ranges_map == f"{root}/etc/haproxy/aws-ip-ranges.map"


@pytest.mark.parametrize(("tasks", "missing", "message"), [
    ("textfile.yml", "node-exporter",
     "georelay_agent_textfile_dir: {tmp}/node-exporter is not a directory on localhost. It is "
     "node_exporter's textfile directory, which its package makes"),
    ("nrpe.yml", "root/etc/nagios/nrpe.d",
     "georelay_agent_nrpe: NRPE's include directory {tmp}/root/etc/nagios/nrpe.d does not "
     "exist on localhost: NRPE runs the check as root through sudo. Fix: install "
     "nagios-nrpe-server and sudo"),
    ("nrpe.yml", "root/etc/sudoers.d",
     "georelay_agent_nrpe: sudo's drop-in directory {tmp}/root/etc/sudoers.d does not exist"),
])
def test_a_missing_directory_names_the_variable_and_the_fix(
        tmp_path: Path, tasks: str, missing: str, message: str) -> None:
    for d in ("node-exporter", "root/etc/nagios/nrpe.d", "root/etc/sudoers.d"):
        if d != missing:
            (tmp_path / d).mkdir(parents=True)
    out = playbook(tmp_path, [include(tasks)])
    assert out.returncode == 2, out.stdout[-3000:]
    assert message.format(tmp=tmp_path) in " ".join(out.stdout.split()), out.stdout[-3000:]
    assert not (tmp_path / "root/textfile").exists()
    assert not (tmp_path / "root/etc/nagios/nrpe.d/georelay-agent.cfg").exists()


def test_a_relative_textfile_dir_is_refused_before_anything_happens(tmp_path: Path) -> None:
    out = playbook(tmp_path, [include("main.yml")],
                   "-e", "georelay_agent_textfile_dir=node-exporter", "-e", "aws_region=x")
    text = " ".join(out.stdout.split())
    assert out.returncode == 2, out.stdout[-3000:]
    assert "georelay_agent_textfile_dir: node-exporter is not an absolute path. Fix: give " \
        "node_exporter's textfile directory on the host" in text, text[-3000:]


def test_check_mode_on_a_fresh_host_says_what_it_would_do(tmp_path: Path) -> None:
    for d in ("node-exporter", "root/etc/nagios/nrpe.d", "root/etc/sudoers.d"):
        (tmp_path / d).mkdir(parents=True)
    out = playbook(tmp_path, [include("textfile.yml"), include("nrpe.yml")], "--check")
    assert out.returncode == 0, out.stdout[-3000:]
    assert recap(out.stdout)["localhost"]["changed"] >= 3, out.stdout[-3000:]
    assert not (tmp_path / "root/textfile").exists()
    assert list((tmp_path / "node-exporter").iterdir()) == []
    assert list((tmp_path / "root/etc/nagios/nrpe.d").iterdir()) == []

"""The agent's edge metrics and monitoring outputs on a real fleet: one proxy (real haproxy
2.6, real TLS, the lab's strict stand-in gateway) deployed by playbooks/proxies.yml with a
service that has an edge cache and regional redirects, node_exporter's textfile directory,
NRPE's include directory and a cron directory.

- georelay_agent_edge_version{proxy, region, service}: the running version (a `set map`
  shows at once; a version that is not a whole number has no series).
- georelay_agent_ip_ranges_created_timestamp_seconds{proxy, region}: the createDate of the
  map file's header, read again when the file changes.
- The cron entry, run as cron runs it: through logger, exit status of the check, the
  textfile in node_exporter's directory (promtool checks it).
"""

from __future__ import annotations

import calendar
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
from logfmt_support import agent_line
from prometheus_client.parser import text_string_to_metric_families

from georelay_agent.haproxy_runtime import send, write_file_atomically
from georelay_agent.schema import STATUS_SCHEMA
from georelay_testing.agent_fleet import AgentFleet, make_fleet
from georelay_testing.fleet import recap, require_program, running_fleet

pytestmark = pytest.mark.slow

HOST = "fast.example.com"
PLAIN_HOST = "api.example.com"
SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com", "health_path": "/ping",
           "edge_cache": {"max_age": 60, "header": "X-Cache"},
           "regional_redirects": {"suffixes": [".iso"],
                                  "origins": {"us-east-1": "https://downloads.example.com"}}}
PLAIN = {"hostname": PLAIN_HOST, "apigw_domain": "{region}-api.example.com",
         "health_path": "/ping"}
RANGES = {"syncToken": "100", "createDate": "2026-12-01-00-00-00",
          "prefixes": [{"ip_prefix": "3.5.0.0/16", "region": "us-east-1", "service": "S3"}],
          "ipv6_prefixes": [{"ipv6_prefix": "2600:1f18::/36", "region": "us-east-1",
                             "service": "EC2"}]}
LABELS = {"proxy": "p1", "region": "us-east-1"}


def _make(base: Path, **kw: Any) -> AgentFleet:
    return make_fleet(base, host_vars={
        "p1": {"georelay_agent_textfile_dir": str(base / "node-exporter")}}, **kw)


def _dirs(fleet: Any) -> None:
    """What the host's packages would have made: node_exporter's textfile directory, cron's,
    NRPE's include directory and sudo's drop-in directory."""
    (fleet.base / "node-exporter").mkdir()
    for d in ("etc/cron.d", "etc/nagios/nrpe.d", "etc/sudoers.d"):
        (fleet.root("p1") / d).mkdir(parents=True)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentFleet]:
    ranges = tmp_path_factory.mktemp("aws") / "ip-ranges.json"
    ranges.write_text(json.dumps(RANGES))
    with running_fleet(make=_make, before_deploy=_dirs, services=[dict(SERVICE), dict(PLAIN)],
                       all_vars={"georelay_ip_ranges_file": str(ranges),
                                 "georelay_agent_nrpe": True}) as f:
        yield cast(AgentFleet, f)  # built by make_fleet


def samples(fleet: AgentFleet, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of one metric of p1's agent."""
    code, body = fleet.agent_get("p1", "/metrics")
    assert code == 200, body
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples
            if s.name == name}


def key(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({**LABELS, **labels}.items()))


def until(what: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.1)


def version_map(fleet: AgentFleet) -> Path:
    return fleet.root("p1") / "etc/haproxy/edge-version.map"


def test_the_edge_version_and_the_ip_ranges_date_are_metrics(fleet: AgentFleet) -> None:
    versions = samples(fleet, "georelay_agent_edge_version")
    assert versions == {key(service=HOST): 1.0}  # no series for the service without a cache
    created = samples(fleet, "georelay_agent_ip_ranges_created_timestamp_seconds")
    assert created == {key(): calendar.timegm((2026, 12, 1, 0, 0, 0))}
    status = fleet.status("p1")
    jsonschema.validate(status, STATUS_SCHEMA)
    by_host = {s["hostname"]: s for s in status["services"]}
    assert by_host[HOST]["edge_cache"] == {"version_map": str(version_map(fleet)),
                                           "version": "1"}
    assert by_host[PLAIN_HOST]["edge_cache"] is None
    ip = status["ip_ranges"]
    assert (ip["map_file"], ip["sync_token"], ip["create_date"]) == (
        str(fleet.root("p1") / "etc/haproxy/aws-ip-ranges.map"), 100, "2026-12-01-00-00-00")
    assert status["collection"]["problems"] == []


def test_a_set_map_of_the_version_changes_its_series(fleet: AgentFleet) -> None:
    admin = str(fleet.admin_socket("p1"))
    assert send(admin, f"set map {version_map(fleet)} {HOST} 9").strip() == ""
    until(lambda: samples(fleet, "georelay_agent_edge_version") == {key(service=HOST): 9.0})
    # A version that is not a whole number: no series, the status document says it.
    send(admin, f"set map {version_map(fleet)} {HOST} 2026-12-03.1")
    until(lambda: samples(fleet, "georelay_agent_edge_version") == {})
    (svc,) = [s for s in fleet.status("p1")["services"] if s["hostname"] == HOST]
    assert svc["edge_cache"]["version"] == "2026-12-03.1"
    send(admin, f"set map {version_map(fleet)} {HOST} 10")
    until(lambda: samples(fleet, "georelay_agent_edge_version") == {key(service=HOST): 10.0})


def test_a_new_ip_ranges_map_shows_its_date(fleet: AgentFleet) -> None:
    path = fleet.root("p1") / "etc/haproxy/aws-ip-ranges.map"
    lines = path.read_text().splitlines()
    header = {"# syncToken:": "# syncToken: 200", "# createDate:": "# createDate: "
              "2026-12-24-06-30-00"}
    new = [next((v for k, v in header.items() if x.startswith(k)), x) for x in lines]
    assert new != lines
    write_file_atomically(str(path), "\n".join(new) + "\n")  # as georelay-edge sync does
    want = {key(): calendar.timegm((2026, 12, 24, 6, 30, 0))}
    until(lambda: samples(fleet, "georelay_agent_ip_ranges_created_timestamp_seconds") == want)
    assert fleet.status("p1")["ip_ranges"]["sync_token"] == 200


def test_the_cron_entry_writes_the_textfile_and_logs_through_logger(
        fleet: AgentFleet, tmp_path: Path) -> None:
    root = fleet.root("p1")
    (entry,) = [x for x in (root / "etc/cron.d/georelay-agent-p1").read_text().splitlines()
                if x.startswith("*/")]
    command = entry.split(None, 6)[6].split("; ", 1)[1]  # as cron runs it, without the sleep
    link = fleet.base / "node-exporter/georelay-agent.prom"
    target = root / "var/lib/georelay-agent/textfile/georelay-agent.prom"
    assert link.is_symlink() and Path(os.readlink(link)) == target
    logger = tmp_path / "logger"
    logger.write_text("#!/bin/sh\nprintf '%s\\0' \"$@\" > \"$LOGGER_OUT\"\n")
    logger.chmod(0o755)
    before = time.time()
    out = subprocess.run([require_program("sh"), "-c", command], capture_output=True,
                         text=True, timeout=60, check=False,
                         env={"PATH": f"{tmp_path}:/usr/sbin:/usr/bin:/sbin:/bin",
                              "LOGGER_OUT": str(tmp_path / "logged")})
    args = (tmp_path / "logged").read_text().split("\0")[:-1]
    assert out.returncode in (0, 1), (out, args)
    assert args[:7] == ["-t", "georelay-agent-check", "-p",
                        "user.info" if out.returncode == 0 else "user.warning", "--size",
                        "8192", "--"], args
    assert args[7].startswith("GEORELAY-AGENT OK - p1 (us-east-1): 2/2 services up" if
                              out.returncode == 0 else "GEORELAY-AGENT WARNING"), args
    text = link.read_text()
    promtool = subprocess.run([require_program("promtool"), "check", "metrics"], input=text,
                              capture_output=True, text=True, timeout=30, check=False)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr + text
    got = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
           for line in text.splitlines() if not line.startswith("#")}
    assert got['georelay_check_status{proxy="p1",region="us-east-1"}'] == out.returncode
    assert before <= got['georelay_check_last_run_timestamp_seconds{proxy="p1",'
                         'region="us-east-1"}'] <= time.time()
    for host in (HOST, PLAIN_HOST):
        assert got[f'georelay_check_service_up{{proxy="p1",region="us-east-1",service="{host}"}}'
                   ] == 1
    last = json.loads((root / "var/lib/georelay-agent/check/last-check.json").read_text())
    assert last["check"]["exit_code"] == out.returncode


def test_nrpe_runs_the_check_through_sudo(fleet: AgentFleet) -> None:
    root = fleet.root("p1")
    command = root / "opt/georelay-agent/venv/bin/georelay-agent"
    cfg = (root / "etc/nagios/nrpe.d/georelay-agent.cfg").read_text().splitlines()
    assert [x for x in cfg if not x.startswith("#")] == [
        f"command[check_georelay_agent]=/usr/bin/sudo -n -u root {command} check"]
    rule = (root / "etc/sudoers.d/georelay-agent-nrpe").read_text().splitlines()
    assert [x for x in rule if not x.startswith("#")] == [
        f"nagios ALL=(root) NOPASSWD: {command} check"]


def test_the_agent_log_is_logfmt(fleet: AgentFleet) -> None:
    log = (fleet.root("p1") / "var/log/georelay-agent/agent.log").read_text()
    lines = [agent_line(x) for x in log.splitlines()]
    events = [f.get("event") for f in lines]
    assert {"child_start", "start", "transition"} <= set(events), log[-2000:]
    first = next(f for f in lines if f.get("event") == "transition")
    assert first["from"] == "starting" and first["level"] in ("info", "warning"), first


def test_second_run_changes_nothing(fleet: AgentFleet) -> None:
    pid = fleet.status("p1")["agent"]["pid"]
    proc = fleet.deploy()
    assert recap(proc.stdout)["p1"]["changed"] == 0, proc.stdout[-6000:]
    assert fleet.status("p1")["agent"]["pid"] == pid

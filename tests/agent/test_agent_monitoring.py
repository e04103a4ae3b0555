"""What reaches people from the agent: its logfmt log lines, the check's Prometheus textfile,
the cron entry through logger, NRPE's command; and the parts of the edge metrics that need
no fleet (config, HAProxy's answers, the ip-ranges map's header).

Real output throughout: the agent (python -m georelay_agent) in subprocesses, its stderr
parsed line by line; the role's templates rendered by ansible-playbook; the cron line run
by sh; the textfile checked by promtool. The fleet with real HAProxy is
test_agent_edge_metrics.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from logfmt_support import agent_line, parse

from georelay_agent import edge, logfmt
from georelay_agent.config import ConfigError, EdgeCache
from georelay_agent.config import parse as parse_config
from georelay_testing.agent_fleet import AGENT_CMD, agent_env, run_agent
from georelay_testing.fleet import require_program

HOST = "fast.example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, port: int = 8405, **extra: Any) -> Path:
    """An agent whose HAProxy is not there (its stats socket is missing): unhealthy."""
    config = {"schema_version": 1, "proxy": "t1", "region": "us-east-1",
              "listen": {"address": "127.0.0.1", "port": port}, "interval": 0.2,
              "haproxy": {"stats_socket": str(tmp_path / "missing.sock")},
              "services": [{"hostname": HOST, "backend": "be_fast_example_com",
                            "domain": "us-east-1-fast.example.com"}],
              "probe": {"enabled": False}, "drain_dir": str(tmp_path / "drains"),
              "check": {"state_dir": str(tmp_path / "check")}, **extra}
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    return path


# --- logfmt ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["plain", "", "two words", 'say "hi"', "a=b", "back\\slash",
                                   "line\nbreak\ttab\r", "bell\x07", "unicode ü", "-"])
def test_every_value_reads_back_as_written(value: str) -> None:
    text = logfmt.line("info", "m", {"k": value})
    assert parse(text) == {"level": "info", "msg": "m", "k": value}
    assert "\n" not in text


def test_fields_keep_their_order_and_none_is_left_out() -> None:
    extra = logfmt.fields(event="transition", from_="healthy", to="unhealthy", reason=None,
                          n=3, ok=True, s=0.25)
    record = logging.LogRecord("georelay_agent", logging.WARNING, __file__, 1, "state changed",
                               None, None)
    record.__dict__.update(extra)
    assert logfmt.LogfmtFormatter().format(record) == (
        'level=warning msg="state changed" event=transition from=healthy to=unhealthy n=3 '
        "ok=true s=0.25")


def test_an_exception_is_one_line_with_its_traceback() -> None:
    try:
        raise ValueError('bad "thing"\nsecond line')
    except ValueError:
        record = logging.LogRecord("georelay_agent", logging.ERROR, __file__, 1,
                                   "collection failed", None, sys.exc_info())
    text = logfmt.LogfmtFormatter().format(record)
    assert "\n" not in text
    fields = agent_line(text)
    assert fields["error"] == 'ValueError: bad "thing"\nsecond line'
    assert fields["traceback"].startswith("Traceback (most recent call last):\n")


def test_a_failed_request_is_one_log_line_not_a_printed_traceback() -> None:
    from georelay_agent.server import AgentServer

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logfmt.LogfmtFormatter())
    log = logging.getLogger("georelay_agent")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    try:
        for exc in (BrokenPipeError(32, "Broken pipe"), KeyError("x")):
            try:
                raise exc
            except Exception:
                AgentServer.handle_error(None, None, ("127.0.0.1", 5555))  # type: ignore[arg-type]
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    gone, bug = [agent_line(x) for x in stream.getvalue().splitlines()]
    assert (gone["level"], gone["event"], gone["client"], gone["error"]) == \
        ("debug", "request_failed", "127.0.0.1", "BrokenPipeError: [Errno 32] Broken pipe")
    assert (bug["level"], bug["error"]) == ("error", "KeyError: 'x'")
    assert bug["traceback"].endswith("KeyError: 'x'")


def test_the_running_agent_logs_only_logfmt(tmp_path: Path) -> None:
    """supervise and the serve it starts: every stderr line is logfmt with level and msg and
    no timestamp; the start, the state transition (with the /status.json reason) and the
    stop are structured."""
    port = free_port()
    config = write_config(tmp_path, port)
    proc = subprocess.Popen([*AGENT_CMD, "supervise", "--config", str(config)],
                            env=agent_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json",
                                            timeout=1) as resp:
                    status = json.loads(resp.read())
                if status["state"] == "unhealthy":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the agent never started"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = [agent_line(x) for x in err.splitlines()]
    events = {f.get("event"): f for f in lines}
    assert events["child_start"]["level"] == "info" and events["child_start"]["pid"].isdigit()
    start = events["start"]
    assert (start["proxy"], start["region"], start["port"], start["config"]) == \
        ("t1", "us-east-1", str(port), str(config))
    move = events["transition"]
    assert (move["level"], move["msg"], move["from"], move["to"]) == \
        ("warning", "state changed", "starting", "unhealthy")
    assert move["reason"] == status["reason"] and " " in move["reason"]
    assert move["reason"].startswith("haproxy: runtime API")
    assert events["stop"]["signal"] == "SIGTERM"


def test_a_daemon_with_a_bad_config_says_so_in_logfmt(tmp_path: Path) -> None:
    config = write_config(tmp_path, interval="1s")
    for command in ("serve", "supervise"):
        out = run_agent(command, "--config", str(config))
        assert out.returncode == 78, out.stderr
        (fields,) = [agent_line(x) for x in out.stderr.splitlines()]
        assert (fields["level"], fields["event"], fields["config"]) == \
            ("error", "config_invalid", str(config))
        assert "field 'interval': must be a number, got str '1s'" in fields["msg"]


# --- check --textfile ------------------------------------------------------------------------

def promtool_check(text: str) -> None:
    out = subprocess.run([require_program("promtool"), "check", "metrics"], input=text,
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr + text


def samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_check_writes_its_result_as_a_prometheus_textfile(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out_dir = tmp_path / "node-exporter"
    out_dir.mkdir()
    path = out_dir / "georelay-agent.prom"
    before = time.time()
    out = run_agent("check", "--config", str(config), "--textfile", str(path))
    assert out.returncode == 2 and out.stdout.startswith("GEORELAY-AGENT CRITICAL"), out
    assert out.stderr == ""
    text = path.read_text()
    promtool_check(text)
    labels = '{proxy="t1",region="us-east-1"}'
    got = samples(text)
    assert got[f"georelay_check_status{labels}"] == 2
    assert before <= got[f"georelay_check_last_run_timestamp_seconds{labels}"] <= time.time()
    assert got['georelay_check_service_up{proxy="t1",region="us-east-1",service="'
               f'{HOST}"}}'] == 0
    for name in ("georelay_check_status", "georelay_check_last_run_timestamp_seconds"):
        assert f"# TYPE {name} gauge" in text and f"# HELP {name} " in text
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in out_dir.iterdir()] == ["georelay-agent.prom"]  # no temp file left


def test_a_textfile_that_cannot_be_written_is_logged_and_ok_becomes_unknown(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    missing = tmp_path / "no-such-dir" / "georelay-agent.prom"
    out = run_agent("check", "--config", str(config), "--textfile", str(missing))
    assert out.returncode == 2, out  # CRITICAL stays CRITICAL
    (fields,) = [agent_line(x) for x in out.stderr.splitlines()]
    assert (fields["level"], fields["event"], fields["option"], fields["path"]) == \
        ("error", "check_output_failed", "--textfile", str(missing))
    assert fields["error"] == "No such file or directory"
    # An OK check whose textfile is not written exits UNKNOWN: its readers miss this run.
    code = ("import sys, georelay_agent.check as c\n"
            "c.run = lambda config: c.Result(0, 'fine', '', None)\n"
            "from georelay_agent.cli import main\nsys.exit(main(sys.argv[1:]))")
    ok = subprocess.run([AGENT_CMD[0], "-c", code, "check", "--config", str(config),
                         "--textfile", str(missing)], env=agent_env(), capture_output=True,
                        text=True, timeout=60, check=False)
    assert ok.returncode == 3, ok
    assert ok.stdout == "GEORELAY-AGENT OK - fine\n"
    assert agent_line(ok.stderr.strip())["event"] == "check_output_failed"


# --- the edge parts of the agent, without HAProxy ---------------------------------------------

BASE: dict[str, Any] = {
    "schema_version": 1, "proxy": "p1", "region": "us-east-1",
    "haproxy": {"stats_socket": "/run/haproxy/user.sock"},
    "services": [{"hostname": HOST, "backend": "be_fast_example_com",
                  "domain": "us-east-1-fast.example.com",
                  "edge_cache": {"version_map": "/etc/haproxy/edge-version.map"}}],
    "ip_ranges_map": "/etc/haproxy/aws-ip-ranges.map",
    "drain_dir": "/var/lib/georelay-agent/drains",
    "check": {"state_dir": "/var/lib/georelay-agent/check"},
}


def test_the_config_names_the_version_map_and_the_ip_ranges_map() -> None:
    c = parse_config(BASE)
    assert c.services[0].edge_cache == EdgeCache("/etc/haproxy/edge-version.map")
    assert c.ip_ranges_map == "/etc/haproxy/aws-ip-ranges.map"
    plain = json.loads(json.dumps(BASE))
    del plain["services"][0]["edge_cache"], plain["ip_ranges_map"]
    p = parse_config(plain)
    assert p.services[0].edge_cache is None and p.ip_ranges_map is None
    assert c.stale_after == p.stale_after + 1.5  # one Runtime API round trip more


@pytest.mark.parametrize(("change", "message"), [
    ({"ip_ranges_map": "aws.map"}, "field 'ip_ranges_map': 'aws.map' must be an absolute path"),
    ({"edge_cache": {"version_map": "v.map"}},
     "field 'services[0].edge_cache.version_map': 'v.map' must be an absolute path"),
    ({"edge_cache": {"versions": "/v.map"}},
     "field 'services[0].edge_cache.versions': unknown field (did you mean 'version_map'?)"),
    ({"edge_cache": True}, "field 'services[0].edge_cache': must be a mapping, got bool True"),
])
def test_bad_edge_settings_name_the_field(change: dict[str, Any], message: str) -> None:
    data = json.loads(json.dumps(BASE))
    if "ip_ranges_map" in change:
        data.update(change)
    else:
        data["services"][0].update(change)
    with pytest.raises(ConfigError) as err:
        parse_config(data, "agent.json")
    assert message in str(err.value)


def test_versions_of_one_round_trip_as_haproxy_answers_them() -> None:
    answer = (f"0x55cf32a06710 {HOST} 7\n0x55cf32a06760 {HOST} 8\n0x1 api.example.com "
              "2026-12-03.1\n\nUnknown map identifier. Please use #<id> or <file>.\n\n")
    maps, problems = edge.parse_versions(answer, ["/v.map", "/other.map"])
    assert maps == {"/v.map": {HOST: "7", "api.example.com": "2026-12-03.1"}}  # first wins
    assert len(problems) == 1 and "show map /other.map: Unknown map identifier" in problems[0]
    assert edge.parse_versions("\n", ["/v.map"]) == ({"/v.map": {}}, [])  # an empty map


def test_the_ip_ranges_header_is_read_only_when_the_file_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "aws-ip-ranges.map"
    header = ("# georelay aws ip-ranges map\n# syncToken: {t}\n# createDate: {d}\n"
              "# prefixes: 1 ipv4, 0 ipv6\n3.5.0.0/16 us-east-1\n")
    path.write_text(header.format(t=100, d="2026-12-01-00-00-00"))
    opened: list[str] = []
    real_open = open

    def counting_open(file: Any, *args: Any, **kw: Any) -> Any:
        opened.append(str(file))
        return real_open(file, *args, **kw)

    monkeypatch.setattr(edge, "open", counting_open, raising=False)
    reader = edge.IpRangesFile(str(path))
    for _ in range(3):
        got, problems = reader.read()
        assert problems == [] and got is not None
        assert (got.sync_token, got.create_date, got.created) == \
            (100, "2026-12-01-00-00-00", 1796083200.0)
    assert opened == [str(path)]
    path.write_text(header.format(t=200, d="2026-12-24-06-30-00"))
    os.utime(path, ns=(1, 2))  # a new mtime whatever the clock's resolution
    got, _ = reader.read()
    assert got is not None and (got.sync_token, got.created) == (200, 1798093800.0)
    assert len(opened) == 2
    path.write_text("3.5.0.0/16 us-east-1\n")  # no header: no date, and a problem
    got, problems = reader.read()
    assert got is not None and got.created is None and "no valid createDate" in problems[0]
    path.unlink()
    assert reader.read()[0] is None

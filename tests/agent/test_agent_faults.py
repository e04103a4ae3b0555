"""Faults that break a proxy: HAProxy killed, the agent killed, a Runtime API that hangs."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from georelay_testing.agent_fleet import AGENT_CMD, AgentFleet, agent_env, run_agent


def test_supervisor_restarts_a_dead_agent_and_cron_entry_is_installed(
        one_agent_fleet: AgentFleet) -> None:
    fleet = one_agent_fleet
    cron = (fleet.root("p1") / "etc/cron.d/georelay-agent-p1").read_text()
    line = next(x for x in cron.splitlines() if x.startswith("*/1 "))
    # no --config: the agent of <root>/opt/georelay-agent/venv reads <root>/etc/georelay-agent;
    # its output goes to syslog (logger), at the priority of its status, which the entry exits
    # with (tests/agent/test_agent_monitoring.py runs the line).
    assert re.match(r"^\*/1 \* \* \* \* root sleep \d+; out=\$\(\S+/opt/georelay-agent/venv/"
                    r"bin/georelay-agent check --write \S+/last-check.json 2>&1\); rc=\$\?; "
                    r".* logger -t georelay-agent-check -p \"user\.\$p\" .*; exit \$rc$",
                    line), line
    assert "/dev/null" not in cron and "--textfile" not in line  # no textfile dir set
    before = fleet.status("p1")["agent"]["pid"]
    os.kill(before, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            after = fleet.status("p1")["agent"]["pid"]
            if after != before:
                break
        except (OSError, AssertionError):
            pass
        assert time.monotonic() < deadline, "the supervisor did not restart the agent"
        time.sleep(0.1)
    fleet.wait_public("p1", 200, timeout=5)


def test_killed_haproxy_fails_the_public_check_and_check_exits_2(
        one_agent_fleet: AgentFleet) -> None:
    fleet = one_agent_fleet
    fleet.wait_public("p1", 200, timeout=5)
    procs = fleet.show_proc("p1")
    pids = [int(m) for m in re.findall(r"^(\d+)\s+(?:master|worker)", procs, re.M)]
    assert len(pids) >= 2, procs
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while True:  # the public listener is gone: Route53's check fails to connect
        try:
            fleet.public_healthz("p1")
        except ConnectionRefusedError:
            break
        except OSError:  # a connection accepted just before the kill, reset by it
            pass
        assert time.monotonic() < deadline, "HAProxy still answers"
        time.sleep(0.05)
    out = fleet.agent_cli("p1", "check")
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.startswith("GEORELAY-AGENT CRITICAL - p1 (us-east-1): haproxy: runtime API")
    # The agent itself stays up and says why.
    code, body = fleet.agent_get("p1", "/healthz")
    deadline = time.monotonic() + 3
    while code != 503 and time.monotonic() < deadline:
        time.sleep(0.1)
        code, body = fleet.agent_get("p1", "/healthz")
    assert code == 503 and body.startswith(b"haproxy: runtime API"), body
    assert fleet.agent_get("p1", "/live")[0] == 200


class HungSocket:
    """A unix socket that accepts connections and never answers (a wedged HAProxy)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
                self.held.append(conn)
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        for conn in self.held:
            conn.close()
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, stats_socket: Path, port: int, **extra: object) -> Path:
    config = {"schema_version": 1, "proxy": "t1", "region": "us-east-1",
              "listen": {"address": "127.0.0.1", "port": port}, "interval": 0.5,
              "haproxy": {"stats_socket": str(stats_socket), "connect_timeout": 0.5,
                          "read_timeout": 1.0},
              "services": [{"hostname": "fast.example.com", "backend": "be_fast_example_com",
                            "domain": "us-east-1-fast.example.com", "probe_path": None}],
              "probe": {"enabled": False}, "drain_dir": str(tmp_path / "drains"),
              "check": {"state_dir": str(tmp_path / "check")}, **extra}
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def hung_agent(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    hung = HungSocket(tmp_path / "user.sock")
    port = free_port()
    config = write_config(tmp_path, tmp_path / "user.sock", port)
    proc = subprocess.Popen([*AGENT_CMD, "serve", "--config", str(config)], env=agent_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url + "/live", timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        yield url, config
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        hung.close()


def timed_get(url: str) -> tuple[int, bytes, float]:
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            code, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    return code, body, time.monotonic() - start


def test_a_hung_runtime_api_socket_keeps_the_agent_responsive(
        hung_agent: tuple[str, Path]) -> None:
    url, config = hung_agent
    slowest = 0.0
    deadline = time.monotonic() + 5
    body = b""
    while time.monotonic() < deadline:  # poll through several hung collection ticks
        for path in ("/live", "/healthz", "/status.json", "/metrics"):
            code, body_, took = timed_get(url + path)
            slowest = max(slowest, took)
            if path == "/live":
                assert code == 200
            if path == "/healthz":
                body = body_
        time.sleep(0.05)
    assert slowest < 0.5, f"an answer took {slowest:.3f}s while the socket hung"
    assert body.startswith(b"haproxy: runtime API") and b"read timed out after 1s" in body
    code, raw, _ = timed_get(url + "/status.json")
    status = json.loads(raw)
    assert status["state"] == "unhealthy" and status["haproxy"]["up"] is False
    assert "no answer" in status["haproxy"]["error"]
    # check gives up on the hung socket by its own timeouts and says CRITICAL.
    start = time.monotonic()
    out = run_agent("check", "--config", str(config))
    assert out.returncode == 2 and "read timed out" in out.stdout, out.stdout + out.stderr
    assert time.monotonic() - start < 10


def test_invalid_config_is_rejected_at_start_naming_the_field(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "user.sock", 8405, intervall=1, rise=5, fall=2)
    data = json.loads(config.read_text())
    data["listen"]["port"] = "eighty"
    data["services"][0]["backend"] = "be fast"
    config.write_text(json.dumps(data))
    for command in ("serve", "supervise", "validate"):
        out = run_agent(command, "--config", str(config))
        assert out.returncode == 78, (command, out.stderr)
        err = out.stderr
        assert f"invalid config {config}" in err
        assert "field 'listen.port': must be an integer, got str 'eighty'" in err
        assert "field 'intervall': unknown field (did you mean 'interval'?)" in err
        assert "field 'rise': 5 is more than fall (2)" in err
        assert "field 'services[0].backend': 'be fast' is not valid" in err
    config.write_text("{not json")
    out = run_agent("serve", "--config", str(config))
    assert out.returncode == 78 and "not JSON" in out.stderr
    out = run_agent("serve", "--config", str(tmp_path / "missing.json"))
    assert out.returncode == 78 and "cannot read config" in out.stderr

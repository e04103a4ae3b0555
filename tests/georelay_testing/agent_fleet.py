"""Helpers for the agent's tests: the lab's DeployedFleet with the agent tuned for fast fault tests.

The agent observes every 0.5 s with rise = fall = 2 and HAProxy checks gateways every 500 ms
(haproxy_check_interval, set by DeployedFleet), so a region's failure shows in /healthz in about
1-2 s and its recovery as fast; the tests assert 3 s. Its probe trusts the lab CA.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from georelay_testing.fleet import BIN, REPO, DeployedFleet

AGENT_VARS: dict[str, Any] = {"georelay_agent_interval": 0.5, "georelay_agent_rise": 2,
                              "georelay_agent_fall": 2}
AGENT_PORT = 8405


class AgentFleet(DeployedFleet):
    """DeployedFleet plus the agent's paths and endpoints of each proxy."""

    def agent_config(self, proxy: str) -> Path:
        return self.root(proxy) / "etc/georelay-agent/agent.json"

    def agent_url(self, proxy: str, path: str) -> str:
        return f"http://{self.address(proxy)}:{AGENT_PORT}{path}"

    def agent_get(self, proxy: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.agent_url(proxy, path), timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def status(self, proxy: str) -> dict[str, Any]:
        code, body = self.agent_get(proxy, "/status.json")
        assert code == 200, body
        return json.loads(body)

    def agent_cli(self, proxy: str, *args: str, timeout: float = 30) -> \
            subprocess.CompletedProcess[str]:
        """georelay-agent on the proxy host, as installed by the role (its own venv)."""
        exe = self.root(proxy) / "opt/georelay-agent/venv/bin/georelay-agent"
        return subprocess.run([str(exe), *args, "--config", str(self.agent_config(proxy))],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def public_healthz(self, proxy: str, hostname: str = "fast.example.com") -> tuple[int, str]:
        reply = self.fetch(proxy, hostname, "/healthz", timeout=5)
        return reply.status, reply.body.decode()

    def wait_public(self, proxy: str, want: int, timeout: float) -> tuple[float, str]:
        """Seconds until the public /healthz answers `want` (and the body), or fail."""
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout + 5:
            try:
                code, last = self.public_healthz(proxy)
            except OSError as exc:
                code, last = -1, str(exc)
            if code == want:
                return time.monotonic() - start, last
            time.sleep(0.05)
        raise AssertionError(f"{proxy}: /healthz never answered {want}; last: {last}")


def make_fleet(base: Path, **kw: Any) -> AgentFleet:
    ca = str(base / "lab/certs/lab-ca.pem")
    all_vars = {**AGENT_VARS, "georelay_agent_probe_ca_file": ca, **kw.pop("all_vars", {})}
    return AgentFleet(base, all_vars=all_vars, **kw)


NAGIOS = re.compile(r"^GEORELAY-AGENT (OK|WARNING|CRITICAL|UNKNOWN) - ([^|]+?)(?: \| (.*))?$")
PERF = re.compile(r"^('[^']+'|[^ '=]+)=(-?[\d.]+)(s|%|B|KB|MB|TB|c)?(;[^; ]*){0,4}$")


def parse_nagios(line: str) -> tuple[str, str, list[str]]:
    """(status word, summary, perfdata items) of a Nagios plugin line, checked."""
    m = NAGIOS.match(line.strip())
    assert m, f"not a Nagios plugin line: {line!r}"
    perf = (m.group(3) or "").split()
    for item in perf:
        assert PERF.match(item), f"bad perfdata {item!r} in {line!r}"
    return m.group(1), m.group(2), perf


AGENT_CMD = [str(BIN / "python"), "-m", "georelay_agent"]


def agent_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO / "agent")}


def run_agent(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGENT_CMD, *args], capture_output=True, text=True,
                          timeout=timeout, env=agent_env(), check=False)


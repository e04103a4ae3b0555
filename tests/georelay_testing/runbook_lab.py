"""The lab the runbooks run against: the demo's shape (2 regions x 2 proxies, 2 services) on
its own loopback /24, a moto_server as Route53 holding the applied tree, and the bindings of
the runbooks' variables to it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georelay_lab import client, route53
from georelay_lab.processes import haproxy_running, start_haproxy, stop_haproxy
from georelay_testing.cli_check import PATH
from georelay_testing.fleet import BIN, SERVICES, DeployedFleet, run, running_fleet, unix_cli
from georelay_testing.runbook_doc import REPO, Block

REGIONS = {"us-east-1": ["e1", "e2"], "us-west-2": ["w1", "w2"]}
# Fast agent and checks, so a staged failure shows in a second or two (tests/agent does so).
FAST = {"georelay_agent_interval": 0.5, "georelay_agent_rise": 2, "georelay_agent_fall": 2,
        "georelay_dns_health_search": "georelay-healthy"}
# fast.example.com has a one-box (canary) gateway per region, 0% of users when no rollout
# runs (README "One-box canary"; canary-unhealthy.md rolls it out); api.example.com has none.
ONEBOX = {"onebox_domain": "{region}-onebox-fast.example.com", "onebox_percent": 0}
# api.example.com has the edge rules of deploy-version-not-picked-up.md and
# ip-ranges-map-stale.md: an edge cache keyed on its deploy version, regional redirects
# from the inventory's ip-ranges.json (README "Edge rules").
EDGE = {"edge_cache": {"max_age": 30, "header": "X-Cache"},
        "regional_redirects": {"suffixes": [".iso"],
                               "origins": {"us-east-1": "https://us-east-1-downloads.example.com"}}}
IP_RANGES = {"syncToken": "1764547200", "createDate": "2026-12-01-00-00-00",
             "prefixes": [{"ip_prefix": "3.5.0.0/16", "region": "us-east-1", "service": "S3"}],
             "ipv6_prefixes": [{"ipv6_prefix": "2600:1f18::/36", "region": "us-east-1",
                                "service": "EC2"}]}
# A path of the services' APIs that users call (any path but /ping: the stand-in gateways
# echo it, and their faults spare /ping, which HAProxy's health checks ask).
API_PATH = "/v1/orders"
AWS = {"AWS_ACCESS_KEY_ID": "georelay-lab", "AWS_SECRET_ACCESS_KEY": "georelay-lab",
       "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class RunbookFleet(DeployedFleet):
    """DeployedFleet plus a Route53 stand-in and what the runbooks' variables mean here."""

    bound: dict[str, str] = field(default_factory=dict)

    @property
    def route53_listen(self) -> str:
        return f"127.0.{self.net}.200:5300"

    @property
    def prometheus_listen(self) -> str:
        """Where the lab's Prometheus of this fleet listens (tests/runbooks/conftest.py's
        `prometheus` fixture and error-budget-burn.md's situation start it there)."""
        return f"127.0.{self.net}.199:9090"

    @property
    def rollout_state_dir(self) -> Path:
        """Where georelay-rollout keeps this fleet's rollouts (GEORELAY_ROLLOUT_STATE_DIR)."""
        return self.base / "rollouts"

    @property
    def ip_ranges_file(self) -> Path:
        """The inventory's georelay_ip_ranges_file: AWS's ip-ranges.json as downloaded."""
        return self.base / "aws/ip-ranges.json"

    def fleet_vars(self) -> dict[str, Any]:
        return {**super().fleet_vars(), "georelay_ip_ranges_file": str(self.ip_ranges_file)}

    def up(self) -> None:
        self.ip_ranges_file.parent.mkdir(parents=True, exist_ok=True)
        self.ip_ranges_file.write_text(json.dumps(IP_RANGES))
        super().up()

    def aws_env(self) -> dict[str, str]:
        return {**AWS, "AWS_ENDPOINT_URL_ROUTE_53": route53.endpoint(self.route53_listen)}

    def dns(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "georelay-dns"), *args, "-i", str(self.inventory)],
                   env=self.aws_env(), timeout=timeout)

    def start_route53(self) -> None:
        route53.start(self.lab_dir, self.route53_listen, "example.com")
        got = self.dns("apply", "--yes")
        assert got.returncode == 0, got.stdout + got.stderr

    # -- the runbooks' variables (docs/runbooks/README.md)

    def variables(self, host: str, **overrides: str) -> dict[str, str]:
        region = self.region_of(host)
        root = str(self.root(host))
        service = self.services[0]
        values = {
            "INVENTORY": str(self.inventory),
            "HOST": host,
            "REGION": region,
            "REGION_GROUP": region.replace("-", "_"),
            "SERVICE": service["hostname"],
            "PING": service["health_path"],
            "ADDR": self.address(host),
            "ON_HOST": "",
            "ROOT": root,
            "AGENT": f"{root}/opt/georelay-agent/venv/bin/georelay-agent",
            "GATEWAY": service["apigw_domain"].format(region=region),
            "ONEBOX": service.get("onebox_domain", "").format(region=region),
            "APIGW_ADDR": "{}:{}".format(*self.gateway(region)),
            "TLS_PEM": str(self.lab_dir / "certs/public.pem"),
            "IP_RANGES": str(self.ip_ranges_file),
            "API_PATH": API_PATH,
            "PROMETHEUS": f"http://{self.prometheus_listen}",
        }
        return {**values, **overrides}

    def env(self, variables: dict[str, str]) -> dict[str, str]:
        return {**os.environ, "PATH": PATH, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
                # the lab CA stands in for the system's store (curl, openssl)
                "CURL_CA_BUNDLE": self.ca_file, "SSL_CERT_FILE": self.ca_file,
                "ANSIBLE_PIPELINING": "1", **self.aws_env(),
                "GEORELAY_ROLLOUT_STATE_DIR": str(self.rollout_state_dir), **variables}

    def run_block(self, block: Block, variables: dict[str, str]) -> tuple[int, str]:
        script = "set -eu -o pipefail\n" + block.code
        try:
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=REPO,
                                  env=self.env(variables), capture_output=True, text=True,
                                  timeout=block.timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else \
                (exc.stdout or "")
            raise AssertionError(f"{block.where}: still running after {block.timeout:g}s:\n"
                                 f"{block.code}\n{out[-3000:]}") from exc
        return proc.returncode, proc.stdout + proc.stderr

    # -- what the situations break, and putting it back

    def kill_proxy(self, host: str) -> None:
        assert stop_haproxy(self.root(host)), f"{host}: HAProxy was not running"

    def start_proxy(self, host: str) -> None:
        if not haproxy_running(self.root(host)):
            start_haproxy(self.root(host))

    def healthz(self, host: str) -> tuple[int | None, str]:
        try:
            reply = self.fetch(host, self.services[0]["hostname"], "/healthz", timeout=5)
        except OSError as exc:
            return None, str(exc)
        return reply.status, reply.body.decode(errors="replace").strip()

    def wait_healthz(self, host: str, want: int | None, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        last: tuple[int | None, str] = (None, "")
        while time.monotonic() < deadline:
            last = self.healthz(host)
            if last[0] == want:
                return last[1]
            time.sleep(0.1)
        raise AssertionError(f"{host}: /healthz never answered {want}; last {last}")

    def served_by(self, host: str) -> tuple[int, str | None]:
        reply = client.fetch(self.address(host), self.https_port, self.services[0]["hostname"],
                             "/anything", ca_file=self.ca_file, timeout=10)
        return reply.status, reply.headers.get("x-lab-region")

    def reset(self) -> list[str]:
        """Put back everything a runbook may have changed; returns what had to be fixed."""
        fixed = []
        lab = self.lab()
        for region in self.regions:
            if not _answers(*self.gateway(region)):
                lab.start_gateway(lab.fleet.region(region))
                fixed.append(f"gateway {region} restarted")
        for host in self.proxy_names():
            if not haproxy_running(self.root(host)):
                start_haproxy(self.root(host))
                fixed.append(f"{host}: HAProxy restarted")
            spool = self.root(host) / "var/lib/georelay-agent/drains"
            left = sorted(f.name for f in spool.glob("*.json"))
            if left:
                agent = self.root(host) / "opt/georelay-agent/venv/bin/georelay-agent"
                subprocess.run([str(agent), "undrain"], capture_output=True, timeout=30,
                               check=True)
                fixed.append(f"{host}: drains removed: {left}")
        fixed += self._reset_onebox()
        with ThreadPoolExecutor(2) as pool:  # two reads of Route53 at once
            reading = pool.submit(self.dns, "simulate", "--from", self.regions_list()[0],
                                  "--live")
            planning = pool.submit(self.dns, "plan")
            state, plan = reading.result(), planning.result()
        if "operator state in Route53: none" not in state.stdout:
            for region in self.regions:
                self.dns("restore", region)
            for host in self.proxy_names():
                self.dns("weight", host, "--reset")
            fixed.append(f"Route53 operator state reset: {state.stdout[:300]}")
            plan = self.dns("plan")
        if plan.returncode != 0:
            applied = self.dns("apply", "--yes", "--force")
            fixed.append(f"Route53 re-applied (plan exit {plan.returncode}; apply exit "
                         f"{applied.returncode})")
        for host in self.proxy_names():
            self.wait_healthz(host, 200)
        return fixed

    def onebox_map(self, host: str) -> str:
        return (self.root(host) / "etc/haproxy/onebox-percent.map").read_text()

    def _reset_onebox(self) -> list[str]:
        """Gateway faults cleared; one-box percentages still held by a rollout handed back to
        the inventory's onebox_percent (georelay-rollout release does that)."""
        fixed = []
        lab = self.lab()
        faults = lab.faults()
        if faults:
            lab.clear_fault()
            fixed.append(f"gateway faults cleared: {sorted(faults)}")
        for s in self.services:
            held = [h for h in self.proxy_names()
                    if f"#held {s['hostname']} " in self.onebox_map(h)]
            if not s.get("onebox_domain") or not held:
                continue
            run([str(BIN / "ansible-playbook"), "-i", str(self.inventory),
                 "playbooks/onebox.yml", "-e", f"onebox_service={s['hostname']}",
                 "-e", f"onebox_percent={s.get('onebox_percent', 0)}"], check=True)
            fixed.append(f"{s['hostname']}: one-box percentage held on {held}: released")
        return fixed

    def regions_list(self) -> list[str]:
        return list(self.regions)


def _answers(ip: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((ip, port), timeout=1):
            return True
    except OSError:
        return False


def make(base: Path, **kw: Any) -> RunbookFleet:
    return RunbookFleet(base, **kw)


@contextmanager
def runbook_fleet() -> Iterator[RunbookFleet]:
    with running_fleet(make=make, regions={r: list(ps) for r, ps in REGIONS.items()},
                       services=[{**SERVICES[0], **ONEBOX}, {**SERVICES[1], **EDGE}],
                       https_port=443, http_port=80,
                       all_vars=dict(FAST)) as fleet:
        assert isinstance(fleet, RunbookFleet)
        fleet.start_route53()
        yield fleet


__all__ = ["RunbookFleet", "runbook_fleet", "unix_cli"]

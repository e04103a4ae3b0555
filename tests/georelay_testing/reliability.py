"""Helpers of the reliability tests: timed traffic, the role's reload path, HAProxy state.

Everything runs real processes on the test fleet's own loopback /24; every loop is bounded
in time, so a test that goes wrong ends by itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from georelay_lab import nginx_gateway, processes
from georelay_model.facts import paths_below
from georelay_testing.fleet import REPO, DeployedFleet, unix_cli
from georelay_testing.traffic import Sample, Traffic

# The role's module georelay.relay.haproxy_master; it imports the collection's module_utils
# as ansible_collections.georelay.relay..., which the checkout's link resolves (make setup).
MASTER_MODULE = REPO / "plugins/modules/haproxy_master.py"
COLLECTIONS = REPO / ".collections"

# Old workers must be gone this long after a reload (the product default is 30s/5s).
RELOAD_VARS = {"haproxy_hard_stop_after": "3s"}  # close-spread-time: the role's default (off)
# A gateway slower than this gets a 504 (the product default is 30s).
FAULT_VARS = {"haproxy_timeout_server": "1s"}
# The gateway's name, and how long HAProxy keeps a valid answer before asking again (the
# product default is 10s): the bound on following a moved gateway.
GATEWAY_NAME = "gw.us-east-1.lab.test"
DNS_VARS = {"haproxy_dns_hold_valid": "2s", "haproxy_dns_hold_obsolete": "5s"}


def record_figures(test: str, figures: dict[str, Any]) -> None:
    """Print the figures of a test; also append them to $GEORELAY_FIGURES if set (JSON lines).

    docs/BENCHMARKS-reliability.md is written from that file; nothing here is asserted.
    """
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"\nFIGURES {line}")
    target = os.environ.get("GEORELAY_FIGURES")
    if target:
        with open(target, "a") as fh:
            fh.write(line + "\n")


# --- the fleet ---------------------------------------------------------------------------

@contextmanager
def deployed_fleet(all_vars: dict[str, Any], *, services: list[dict[str, Any]] | None = None,
                   before_deploy: Callable[[DeployedFleet], None] | None = None
                   ) -> Iterator[DeployedFleet]:
    """One region, one proxy (p1): gateways up, deployed by the playbook, checks passing."""
    base = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    fleet = DeployedFleet(base, all_vars=dict(all_vars))
    if services is not None:
        fleet.services = services
    try:
        fleet.up()
        if before_deploy is not None:
            before_deploy(fleet)
        fleet.deploy()
        fleet.wait_healthy("p1", timeout=30)  # generous: the machine may be busy
        yield fleet
    finally:
        fleet.down()
        shutil.rmtree(base, ignore_errors=True)


def module_reload(fleet: DeployedFleet, proxy: str, timeout: int = 30) -> dict[str, Any]:
    """One hitless reload through roles/haproxy's own module, exactly as the handler runs it.

    The handler "Reload HAProxy hitlessly" calls georelay.relay.haproxy_master with
    state=reloaded and the fact's paths. The module runs as Ansible runs it on the host: its
    arguments as {"ANSIBLE_MODULE_ARGS": ...} in a file, the collection importable (here
    from the checkout, without ansible's start-up on every one of 50 reloads).
    """
    assert (COLLECTIONS / "ansible_collections/georelay/relay").exists(), \
        f"{COLLECTIONS}: no link to the checkout as georelay.relay (run make setup)"
    args = {"state": "reloaded", "manager": "process", "binary": "/usr/sbin/haproxy",
            "paths": paths_below(str(fleet.root(proxy))), "timeout": timeout}
    args_file = fleet.base / "reload-args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = {**os.environ, "PYTHONPATH": str(COLLECTIONS)}
    proc = subprocess.run([sys.executable, str(MASTER_MODULE), str(args_file)], env=env,
                          capture_output=True, text=True, timeout=timeout + 30, check=False)
    try:
        result: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"the module said:\n{proc.stdout}\n{proc.stderr}") from None
    assert proc.returncode == 0 and not result.get("failed"), result
    return result


def stat_rows(fleet: DeployedFleet, proxy: str) -> list[dict[str, str]]:
    """`show stat` of the admin socket as dicts (pxname, svname, status, scur, ...)."""
    text = unix_cli(fleet.admin_socket(proxy), "show stat")
    lines = text.splitlines()
    header = lines[0].lstrip("# ").split(",")
    return [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]


def server_row(fleet: DeployedFleet, proxy: str, backend: str,
               server: str | None = None) -> dict[str, str]:
    """The stat row of the backend's server named server (default: its first, the home one)."""
    return next(r for r in stat_rows(fleet, proxy)
                if r["pxname"] == backend and r["svname"] not in ("FRONTEND", "BACKEND")
                and (server is None or r["svname"] == server))


def wait_status(fleet: DeployedFleet, proxy: str, backend: str, prefix: str,
                timeout: float = 10.0, server: str | None = None) -> float:
    """Seconds until the backend's gateway server's status starts with prefix (UP, DOWN)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if server_row(fleet, proxy, backend, server)["status"].startswith(prefix):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{backend} not {prefix} within {timeout}s: "
                         f"{server_row(fleet, proxy, backend, server)}")


def server_address(fleet: DeployedFleet, proxy: str, backend: str) -> str:
    """The address the running worker uses for the backend's server (show servers state)."""
    text = unix_cli(fleet.admin_socket(proxy), f"show servers state {backend}")
    row = text.splitlines()[2].split()
    return row[4]  # be_id be_name srv_id srv_name srv_addr ...


def start_gateway(fleet: DeployedFleet, name: str, listen: tuple[str, int], region_label: str,
                  domains: list[str], cert: Path) -> int:
    """An extra stand-in gateway; its pid file is under the lab dir, so fleet.down() ends it."""
    cmd = [sys.executable, "-m", "georelay_lab", "gateway", "--region", region_label,
           "--listen", f"{listen[0]}:{listen[1]}", "--cert", str(cert)]
    for domain in domains:
        cmd += ["--domain", domain]
    run = fleet.lab_dir / "gateways"
    pid = processes.start(cmd, run / f"{name}.pid", run / f"{name}.log")
    assert processes.wait_port(*listen), (run / f"{name}.log").read_text()
    return pid


def stop_gateway(fleet: DeployedFleet, name: str) -> bool:
    return processes.stop(fleet.lab_dir / "gateways" / f"{name}.pid")


def log_terms(fleet: DeployedFleet, proxy: str, path_part: str) -> list[str]:
    """Termination states (term=) of the traffic log lines whose path contains path_part."""
    return [m.group(1) for line in fleet.log(proxy).splitlines() if path_part in line
            for m in [re.search(r" term=(\S+)", line)] if m]


# --- A home gateway's outage under traffic (test_backup_failover*.py) --------------------

@dataclass(frozen=True)
class Outage:
    """When the home gateway was stopped and started again, and what traffic saw."""

    killed: float
    restarted: float
    ended: float

    def during(self, traffic: Traffic) -> list[Sample]:
        return traffic.window(self.killed, self.restarted)

    def after(self, traffic: Traffic) -> list[Sample]:
        return traffic.window(self.restarted, self.ended)

    def failover_s(self, traffic: Traffic, backup_region: str) -> float:
        """From the kill to the first request of an unbroken run answered by the backup
        (every later request of the window too)."""
        last_home = max((s.at for s in self.during(traffic) if s.gateway != backup_region),
                        default=self.killed)
        return last_home - self.killed

    def return_s(self, traffic: Traffic, home_region: str) -> float:
        """From the restart to the first request of an unbroken run answered at home."""
        last_backup = max((s.at for s in self.after(traffic) if s.gateway != home_region),
                          default=self.restarted)
        return last_backup - self.restarted


def home_gateway_outage(fleet: DeployedFleet, traffic: Traffic, proxy: str, backend: str,
                        region: str, server: str, down_at_least_s: float = 0.0) -> Outage:
    """With traffic flowing: stop region's gateway until proxy marks server DOWN, 60 more
    requests have ended and down_at_least_s has passed; start it until server is UP again
    and 60 more requests have ended."""
    lab = fleet.lab()
    traffic.wait_for(40)
    killed = time.monotonic()
    lab.stop_gateway(region)
    wait_status(fleet, proxy, backend, "DOWN", server=server, timeout=10)
    traffic.wait_for(60, since=time.monotonic())
    time.sleep(max(0.0, killed + down_at_least_s - time.monotonic()))
    restarted = time.monotonic()
    lab.start_gateway(lab.fleet.region(region))
    wait_status(fleet, proxy, backend, "UP", server=server, timeout=15)
    traffic.wait_for(60, since=time.monotonic())
    return Outage(killed, restarted, time.monotonic())


# --- HTTP/2: a curl client, and what an nginx stand-in gateway received ------------------

@dataclass(frozen=True)
class CurlReply:
    version: str  # "2" or "1.1", as curl negotiated it
    status: int
    headers: dict[str, str]  # lowercase names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def curl(fleet: DeployedFleet, address: str, port: int, hostname: str, path: str, *,
         http2: bool = True, headers: dict[str, str] | None = None,
         request_target: str | None = None, timeout: float = 10.0) -> CurlReply:
    """One request with curl to address:port, naming hostname (SNI, Host or :authority),
    over HTTP/2 (ALPN h2) unless http2=False; a header given replaces curl's own;
    request_target replaces the path in the request line (e.g. the absolute form)."""
    with tempfile.TemporaryDirectory(dir=fleet.base) as tmp:
        head, body = Path(tmp) / "head", Path(tmp) / "body"
        cmd = ["curl", "-sS", "--http2" if http2 else "--http1.1", "--max-time", str(timeout),
               "--cacert", fleet.ca_file, "--resolve", f"{hostname}:{port}:{address}",
               "-D", str(head), "-o", str(body), "-w", "%{http_version} %{http_code}"]
        for name, value in (headers or {}).items():
            cmd += ["-H", f"{name}: {value}"]
        if request_target is not None:
            cmd += ["--request-target", request_target]
        out = subprocess.run([*cmd, f"https://{hostname}:{port}{path}"], capture_output=True,
                             text=True, timeout=timeout + 10, check=False)
        assert out.returncode == 0, f"curl failed ({out.returncode}): {out.stderr}"
        version, status = out.stdout.split()
        lines = head.read_text().splitlines()[1:]
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        return CurlReply(version, int(status),
                         {k.strip().lower(): v.strip() for k, v in fields.items()},
                         body.read_bytes())


@dataclass(frozen=True)
class GatewayRequest:
    """One line of an nginx stand-in gateway's access log (lab/georelay_lab/nginx_gateway.py)."""

    protocol: str  # HTTP/1.1 | HTTP/2.0
    host: str  # Host, or :authority over HTTP/2
    sni: str
    connection: int
    method: str
    path: str
    status: int
    xff: str  # X-Forwarded-For, "-" for none (HAProxy's health checks send none)


GATEWAY_LOG_LINE = re.compile(r"^(\S+) host=(\S*) sni=(\S*) conn=(\d+) req=\d+ (\S+) (\S+) "
                              r"status=(\d+) xff=(.*)$")


def gateway_access_log(fleet: DeployedFleet, region: str) -> Path:
    return nginx_gateway.access_log(fleet.lab().gateway_files(region)[0])


def gateway_log_mark(fleet: DeployedFleet, region: str) -> int:
    """The size of the region's gateway access log now: read from here on with since=."""
    path = gateway_access_log(fleet, region)
    return path.stat().st_size if path.exists() else 0


def gateway_requests(fleet: DeployedFleet, region: str, since: int = 0) -> list[GatewayRequest]:
    """What the region's nginx stand-in gateway received, from byte offset since."""
    path = gateway_access_log(fleet, region)
    if not path.exists():
        return []
    with path.open("rb") as fh:
        fh.seek(since)
        text = fh.read().decode()
    out = []
    for line in text.splitlines():
        m = GATEWAY_LOG_LINE.match(line)
        assert m, f"unexpected gateway access log line: {line!r}"
        out.append(GatewayRequest(m[1], m[2], m[3], int(m[4]), m[5], m[6], int(m[7]), m[8]))
    return out

"""Test fleets: a real inventory, real stand-in gateways, real ansible-playbook and haproxy.

Every fleet lives in its own temporary directory and on its own loopback /24
(127.0.<net>.0), so tests never collide with each other or with a running `make demo`.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from georelay_agent.haproxy_api import parse_stat
from georelay_agent.haproxy_runtime import ProcInfo, parse_show_proc, send, show_proc
from georelay_lab import client, nginx_gateway, programs
from georelay_lab.stand_ins import StandIns
from georelay_lab.stand_ins import down as lab_down

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NETS_DIR = Path("/tmp/georelay-test-nets")


def claimable_nets() -> tuple[int, int]:
    """The third octets of the loopback /24s this run may claim: 30-229, or
    GEORELAY_TEST_NETS=first-last. The fresh-machine stage (ci/fresh-machine/) gives its
    Debian root 230-254: the root has its own /tmp and process ids, so its claims and the
    claims of a suite running on the machine itself could not see each other."""
    spec = os.environ.get("GEORELAY_TEST_NETS", "30-229")
    first, _, last = spec.partition("-")
    return int(first), int(last or first)


def claim_net() -> int:
    """A loopback /24 no other live test process holds (several pytest runs may share a
    machine; HAProxy binds with SO_REUSEPORT, so a shared address would split traffic)."""
    NETS_DIR.mkdir(exist_ok=True)
    first, last = claimable_nets()
    start = first + os.getpid() % (last - first + 1)
    for net in itertools.chain(range(start, last + 1), range(first, last + 1)):
        claim = NETS_DIR / str(net)
        try:
            claim.mkdir()
        except FileExistsError:
            try:
                holder = int((claim / "pid").read_text())
                os.kill(holder, 0)
                continue  # held by a live process
            except FileNotFoundError:
                if time.time() - claim.stat().st_mtime < 60:
                    continue  # being claimed right now
            except (OSError, ValueError):
                pass  # stale claim of a dead process: take it over
        (claim / "pid").write_text(str(os.getpid()))
        return net
    raise RuntimeError("no free loopback /24 for a test fleet")

SERVICES = [
    {"hostname": "fast.example.com", "apigw_domain": "{region}-fast.example.com",
     "health_path": "/ping"},
    {"hostname": "api.example.com", "apigw_domain": "{region}-api.example.com",
     "health_path": "/ping"},
]


def run(cmd: list[str], *, timeout: float = 300, check: bool = False,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
                "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=full_env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


def require_program(name: str) -> str:
    """The executable of external program `name`, which lab/debian-packages.txt must declare.
    Fails the test, never skips it, when the list does not declare it or its package is not
    installed: a test that needs a program says so, and `make system` installs it."""
    try:
        return programs.path(name)
    except programs.ProgramError as exc:
        pytest.fail(str(exc), pytrace=False)


# Programs started from a system directory that lab/debian-packages.txt does not declare,
# one message each; tests/conftest.py fails the test during which one was started.
UNDECLARED: list[str] = []
_STARTS = {"subprocess.Popen", "os.posix_spawn", "os.exec", "os.system"}


def _started_program(event: str, args: tuple[Any, ...]) -> tuple[str, str | None]:
    """(what was started, its executable's path or None) of a process-starting audit event."""
    if event == "os.system":
        words = os.fsdecode(args[0]).split()
        name, env = (words[0] if words else ""), None
    elif event == "subprocess.Popen":
        name, env = os.fsdecode(args[0]), args[3]
    else:  # os.posix_spawn, os.exec: (path, argv, env)
        name, env = os.fsdecode(args[0]), args[2]
    if "/" in name:
        return name, name
    return name, shutil.which(name, path=os.pathsep.join(os.get_exec_path(env)))


def audit_programs(event: str, args: tuple[Any, ...]) -> None:
    """sys.addaudithook: refuse to start a program from a system directory (/usr/bin,
    /usr/sbin, /bin, ...) that lab/debian-packages.txt does not declare. Programs of the
    virtualenv and those a fleet installs below its own root are the project's own."""
    if event not in _STARTS:
        return
    name, executable = _started_program(event, args)
    if executable is None or not programs.is_system_program(executable):
        return
    program = os.path.basename(executable)
    if program in programs.declared():
        return
    message = (f"{name}: started by a test but not declared in {programs.LIST}; add its "
               "Debian package there (one line: package, program, check command)")
    UNDECLARED.append(message)
    raise programs.ProgramError(message)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counters per host, e.g. {'p1': {'ok': 11, 'changed': 0, ...}}."""
    out: dict[str, dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", output, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


@dataclass
class Played:
    """One ansible-playbook run: its exit code, output and PLAY RECAP."""

    rc: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """The output with whitespace collapsed: the YAML callback wraps long messages."""
        return " ".join((self.stdout + self.stderr).split())

    @property
    def recap(self) -> dict[str, dict[str, int]]:
        return recap(self.stdout)

    def ok(self) -> Played:
        assert self.rc == 0, self.tail()
        return self

    def changed(self) -> dict[str, int]:
        """changed= of each host, of a run that succeeded."""
        return {host: counts["changed"] for host, counts in self.ok().recap.items()}

    def tail(self) -> str:
        return self.stdout[-6000:] + self.stderr[-3000:]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unix_cli(path: Path, command: str, timeout: float = 3.0) -> str:
    """One command on an HAProxy CLI socket (master or stats), its whole answer."""
    return send(str(path), command, connect_timeout=timeout, read_timeout=timeout)


def gateways_up(stat: str, states: tuple[str, ...] = ("UP",)) -> bool:
    """Whether `show stat` lists the gateway servers of the service backends, each in one of
    the states (checks passed: UP)."""
    servers = [s for b in parse_stat(stat).values() if b.name.startswith("be_")
               for s in b.servers]
    return bool(servers) and all(s.status in states for s in servers)


@contextmanager
def short_dir() -> Iterator[Path]:
    """A short base directory: HAProxy's unix socket paths are limited to 97 characters."""
    path = Path(tempfile.mkdtemp(prefix="georelay-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def running_fleet(*, deploy: bool = True,
                  make: Callable[..., DeployedFleet] | None = None,
                  before_deploy: Callable[[DeployedFleet], None] | None = None,
                  **fields: Any) -> Iterator[DeployedFleet]:
    """A DeployedFleet (or what `make(base, **fields)` builds) in a short directory: gateways up,
    proxies deployed and healthy (unless deploy=False); everything stopped and removed
    afterwards. `before_deploy` runs once the gateways are up."""
    with short_dir() as base:
        fleet = (make or DeployedFleet)(base, **fields)
        try:
            fleet.up()
            if before_deploy:
                before_deploy(fleet)
            if deploy:
                fleet.deploy()
                for proxy in fleet.proxy_names():
                    fleet.wait_healthy(proxy)
            yield fleet
        finally:
            fleet.down()


@dataclass
class DeployedFleet:
    """A georelay fleet on loopback: inventory, lab CA, gateways, deployed proxies."""

    base: Path
    regions: dict[str, list[str]] = field(default_factory=lambda: {"us-east-1": ["p1"]})
    services: list[dict[str, Any]] = field(default_factory=lambda: [dict(SERVICES[0])])
    all_vars: dict[str, Any] = field(default_factory=dict)
    https_port: int = 8443
    http_port: int = 8080
    net: int = field(default_factory=claim_net)
    apigw: dict[str, str] = field(default_factory=dict)  # region -> address, else the lab's
    gateway_kind: str | None = None  # the lab's stand-in gateways: python (default) or nginx
    gateway_keepalive_requests: int = nginx_gateway.KEEPALIVE_REQUESTS  # nginx gateways only
    gateway_keepalive_timeout: float = nginx_gateway.KEEPALIVE_TIMEOUT_S  # nginx only, seconds
    host_vars: dict[str, dict[str, Any]] = field(default_factory=dict)  # proxy -> its own vars

    def apigw_address(self, region: str) -> str:
        ip, port = self.gateway(region)
        return self.apigw.get(region, f"{ip}:{port}")

    @property
    def inventory(self) -> Path:
        return self.base / "inventory"

    @property
    def lab_dir(self) -> Path:
        return self.base / "lab"

    @property
    def ca_file(self) -> str:
        return str(self.lab_dir / "certs" / "lab-ca.pem")

    def proxy_names(self) -> list[str]:
        return [p for ps in self.regions.values() for p in ps]

    def region_of(self, proxy: str) -> str:
        return next(r for r, ps in self.regions.items() if proxy in ps)

    def address(self, proxy: str) -> str:
        return f"127.0.{self.net}.{self.proxy_names().index(proxy) + 1}"

    def management_address(self, proxy: str) -> str:
        """Where the proxy's management listener (metrics) listens: not its public address."""
        return f"127.0.{self.net}.{201 + self.proxy_names().index(proxy)}"

    def gateway(self, region: str) -> tuple[str, int]:
        return f"127.0.{self.net}.{101 + list(self.regions).index(region)}", 9443

    def root(self, proxy: str) -> Path:
        return self.lab_dir / "proxies" / proxy

    def config(self, proxy: str) -> Path:
        return self.root(proxy) / "etc/haproxy/haproxy.cfg"

    def master_socket(self, proxy: str) -> Path:
        return self.root(proxy) / "run/haproxy-master.sock"

    def admin_socket(self, proxy: str) -> Path:
        return self.root(proxy) / "run/haproxy/admin.sock"

    def log(self, proxy: str) -> str:
        path = self.root(proxy) / "var/log/haproxy/haproxy.log"
        return path.read_text() if path.exists() else ""

    def host_vars_of(self, proxy: str) -> dict[str, Any]:
        """The inventory variables of one proxy (before the test's own host_vars)."""
        return {"public_ip": self.address(proxy),
                "haproxy_bind_address": self.address(proxy),
                "georelay_agent_bind_address": self.address(proxy),
                "georelay_metrics_listen": f"{self.management_address(proxy)}:8404",
                "georelay_root": str(self.root(proxy))}

    def common_vars(self) -> dict[str, Any]:
        """Fleet-wide variables of every test fleet, wherever its proxies run."""
        return {
            "georelay_zone": "example.com",
            "georelay_services": self.services,
            "georelay_tls_pem": str(self.lab_dir / "certs/public.pem"),
            "georelay_backend_ca": self.ca_file,
            "georelay_agent_probe_ca_file": self.ca_file,  # the agent's end-to-end probe
            "haproxy_check_interval": "500ms",
        }

    def fleet_vars(self) -> dict[str, Any]:
        """The fleet-wide variables (before the test's own all_vars): proxies on loopback."""
        return {
            **self.common_vars(),
            "ansible_connection": "local",
            "ansible_become": False,
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "georelay_service_manager": "process",
            "haproxy_https_port": self.https_port,
            "haproxy_http_port": self.http_port,
        }

    def write(self, **all_vars: Any) -> None:
        """(Re)write the inventory; keyword arguments override fleet-wide variables."""
        children: dict[str, Any] = {}
        for region, proxies in self.regions.items():
            children[region.replace("-", "_")] = {
                "vars": {"aws_region": region,
                         "georelay_apigw_address": self.apigw_address(region)},
                "hosts": {p: {**self.host_vars_of(p), **self.host_vars.get(p, {})}
                          for p in proxies},
            }
        self.write_inventory(children, {**self.fleet_vars(), **self.all_vars, **all_vars})

    def write_inventory(self, children: dict[str, Any], group_vars: dict[str, Any]) -> None:
        """hosts.yml (the region groups) and group_vars/all.yml of the fleet's inventory."""
        (self.inventory / "group_vars").mkdir(parents=True, exist_ok=True)
        (self.inventory / "hosts.yml").write_text(
            yaml.safe_dump({"all": {"children": children}}, sort_keys=False))
        (self.inventory / "group_vars/all.yml").write_text(
            yaml.safe_dump(group_vars, sort_keys=False))

    def lab(self) -> StandIns:
        return StandIns.from_inventory(str(self.inventory), self.lab_dir, self.gateway_kind,
                                       self.gateway_keepalive_requests,
                                       self.gateway_keepalive_timeout)

    def up(self) -> None:
        """Write the inventory, make the certificates, start the gateways."""
        self.write()
        self.lab().up()

    def play(self, *args: str, playbook: str = "playbooks/proxies.yml",
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "ansible-playbook"), "-i", str(self.inventory), playbook, *args],
                   timeout=timeout)

    def deploy(self) -> subprocess.CompletedProcess[str]:
        proc = self.play()
        assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
        return proc

    def fetch(self, proxy: str, hostname: str, path: str = "/anything",
              **kw: Any) -> client.Reply:
        return client.fetch(self.address(proxy), self.https_port, hostname, path,
                            ca_file=self.ca_file, **kw)

    def connection(self, proxy: str, hostname: str) -> http.client.HTTPSConnection:
        return client.PinnedHTTPSConnection(self.address(proxy), self.https_port, hostname,
                                            client.context(self.ca_file))

    def show_proc(self, proxy: str) -> str:
        """The proxy's master `show proc`, as HAProxy answers it."""
        return unix_cli(self.master_socket(proxy), "show proc")

    def proc(self, proxy: str) -> ProcInfo:
        """The proxy's master `show proc`, parsed (workers, old workers, reload counters)."""
        return parse_show_proc(self.show_proc(proxy))

    def reloads(self, proxy: str) -> int:
        return self.proc(proxy).reloads

    def reload(self, proxy: str, timeout: float = 20) -> ProcInfo:
        """A master CLI reload of one proxy, once its new workers run (what they report)."""
        before = self.proc(proxy)
        unix_cli(self.master_socket(proxy), "reload")
        deadline = time.monotonic() + timeout
        while True:  # the master re-executes itself: its socket refuses for a moment
            now = show_proc(str(self.master_socket(proxy)))
            if now and now.reloads > before.reloads and now.workers and \
                    now.worker_pids != before.worker_pids:
                return now
            assert time.monotonic() < deadline, now
            time.sleep(0.1)

    def show_stat(self, proxy: str) -> str:
        """The proxy's Runtime API `show stat`, as HAProxy answers it."""
        return unix_cli(self.admin_socket(proxy), "show stat")

    def wait_healthy(self, proxy: str, timeout: float = 10.0,
                     states: tuple[str, ...] = ("UP",)) -> None:
        """Until every gateway server of the proxy is in one of states (UP: checks passed)."""
        deadline = time.monotonic() + timeout
        stat = ""
        while time.monotonic() < deadline:
            stat = self.show_stat(proxy)
            if gateways_up(stat, states):
                return
            time.sleep(0.1)
        raise AssertionError(f"{proxy}: gateways not UP:\n{stat}")

    def with_unreachable_proxy(self, region: str, name: str = "e9") -> Path:
        """A copy of the inventory with one more proxy in region, on an address of this
        fleet's loopback /24 where no SSH listens (a closed port, a 3 s timeout)."""
        base = self.base / f"inventory-with-{name}"
        shutil.copytree(self.inventory, base, dirs_exist_ok=True)
        hosts = yaml.safe_load((base / "hosts.yml").read_text())
        address = f"127.0.{self.net}.99"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens once it is closed
        hosts["all"]["children"][region.replace("-", "_")]["hosts"][name] = {
            "public_ip": address, "haproxy_bind_address": address,
            "georelay_agent_bind_address": address, "georelay_root": str(self.base / name),
            "ansible_connection": "ssh", "ansible_host": address, "ansible_port": port,
            "ansible_ssh_timeout": 3, "ansible_ssh_retries": 0}
        (base / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
        return base

    def down(self) -> None:
        lab_down(self.lab_dir)
        claim = NETS_DIR / str(self.net)
        (claim / "pid").unlink(missing_ok=True)
        claim.rmdir()

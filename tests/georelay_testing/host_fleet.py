"""Test fleets on real Debian 12 hosts: the host lab's containers, reached over SSH.

A HostFleet is the DeployedFleet of the loopback tests with its proxies on hosts of the host lab
(lab/georelay_lab/hosts.py): each proxy is a systemd-nspawn host with systemd as PID 1,
Ansible connects as the sudo user ``deploy`` with the lab's key and known_hosts, HAProxy runs
under Debian's haproxy.service (the role's default, systemd mode). The stand-in gateways
run on this machine, on its address on the lab's bridge.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georelay_agent import haproxy_runtime
from georelay_lab import host_image
from georelay_lab.hosts import Host, HostLab
from georelay_lab.stand_ins import down as lab_down
from georelay_testing.agent_fleet import AGENT_VARS, AgentFleet
from georelay_testing.fleet import BIN, Played, run, short_dir

LAB = "test"
SUBNET = "10.213.1.0/24"
GATEWAY_PORT = 8443  # region i's stand-in gateway: GATEWAY_PORT + i on the bridge address

# HAProxy's sockets on a host are asked with the collection's own client, run by the host's
# python3 (nothing of georelay's Python needs to be installed there for it).
RUNTIME_CLIENT = Path(haproxy_runtime.__file__).read_text()


@dataclass(eq=False)
class HostFleet(AgentFleet):
    """A fleet whose proxies are real hosts of the host lab, deployed over SSH."""

    https_port: int = 443
    http_port: int = 80
    net: int = 0  # no loopback /24: the hosts have addresses of their own
    hostlab: HostLab = field(default_factory=lambda: HostLab(LAB, SUBNET))
    connection_sets: int = 0

    def address(self, proxy: str) -> str:
        return self.hostlab.address_of(self.proxy_names().index(proxy))

    def host(self, proxy: str) -> Host:
        return Host(proxy, self.address(proxy))

    def gateway(self, region: str) -> tuple[str, int]:
        return self.hostlab.gateway_address, GATEWAY_PORT + list(self.regions).index(region)

    def agent_url(self, proxy: str, path: str) -> str:
        raise NotImplementedError("the agent listens on the host's loopback: use public_healthz")

    def host_vars_of(self, proxy: str) -> dict[str, Any]:
        return {"ansible_host": self.address(proxy), "public_ip": self.address(proxy)}

    def fleet_vars(self) -> dict[str, Any]:
        return {
            **self.common_vars(),
            "ansible_become": True,
            **AGENT_VARS,
            # Lab hosts reach no network: the agent's locked dependencies come from the
            # control node's wheelhouse (filled with the host image).
            **host_image.AGENT_VARS,
            **self.hostlab.ansible_vars(),
        }

    def up(self) -> None:
        """Fresh hosts (nothing of georelay on them), certificates, stand-in gateways."""
        names = self.proxy_names()
        self.hostlab.up(names, [self.address(p) for p in names])
        self.write()
        self.lab().up()

    def down(self) -> None:
        lab_down(self.lab_dir)
        self.hostlab.down(quiet=True)

    # -- on the hosts -----------------------------------------------------------------

    def ssh(self, proxy: str, command: str, *, check: bool = True, timeout: float = 60,
            user: str = "deploy") -> subprocess.CompletedProcess[str]:
        proc = self.hostlab.ssh(self.host(proxy), command, user=user, check=False,
                                timeout=timeout)
        if check:
            assert proc.returncode == 0, (f"{proxy}: `{command}` exited {proc.returncode}:\n"
                                          f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
        return proc

    def sudo(self, proxy: str, command: str, **kw: Any) -> str:
        return self.ssh(proxy, f"sudo sh -c {shlex.quote(command)}", **kw).stdout

    def socket_cli(self, proxy: str, socket_path: str, command: str) -> str:
        return self.sudo(proxy, f"python3 -c {shlex.quote(RUNTIME_CLIENT)} "
                                f"{shlex.quote(socket_path)} {shlex.quote(command)}")

    def ssh_env(self, fresh_connections: bool = False) -> dict[str, str]:
        """Ansible's SSH connections of this fleet's plays: kept alive in a directory of the
        fleet (a later fleet's host at the same address is another host), or new ones (a
        kept-alive connection never checks the host key again)."""
        self.connection_sets += 1
        name = f"cp{self.connection_sets}" if fresh_connections else "cp"
        return {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.base / name)}

    def play(self, *args: str, playbook: str = "playbooks/proxies.yml", timeout: float = 600,
             fresh_connections: bool = False) -> subprocess.CompletedProcess[str]:
        return run([str(BIN / "ansible-playbook"), "-i", str(self.inventory), playbook, *args],
                   timeout=timeout, env=self.ssh_env(fresh_connections))

    def run_module(self, proxy: str, module: str,
                   args: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        """One of the collection's modules (georelay.relay.NAME) on the host, over SSH with
        become (ansible ad hoc; the checkout's ansible.cfg resolves the collection)."""
        return run([str(BIN / "ansible"), proxy, "-i", str(self.inventory), "-b",
                    "-m", f"georelay.relay.{module}", "-a", json.dumps(args)],
                   timeout=120, env=self.ssh_env())

    def show_proc(self, proxy: str) -> str:
        return self.socket_cli(proxy, "/run/haproxy-master.sock", "show proc")

    def show_stat(self, proxy: str) -> str:
        return self.socket_cli(proxy, "/run/haproxy/admin.sock", "show stat")

    def failed_reloads(self, proxy: str) -> int:
        return self.proc(proxy).failed_reloads

    def wait_healthy(self, proxy: str, timeout: float = 15.0,
                     states: tuple[str, ...] = ("UP", "no check")) -> None:
        super().wait_healthy(proxy, timeout, states)

    def unit(self, proxy: str, unit: str) -> dict[str, str]:
        """systemctl show of a unit on the host (selected properties)."""
        out = self.ssh(proxy, f"systemctl show {unit} -p ActiveState -p SubState "
                              "-p UnitFileState -p MainPID -p User -p NRestarts").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def file_sha(self, proxy: str, path: str) -> str:
        return self.sudo(proxy, f"sha256sum {shlex.quote(path)} | cut -d' ' -f1").strip()

    def journal(self, proxy: str, *args: str) -> str:
        return self.sudo(proxy, "journalctl --no-pager -o cat " + shlex.join(args))

    def reboot(self, proxy: str, timeout: float = 60) -> float:
        """`systemctl reboot` on the host; seconds until SSH answers on the new boot."""
        before = self.ssh(proxy, "systemctl show -p ActiveEnterTimestampMonotonic --value "
                                 "systemd-journald.service").stdout.strip()
        start = time.monotonic()
        self.ssh(proxy, "sudo systemctl reboot", check=False, timeout=20)
        deadline = start + timeout
        while time.monotonic() < deadline:
            proc = self.hostlab.ssh(self.host(proxy), "systemctl is-system-running --wait; "
                                    "systemctl show -p ActiveEnterTimestampMonotonic --value "
                                    "systemd-journald.service", check=False, timeout=30)
            lines = proc.stdout.split()
            if proc.returncode == 0 and lines and lines[-1] != before:
                return time.monotonic() - start
            time.sleep(0.3)
        raise AssertionError(f"{proxy} did not come back within {timeout} s of its reboot")


def play(fleet: HostFleet, *args: str, playbook: str = "playbooks/proxies.yml",
         timeout: float = 600, fresh_connections: bool = False) -> Played:
    proc = fleet.play(*args, playbook=playbook, timeout=timeout,
                      fresh_connections=fresh_connections)
    return Played(proc.returncode, proc.stdout, proc.stderr)


@contextmanager
def host_fleet(**fields: Any) -> Iterator[HostFleet]:
    """Fresh lab hosts for a HostFleet; everything removed afterwards."""
    with short_dir() as base:
        fleet = HostFleet(base, **fields)
        try:
            fleet.up()
            yield fleet
        finally:
            fleet.down()


def host_state(fleet: HostFleet, proxy: str) -> str:
    """What a run may change on a host: packages, georelay's files, units, users."""
    return fleet.sudo(proxy, "dpkg-query -W -f '${Package} ${Version} ${Status}\\n' | sort; "
                             "ls -la /etc/haproxy /etc/georelay-agent /opt /etc/cron.d "
                             "/etc/default /etc/systemd/system 2>&1; getent passwd | sort; "
                             "systemctl list-unit-files --no-legend | grep -v ' transient ' "
                             "| sort")


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)


def run_systemd_blocks(fleet: HostFleet, proxy: str, runbook: str,
                       section: str | None = None) -> list[str]:
    """Run the ```sh systemd``` blocks of docs/runbooks/<runbook> (of one section, or all) on
    the proxy's host, as on-call would: $ON_HOST is SSH with sudo, $ROOT is empty. Each
    command must end with the block's exit status and match its expect=/absent= patterns.
    Returns the outputs, in order."""
    import os
    import re

    from georelay_testing.runbook_doc import RUNBOOKS, parse

    book = parse(RUNBOOKS / runbook)
    blocks = [b for b in book.blocks if b.kind == "systemd"
              and (section is None or b.section == section)]
    assert blocks, f"{runbook}: no systemd block{' in ' + section if section else ''}"
    on_host = f"ssh -F {fleet.hostlab.ssh_config} {proxy} sudo"
    env = {**os.environ, "ON_HOST": on_host, "ROOT": "", "HOST": proxy}
    outputs = []
    for block in blocks:
        for command in block.commands():
            proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                                  text=True, timeout=block.timeout, check=False)
            out = proc.stdout + proc.stderr
            assert proc.returncode in block.exit_codes, \
                f"{block.where}: `{command}` exited {proc.returncode}:\n{out[-3000:]}"
            for pattern in block.expect:
                assert re.search(pattern, out, re.M), f"{block.where}: no {pattern!r} in\n{out}"
            for pattern in block.absent:
                assert not re.search(pattern, out, re.M), f"{block.where}: {pattern!r} in\n{out}"
            outputs.append(out)
    return outputs

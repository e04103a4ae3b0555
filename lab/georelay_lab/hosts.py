"""A lab of real Debian 12 hosts on this machine: systemd-nspawn containers on a private bridge.

Each host boots systemd as PID 1, runs sshd with the lab's key, and has its own address on a
bridge that exists only inside this machine. Ansible reaches them over SSH as the user
``deploy`` (passwordless sudo), exactly as it reaches real proxy hosts. A second user,
``nosudo``, has the same key and no sudo, for the error paths.

The recipe:

- One base image, built once with debootstrap (bookworm minbase + systemd, dbus, sshd,
  python3, sudo, cron) and cached under ``/var/cache/georelay-lab`` keyed by the recipe.
- The hosts reach nothing outside this machine. What the roles install comes from a local
  package cache inside the base image: a flat apt repository of Debian's own ``.deb`` files
  (haproxy, python3-venv, python3-apt, ... downloaded from the mirror at build time); the
  agent's locked dependencies are a wheelhouse on this machine, which the role copies to the
  hosts (``georelay_agent_wheelhouse``). So ``apt-get install haproxy`` on a host runs the
  real install path against a local source; no NAT rule, no forwarding.
- One overlayfs per host over the shared base, so hosts start in a second and differ only in
  what they wrote.
- ``systemd-nspawn --boot --register=no --keep-unit`` (PID 1 here is not systemd), each host
  in a cgroup of its own below ``/sys/fs/cgroup/{systemd,unified}/georelay-lab-<lab>/``;
  a small supervisor restarts a host that rebooted (nspawn exits 133 on reboot).
- systemd-networkd with a static address, no link-local addressing and no router
  advertisements (else ``network-online.target`` waits at every boot); apt's timers masked.

State of a lab lives in ``/var/lib/georelay-lab/<lab>``; ``down`` removes all of it
(containers, cgroups, mounts, bridge). ``up`` first clears whatever a dead run left under the
same lab name, so re-running either is safe.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from georelay_lab import cgroups, processes
from georelay_lab.host_image import (
    AGENT_VARS,
    LOCAL_REPO,
    NOSUDO_USER,
    USER,
    WHEELHOUSE,
    HostLabError,
    _run,
    ensure_base,
)
from georelay_lab.pid_files import alive

__all__ = ["LOCAL_REPO", "WHEELHOUSE", "Host", "HostLab", "HostLabError"]

CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
STATE_ROOT = Path(os.environ.get("GEORELAY_LAB_STATE", "/var/lib/georelay-lab"))

DEFAULT_LAB = "demo"  # inventories/demo-hosts; the tests use "test", molecule "molecule"
DEFAULT_SUBNET = "10.213.0.0/24"
FIRST_HOST = 11  # host i gets subnet[FIRST_HOST + i]


def require_root() -> None:
    if os.geteuid() != 0:
        raise HostLabError("the host lab needs root (systemd-nspawn, bridges, overlayfs): "
                           "run it as root or through sudo")


def _require_programs() -> None:
    missing = [p for p in ("systemd-nspawn", "debootstrap", "apt-ftparchive", "ssh",
                           "ssh-keygen", "ip") if shutil.which(p) is None]
    if missing:
        raise HostLabError(f"missing {', '.join(missing)}: `make setup` installs them "
                           "(Debian: systemd-container debootstrap apt-utils openssh-client "
                           "iproute2)")


# ---------------------------------------------------------------------------------------
# Hosts


@dataclass(frozen=True)
class Host:
    name: str
    address: str


@dataclass
class HostLab:
    """The hosts of one lab name: bridge, subnet, state directory."""

    name: str = DEFAULT_LAB
    subnet: str = DEFAULT_SUBNET

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").isalnum() or len(self.name) > 12:
            raise HostLabError(f"lab name {self.name!r}: use up to 12 letters, digits or '-'")
        net = ipaddress.ip_network(self.subnet)
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen > 24:
            raise HostLabError(f"subnet {self.subnet!r}: use an IPv4 /24 or larger")

    @property
    def state(self) -> Path:
        return STATE_ROOT / self.name

    @property
    def bridge(self) -> str:
        return f"gr-{self.name}"[:15]

    @property
    def gateway_address(self) -> str:
        """This machine's own address on the bridge (stand-in gateways listen there)."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    def address_of(self, index: int) -> str:
        return str(ipaddress.ip_network(self.subnet).network_address + FIRST_HOST + index)

    @property
    def key(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.state / "ssh_config"

    def host_dir(self, host: str) -> Path:
        return self.state / "hosts" / host

    def cgroups(self, host: str | None = None) -> list[Path]:
        top = f"georelay-lab-{self.name}"
        return [root / top / host if host else root / top for root in CGROUP_ROOTS
                if root.is_dir()]

    def hosts(self) -> list[Host]:
        """The hosts this lab brought up (from its state directory)."""
        try:
            data = json.loads((self.state / "hosts.json").read_text())
        except (OSError, ValueError):
            return []
        return [Host(h["name"], h["address"]) for h in data]

    # -- ssh -------------------------------------------------------------------------

    def ssh_args(self, user: str = USER) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-i", str(self.key), "-l", user,
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", "-o", "LogLevel=ERROR"]

    def ssh(self, host: Host | str, command: str, *, user: str = USER, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        address = host.address if isinstance(host, Host) else self._address(host)
        return _run([*self.ssh_args(user), address, command], check=check, timeout=timeout)

    def _address(self, name: str) -> str:
        for h in self.hosts():
            if h.name == name:
                return h.address
        raise HostLabError(f"no host {name!r} in lab {self.name!r}")

    def ansible_vars(self) -> dict[str, str]:
        """Connection variables an inventory needs for these hosts."""
        return {
            "ansible_user": USER,
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_ssh_common_args": f"-F /dev/null -o UserKnownHostsFile={self.known_hosts} "
                                       "-o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
            **AGENT_VARS,
        }

    # -- up / down -------------------------------------------------------------------

    def up(self, names: Sequence[str], addresses: Sequence[str] | None = None,
           timeout: float = 60) -> list[str]:
        """Bring up these hosts (removing this lab's earlier ones first)."""
        require_root()
        _require_programs()
        if addresses is not None and len(addresses) != len(names):
            raise HostLabError("give one address per host")
        net = ipaddress.ip_network(self.subnet)
        hosts = [Host(n, addresses[i] if addresses else self.address_of(i))
                 for i, n in enumerate(names)]
        for h in hosts:
            if ipaddress.ip_address(h.address) not in net or h.address == self.gateway_address:
                raise HostLabError(f"host {h.name}: address {h.address} is not a host address "
                                   f"of the lab subnet {self.subnet}")
        if len({h.name for h in hosts}) != len(hosts):
            raise HostLabError("host names must be unique")
        self._check_names_free([h.name for h in hosts])
        log: list[str] = []
        started = time.monotonic()
        base = ensure_base(log)
        log.extend(self.down(quiet=True))
        self._check_subnet_free()
        self.state.mkdir(parents=True, exist_ok=True)
        self.state.chmod(0o700)
        if not self.key.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"georelay-lab-{self.name}",
                  "-f", str(self.key)])
        (self.state / "hosts.json").write_text(json.dumps([h.__dict__ for h in hosts], indent=1))
        self._bridge_up()
        known: list[str] = []
        for h in hosts:
            known.append(self._prepare(base, h))
        self.known_hosts.write_text("".join(known))
        self._write_ssh_config(hosts)
        for h in hosts:
            self._boot(h)
        for h in hosts:
            self.wait_ssh(h, timeout)
        log.append(f"{len(hosts)} host(s) up in {time.monotonic() - started:.1f} s on bridge "
                   f"{self.bridge} ({self.subnet}; this machine is {self.gateway_address}):")
        log.extend(f"  {h.name:<12} {h.address}  ssh -F {self.ssh_config} {h.name}"
                   for h in hosts)
        return log

    def _check_names_free(self, names: Sequence[str]) -> None:
        """systemd-nspawn names a host's link vb-<name> (15 characters at most): refuse a name
        that a host of another running lab holds, or that truncates to the same link."""
        def link(name: str) -> str:
            return f"vb-{name}"[:15]

        if STATE_ROOT.is_dir():
            for other in sorted(STATE_ROOT.iterdir()):
                if other.name == self.name:
                    continue
                for h in HostLab(other.name).hosts():
                    clash = [n for n in names if link(n) == link(h.name)]
                    if clash and processes.running(
                            other / "hosts" / h.name / "supervisor.pid") is not None:
                        raise HostLabError(
                            f"host {clash[0]}: lab {other.name!r} runs a host named {h.name} "
                            f"(network link {link(h.name)}): rename it, or take that lab "
                            f"down first (georelay-lab hosts down --lab {other.name})")
        links = [link(n) for n in names]
        if len(set(links)) != len(links):
            raise HostLabError("two host names share their first 12 characters: shorten them "
                               "(systemd-nspawn's link names are vb-<name>, 15 characters)")

    def _check_subnet_free(self) -> None:
        """Refuse a subnet that another address of this machine already lies in."""
        net = ipaddress.ip_network(self.subnet)
        out = _run(["ip", "-o", "-4", "addr", "show"]).stdout
        for line in out.splitlines():
            fields = line.split()
            dev, cidr = fields[1], fields[3]
            if dev != self.bridge and ipaddress.ip_interface(cidr).network.overlaps(net):
                raise HostLabError(
                    f"subnet {self.subnet} overlaps {cidr} on {dev}: give this lab another "
                    f"--subnet, or remove the other lab first (georelay-lab hosts down --lab "
                    f"{dev.removeprefix('gr-')})")

    def _bridge_up(self) -> None:
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
        _run(["ip", "addr", "replace", f"{self.gateway_address}/{self.prefixlen}",
              "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _prepare(self, base: Path, h: Host) -> str:
        """Mount the host's overlay and write what makes it this host; its known_hosts line."""
        d = self.host_dir(h.name)
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        root = d / "root"
        _run(["mount", "-t", "overlay", "overlay", "-o",
              f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'}", str(root)])
        etc = root / "etc"
        (etc / "hostname").write_text(f"{h.name}\n")
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {h.name}\n"
                                   "::1 localhost ip6-localhost ip6-loopback\n")
        (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
        (etc / "systemd/network/10-lab.network").write_text(
            "[Match]\nName=host0\n\n[Network]\n"
            f"Address={h.address}/{self.prefixlen}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n")
        _run(["ssh-keygen", "-q", "-A", "-f", str(root)])
        pub = (etc / "ssh/ssh_host_ed25519_key.pub").read_text().split()
        key = self.key.with_suffix(".pub").read_text()
        for user in (USER, NOSUDO_USER):
            home = root / "home" / user
            ssh_dir = home / ".ssh"
            ssh_dir.mkdir(mode=0o700, exist_ok=True)
            (ssh_dir / "authorized_keys").write_text(key)
            st = home.stat()
            for p in (ssh_dir, ssh_dir / "authorized_keys"):
                os.chown(p, st.st_uid, st.st_gid)
        return f"{h.address} {pub[0]} {pub[1]}\n"

    def _write_ssh_config(self, hosts: Sequence[Host]) -> None:
        self.ssh_config.write_text("".join(
            f"Host {h.name}\n  HostName {h.address}\n  User {USER}\n  IdentityFile {self.key}\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n"
            for h in hosts))

    def _boot(self, h: Host) -> None:
        d = self.host_dir(h.name)
        cgroups = self.cgroups(h.name)
        for cg in cgroups:
            cg.mkdir(parents=True, exist_ok=True)
        nspawn = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
                  f"--machine={h.name}", f"--directory={d / 'root'}",
                  f"--network-bridge={self.bridge}", "--console=passive",
                  "--link-journal=no", "--timezone=off", "--resolv-conf=off"]
        # The supervisor: into the host's own cgroups first, then nspawn, again after a
        # reboot (exit 133), and gone once the host powers off.
        script = ("for cg in " + " ".join(shlex.quote(str(c)) for c in cgroups)
                  + "; do echo $$ > \"$cg/cgroup.procs\"; done; "
                  "while :; do " + shlex.join(nspawn) + "; rc=$?; "
                  "[ \"$rc\" -eq 133 ] || exit \"$rc\"; done")
        processes.start(["/bin/sh", "-c", script], d / "supervisor.pid", d / "console.log")

    def wait_ssh(self, h: Host, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.ssh(h, "systemctl is-system-running --wait >/dev/null 2>&1; true",
                            check=False, timeout=30)
            if proc.returncode == 0:
                return
            last = (proc.stderr or proc.stdout).strip()
            time.sleep(0.3)
        raise HostLabError(f"host {h.name} ({h.address}) did not answer SSH within "
                           f"{timeout:.0f} s: {last}; console: "
                           f"{self.host_dir(h.name) / 'console.log'}")

    def down(self, quiet: bool = False) -> list[str]:
        """Remove everything of this lab: containers, cgroups, mounts, bridge."""
        require_root()
        log: list[str] = []
        hosts_dir = self.state / "hosts"
        names = sorted(p.name for p in hosts_dir.iterdir()) if hosts_dir.is_dir() else []
        for name in names:
            sup = self.host_dir(name) / "supervisor.pid"
            pid = processes.running(sup)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the supervisor first: no restart loop
        for name in names:
            self._stop_host(name)
            log.append(f"host {name} removed")
        for cg in self.cgroups():
            cgroups.kill_tree(cg)
        cgroups.umount_below(self.state)
        if self.state.exists():
            shutil.rmtree(self.state / "hosts", ignore_errors=True)
            for f in ("hosts.json", "known_hosts", "ssh_config"):
                (self.state / f).unlink(missing_ok=True)
        if _run(["ip", "link", "show", self.bridge], check=False).returncode == 0:
            _run(["ip", "link", "del", self.bridge])
            log.append(f"bridge {self.bridge} removed")
        if not quiet and not log:
            log.append(f"lab {self.name}: nothing to remove")
        return [] if quiet else log

    def _stop_host(self, name: str) -> None:
        """Power the host off (nspawn turns SIGTERM into a clean shutdown), then make sure."""
        host_cgroups = self.cgroups(name)
        nspawn_pids = cgroups.pids(host_cgroups, named="systemd-nspawn")
        for pid in nspawn_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(p) for p in nspawn_pids):
            time.sleep(0.1)
        for cg in host_cgroups:
            cgroups.kill_tree(cg)

    def status(self) -> list[str]:
        lines = []
        for h in self.hosts():
            sup = processes.running(self.host_dir(h.name) / "supervisor.pid")
            state = "down"
            if sup is not None:
                proc = self.ssh(h, "systemctl is-system-running", check=False, timeout=10)
                state = (proc.stdout.strip() or "no ssh")
            lines.append(f"{h.name:<12} {h.address:<15} {state}")
        return lines or [f"lab {self.name}: no hosts"]


def hosts_of_inventory(inventory: str, lab: HostLab) -> tuple[list[str], list[str]]:
    """(names, addresses) of the inventory's hosts whose ansible_host lies in lab's subnet."""
    from georelay_model import load_inventory

    net = ipaddress.ip_network(lab.subnet)
    names: list[str] = []
    addresses: list[str] = []
    for name, hv in sorted(load_inventory(inventory).items()):
        address = hv.get("ansible_host")
        with contextlib.suppress(ValueError, TypeError):
            if address and ipaddress.ip_address(address) in net:
                names.append(name)
                addresses.append(str(address))
    if not names:
        raise HostLabError(f"{inventory}: no host has an ansible_host in {lab.subnet}")
    return names, addresses

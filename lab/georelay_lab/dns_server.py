"""A local authoritative-only DNS server for the lab: dnsmasq answering from a hosts file.

It stands in for the public DNS that API Gateway regional names live in, so tests can
move a gateway name to another address while a proxy is running. dnsmasq (Debian package
``dnsmasq-base``) listens on one loopback ip:port, forwards nothing (``--no-resolv``), reads
no /etc/hosts (``--no-hosts``) and answers only the names of its own hosts file. Changing
a record rewrites that file and sends SIGHUP, on which dnsmasq re-reads it and clears its
cache. The pid file lives under the lab directory, so ``georelay-lab down`` stops it too.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from georelay_lab import processes, programs


def dnsmasq_binary() -> str:
    """dnsmasq's executable; ProgramError naming the package when it is not installed."""
    return programs.path("dnsmasq")


@dataclass
class DnsServer:
    """dnsmasq on ``host:port`` answering ``records`` (name -> IPv4/IPv6 address)."""

    directory: Path  # below the lab dir: hosts file, pid file, log
    host: str = "127.0.0.1"
    port: int = 5353
    ttl: int = 1  # the TTL of every answer, seconds
    records: dict[str, str] = field(default_factory=dict)

    @property
    def hosts_file(self) -> Path:
        return self.directory / "hosts"

    @property
    def pid_file(self) -> Path:
        return self.directory / "dnsmasq.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "dnsmasq.log"

    @property
    def address(self) -> str:
        """ip:port as HAProxy's ``nameserver`` line (haproxy_resolvers) wants it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def _write_hosts(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"{ip} {name}\n" for name, ip in sorted(self.records.items())]
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        os.replace(tmp, self.hosts_file)

    def command(self) -> list[str]:
        binary = dnsmasq_binary()
        user = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        return [binary, "--keep-in-foreground", "--pid-file=", "--conf-file=/dev/null",
                "--no-resolv", "--no-hosts", "--no-poll", f"--addn-hosts={self.hosts_file}",
                f"--listen-address={self.host}", "--bind-interfaces", f"--port={self.port}",
                f"--local-ttl={self.ttl}", "--log-facility=-", "--log-queries",
                f"--user={user}", f"--group={group}"]

    def start(self, timeout: float = 5.0) -> int:
        """Start dnsmasq (unless running) and wait until it answers; return its pid."""
        pid = processes.running(self.pid_file)
        if pid is not None:
            return pid
        self._write_hosts()
        pid = processes.start(self.command(), self.pid_file, self.log_file)
        deadline = time.monotonic() + timeout
        probe = next(iter(self.records), "georelay-probe.invalid")
        while time.monotonic() < deadline:
            if processes.running(self.pid_file) is None:
                raise RuntimeError(f"dnsmasq exited; see {self.log_file}:\n"
                                   f"{self.log_file.read_text()[-2000:]}")
            try:
                query(self.host, self.port, probe, timeout=0.3)
                return pid
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"dnsmasq did not answer on {self.address}; see {self.log_file}")

    def set(self, name: str, ip: str) -> None:
        """Point name at ip (or add it); a running dnsmasq re-reads its hosts file."""
        self.records[name] = ip
        self._write_hosts()
        pid = processes.running(self.pid_file)
        if pid is not None:
            os.kill(pid, signal.SIGHUP)

    def stop(self) -> bool:
        return processes.stop(self.pid_file)


def query(host: str, port: int, name: str, *, timeout: float = 1.0) -> list[str]:
    """The IPv4 addresses of an A query for name (empty: no such record). OSError: no answer."""
    qid = int(time.monotonic_ns() & 0xFFFF)
    question = b"".join(bytes([len(label)]) + label.encode() for label in name.split("."))
    packet = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + b"\0" + \
        struct.pack(">HH", 1, 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, (host, port))
        data = sock.recv(4096)
    rid, _flags, qd, an = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        raise OSError("DNS answer for another query")
    pos = 12
    for _ in range(qd):
        pos = _skip_name(data, pos) + 4
    out = []
    for _ in range(an):
        pos = _skip_name(data, pos)
        rtype, _cls, _ttl, length = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and length == 4:
            out.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += length
    return out


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        pos += length + 1

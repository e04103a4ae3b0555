"""What the bench reads from /proc about the processes it measures: a process tree's pids,
RSS and CPU time, and the TCP connections established to a listening address."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path


def established_to(ip: str, port: int) -> int:
    """TCP connections in ESTABLISHED whose local end is ip:port (the server side), from
    /proc/net/tcp."""
    local = f"{socket.htonl(int.from_bytes(socket.inet_aton(ip), 'big')):08X}:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "01":
            count += 1
    return count


def tree_pids(pid: int) -> list[int]:
    """pid and its children (HAProxy workers, nginx workers)."""
    return [pid] + [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]


def tree_rss_kib(pid: int) -> int:
    """RSS of pid and its children."""
    total = 0
    for p in tree_pids(pid):
        status = Path(f"/proc/{p}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of pid and its live children, all threads."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in tree_pids(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick

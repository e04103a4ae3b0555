"""HAProxy's command line sockets (master CLI, stats/Runtime API) for the lab and tests."""

from __future__ import annotations

import socket
from pathlib import Path


def cli(path: Path | str, command: str, timeout: float = 5.0) -> str:
    """Send one command and return the whole answer (the socket answers once input ends)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    return b"".join(chunks).decode()

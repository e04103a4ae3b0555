"""A tiny HTTPS client that connects to one address while naming another host (SNI + Host).

It is what ``curl --resolve name:port:address`` does, usable from Python tests and the demo.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` with SNI and certificate check for ``hostname``."""

    def __init__(self, address: str, port: int, hostname: str, context: ssl.SSLContext,
                 timeout: float = 10.0) -> None:
        super().__init__(hostname, port, context=context, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def request(conn: http.client.HTTPConnection, path: str, *, method: str = "GET",
            headers: dict[str, str] | None = None) -> Reply:
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)


def fetch(address: str, port: int, hostname: str, path: str = "/", *, ca_file: str | None,
          headers: dict[str, str] | None = None, timeout: float = 10.0) -> Reply:
    """One request on a fresh connection."""
    conn = PinnedHTTPSConnection(address, port, hostname, context(ca_file), timeout)
    try:
        return request(conn, path, headers=headers)
    finally:
        conn.close()

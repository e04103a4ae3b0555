"""A stand-in for one region's API Gateway regional endpoint, strict the way AWS is.

- The TLS handshake fails unless the SNI names one of its custom domains.
- A request whose Host is not the domain the connection's SNI named gets HTTP 403
  ``{"message":"Forbidden"}`` with ``x-amzn-ErrorType: ForbiddenException``.
- Otherwise it answers 200 and echoes what it received (region, Host, SNI, X-Forwarded-*,
  which connection carried the request), as JSON and as ``x-lab-*`` headers, so people and
  tests can see the rewrite.

Knobs for fault tests, as query parameters: ``delay_ms`` (answer late), ``status`` (answer
with that code), ``bytes`` (pad the body to that size), ``reset=1`` (drop the connection
mid-response). ``GET /ping`` answers 200 ``{"ping":"pong"}`` (the services' health_path).
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FORBIDDEN = b'{"message":"Forbidden"}'


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], region: str, domains: list[str],
                 cert_pem: str) -> None:
        self.region = region
        self.domains = frozenset(d.lower() for d in domains)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_pem)
        self.context.set_alpn_protocols(["http/1.1"])
        self.context.sni_callback = self._sni
        self.connections = itertools.count(1)
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "requests": 0, "handshake_failures": 0}
        super().__init__(address, GatewayHandler)

    def _sni(self, sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if server_name is None or server_name.lower() not in self.domains:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.georelay_sni = server_name.lower()
        return None

    def count(self, key: str) -> int:
        with self.lock:
            self.stats[key] += 1
            return self.stats[key]


class GatewayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GatewayServer
    timeout = 60

    def setup(self) -> None:
        raw: socket.socket = self.request
        raw.settimeout(self.timeout)
        try:
            self.request = self.server.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.server.count("handshake_failures")
            raw.close()
            self.sni = None
            self.connection = None  # type: ignore[assignment]
            return
        self.sni: str | None = getattr(self.request, "georelay_sni", None)
        self.conn_id = self.server.count("connections")
        self.requests_here = 0
        super().setup()

    def handle(self) -> None:
        if self.sni is None:
            return
        super().handle()

    def finish(self) -> None:
        if self.sni is not None:
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.count("requests")
        self.requests_here += 1
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        if host != self.sni:
            self._answer(403, FORBIDDEN, {"x-amzn-ErrorType": "ForbiddenException",
                                          "x-amzn-RequestId": f"lab-{self.conn_id}"})
            return
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if "delay_ms" in query:
            time.sleep(int(query["delay_ms"]) / 1000)
        echo = {
            "region": self.server.region,
            "host": host,
            "sni": self.sni,
            "method": self.command,
            "path": self.path,
            "x_forwarded_for": self.headers.get("X-Forwarded-For"),
            "x_forwarded_proto": self.headers.get("X-Forwarded-Proto"),
            "x_forwarded_host": self.headers.get("X-Forwarded-Host"),
            # Every X-Forwarded-* line as received, in order: shows duplicates and leftovers.
            "forwarding": [[k.lower(), v] for k, v in self.headers.items()
                           if k.lower().startswith("x-forwarded-")],
            "connection": self.conn_id,
            "request_on_connection": self.requests_here,
        }
        if url.path == "/ping":
            echo = {"ping": "pong", "region": self.server.region}
        body = json.dumps(echo, sort_keys=True).encode()
        if "bytes" in query:
            body = body + b" " * max(0, int(query["bytes"]) - len(body))
        headers = {
            "x-lab-region": self.server.region,
            "x-lab-received-host": host,
            "x-lab-sni": self.sni or "",
            "x-lab-connection": str(self.conn_id),
            "x-lab-xff": self.headers.get("X-Forwarded-For") or "",
            "x-lab-xfh": self.headers.get("X-Forwarded-Host") or "",
        }
        if query.get("reset") == "1":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) * 4))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            self.close_connection = True
            self.request.close()
            return
        self._answer(int(query.get("status", 200)), body, headers)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


def serve(listen: tuple[str, int], region: str, domains: list[str], cert_pem: str) -> None:
    server = GatewayServer(listen, region, domains, cert_pem)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()

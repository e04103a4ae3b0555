"""A stand-in for one region's API Gateway regional endpoint, strict the way AWS is.

- The TLS handshake fails unless the SNI names one of its custom domains.
- A request whose Host is not the domain the connection's SNI named gets HTTP 403
  ``{"message":"Forbidden"}`` with ``x-amzn-ErrorType: ForbiddenException``.
- Otherwise it answers 200 and echoes what it received (region, Host, SNI, X-Forwarded-*,
  which connection carried the request), as JSON and as ``x-lab-*`` headers, so people and
  tests can see the rewrite.

Knobs for fault tests, as query parameters: ``delay_ms`` (answer late), ``status`` (answer
with that code), ``bytes`` (pad the body to that size), ``reset=1`` (drop the connection
mid-response), ``vary`` (send that ``Vary`` header, e.g. ``vary=Accept-Encoding``; the
one-box tests check what the proxy adds to it). ``GET /ping`` answers 200
``{"ping":"pong"}`` (the services' health_path). The echo's ``x_req_partition`` lists every
``X-Req-Partition`` header received (the one-box partition the proxy set).

Faults switched at runtime, without a restart (``--faults FILE``, written by
``georelay-lab gateway-fault`` and ``StandIns.set_fault``): a JSON file naming, per domain,
a status to answer and the share of requests (0.0-1.0) that get it. The gateway re-reads
it when it changes (checked on every request). The pattern is counted, not random: of the
first N requests to the domain since its fault was set, exactly ceil(N x share) get the
status, spread evenly (share 0.3: the 1st, 4th, 7th, 11th, ...). ``/ping`` is spared
unless the fault says ``health_checks``, so HAProxy's checks keep passing while real traffic
fails. A faulted answer carries ``x-lab-fault``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import socket
import ssl
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPStatus, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

FORBIDDEN = b'{"message":"Forbidden"}'
FAULTS_FILE = "faults.json"  # beside the gateways' pid files: <lab dir>/gateways/


@dataclass(frozen=True)
class Fault:
    """Answer ``status`` to ``share`` (0-1) of the requests to one domain."""

    status: int
    share: Fraction
    health_checks: bool = False  # also /ping, which HAProxy's health checks ask
    set_at: str = ""  # when it was set: setting it again restarts its count

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status {self.status} is not an HTTP status: give 100-599")
        if not 0 <= self.share <= 1:
            raise ValueError(f"share {float(self.share):g} is outside 0.0-1.0")

    def hits(self, n: int) -> bool:
        """Whether the n-th request (from 1) since the fault was set gets it: ceil(N x
        share) of the first N do, evenly spread."""
        return math.ceil(n * self.share) > math.ceil((n - 1) * self.share)

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "share": float(self.share),
                "health_checks": self.health_checks, "set_at": self.set_at}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Fault:
        return cls(int(raw["status"]), Fraction(str(float(raw["share"]))),
                   bool(raw.get("health_checks", False)), str(raw.get("set_at", "")))


def read_faults(path: Path) -> dict[str, Fault]:
    """The faults of a fault file, by domain ({} when there is none)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return {d.lower(): Fault.from_json(f) for d, f in raw.get("faults", {}).items()}


def write_faults(path: Path, faults: dict[str, Fault]) -> None:
    """Replace the fault file at once (a rename: a gateway never reads half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    temp.write_text(json.dumps({"faults": {d: f.to_json() for d, f in sorted(faults.items())}},
                               indent=2, sort_keys=True) + "\n")
    temp.replace(path)


class FaultFile:
    """A gateway's view of the fault file: re-read when it changes, a request count per
    domain since its fault was set."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.seen: tuple[int, int, int, int] | None = None
        self.faults: dict[str, Fault] = {}
        self.counts: dict[str, int] = {}

    def _reload(self) -> None:
        assert self.path is not None
        try:
            st = self.path.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
        except FileNotFoundError:
            key = (0, 0, 0, 0)
        if key == self.seen:
            return
        self.seen = key
        try:
            faults = read_faults(self.path)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            print(f"gateway: ignoring {self.path}: {exc}", file=sys.stderr, flush=True)
            faults = {}
        self.counts = {d: n for d, n in self.counts.items() if faults.get(d) == self.faults[d]}
        self.faults = faults

    def check(self, domain: str, path: str) -> tuple[Fault, int] | None:
        """The fault this request gets, with its number since the fault was set; or None."""
        if self.path is None:
            return None
        with self.lock:
            self._reload()
            fault = self.faults.get(domain)
            if fault is None or (path == "/ping" and not fault.health_checks):
                return None
            n = self.counts[domain] = self.counts.get(domain, 0) + 1
        return (fault, n) if fault.hits(n) else None


class GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], region: str, domains: list[str],
                 cert_pem: str, faults: Path | None = None) -> None:
        self.region = region
        self.domains = frozenset(d.lower() for d in domains)
        self.faults = FaultFile(faults)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert_pem)
        self.context.set_alpn_protocols(["http/1.1"])
        self.context.sni_callback = self._sni
        self.connections = itertools.count(1)
        self.lock = threading.Lock()
        self.stats = {"connections": 0, "requests": 0, "handshake_failures": 0, "faulted": 0}
        super().__init__(address, GatewayHandler)

    def _sni(self, sock: Any, server_name: str | None, _ctx: ssl.SSLContext) -> int | None:
        if server_name is None or server_name.lower() not in self.domains:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        sock.georelay_sni = server_name.lower()
        return None

    def count(self, key: str) -> int:
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1
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
        faulted = self.server.faults.check(host, url.path)
        if faulted is not None:
            self._fault(host, *faulted)
            return
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
            "x_req_partition": self.headers.get_all("X-Req-Partition") or [],
            "accept": self.headers.get_all("Accept") or [],
            # Requests for this path so far, this one included (health checks have their own).
            "path_requests": self.server.count("path " + url.path),
        }
        if url.path == "/lab/requests":  # how many requests a path (as sent) has had here
            with self.server.lock:
                echo = {"path": query.get("path", ""),
                        "requests": self.server.stats.get("path " + query.get("path", ""), 0)}
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
        if "vary" in query:
            headers["Vary"] = query["vary"]
        if "cacheable" in query:  # a response an edge cache may store (and revalidate)
            headers.update({"Cache-Control": "max-age=60", "ETag": '"lab-v1"',
                            "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"})
        if "set_cookie" in query:
            headers["Set-Cookie"] = f"session={query['set_cookie']}; Path=/; HttpOnly"
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

    def _fault(self, host: str, fault: Fault, n: int) -> None:
        self.server.count("faulted")
        try:
            reason = HTTPStatus(fault.status).phrase
        except ValueError:
            reason = "Lab fault"
        body = json.dumps({"message": reason, "lab_fault": {
            "status": fault.status, "share": float(fault.share), "request": n}}).encode()
        self._answer(fault.status, body, {
            "x-lab-region": self.server.region, "x-lab-received-host": host,
            "x-lab-sni": self.sni or "", "x-lab-connection": str(self.conn_id),
            "x-lab-fault": f"{fault.status} share={float(fault.share):g} request={n}",
            "x-amzn-RequestId": f"lab-{self.conn_id}-{n}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve


def serve(listen: tuple[str, int], region: str, domains: list[str], cert_pem: str,
          faults: Path | None = None) -> None:
    server = GatewayServer(listen, region, domains, cert_pem, faults)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()

"""End-to-end probe: one HTTPS request through the local HAProxy frontend, as a user sends it.

It connects to the proxy's own listener with the public name as SNI and Host, so one request
exercises the public certificate, the Host/SNI rewrite to the gateway's custom domain, the
connection to the gateway and the gateway itself.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass

from georelay_agent import __version__


@dataclass(frozen=True)
class ProbeResult:
    hostname: str
    ok: bool
    status: int | None
    duration_s: float
    error: str | None
    cert_not_after: float | None  # unix time the served certificate expires
    at: float  # wall clock of the probe


class PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to a given address, with SNI and Host the hostname (no DNS lookup)."""

    def __init__(self, address: str, port: int, hostname: str, context: ssl.SSLContext,
                 timeout: float) -> None:
        super().__init__(hostname, port, context=context, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        ctx: ssl.SSLContext = self._context  # type: ignore[attr-defined]
        self.sock = ctx.wrap_socket(sock, server_hostname=self.host)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def probe(address: str, port: int, hostname: str, path: str, *, timeout: float,
          context: ssl.SSLContext, expect_status: int = 200) -> ProbeResult:
    """One request on a fresh connection; never raises."""
    start = time.monotonic()
    at = time.time()
    conn = PinnedConnection(address, port, hostname, context, timeout)
    status: int | None = None
    not_after: float | None = None
    error: str | None = None
    deadline = start + timeout
    try:
        conn.connect()
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):
            cert = sock.getpeercert()
            if cert and isinstance(cert.get("notAfter"), str):
                not_after = float(ssl.cert_time_to_seconds(str(cert["notAfter"])))
        conn.request("GET", path, headers={
            "Host": hostname, "User-Agent": f"georelay-agent/{__version__} probe",
            "Connection": "close"})
        resp = conn.getresponse()
        status = resp.status
        # Read a bounded body so the connection ends cleanly; the content is not checked.
        while resp.read(65536) and time.monotonic() < deadline:
            pass
        if status != expect_status:
            error = f"HTTP {status}, expected {expect_status}"
    except ssl.SSLCertVerificationError as exc:
        error = f"TLS certificate rejected: {exc.verify_message}"
    except ssl.SSLError as exc:
        error = f"TLS error: {exc.reason or exc}"
    except TimeoutError:
        error = f"no answer within {timeout:g}s"
    except OSError as exc:
        error = exc.strerror or str(exc)
    except http.client.HTTPException as exc:
        error = f"bad HTTP answer: {type(exc).__name__} {exc}"
    finally:
        conn.close()
    return ProbeResult(hostname, error is None, status, time.monotonic() - start, error,
                       not_after, at)

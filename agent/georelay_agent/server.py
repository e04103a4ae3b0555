"""The agent's HTTP server: answers from the published snapshot, never collects on a request.

GET (or HEAD) only; there is no control action over HTTP.
  <healthz path>  200 "<ok_body>" when healthy, else 503 with a one-line reason
  /live           200 while the agent's collector runs
  /status.json    the versioned status document (schema: georelay_agent.schema)
  /metrics        Prometheus text, rendered by prometheus_client
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from georelay_agent import __version__
from georelay_agent.collector import Collector
from georelay_agent.config import Config
from georelay_agent.logfmt import fields
from georelay_agent.metrics import AgentMetrics
from georelay_agent.observation import Observation
from georelay_agent.snapshot import Snapshot, status_document

log = logging.getLogger("georelay_agent")


def verdict(snap: Snapshot, config: Config) -> tuple[int, str]:
    """The /healthz answer for a snapshot, judged now (a stale snapshot is a failure)."""
    age = snap.age()
    if snap.state == "starting":
        return 503, snap.reason or "starting"
    if age > config.stale_after:
        return 503, f"agent: snapshot is {age:.1f}s old (collection stuck; limit " \
                    f"{config.stale_after:g}s)"
    if snap.healthy:
        return 200, config.ok_body
    return 503, snap.reason or snap.state


class AgentServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, config: Config, collector: Collector, metrics: AgentMetrics) -> None:
        self.config = config
        self.collector = collector
        self.metrics = metrics
        if ":" in config.listen_address:
            self.address_family = socket.AF_INET6
        super().__init__((config.listen_address, config.listen_port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A request that failed: one log line (socketserver would print a traceback); a
        client gone mid-answer is routine (debug)."""
        exc = sys.exc_info()[1]
        gone = isinstance(exc, ConnectionError | TimeoutError)
        log.log(logging.DEBUG if gone else logging.ERROR, "request failed",
                exc_info=not gone, extra=fields(
                    event="request_failed", client=str(client_address[0]) if client_address
                    else None, error=f"{type(exc).__name__}: {exc}" if gone else None))


class Handler(BaseHTTPRequestHandler):
    server: AgentServer
    protocol_version = "HTTP/1.1"  # keep-alive: HAProxy reuses its connections to us
    timeout = 10  # a client that stalls mid-request loses its thread after this long
    server_version = "georelay-agent"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http", extra=fields(client=self.address_string(), line=format % args))

    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _method_not_allowed(self) -> None:
        self._send(405, b"only GET and HEAD\n", "text/plain; charset=utf-8", False,
                   {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def _route(self, head: bool) -> None:
        srv = self.server
        path = self.path.split("?", 1)[0]
        snap = srv.collector.snapshot
        if path == srv.config.healthz_path:
            code, text = verdict(snap, srv.config)
            self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8", head,
                       {"X-Georelay-State": snap.state})
        elif path == "/live":
            alive = srv.collector.is_alive()
            self._send(200 if alive else 503,
                       b"alive\n" if alive else b"collector thread is not running\n",
                       "text/plain; charset=utf-8", head)
        elif path == "/status.json":
            body = json.dumps(status_document(snap), sort_keys=True).encode() + b"\n"
            self._send(200, body, "application/json", head)
        elif path == "/metrics":
            self._send(200, generate_latest(srv.metrics.registry), CONTENT_TYPE_LATEST, head)
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)

    def _send(self, code: int, body: bytes, ctype: str, head: bool,
              headers: dict[str, str] | None = None) -> None:
        path = self.path.split("?", 1)[0]
        known = path in (self.server.config.healthz_path, "/live", "/status.json", "/metrics")
        self.server.metrics.requests.labels(path if known else "other", str(code)).inc()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit code."""
    collector = Collector(config)
    metrics = AgentMetrics(lambda: collector.snapshot)

    def observed(obs: Observation, snap: Snapshot) -> None:
        metrics.observed(obs.duration_s)

    transitions = {"last": collector.snapshot.state}

    def transition(obs: Observation, snap: Snapshot) -> None:
        if snap.state != transitions["last"]:
            metrics.transitions.labels(snap.state).inc()
            transitions["last"] = snap.state

    collector.on_snapshot += [observed, transition]
    try:
        server = AgentServer(config, collector, metrics)
    except OSError as exc:
        log.error("cannot listen", extra=fields(event="listen_failed",
                                                address=config.listen_address,
                                                port=config.listen_port,
                                                error=exc.strerror or str(exc)))
        return 1
    collector.start()

    def stop(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra=fields(event="stop", signal=signal.Signals(signum).name))
        collector.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("listening", extra=fields(
        event="start", version=__version__, proxy=config.proxy, region=config.region,
        address=config.listen_address, port=config.listen_port,
        services=len(config.services), interval_s=config.interval, config=config.path))
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        collector.stop()
    return 0

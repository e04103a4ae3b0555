"""Open-loop load on /healthz: a fixed request rate for a fixed time, then the numbers.

Each request is scheduled at start + i/rate (not when the previous one ended), so a slow
answer cannot lower the offered load, and its latency is measured from its scheduled time
(no coordinated omission). Like Route53's checkers, every request uses a new connection.

  # through the proxy's public TLS listener (what Route53 reaches):
  georelay-tools bench-healthz --address 127.0.1.1 --port 443 --host fast.example.com \
      --ca-file .lab/certs/lab-ca.pem --rate 200 --duration 10
  # straight to the agent:
  georelay-tools bench-healthz --url http://127.0.1.1:8405/healthz --rate 200 --duration 10
"""

from __future__ import annotations

import http.client
import json
import ssl
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import click

from georelay_agent.probe import PinnedConnection
from georelay_dns.cli_support import cli_command


@dataclass(frozen=True)
class Load:
    """What to load and how hard (the command's options)."""

    url: str | None
    address: str | None
    port: int
    host: str
    path: str
    ca_file: str | None
    rate: float
    duration: float
    concurrency: int
    timeout: float
    expect: int


def run(args: Load) -> dict[str, object]:
    if args.url:
        u = urlsplit(args.url)
        path = u.path or "/"

        def connect() -> http.client.HTTPConnection:
            return http.client.HTTPConnection(u.hostname or "", u.port or 80,
                                              timeout=args.timeout)
    else:
        path = args.path
        ctx = ssl.create_default_context(cafile=args.ca_file)
        ctx.set_alpn_protocols(["http/1.1"])

        def connect() -> http.client.HTTPConnection:
            return PinnedConnection(args.address, args.port, args.host, ctx, args.timeout)

    total = int(args.rate * args.duration)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    codes: dict[int, int] = {}
    lock = threading.Lock()
    next_i = [0]
    start = time.monotonic() + 0.2

    def worker() -> None:
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= total:
                return
            due = start + i / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn = connect()
            try:
                conn.request("GET", path, headers={"User-Agent": "georelay-bench"})
                resp = conn.getresponse()
                resp.read()
                elapsed = time.monotonic() - due
                with lock:
                    codes[resp.status] = codes.get(resp.status, 0) + 1
                    latencies.append(elapsed)
                    if resp.status != args.expect:
                        errors[f"HTTP {resp.status}"] = errors.get(f"HTTP {resp.status}", 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    key = type(exc).__name__
                    errors[key] = errors.get(key, 0) + 1
            finally:
                conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    lat = sorted(latencies)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

    return {"target": args.url or f"https://{args.host}{path} via {args.address}:{args.port}",
            "rate": args.rate, "duration_s": args.duration, "concurrency": args.concurrency,
            "requests": total, "answered": len(lat), "errors": sum(errors.values()),
            "error_kinds": errors, "status_codes": codes,
            "achieved_rps": round(len(lat) / wall, 1) if wall > 0 else None,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else None}


@cli_command("georelay-tools bench-healthz", distribution="georelay-tools")
@click.option("--url", help="plain HTTP URL of the agent's /healthz")
@click.option("--address", help="proxy address (public TLS listener)")
@click.option("--port", type=click.IntRange(1, 65535), default=443, show_default=True)
@click.option("--host", default="fast.example.com", show_default=True,
              help="public name: SNI and Host")
@click.option("--path", default="/healthz", show_default=True)
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False),
              help="CA that signed the proxy's certificate (default: the system's)")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=200.0,
              show_default=True, help="requests per second")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="seconds")
@click.option("--concurrency", type=click.IntRange(min=1), default=32, show_default=True,
              help="client threads")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True)
@click.option("--expect", type=int, default=200, show_default=True,
              help="status that is not an error")
def command(**options: Any) -> None:
    """Open-loop load on /healthz: a fixed request rate for a fixed time, then the numbers
    (JSON); exit 1 when any request failed."""
    args = Load(**options)
    if not args.url and not args.address:
        raise click.UsageError("give --url (the agent itself) or --address (through the "
                               "proxy's public listener)")
    result = run(args)
    print(json.dumps(result, indent=2))
    sys.exit(0 if result["errors"] == 0 else 1)


if __name__ == "__main__":
    command(prog_name="python -m georelay_tools.bench_healthz")

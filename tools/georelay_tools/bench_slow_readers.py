"""`georelay-tools bench-slow-readers`: do slow clients stall the others?

On make bench's set-up (127.0.20.x, one HAProxy thread), SLOW_READERS clients with a 4 KiB
receive buffer ask for a large response (8 MiB) and read it slowly, while one kept-alive
client sends small requests for --duration seconds; once with the role's defaults, once
with each --variant. Over HTTP/2 to the gateway HAProxy 2.6 multiplexes the clients on one
gateway connection and stops reading it while a stream has no room (haproxy/haproxy#2853):
the small client waits for the slow ones. Reported: the small client's answers, p50, p99,
slowest (docs/BENCHMARKS.md, round 5).
"""

from __future__ import annotations

import http.client
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import click

from georelay_dns.cli_support import cli_command
from georelay_lab import client
from georelay_tools import bench_configs as cfg
from georelay_tools.bench import Bench
from georelay_tools.bench_variants import variants_of

SLOW_READERS = 4
RCVBUF = 4096  # the slow clients' receive buffer, bytes
LARGE_BYTES = 8 * 1024 * 1024


class SlowReaders:
    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.ctx = client.context(str(bench.certs / "lab-ca.pem"))

    def fast_connection(self) -> http.client.HTTPSConnection:
        # a timeout above timeout server (30 s): a stall is measured, not cut
        return client.PinnedHTTPSConnection(self.bench.a.relay, 443, cfg.PUBLIC, self.ctx,
                                            timeout=40)

    def slow(self, stop: threading.Event) -> None:
        """Ask for the large response and read it 1 KiB every 50 ms through a small receive
        buffer (a raw socket: the buffer is set before connecting)."""
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        raw.settimeout(40)
        try:
            raw.connect((self.bench.a.relay, 443))
            conn = self.ctx.wrap_socket(raw, server_hostname=cfg.PUBLIC)
            conn.sendall(f"GET /large HTTP/1.1\r\nHost: {cfg.PUBLIC}\r\n\r\n".encode())
            while not stop.is_set() and conn.recv(1024):
                time.sleep(0.05)
        except OSError:
            pass
        finally:
            raw.close()

    def measure(self, seconds: float) -> dict[str, float]:
        fast = self.fast_connection()
        client.request(fast, "/small")
        stop = threading.Event()
        readers = [threading.Thread(target=self.slow, args=(stop,))
                   for _ in range(SLOW_READERS)]
        for t in readers:
            t.start()
        time.sleep(1)
        latencies: list[float] = []
        errors = 0
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    if client.request(fast, "/small").status != 200:
                        errors += 1
                except (OSError, http.client.HTTPException):
                    errors += 1
                    fast.close()
                    fast = self.fast_connection()
                latencies.append(time.monotonic() - t0)
        finally:
            stop.set()
            for t in readers:
                t.join(timeout=10)
            fast.close()
        latencies.sort()
        return {"answers": len(latencies) - errors, "errors": errors,
                "p50_ms": statistics.median(latencies) * 1000,
                "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
                "slowest_ms": latencies[-1] * 1000}


@cli_command("georelay-tools bench-slow-readers", distribution="georelay-tools")
@click.option("--duration", type=click.IntRange(min=1), default=8, show_default=True,
              help="seconds of small requests beside the slow readers")
@click.option("--variant", "variant_specs", multiple=True, metavar="NAME:VAR=VALUE,...",
              help="role tunables to measure besides the defaults (repeat)")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "georelay-bench", show_default=True)
def command(duration: int, variant_specs: tuple[str, ...], work: Path) -> None:
    """Small requests beside slow readers of a large response, per variant; root."""
    variants = {"defaults": {}, **variants_of(variant_specs)}
    bench = Bench(work, duration, 1, 1, pin=False)
    try:
        bench.prepare()
        (bench.work / "large.json").write_text('{"blob":"' + "y" * (LARGE_BYTES - 11) + '"}')
        for name, tunables in variants.items():
            bench._deploy_georelay(**tunables)
            time.sleep(2)  # the new worker's checks
            r = SlowReaders(bench).measure(duration)
            print(f"{name}: {r['answers']:.0f} small requests answered ({r['errors']:.0f} "
                  f"failed) beside {SLOW_READERS} slow readers of {LARGE_BYTES >> 20} MiB: "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, slowest "
                  f"{r['slowest_ms']:.0f} ms", flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    command(prog_name="python -m georelay_tools.bench_slow_readers")

"""Changing a running proxy: hitless reloads under traffic, bad changes never applied."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from georelay_lab import client
from support import LabFleet, sha


@dataclass
class Traffic:
    """Request loops against one proxy: fresh connections and a kept-alive connection."""

    fleet: LabFleet
    proxy: str
    hostname: str = "fast.example.com"
    results: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, error: str | None) -> None:
        with self.lock:
            self.results[f"{kind}:{'fail' if error else 'ok'}"] += 1
            if error:
                self.errors.append(f"{kind}: {error}")

    def fresh_connections(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if stop is never set
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                reply = self.fleet.fetch(self.proxy, self.hostname, "/fresh", timeout=5)
                self.record("fresh", None if reply.status == 200 else f"HTTP {reply.status}")
            except OSError as exc:
                self.record("fresh", repr(exc))

    def kept_alive(self) -> None:
        """One connection for as long as the proxy keeps it; reconnect only when told to."""
        deadline = time.monotonic() + 120
        conn: http.client.HTTPSConnection | None = None
        while not self.stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = self.fleet.connection(self.proxy, self.hostname)
            try:
                reply = client.request(conn, "/kept")
                self.record("kept", None if reply.status == 200 else f"HTTP {reply.status}")
                if reply.headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                self.record("kept", repr(exc))
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Traffic:
        self.threads = [threading.Thread(target=f, daemon=True) for f in
                        (self.fresh_connections, self.fresh_connections, self.kept_alive)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    @property
    def failed(self) -> int:
        return sum(n for k, n in self.results.items() if k.endswith(":fail"))

    @property
    def total(self) -> int:
        return sum(self.results.values())


def test_config_change_reloads_without_dropping_a_request(one_proxy_fleet: LabFleet) -> None:
    fleet = one_proxy_fleet
    reloads = fleet.reloads("p1")
    with Traffic(fleet, "p1") as traffic:
        time.sleep(1)
        for timeout in ("31s", "32s", "33s"):
            fleet.write(haproxy_timeout_server=timeout)
            proc = fleet.deploy()
            assert "Reload HAProxy hitlessly" in proc.stdout
        time.sleep(1)
    print(f"3 reloads under traffic: {dict(traffic.results)}")  # figures for BENCHMARKS.md
    assert fleet.reloads("p1") == reloads + 3
    assert "timeout server 33s" in fleet.config("p1").read_text()
    assert traffic.results["kept:ok"] > 20 and traffic.results["fresh:ok"] > 20, traffic.results
    assert traffic.failed == 0, (traffic.results, traffic.errors[:5],
                                 [ln for ln in fleet.log("p1").splitlines()
                                  if "status=200" not in ln][-30:])


BAD_CHANGES = [
    ({"haproxy_https_port": 70000}, "haproxy_https_port: 70000 is out of range"),
    ({"georelay_tls_pem": "/nonexistent/public.pem"},
     "georelay_tls_pem: /nonexistent/public.pem does not exist"),
    ({"georelay_service_manager": "upstart"}, "georelay_service_manager"),
    ({"haproxy_timeout_server": "thirty"}, "failed to validate"),  # haproxy -c refuses it
]


@pytest.mark.parametrize(("change", "message"), BAD_CHANGES,
                         ids=[next(iter(c)) for c, _ in BAD_CHANGES])
def test_bad_change_fails_the_play_and_the_proxy_keeps_serving(
        one_proxy_fleet: LabFleet, change: dict[str, object], message: str) -> None:
    fleet = one_proxy_fleet
    config = sha(fleet.config("p1"))
    reloads = fleet.reloads("p1")
    fleet.write(**change)
    proc = fleet.play()
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-4000:]
    assert sha(fleet.config("p1")) == config
    assert fleet.reloads("p1") == reloads
    assert fleet.fetch("p1", "fast.example.com").status == 200

"""Changing a running proxy: hitless reloads under traffic, bad changes never applied."""

from __future__ import annotations

import time

import pytest

from georelay_testing.fleet import DeployedFleet, sha
from georelay_testing.traffic import Traffic


def test_config_change_reloads_without_dropping_a_request(one_proxy_fleet: DeployedFleet) -> None:
    fleet = one_proxy_fleet
    reloads = fleet.reloads("p1")
    with Traffic(fleet, "p1") as traffic:
        time.sleep(1)
        for timeout in ("31s", "32s", "33s"):
            fleet.write(haproxy_timeout_server=timeout)
            proc = fleet.deploy()
            assert "Reload HAProxy hitlessly" in proc.stdout
        time.sleep(1)
    figures = traffic.summary()
    print(f"3 reloads under traffic: {figures}")  # figures for BENCHMARKS.md
    assert fleet.reloads("p1") == reloads + 3
    assert "timeout server 33s" in fleet.config("p1").read_text()
    assert figures.get("kept:ok", 0) > 20 and figures.get("fresh:ok", 0) > 20, figures
    assert figures["failed"] == 0, (figures, [ln for ln in fleet.log("p1").splitlines()
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
        one_proxy_fleet: DeployedFleet, change: dict[str, object], message: str) -> None:
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

"""The management listener (README "Monitoring"): HAProxy's own Prometheus exporter and the
agent's metrics at `georelay_metrics_listen`, for the allowed networks only, with optional
basic auth, and nowhere on the public listeners. Real haproxy 2.6 and agents, deployed by
the real role through ansible-playbook.

m1 has the defaults (loopback may scrape, no auth); m2 allows one address of the fleet's
/24 (ALLOWED) and requires basic auth. Every request names its source address, so "the
allow-list refuses other sources" is measured from a real other source.
"""

from __future__ import annotations

import base64
import http.client
import os
import stat
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from georelay_testing.fleet import DeployedFleet, running_fleet

USER, PASSWORD = "prometheus", "scrape$me#now"
ALLOWED_HOST = 250  # 127.0.<net>.250: the one source m2 allows


def allowed(fleet: DeployedFleet) -> str:
    return f"127.0.{fleet.net}.{ALLOWED_HOST}"


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    def restrict_m2(f: DeployedFleet) -> None:
        f.host_vars["m2"] = {"georelay_metrics_allow": [f"{allowed(f)}/32"],
                             "georelay_metrics_basic_auth": {"user": USER,
                                                             "password": PASSWORD}}
        f.write()

    with running_fleet(regions={"us-east-1": ["m1", "m2"]}, before_deploy=restrict_m2) as f:
        yield f


def scrape(fleet: DeployedFleet, proxy: str, path: str = "/metrics", *,
           source: str = "127.0.0.1", auth: tuple[str, str] | None = None,
           address: str | None = None, port: int = 8404) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection(address or fleet.management_address(proxy), port,
                                      timeout=5, source_address=(source, 0))
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(
            f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def names(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def test_the_exporter_and_the_agent_answer_on_the_management_address(
        fleet: DeployedFleet) -> None:
    status, _, body = scrape(fleet, "m1")
    assert status == 200, body[:300]
    families = names(body)
    # HAProxy's own series: process, frontends, backends and each gateway server.
    assert {"haproxy_process_uptime_seconds", "haproxy_frontend_http_requests",
            "haproxy_backend_status", "haproxy_server_status"} <= families
    assert 'proxy="be_fast_example_com"' in body
    status, _, body = scrape(fleet, "m1", "/agent/metrics")
    assert status == 200, body[:300]
    assert {"georelay_agent_healthy", "georelay_agent_backend_up"} <= names(body)
    assert 'proxy="m1"' in body
    status, _, body = scrape(fleet, "m1", "/admin")
    assert status == 404 and "/agent/metrics" in body


def test_the_public_listeners_never_serve_the_metrics(fleet: DeployedFleet) -> None:
    """Through the public address and port, /metrics is the service's own path (the
    gateway's answer), never HAProxy's exporter; the management port is closed there."""
    for path in ("/metrics", "/agent/metrics"):
        reply = fleet.fetch("m1", "fast.example.com", path)
        assert b"haproxy_process_uptime_seconds" not in reply.body
        assert b"georelay_agent_healthy" not in reply.body
        assert reply.json()["path"] == path  # the stand-in gateway echoes what it got
    with pytest.raises(ConnectionRefusedError):
        scrape(fleet, "m1", address=fleet.address("m1"), port=8404)
    with pytest.raises(ConnectionRefusedError):
        scrape(fleet, "m1", port=fleet.https_port)


def test_the_allow_list_refuses_other_sources(fleet: DeployedFleet) -> None:
    for source in ("127.0.0.1", fleet.address("m1")):
        status, _, body = scrape(fleet, "m2", source=source, auth=(USER, PASSWORD))
        assert status == 403, (source, status, body[:200])
        assert "haproxy_" not in body
    status, _, _ = scrape(fleet, "m2", source=allowed(fleet), auth=(USER, PASSWORD))
    assert status == 200
    # m1 keeps the default, loopback (127.0.0.0/8): both sources may scrape it
    for source in ("127.0.0.1", allowed(fleet)):
        assert scrape(fleet, "m1", source=source)[0] == 200


def test_basic_auth_when_set(fleet: DeployedFleet) -> None:
    status, headers, body = scrape(fleet, "m2", source=allowed(fleet))
    assert status == 401 and "haproxy_" not in body
    assert headers["www-authenticate"].startswith('Basic realm="georelay-metrics"')
    assert scrape(fleet, "m2", source=allowed(fleet), auth=(USER, "wrong"))[0] == 401
    for path in ("/metrics", "/agent/metrics"):
        status, _, body = scrape(fleet, "m2", path, source=allowed(fleet),
                                 auth=(USER, PASSWORD))
        assert status == 200, body[:200]
    # the password is in haproxy.cfg: not readable by other users
    mode = stat.S_IMODE(os.stat(fleet.config("m2")).st_mode)
    assert mode & 0o007 == 0, oct(mode)
    assert stat.S_IMODE(os.stat(fleet.config("m1")).st_mode) == 0o644

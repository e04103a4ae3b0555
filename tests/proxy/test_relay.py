"""Requests through deployed proxies reach their own region's gateway, rewritten."""

from __future__ import annotations

import http.client
import ssl
import subprocess

import pytest

from georelay_lab import client
from georelay_testing.fleet import DeployedFleet, sha, unix_cli


def test_every_proxy_relays_each_service_to_its_own_region(two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    seen = set()
    for proxy in fleet.proxy_names():
        region = fleet.region_of(proxy)
        for service in fleet.services:
            public = service["hostname"]
            domain = service["apigw_domain"].replace("{region}", region)
            reply = fleet.fetch(proxy, public, "/anything?q=1")  # port 443: Host is the name
            assert reply.status == 200, reply.body
            echo = reply.json()
            assert echo["region"] == region
            assert echo["host"] == domain
            assert echo["sni"] == domain
            assert echo["x_forwarded_host"] == public
            assert echo["x_forwarded_for"] == "127.0.0.1"
            assert echo["x_forwarded_proto"] == "https"
            assert echo["path"] == "/anything?q=1"
            assert reply.headers["strict-transport-security"].startswith("max-age=")
            seen.add((region, domain))
    # two services side by side, in two regions: four distinct gateway domains
    assert len(seen) == 4


def test_public_name_sent_straight_to_a_gateway_fails(two_region_fleet: DeployedFleet) -> None:
    """Without the proxy's rewrite API Gateway refuses the public name: that is the point."""
    fleet = two_region_fleet
    ip, port = fleet.gateway("us-east-1")
    with pytest.raises(ssl.SSLError, match=r"UNRECOGNIZED_NAME|unrecognized name"):
        client.fetch(ip, port, "fast.example.com", ca_file=fleet.ca_file)
    # Right SNI, public Host: the gateway's 403.
    reply = client.fetch(ip, port, "us-east-1-fast.example.com",
                         headers={"Host": "fast.example.com"}, ca_file=fleet.ca_file)
    assert reply.status == 403
    assert reply.json() == {"message": "Forbidden"}
    assert reply.headers["x-amzn-errortype"] == "ForbiddenException"


def test_client_forwarding_headers_are_replaced(two_region_fleet: DeployedFleet) -> None:
    reply = two_region_fleet.fetch("e1", "fast.example.com", headers={
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example.net",
        "X-Forwarded-Proto": "http", "x-FORWARDED-port": "80"})
    echo = reply.json()
    assert (echo["x_forwarded_for"], echo["x_forwarded_host"], echo["x_forwarded_proto"]) == \
        ("127.0.0.1", "fast.example.com", "https")
    # Exactly one of each, ours; nothing the client sent survives (X-Forwarded-Port too).
    assert sorted(echo["forwarding"]) == [["x-forwarded-for", "127.0.0.1"],
                                          ["x-forwarded-host", "fast.example.com"],
                                          ["x-forwarded-proto", "https"]]


def test_host_is_matched_case_insensitively_without_port(two_region_fleet: DeployedFleet) -> None:
    reply = two_region_fleet.fetch("w1", "fast.example.com",
                                   headers={"Host": "FAST.Example.com:443"})
    assert reply.status == 200
    echo = reply.json()
    assert echo["host"] == "us-west-2-fast.example.com"
    assert echo["x_forwarded_host"] == "FAST.Example.com:443"  # as the client sent it


def test_unknown_host_gets_404_from_the_proxy(two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    before = unknown_host_4xx(fleet, "e2")
    reply = fleet.fetch("e2", "fast.example.com", "/x", headers={"Host": "nope.example.com"})
    assert reply.status == 404
    assert reply.json() == {"message": "unknown host"}
    assert "x-lab-region" not in reply.headers  # never reached a gateway
    # Counted where operators look (the metrics); not a log line by default (a 4xx is normal).
    assert unknown_host_4xx(fleet, "e2") == before + 1


def unknown_host_4xx(fleet: DeployedFleet, proxy: str) -> int:
    lines = unix_cli(fleet.admin_socket(proxy), "show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:] if line]
    row = next(r for r in rows
               if r["pxname"] == "georelay_unknown_host" and r["svname"] == "BACKEND")
    return int(row["hrsp_4xx"])


def test_plain_http_redirects_to_https_with_308(two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    conn = http.client.HTTPConnection(fleet.address("e1"), fleet.http_port, timeout=5)
    conn.request("GET", "/a/b?c=d", headers={"Host": "fast.example.com"})
    resp = conn.getresponse()
    assert resp.status == 308
    assert resp.getheader("Location") == "https://fast.example.com/a/b?c=d"
    conn.close()


def test_http2_clients_are_relayed_with_the_rewritten_authority(
        two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    out = subprocess.run(
        ["curl", "-sS", "--http2", "--cacert", fleet.ca_file, "-w", "\n%{http_version}",
         "--resolve", f"api.example.com:{fleet.https_port}:{fleet.address('w2')}",
         f"https://api.example.com:{fleet.https_port}/h2?x=1"],
        capture_output=True, text=True, timeout=20, check=True).stdout
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    assert '"host": "us-west-2-api.example.com"' in body
    assert '"path": "/h2?x=1"' in body


def test_requests_on_one_client_connection_share_one_gateway_connection(
        two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    conn = fleet.connection("e1", "api.example.com")
    try:
        echoes = [client.request(conn, f"/reuse/{i}").json() for i in range(6)]
    finally:
        conn.close()
    # A session's first request may go over its own connection; after that one is kept:
    # never a gateway connection per request.
    ids = [e["connection"] for e in echoes]
    assert len(set(ids)) <= 2, ids
    assert len(set(ids[1:])) == 1, ids
    counts = [e["request_on_connection"] for e in echoes[1:]]
    assert counts == list(range(counts[0], counts[0] + 5)), counts


def test_backend_connections_are_kept_and_reused(two_region_fleet: DeployedFleet) -> None:
    """Across client connections too (http-reuse always): no gateway handshake each."""
    fleet = two_region_fleet
    before = {fleet.fetch("w1", "fast.example.com").json()["connection"]}
    ids = {fleet.fetch("w1", "fast.example.com").json()["connection"] for _ in range(10)}
    assert len(ids | before) <= 3, ids


def test_second_run_changes_nothing_and_check_diff_touches_nothing(
        two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    from georelay_testing.fleet import recap

    again = fleet.play()
    assert again.returncode == 0, again.stdout[-3000:]
    assert all(c["changed"] == 0 for c in recap(again.stdout).values()), again.stdout[-3000:]

    configs = {p: sha(fleet.config(p)) for p in fleet.proxy_names()}
    reloads = {p: fleet.reloads(p) for p in fleet.proxy_names()}
    fleet.write(haproxy_timeout_server="42s")
    try:
        check = fleet.play("--check", "--diff")
        assert check.returncode == 0, check.stdout[-3000:]
        assert "-    timeout server 30s" in check.stdout, check.stdout[-3000:]
        assert "+    timeout server 42s" in check.stdout
        assert {p: sha(fleet.config(p)) for p in fleet.proxy_names()} == configs
        assert {p: fleet.reloads(p) for p in fleet.proxy_names()} == reloads
    finally:
        fleet.write()


def test_runtime_api_sockets(two_region_fleet: DeployedFleet) -> None:
    fleet = two_region_fleet
    root = fleet.root("e1")
    user = root / "run/haproxy/user.sock"
    assert oct(user.stat().st_mode & 0o777) == "0o660"
    assert oct(fleet.admin_socket("e1").stat().st_mode & 0o777) == "0o600"
    assert oct(fleet.master_socket("e1").stat().st_mode & 0o777) == "0o600"
    assert "be_fast_example_com" in unix_cli(user, "show stat")
    # the agent's socket is read-only: operator commands are refused
    answer = unix_cli(user, "disable server be_fast_example_com/us-east-1-fast.example.com")
    assert "Permission denied" in answer
    pem = root / "etc/haproxy/certs/georelay.pem"
    assert oct(pem.stat().st_mode & 0o777) == "0o600"

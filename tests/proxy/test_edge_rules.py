"""Edge rules on real proxies (README "Edge rules"): denied paths, Accept normalisation and the
deploy-versioned edge cache, with real haproxy 2.6, real TLS with SNI and the lab's strict
stand-in gateways, deployed by the real role through ansible-playbook.

The stand-in gateway echoes what it received, with ``path_requests``: how many requests for
that path it has had (health checks have a path of their own). A request a proxy answers
itself leaves that number where it was, so "the gateway was not contacted" is measured, not
assumed. ``?cacheable`` makes the gateway send Cache-Control, ETag and Last-Modified;
``?set_cookie=X`` a Set-Cookie.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from georelay_agent.config import parse
from georelay_agent.gather import Gatherer
from georelay_agent.health import HealthMachine
from georelay_agent.metrics import AgentMetrics
from georelay_lab import client
from georelay_model import fleet_from_hostvars
from georelay_model.errors import InventoryError
from georelay_model.facts import proxy_facts
from georelay_testing.fleet import DeployedFleet, running_fleet, unix_cli

HOST = "fast.example.com"
DENY = [r"^/\.git", r"^/\.env", r"^/wp-admin", r"\.php$", r"\.\./", r"\x00"]
SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com",
           "health_path": "/ping", "deny_paths": DENY,
           "accept_classes": [{"contains": "image/webp", "value": "image/webp,*/*"},
                              {"contains": "application/json", "value": "application/json"}],
           "edge_cache": {"max_age": 60, "header": "X-Cache"}}
PLAIN = {"hostname": "api.example.com", "apigw_domain": "{region}-api.example.com",
         "health_path": "/ping"}


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(regions={"us-east-1": ["e1", "e2"]},
                       services=[dict(SERVICE), dict(PLAIN)]) as f:
        yield f


def get(fleet: DeployedFleet, path: str, proxy: str = "e1", host: str = HOST,
        **headers: str) -> client.Reply:
    return fleet.fetch(proxy, host, path, headers={k.replace("_", "-"): v
                                                   for k, v in headers.items()})


def gateway_count(fleet: DeployedFleet, path: str, proxy: str = "e1") -> int:
    """The gateway's requests for path (as sent, undecoded) so far, asked through the proxy."""
    reply = get(fleet, "/lab/requests?path=" + quote(path, safe=""), proxy,
                Cache_Control="no-cache")
    assert reply.status == 200, reply.body
    return int(reply.json()["requests"])


# --- nothing of it without it --------------------------------------------------------------

def test_a_service_without_edge_rules_renders_none_of_them() -> None:
    from georelay_tools.scale import render

    hv = {"p1": {"georelay_zone": "example.com", "aws_region": "us-east-1",
                 "public_ip": "192.0.2.1", "georelay_tls_pem": "/x.pem",
                 "georelay_services": [dict(PLAIN)]}}
    plain = render(proxy_facts(fleet_from_hostvars(hv, rendered=True), "p1"))
    # the management listener's allow-list denies too; it is not an edge rule
    management = plain.split("frontend georelay_metrics\n")[1].split("\nbackend ")[0]
    assert "deny deny_status 403 unless { src " in management
    plain = plain.replace(management, "")
    for word in ("cache", "deny", "Accept", "map_ip", "expect-proxy", "after-response"):
        assert word not in plain
    hv["p1"]["georelay_services"] = [dict(PLAIN), dict(SERVICE)]
    rules = render(proxy_facts(fleet_from_hostvars(hv, rendered=True), "p1"))
    plain_backend = rules.split("backend be_api_example_com\n")[1].split("\nbackend ")[0]
    assert "cache" not in plain_backend and "deny" not in plain_backend
    assert "cache georelay_fast_example_com" in rules


@pytest.mark.parametrize(("service", "field"), [
    ({"deny_paths": ["(unclosed"]}, "deny_paths[0]"),
    ({"deny_paths": ["/x"], "deny_status": 200}, "deny_status"),
    ({"accept_classes": [{"contains": "image/webp"}]}, "accept_classes[0]"),
    ({"edge_cache": {"max_age": 0}}, "edge_cache.max_age"),
    ({"edge_cache": {"total_size": -1}}, "edge_cache.total_size"),
    ({"edge_cache": {"ttl": 5}}, "edge_cache.ttl"),
    ({"regional_redirects": {"suffixes": [".iso"], "origins": {"us-nowhere-9": "https://a.b"}}},
     "regional_redirects.origins.us-nowhere-9"),
    ({"regional_redirects": {"suffixes": [".iso"], "origins": {"us-east-1": "http://a.b"}}},
     "regional_redirects.origins.us-east-1"),
    ({"regional_redirects": {"suffixes": [".iso"], "origins": {"us-east-1": "https://a.b"}}},
     "georelay_ip_ranges_file"),
])
def test_bad_edge_rules_are_refused_naming_the_field(service: dict[str, object],
                                                       field: str) -> None:
    hv = {"p1": {"georelay_zone": "example.com", "aws_region": "us-east-1",
                 "public_ip": "192.0.2.1", "georelay_tls_pem": "/x.pem",
                 "georelay_services": [{**PLAIN, **service}]}}
    with pytest.raises(InventoryError) as err:
        fleet_from_hostvars(hv, rendered=True)
    assert field in str(err.value), str(err.value)


# --- denied paths --------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/.git/config", "/%2egit/config", "/.env", "/%2Eenv", "/wp-admin/setup",
    "/%77p-admin/", "/index.php", "/index%2ephp", "/a/../etc/passwd", "/a/%2e%2e/etc/passwd",
    "/a%00b"])
def test_denied_paths_are_refused_at_the_edge_raw_and_encoded(fleet: DeployedFleet,
                                                                path: str) -> None:
    reply = get(fleet, path)
    assert reply.status == 403, (path, reply.status, reply.body)
    assert reply.json() == {"message": "denied"}
    assert gateway_count(fleet, path) == 0  # never relayed


def test_other_paths_and_other_services_pass(fleet: DeployedFleet) -> None:
    assert get(fleet, "/gitlab/page").status == 200
    assert gateway_count(fleet, "/gitlab/page") == 1  # the count sees what is relayed
    reply = get(fleet, "/index.php", host="api.example.com")  # no rules there
    assert reply.status == 200 and reply.json()["path"] == "/index.php"


# --- Accept --------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "received"), [
    ("image/avif,image/webp,image/apng,*/*;q=0.8", "image/webp,*/*"),
    ("application/json, text/plain", "application/json"),
    ("text/html,application/xhtml+xml", "*/*"),
    (None, "*/*"),
])
def test_the_gateway_gets_only_normalised_accept_values(fleet: DeployedFleet, sent: str | None,
                                                        received: str) -> None:
    headers = {"Cache-Control": "no-cache"} | ({"Accept": sent} if sent else {})
    reply = get(fleet, "/accept", **{k.replace("-", "_"): v for k, v in headers.items()})
    assert reply.json()["accept"] == [received]


# --- the edge cache ------------------------------------------------------------------------

def agent_cache_counters(fleet: DeployedFleet) -> tuple[float, float]:
    """(lookups, hits) of fast.example.com's backend on e1, as the deployed agent's /metrics
    shows them: one observation by the real Gatherer with the agent's own config."""
    config = parse(json.loads((fleet.root("e1") / "etc/georelay-agent/agent.json").read_text()),
                   "agent.json")
    gatherer = Gatherer(config)
    try:
        snap = HealthMachine(config, rise=1, fall=1).apply(gatherer.observe())
    finally:
        gatherer.close()
    got: dict[str, float] = {}
    for family in text_string_to_metric_families(
            generate_latest(AgentMetrics(lambda: snap).registry).decode()):
        for sample in family.samples:
            if sample.name in ("georelay_agent_backend_cache_lookups_total",
                               "georelay_agent_backend_cache_hits_total") and \
                    sample.labels["service"] == HOST:
                got[sample.name] = sample.value
    return got["georelay_agent_backend_cache_lookups_total"], \
        got["georelay_agent_backend_cache_hits_total"]


def test_hits_and_misses_show_in_the_agents_metrics(fleet: DeployedFleet) -> None:
    lookups, hits = agent_cache_counters(fleet)
    path = "/cache/metrics?cacheable=1"
    assert [get(fleet, path).headers["x-cache"] for _ in range(3)] == ["MISS", "HIT", "HIT"]
    now_lookups, now_hits = agent_cache_counters(fleet)
    # The agent's own probe (GET /ping through the proxy, every second) is looked up too,
    # and never stored (no expiry, no validator): it adds lookups, never hits.
    assert now_hits - hits == 2 and now_lookups - lookups >= 3, (now_lookups - lookups,
                                                                 now_hits - hits)


def test_hit_after_miss_and_304_on_a_hit_without_the_gateway(fleet: DeployedFleet) -> None:
    path = "/cache/hit?cacheable=1"
    first = get(fleet, path)
    assert (first.status, first.headers["x-cache"]) == (200, "MISS")
    n = first.json()["path_requests"]
    second = get(fleet, path)
    assert (second.status, second.headers["x-cache"]) == (200, "HIT")
    assert second.body == first.body
    assert "strict-transport-security" in second.headers  # added after the store, every time
    inm = get(fleet, path, If_None_Match='"lab-v1"')
    assert inm.status == 304 and inm.body == b""
    ims = get(fleet, path, If_Modified_Since="Mon, 01 Jan 2024 00:00:00 GMT")
    assert ims.status == 304
    assert get(fleet, path, Cache_Control="no-cache").json()["path_requests"] == n + 1


def test_the_accept_class_and_a_host_port_are_parts_of_the_key_as_intended(
        fleet: DeployedFleet) -> None:
    path = "/cache/accept?cacheable=1"
    assert get(fleet, path).headers["x-cache"] == "MISS"
    assert get(fleet, path, Accept="image/webp").headers["x-cache"] == "MISS"
    assert get(fleet, path, Accept="text/html").headers["x-cache"] == "HIT"  # both */*
    assert get(fleet, path, Accept="image/webp,*/*").headers["x-cache"] == "HIT"
    # The client's Host with a port does not split entries: the key names the service.
    assert get(fleet, path, Host=f"{HOST}:443").headers["x-cache"] == "HIT"


def test_no_cache_skips_the_lookup(fleet: DeployedFleet) -> None:
    path = "/cache/bypass?cacheable=1"
    n = get(fleet, path).json()["path_requests"]
    bypass = get(fleet, path, Cache_Control="no-cache")
    assert bypass.headers["x-cache"] == "MISS" and bypass.json()["path_requests"] == n + 1


def test_private_error_and_authorized_answers_are_never_served_to_another_client(
        fleet: DeployedFleet) -> None:
    cookie = "/cache/cookie?cacheable=1&set_cookie=alice-secret"
    assert "alice-secret" in get(fleet, cookie).headers["set-cookie"]
    bob = get(fleet, cookie)
    assert bob.headers["x-cache"] == "MISS"  # a fresh answer from the gateway, not Alice's
    assert bob.json()["path_requests"] == 2
    error = "/cache/error?cacheable=1&status=503"
    assert get(fleet, error).status == 503
    assert get(fleet, error).headers["x-cache"] == "MISS"
    auth = "/cache/auth?cacheable=1"
    get(fleet, auth, Authorization="Bearer alice")
    assert get(fleet, auth).headers["x-cache"] == "MISS"  # Alice's answer was not stored
    assert get(fleet, auth, Authorization="Bearer bob").json()["path_requests"] == 3


def set_version(fleet: DeployedFleet, proxy: str, version: str) -> None:
    """What georelay.relay.edge_version does on one proxy: the file, then the running map."""
    map_file = fleet.root(proxy) / "etc/haproxy/edge-version.map"
    lines = [line for line in map_file.read_text().splitlines()
             if line.startswith("#") or not line.startswith(HOST + " ")]
    map_file.write_text("\n".join([*lines, f"{HOST} {version}"]) + "\n")
    answer = unix_cli(fleet.admin_socket(proxy), f"set map {map_file} {HOST} {version}")
    assert answer.strip() == "", answer


def test_a_version_bump_is_a_miss_on_every_proxy_and_a_reload_keeps_it(
        fleet: DeployedFleet) -> None:
    path = "/cache/version?cacheable=1"
    for proxy in ("e1", "e2"):
        get(fleet, path, proxy)
        assert get(fleet, path, proxy).headers["x-cache"] == "HIT"
    for proxy in ("e1", "e2"):
        set_version(fleet, proxy, "2")
    for proxy in ("e1", "e2"):
        assert get(fleet, path, proxy).headers["x-cache"] == "MISS", proxy
        assert get(fleet, path, proxy).headers["x-cache"] == "HIT", proxy
    # A playbook run keeps the running version, and so does the reload.
    fleet.deploy()
    assert f"{HOST} 2" in (fleet.root("e1") / "etc/haproxy/edge-version.map").read_text()
    fleet.reload("e1")
    answer = unix_cli(fleet.admin_socket("e1"),
                      f"get map {fleet.root('e1') / 'etc/haproxy/edge-version.map'} {HOST}")
    assert 'value="2"' in answer, answer
    assert get(fleet, path).headers["x-cache"] == "MISS"  # a new worker's empty cache...
    assert get(fleet, path).json()["accept"] == ["*/*"]  # ... filled under version 2
    assert get(fleet, path).headers["x-cache"] == "HIT"

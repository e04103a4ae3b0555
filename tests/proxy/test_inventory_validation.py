"""Every bad inventory is refused with a message naming the variable and the fix."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from georelay_lab import certs
from georelay_model import InventoryError, fleet_from_hostvars, load_inventory
from georelay_model.facts import proxy_facts
from georelay_model.tls import pem_problems
from georelay_testing.fleet import REPO

HostVars = dict[str, dict[str, Any]]

FLEET = {
    "georelay_zone": "example.com",
    "georelay_services": [{"hostname": "fast.example.com",
                           "apigw_domain": "{region}-fast.example.com"}],
    "georelay_tls_pem": "/etc/georelay/public.pem",
}


def good() -> HostVars:
    hosts = {"e1": ("us-east-1", "192.0.2.1"), "e2": ("us-east-1", "192.0.2.2"),
             "w1": ("eu-west-2", "198.51.100.1")}
    return {h: {**copy.deepcopy(FLEET), "aws_region": r, "public_ip": ip}
            for h, (r, ip) in hosts.items()}


def on_all(**changes: Any) -> Callable[[HostVars], None]:
    def apply(hv: HostVars) -> None:
        for host in hv.values():
            host.update(copy.deepcopy(changes))
    return apply


def on(host: str, **changes: Any) -> Callable[[HostVars], None]:
    def apply(hv: HostVars) -> None:
        hv[host].update(changes)
    return apply


def service(**fields: Any) -> Callable[[HostVars], None]:
    return on_all(georelay_services=[{"hostname": "fast.example.com",
                                      "apigw_domain": "{region}-fast.example.com", **fields}])


def without(host: str, name: str) -> Callable[[HostVars], None]:
    def apply(hv: HostVars) -> None:
        hv[host].pop(name, None)
    return apply


# (case id, change to a good inventory, variable the problem must name, words it must say)
BAD: list[tuple[str, Callable[[HostVars], None], str, str]] = [
    ("zone-missing", on_all(georelay_zone=None), "georelay_zone", "is not set"),
    ("zone-not-a-name", on_all(georelay_zone="example_com"), "georelay_zone", "not a DNS name"),
    ("services-missing", on_all(georelay_services=None), "georelay_services", "not set"),
    ("services-not-a-list", on_all(georelay_services={"hostname": "fast.example.com"}),
     "georelay_services", "must be a list"),
    ("service-not-a-mapping", on_all(georelay_services=["fast.example.com"]),
     "georelay_services", "not a mapping"),
    ("hostname-missing", service(hostname=None), "hostname", "is not set"),
    ("hostname-invalid", service(hostname="fast..example.com"), "hostname", "not a DNS name"),
    ("hostname-outside-zone", service(hostname="fast.example.org"), "hostname",
     "not inside georelay_zone"),
    ("hostname-twice", on_all(georelay_services=[
        {"hostname": "fast.example.com", "apigw_domain": "{region}-a.example.com"},
        {"hostname": "FAST.example.com", "apigw_domain": "{region}-b.example.com"}]),
     "hostname", "is also georelay_services[0]"),
    ("pattern-without-region", service(apigw_domain="us-east-1-fast.example.com"),
     "apigw_domain", "has no {region}"),
    ("pattern-unknown-placeholder", service(apigw_domain="{region}-{stage}.example.com"),
     "apigw_domain", "unknown placeholder"),
    ("pattern-missing", service(apigw_domain=None), "apigw_domain", "is not set"),
    ("two-services-one-domain", on_all(georelay_services=[
        {"hostname": "a.example.com", "apigw_domain": "{region}-x.example.com"},
        {"hostname": "b.example.com", "apigw_domain": "{region}-x.example.com"}]),
     "georelay_services", "both map to"),
    ("health-path-relative", service(health_path="ping"), "health_path", "not an absolute"),
    ("service-key-typo", service(health_pth="/ping"), "health_pth", "did you mean health_path"),
    ("region-malformed", on("e1", aws_region="us-east"), "aws_region", "not an AWS region"),
    ("region-uppercase", on("w1", aws_region="EU-WEST-2"), "aws_region", "not an AWS region"),
    ("https-port-out-of-range", on("e1", haproxy_https_port=70000), "haproxy_https_port",
     "out of range"),
    ("https-port-not-a-number", on("e1", haproxy_https_port="https"), "haproxy_https_port",
     "not a whole number"),
    ("http-port-zero", on("e2", haproxy_http_port=0), "haproxy_http_port", "out of range"),
    ("ports-equal", on("e1", haproxy_https_port=8443, haproxy_http_port=8443),
     "haproxy_http_port", "equals haproxy_https_port"),
    ("weight-too-big", on("e1", dns_weight=256), "dns_weight", "out of range"),
    ("weight-boolean", on("e1", dns_weight=True), "dns_weight", "not a whole number"),
    ("public-ip-invalid", on("e1", public_ip="192.0.2.300"), "public_ip", "not an IP address"),
    ("no-public-address", without("w1", "public_ip"), "public_ip",
     "neither public_ip nor public_dns"),
    ("both-public-addresses", on("w1", public_dns="w1.example.net"), "public_ip", "both set"),
    ("public-address-shared", on("e2", public_ip="192.0.2.1"), "public_ip", "is also e1's"),
    ("service-manager-unknown", on("e1", georelay_service_manager="upstart"),
     "georelay_service_manager", "not supported"),
    ("root-relative", on("e1", georelay_root="srv/georelay"), "georelay_root",
     "not an absolute path"),
    ("root-too-long", on("e1", georelay_root="/" + "r" * 90), "georelay_root", "too long"),
    ("bind-address-invalid", on("e1", haproxy_bind_address="eth0"), "haproxy_bind_address",
     "not an IP address"),
    ("apigw-address-without-port", on("e1", georelay_apigw_address="10.0.0.5"),
     "georelay_apigw_address", "not host:port"),
    ("apigw-address-differs-in-region", on("e2", georelay_apigw_address="10.0.0.6:443"),
     "georelay_apigw_address", "differs from other proxies"),
    ("fleet-var-differs", on("w1", georelay_zone="example.org"), "georelay_zone",
     "differs from"),
    ("misspelt-variable", on("e1", haproxy_https_prot=8443), "haproxy_https_prot",
     "did you mean haproxy_https_port"),
    ("tls-pem-relative", on_all(georelay_tls_pem="certs/public.pem"), "georelay_tls_pem",
     "not an absolute path"),
    ("backup-regions-not-a-list", on("w1", georelay_backup_regions="us-east-1"),
     "georelay_backup_regions", "not a list of region names"),
    ("backup-region-unknown", on("w1", georelay_backup_regions=["ap-south-1"]),
     "georelay_backup_regions", "not a region of this fleet"),
    ("backup-region-own", on("w1", georelay_backup_regions=["eu-west-2"]),
     "georelay_backup_regions", "the proxy's own region"),
    ("backup-region-twice", on("w1", georelay_backup_regions=["us-east-1", "us-east-1"]),
     "georelay_backup_regions", "twice"),
    ("backup-regions-differ-in-region", on("e2", georelay_backup_regions=[]),
     "georelay_backup_regions", "differs from"),
    ("backup-limit-negative", on_all(georelay_backup_limit=-1), "georelay_backup_limit",
     "out of range"),
    ("bridging-switch-not-boolean", on_all(georelay_bridging_keeps_in_dns="sometimes"),
     "georelay_bridging_keeps_in_dns", "not true or false"),
    ("onebox-without-region", service(onebox_domain="onebox-fast.example.com"),
     "onebox_domain", "has no {region}"),
    ("onebox-not-a-name", service(onebox_domain="{region}_onebox.example.com"),
     "onebox_domain", "does not give a DNS name"),
    ("onebox-unknown-placeholder", service(onebox_domain="{region}-{stage}.example.com"),
     "onebox_domain", "unknown placeholder"),
    ("onebox-is-the-regular-domain", service(onebox_domain="{REGION}-fast.example.com."),
     "onebox_domain", "is apigw_domain itself"),
    ("onebox-is-another-services-gateway", on_all(georelay_services=[
        {"hostname": "a.example.com", "apigw_domain": "{region}-a.example.com",
         "onebox_domain": "{region}-b.example.com"},
        {"hostname": "b.example.com", "apigw_domain": "{region}-b.example.com"}]),
     "onebox_domain", "is also b.example.com's gateway"),
    ("onebox-percent-over-100", service(onebox_domain="{region}-ob.example.com",
                                        onebox_percent=101), "onebox_percent", "out of range"),
    ("onebox-percent-negative", service(onebox_domain="{region}-ob.example.com",
                                        onebox_percent=-5), "onebox_percent", "out of range"),
    ("onebox-percent-fraction", service(onebox_domain="{region}-ob.example.com",
                                        onebox_percent=2.5), "onebox_percent",
     "not a whole number"),
    ("onebox-percent-boolean", service(onebox_domain="{region}-ob.example.com",
                                       onebox_percent=True), "onebox_percent",
     "not a whole number"),
    ("onebox-percent-without-domain", service(onebox_percent=5), "onebox_percent",
     "has no onebox_domain"),
    ("onebox-cookie-name", on_all(georelay_onebox_cookie="my cookie"),
     "georelay_onebox_cookie", "not a cookie name"),
    ("onebox-cookie-age", on_all(georelay_onebox_cookie_max_age=500 * 86400),
     "georelay_onebox_cookie_max_age", "out of range"),
    ("onebox-samesite", on_all(georelay_onebox_cookie_samesite="Sometimes"),
     "georelay_onebox_cookie_samesite", "not a SameSite value"),
    ("onebox-hash-input", on_all(georelay_onebox_hash=["src", "hdr(user-agent)"]),
     "georelay_onebox_hash", "not a hashing input"),
    ("onebox-switch-not-boolean", on("w1", georelay_onebox_enabled="perhaps"),
     "georelay_onebox_enabled", "not true or false"),
    ("onebox-switch-differs-in-region", on("e2", georelay_onebox_enabled=False),
     "georelay_onebox_enabled", "differs from"),
    ("metrics-listen-not-ip-port", on("e1", georelay_metrics_listen="8404"),
     "georelay_metrics_listen", "not ip:port"),
    ("metrics-listen-a-name", on("e1", georelay_metrics_listen="mgmt.example.net:8404"),
     "georelay_metrics_listen", "not ip:port"),
    ("metrics-listen-port-range", on("e1", georelay_metrics_listen="10.0.0.5:70000"),
     "georelay_metrics_listen", "out of range"),
    ("metrics-listen-public-port", on("e1", georelay_metrics_listen="10.0.0.5:443"),
     "georelay_metrics_listen", "is also a public listener"),
    ("metrics-listen-public-ip", on("e1", georelay_metrics_listen="192.0.2.1:8404"),
     "georelay_metrics_listen", "is the proxy's public_ip"),
    ("metrics-listen-agent-port", on("e1", georelay_metrics_listen="127.0.0.1:8405"),
     "georelay_metrics_listen", "is the health agent's address"),
    ("metrics-allow-not-a-list", on("e1", georelay_metrics_allow="10.0.0.0/8"),
     "georelay_metrics_allow", "must be a list"),
    ("metrics-allow-host-bits", on("e1", georelay_metrics_allow=["10.1.2.3/16"]),
     "georelay_metrics_allow[0]", "not a network"),
    ("metrics-auth-shape", on("e1", georelay_metrics_basic_auth={"user": "prom"}),
     "georelay_metrics_basic_auth", "exactly user and password"),
    ("metrics-auth-quote", on("e1", georelay_metrics_basic_auth={"user": "prom",
                                                                 "password": "it's"}),
     "georelay_metrics_basic_auth.password", "single quote"),
]


@pytest.mark.parametrize(("change", "field", "words"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_inventory_is_refused_naming_the_variable(
        change: Callable[[HostVars], None], field: str, words: str) -> None:
    hostvars = good()
    change(hostvars)
    with pytest.raises(InventoryError) as caught:
        fleet_from_hostvars(hostvars, rendered=True)
    matching = [p for p in caught.value.problems if p.field == field and words in str(p)]
    assert matching, [str(p) for p in caught.value.problems]
    assert all(p.fix for p in caught.value.problems)
    assert f"{field}: " in str(caught.value) and "Fix: " in str(caught.value)


def test_good_inventory_builds_the_fleet_with_defaults() -> None:
    fleet = fleet_from_hostvars(good(), rendered=True)
    assert [r.name for r in fleet.regions] == ["eu-west-2", "us-east-1"]
    e1 = fleet.proxy("e1")
    assert (e1.https_port, e1.http_port, e1.dns_weight, e1.service_manager, e1.root) == \
        (443, 80, 1, "systemd", "/")
    assert fleet.services[0].apigw_domain("eu-west-2") == "eu-west-2-fast.example.com"


def three_regions() -> HostVars:
    hostvars = good()
    hostvars["e3"] = {**copy.deepcopy(FLEET), "aws_region": "us-east-2",
                      "public_ip": "203.0.113.1"}
    return hostvars


def backup_order(hostvars: HostVars, host: str) -> list[tuple[str, str]]:
    facts = proxy_facts(fleet_from_hostvars(hostvars, rendered=True), host)
    return [(b["region"], b["domain"]) for b in facts["backends"][0]["backups"]]


def test_backups_default_to_the_nearest_other_regions() -> None:
    assert backup_order(three_regions(), "e1") == [
        ("us-east-2", "us-east-2-fast.example.com"), ("eu-west-2", "eu-west-2-fast.example.com")]
    assert [r for r, _ in backup_order(three_regions(), "w1")] == ["us-east-1", "us-east-2"]
    limited = three_regions()
    on_all(georelay_backup_limit=1)(limited)
    assert [r for r, _ in backup_order(limited, "e1")] == ["us-east-2"]


def test_backup_regions_from_the_inventory_in_its_order() -> None:
    hostvars = three_regions()
    on("e1", georelay_backup_regions=["eu-west-2", "us-east-2"])(hostvars)
    on("e2", georelay_backup_regions=["eu-west-2", "us-east-2"])(hostvars)
    on("e3", georelay_backup_regions=[])(hostvars)
    assert [r for r, _ in backup_order(hostvars, "e1")] == ["eu-west-2", "us-east-2"]
    assert backup_order(hostvars, "e3") == []
    facts = proxy_facts(fleet_from_hostvars(hostvars, rendered=True), "e1")
    assert facts["bridging_keeps_in_dns"] is False


def test_every_problem_is_reported_at_once() -> None:
    hostvars = good()
    on("e1", haproxy_https_port=0, dns_weight=-1)(hostvars)
    on("w1", aws_region="nowhere")(hostvars)
    with pytest.raises(InventoryError) as caught:
        fleet_from_hostvars(hostvars, rendered=True)
    fields = {p.field for p in caught.value.problems}
    assert {"haproxy_https_port", "dns_weight", "aws_region"} <= fields


def test_the_demo_inventory_is_valid_read_raw_as_the_dns_tool_reads_it() -> None:
    fleet = fleet_from_hostvars(load_inventory(REPO / "inventories/demo"))
    assert len(fleet.proxies) == 4
    assert {r.name for r in fleet.regions} == {"us-east-1", "us-west-2"}


# ---- unknown georelay_* variables ----

def problems_of(hostvars: HostVars) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        fleet_from_hostvars(hostvars, rendered=True)
    return [str(p) for p in caught.value.problems]


def test_an_unknown_georelay_variable_is_refused_without_a_close_name() -> None:
    hostvars = good()
    on("e1", georelay_statsd_listen="127.0.0.1:9100")(hostvars)
    [problem] = problems_of(hostvars)
    assert problem.startswith("e1: georelay_statsd_listen: is not a georelay variable "
                              "(set for host(s) e1). Fix: remove it;")
    assert "'The inventory contract'" in problem


def test_an_unknown_georelay_variable_set_for_all_says_so_once() -> None:
    hostvars = good()
    on_all(georelay_zzz=1)(hostvars)
    [problem] = problems_of(hostvars)
    assert problem.startswith("all: georelay_zzz: is not a georelay variable (set for every "
                              "host (group_vars/all")


def test_an_unknown_variable_of_a_family_lists_its_known_names() -> None:
    hostvars = good()
    on("w1", georelay_dns_retries=3)(hostvars)
    [problem] = problems_of(hostvars)
    assert "w1: georelay_dns_retries: is not a georelay variable" in problem
    assert "georelay_dns_ttl" in problem and "remove it" in problem


def test_a_close_misspelling_names_the_known_variable() -> None:
    hostvars = good()
    on_all(georelay_agent_probe_intervall=5)(hostvars)
    [problem] = problems_of(hostvars)
    assert "did you mean georelay_agent_probe_interval?" in problem


@pytest.mark.parametrize("name", ["georelay_agent_pip_extra_args", "haproxy_templates_dir"])
def test_a_retired_variable_is_refused_saying_what_replaces_it(name: str) -> None:
    hostvars = good()
    on_all(**{name: "x"})(hostvars)
    [problem] = problems_of(hostvars)
    assert problem.startswith(f"all: {name}: is no longer read (set for every host")
    assert "Fix: remove it: since 0.2.0" in problem


def test_other_roles_haproxy_variables_pass_unless_a_near_miss() -> None:
    hostvars = good()
    on_all(haproxy_frontend_name="web", haproxy_backend_servers=[])(hostvars)
    assert len(fleet_from_hostvars(hostvars, rendered=True).proxies) == 3


def test_georelay_dns_settings_are_read_by_the_model_with_the_contract_defaults() -> None:
    fleet = fleet_from_hostvars(good(), rendered=True)
    assert (fleet.dns.mode, fleet.dns.ttl, fleet.dns.health.path) == ("proxy", 60, "/healthz")
    hostvars = good()
    on_all(georelay_dns_health_path="/ready", georelay_dns_ttl="30")(hostvars)
    fleet = fleet_from_hostvars(hostvars, rendered=True)
    assert (fleet.dns.ttl, fleet.dns.health.path) == (30, "/ready")
    on("e2", georelay_dns_health_path="/other")(hostvars)
    assert any(p.startswith("e2: georelay_dns_health_path: differs from e1's value")
               for p in problems_of(hostvars))


@pytest.mark.parametrize("inventory", ["inventories/demo", "inventories/demo-hosts",
                                       "molecule/default/inventory"])
def test_the_projects_own_inventories_set_no_unknown_variable(inventory: str) -> None:
    fleet = fleet_from_hostvars(load_inventory(REPO / inventory))
    assert fleet.proxies


# ---- the public TLS bundle ----

def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.fixture(scope="module")
def ca() -> certs.Authority:
    return certs.new_authority("test CA")


def test_pem_covering_every_name_passes(ca: certs.Authority, tmp_path: Path) -> None:
    pem = write(tmp_path / "ok.pem", certs.issue(ca, ["*.example.com"]))
    assert pem_problems(pem, ["fast.example.com", "api.example.com"]) == []


@pytest.mark.parametrize(("make", "words"), [
    (lambda ca: certs.issue(ca, ["fast.example.com"]), "does not cover api.example.com"),
    (lambda ca: certs.issue(ca, ["*.example.com"], not_before=dt.datetime(2020, 1, 1,
                                                                          tzinfo=dt.UTC)),
     "expired on"),
    (lambda ca: certs.issue(ca, ["*.example.com"]).split(b"-----BEGIN PRIVATE KEY")[0],
     "no unencrypted private key"),
    (lambda ca: certs.issue(ca, ["*.example.com"]).split(b"-----BEGIN PRIVATE KEY")[0] +
     ec.generate_private_key(ec.SECP256R1()).private_bytes(
         serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
         serialization.NoEncryption()), "does not belong to the first certificate"),
    (lambda ca: b"not a pem", "holds no PEM certificate"),
], ids=["not-covering", "expired", "no-key", "wrong-key", "garbage"])
def test_bad_pem_is_refused(ca: certs.Authority, tmp_path: Path,
                            make: Callable[[certs.Authority], bytes], words: str) -> None:
    pem = write(tmp_path / "bad.pem", make(ca))
    problems = pem_problems(pem, ["fast.example.com", "api.example.com"])
    assert any(words in p.message and p.field == "georelay_tls_pem" for p in problems), \
        [str(p) for p in problems]


def test_missing_pem_is_refused(tmp_path: Path) -> None:
    problems = pem_problems(str(tmp_path / "none.pem"), ["fast.example.com"])
    assert [p.field for p in problems] == ["georelay_tls_pem"]
    assert "does not exist" in problems[0].message


def test_onebox_of_a_service_and_its_per_region_switch() -> None:
    hv = good()
    service(onebox_domain="{region}-onebox-fast.example.com", onebox_percent=20)(hv)
    on("w1", georelay_onebox_enabled=False)(hv)
    on_all(georelay_onebox_hash="src+header:X-User")(hv)
    fleet = fleet_from_hostvars(hv)
    svc = fleet.services[0]
    assert (svc.onebox_domain_pattern, svc.onebox_percent) == (
        "{region}-onebox-fast.example.com", 20)
    assert svc.onebox_domain("eu-west-2") == "eu-west-2-onebox-fast.example.com"  # pure
    assert fleet.onebox_domain(svc, "us-east-1") == "us-east-1-onebox-fast.example.com"
    assert fleet.onebox_domain(svc, "eu-west-2") is None  # switched off there
    assert fleet.onebox.hash == ("src", "header:x-user")
    assert (fleet.onebox.cookie, fleet.onebox.max_age, fleet.onebox.samesite) == (
        "georelay_partition", 30 * 86400, "Lax")
    e1 = proxy_facts(fleet, "e1")["backends"][0]["onebox"]
    assert e1["percent"] == 20
    assert e1["backend"]["domain"] == "us-east-1-onebox-fast.example.com"
    # eu-west-2 has no one-box: not a backup of us-east-1's, and none of its own
    assert [k["region"] for k in e1["backend"]["backups"]] == []
    assert proxy_facts(fleet, "w1")["backends"][0]["onebox"] == {"percent": 20,
                                                                 "backend": None}


def test_a_service_without_onebox_has_none() -> None:
    fleet = fleet_from_hostvars(good())
    assert fleet.services[0].onebox_domain("us-east-1") is None
    assert fleet.onebox_domain(fleet.services[0], "us-east-1") is None
    facts = proxy_facts(fleet, "e1")
    assert facts["backends"][0]["onebox"] is None
    assert facts["onebox"]["services"] == []

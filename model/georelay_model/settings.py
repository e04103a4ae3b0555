"""The fleet-wide settings: the one reader of the variables set once for the whole fleet.

``georelay_zone``, ``georelay_services``, ``georelay_tls_pem``, ``georelay_backend_ca``,
``georelay_region_latency`` (checked by latency.py), the one-box cookie and hashing
(``georelay_onebox_*`` but the per-region switch) and every ``georelay_dns_*`` variable:
each must have the same value on every proxy (set it in ``group_vars/all``). They are read
here once, validated, with the contract's defaults (contract.py), for the role (load.py
builds the fleet with them) and for georelay-dns alike.
"""

from __future__ import annotations

import difflib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from georelay_model.contract import SERVICE_KEYS, VARS
from georelay_model.edge import EdgeSettings, check_redirect_source, read_edge_settings, read_rules
from georelay_model.fleet import DirectTarget, DnsSettings, HealthSettings, OneboxSettings, Service
from georelay_model.latency import Latency, read_latency
from georelay_model.reader import REGION_RE, Reader, default_str, is_dns_name

# Fleet-wide variables of the inventory (georelay_dns_force is a playbook option).
FLEET_WIDE: tuple[str, ...] = (
    "georelay_zone", "georelay_services", "georelay_tls_pem", "georelay_backend_ca",
    "georelay_region_latency", "georelay_region_latency_source",
    "georelay_onebox_cookie", "georelay_onebox_cookie_max_age",
    "georelay_onebox_cookie_samesite", "georelay_onebox_hash",
    "georelay_ip_ranges_file", "georelay_proxy_protocol", "georelay_proxy_protocol_from",
    *(v.name for v in VARS if v.name.startswith("georelay_dns_")
      and v.name != "georelay_dns_force"))
DNS_MODES = ("proxy", "direct")
# Regions Route53 health checkers run from (HealthCheckConfig.Regions).
CHECKER_REGIONS = ("us-east-1", "us-west-1", "us-west-2", "eu-west-1", "ap-southeast-1",
                   "ap-southeast-2", "ap-northeast-1", "sa-east-1")
OWNER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
ZONE_ID_RE = re.compile(r"^Z[A-Z0-9]{1,31}$")
PLACEHOLDERS = {"{region}", "{label}", "{parent}", "{hostname}"}
COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SAMESITE = ("Lax", "Strict", "None")
MAX_COOKIE_AGE = 400 * 86400  # what browsers keep at most (RFC 6265bis)


@dataclass(frozen=True)
class FleetSettings:
    zone: str
    services: tuple[Service, ...]
    tls_pem: str | None
    backend_ca: str | None
    dns: DnsSettings
    latency: Latency
    onebox: OneboxSettings
    edge: EdgeSettings


def read_settings(r: Reader, hostvars: Mapping[str, Mapping[str, Any]]) -> FleetSettings:
    """Read the fleet-wide settings of ``hostvars`` (the proxies, or every host when there
    are none: direct mode). Problems go to ``r``; what is wrong takes its default."""
    raw = _agreed(r, hostvars)
    zone = r.dns_name("all", "georelay_zone", raw.get("georelay_zone"))
    services = read_services(r, raw.get("georelay_services"), zone)
    tls_pem = _path(r, "georelay_tls_pem", raw.get("georelay_tls_pem"), required=True)
    backend_ca = _path(r, "georelay_backend_ca", raw.get("georelay_backend_ca"),
                       required=False)
    edge = read_edge_settings(r, raw)
    check_redirect_source(r, services, edge)
    return FleetSettings(zone, services, tls_pem, backend_ca, _dns(r, raw, services),
                         read_latency(r, raw.get("georelay_region_latency"),
                                      raw.get("georelay_region_latency_source")),
                         _onebox(r, raw), edge)


def _agreed(r: Reader, hostvars: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One value per fleet-wide variable; a host that differs from the first is a problem."""
    out: dict[str, Any] = {}
    hosts = sorted(hostvars)
    if not hosts:
        return out
    first = hosts[0]
    for name in FLEET_WIDE:
        out[name] = hostvars[first].get(name)
        for host in hosts[1:]:
            if hostvars[host].get(name) != out[name]:
                r.problem(host, name, f"differs from {first}'s value",
                          "set fleet-wide variables once, in group_vars/all")
                break
    return out


def read_services(r: Reader, raw: object, zone: str) -> tuple[Service, ...]:
    where = "all"
    if raw is None or raw == []:
        r.problem(where, "georelay_services", "is not set or empty",
                  "list at least one service: [{hostname: fast.example.com, "
                  "apigw_domain: '{region}-fast.example.com'}]")
        return ()
    if not isinstance(raw, list):
        r.problem(where, "georelay_services", f"must be a list, not {type(raw).__name__}",
                  "write it as a YAML list of mappings")
        return ()
    services: list[Service] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw):
        at = f"all.georelay_services[{i}]"
        if not isinstance(item, Mapping):
            r.problem(at, "georelay_services", "is not a mapping",
                      "give hostname and apigw_domain keys")
            continue
        for key in sorted(set(item) - SERVICE_KEYS):
            close = difflib.get_close_matches(key, SERVICE_KEYS, n=1)
            hint = f"did you mean {close[0]}?" if close else \
                f"use only {', '.join(sorted(SERVICE_KEYS))}"
            r.problem(at, key, "is not a service key", hint)
        hostname = r.dns_name(at, "hostname", item.get("hostname"))
        if hostname and zone and not (hostname == zone or hostname.endswith("." + zone)):
            r.problem(at, "hostname", f"{hostname} is not inside georelay_zone {zone}",
                      "use a name in the hosted zone or change georelay_zone")
        if hostname in seen:
            r.problem(at, "hostname", f"{hostname} is also georelay_services[{seen[hostname]}]",
                      "list each public hostname once")
        elif hostname:
            seen[hostname] = i
        pattern = _apigw_pattern(r, at, item.get("apigw_domain"), hostname)
        health = r.string(at, "health_path", item.get("health_path"), required=False)
        if health is not None and not _is_url_path(health):
            r.problem(at, "health_path", f"{health!r} is not an absolute URL path",
                      "start it with / and leave out spaces and quotes, e.g. /ping")
            health = None
        onebox = _onebox_pattern(r, at, item.get("onebox_domain"), hostname, pattern)
        percent = r.integer(at, "onebox_percent", item.get("onebox_percent"), 0, 0, 100,
                            "give the share of users in the one-box as a whole number "
                            "from 0 to 100, e.g. onebox_percent: 5")
        if item.get("onebox_percent") is not None and item.get("onebox_domain") is None:
            r.problem(at, "onebox_percent", "is set but the service has no onebox_domain",
                      "add onebox_domain: '{region}-onebox-...' or remove onebox_percent")
        if hostname and pattern:
            services.append(Service(hostname, pattern, health, onebox, percent,
                                    read_rules(r, at, item)))
    return tuple(services)


def _onebox_pattern(r: Reader, at: str, raw: object, hostname: str,
                    apigw: str | None) -> str | None:
    """onebox_domain: a pattern like apigw_domain's, naming another custom domain."""
    field = "onebox_domain"
    pattern = r.string(at, field, raw, required=False)
    if pattern is None:
        return None
    pattern = pattern.lower().rstrip(".")
    others = set(re.findall(r"\{[^}]*\}", pattern)) - {"{region}"}
    sample = pattern.replace("{region}", "us-east-1")
    if "{region}" not in pattern:
        r.problem(at, field, f"{pattern!r} has no {{region}}", "the one-box is a custom "
                  "domain per region: write e.g. '{region}-onebox-fast.example.com'")
    elif others:
        r.problem(at, field, f"{pattern!r} has unknown placeholder(s) "
                  f"{', '.join(sorted(others))}", "use only {region}")
    elif not is_dns_name(sample):
        r.problem(at, field, f"{pattern!r} does not give a DNS name",
                  "write a full domain such as '{region}-onebox-fast.example.com'")
    elif pattern == apigw or sample == hostname:
        what = "apigw_domain" if pattern == apigw else "the public hostname"
        r.problem(at, field, f"{pattern!r} is {what} itself",
                  "give the one-box its own custom domain in every region, e.g. "
                  "'{region}-onebox-fast.example.com'")
    else:
        return pattern
    return None


def _onebox(r: Reader, raw: Mapping[str, Any]) -> OneboxSettings:
    """The one-box cookie and what buckets a user without one (georelay_onebox_*)."""
    d = OneboxSettings()
    cookie = raw.get("georelay_onebox_cookie") or d.cookie
    if not isinstance(cookie, str) or not COOKIE_RE.match(cookie):
        r.problem("all", "georelay_onebox_cookie", f"{cookie!r} is not a cookie name",
                  "use 1-64 letters, digits, '_' or '-', e.g. georelay_partition")
        cookie = d.cookie
    max_age = r.integer("all", "georelay_onebox_cookie_max_age",
                        raw.get("georelay_onebox_cookie_max_age"), None, 60, MAX_COOKIE_AGE,
                        f"give seconds from 60 to {MAX_COOKIE_AGE} (400 days, what "
                        "browsers keep at most)")
    samesite = raw.get("georelay_onebox_cookie_samesite") or d.samesite
    if not isinstance(samesite, str) or samesite.capitalize() not in SAMESITE:
        r.problem("all", "georelay_onebox_cookie_samesite", f"{samesite!r} is not a "
                  "SameSite value", "use Lax (the default), Strict or None")
        samesite = d.samesite
    return OneboxSettings(cookie, max_age, samesite.capitalize(),
                          _onebox_hash(r, raw.get("georelay_onebox_hash")))


def _onebox_hash(r: Reader, value: object) -> tuple[str, ...]:
    field = "georelay_onebox_hash"
    if value is None or value == []:
        return OneboxSettings().hash
    items = value.split("+") if isinstance(value, str) else value
    fix = "list one or more of src, user-agent and header:NAME, e.g. [src, user-agent]"
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        r.problem("all", field, f"{value!r} is not a list of hashing inputs", fix)
        return OneboxSettings().hash
    out: list[str] = []
    for item in (i.strip().lower() for i in items):
        name = item.removeprefix("header:")
        if item in ("src", "user-agent") or (item.startswith("header:")
                                              and HEADER_RE.match(name)):
            if item not in out:
                out.append(item)
        else:
            r.problem("all", field, f"{item!r} is not a hashing input", fix)
            return OneboxSettings().hash
    return tuple(out)


def _is_url_path(path: object) -> bool:
    return isinstance(path, str) and path.startswith("/") and len(path) <= 255 and not any(
        c in path for c in " \t\r\n\"'")


def _apigw_pattern(r: Reader, at: str, raw: object, hostname: str) -> str | None:
    pattern = r.string(at, "apigw_domain", raw, required=True)
    if pattern is None:
        return None
    pattern = pattern.lower().rstrip(".")
    others = set(re.findall(r"\{[^}]*\}", pattern)) - {"{region}"}
    if "{region}" not in pattern:
        r.problem(at, "apigw_domain", f"{pattern!r} has no {{region}}",
                  "API Gateway custom domains are per region: write e.g. "
                  "'{region}-fast.example.com'")
        return None
    if others:
        r.problem(at, "apigw_domain", f"{pattern!r} has unknown placeholder(s) "
                  f"{', '.join(sorted(others))}", "use only {region}")
        return None
    sample = pattern.replace("{region}", "us-east-1")
    if not is_dns_name(sample):
        r.problem(at, "apigw_domain", f"{pattern!r} does not give a DNS name",
                  "write a full domain such as '{region}-fast.example.com'")
        return None
    if sample == hostname:
        r.problem(at, "apigw_domain", "gives the public hostname itself",
                  "each region needs its own custom domain, distinct from the public name")
        return None
    return pattern


def _path(r: Reader, field: str, raw: object, *, required: bool) -> str | None:
    if not r.rendered:
        return raw if isinstance(raw, str) else None  # only the role uses file paths
    value = r.string("all", field, raw, required=required)
    if value is not None and not value.startswith("/"):
        r.problem("all", field, f"{value!r} is not an absolute path",
                  "give the full path, e.g. {{ inventory_dir }}/files/tls.pem")
        return None
    return posixpath.normpath(value) if value else value


def _dns(r: Reader, raw: Mapping[str, Any], services: tuple[Service, ...]) -> DnsSettings:
    defaults = DnsSettings()
    mode = r.string("all", "georelay_dns_mode", raw.get("georelay_dns_mode"),
                    required=False) or defaults.mode
    if mode not in DNS_MODES:
        r.problem("all", "georelay_dns_mode", f"{mode!r} is not a mode",
                  "use proxy (the default) or direct")
        mode = defaults.mode
    owner = raw.get("georelay_dns_owner") or defaults.owner
    if not isinstance(owner, str) or not OWNER_RE.match(owner):
        r.problem("all", "georelay_dns_owner", f"{owner!r} is not an owner id",
                  "use 1-24 lowercase letters, digits or '-', e.g. georelay-prod")
        owner = defaults.owner
    zone_id = raw.get("georelay_dns_zone_id")
    if zone_id is not None:
        zone_id = str(zone_id).removeprefix("/hostedzone/")
        if not ZONE_ID_RE.match(zone_id):
            r.problem("all", "georelay_dns_zone_id", f"{zone_id!r} is not a zone id",
                      "copy the Id of the hosted zone, e.g. Z0123456789ABCDEFGHIJ, or leave "
                      "it unset to find the zone by georelay_zone")
            zone_id = None
    ttl = r.integer("all", "georelay_dns_ttl", raw.get("georelay_dns_ttl"), None, 1, 60,
                    "use 1-60 seconds: a longer TTL delays failover by as long")
    pattern = raw.get("georelay_dns_regional_name") or defaults.regional_name
    direct: dict[tuple[str, str], DirectTarget] = {}
    targets = raw.get("georelay_dns_direct_targets")
    if mode == "direct":
        direct = _direct_targets(r, targets, services)
    elif targets is not None:
        r.problem("all", "georelay_dns_direct_targets", "is set but georelay_dns_mode is "
                  "proxy", "set georelay_dns_mode: direct, or remove the targets")
    return DnsSettings(mode=mode, owner=owner, zone_id=zone_id, ttl=ttl,
                       regional_name=str(pattern), health=_health(r, raw), direct=direct)


def _health(r: Reader, raw: Mapping[str, Any]) -> HealthSettings:
    interval = r.integer("all", "georelay_dns_health_interval",
                         raw.get("georelay_dns_health_interval"), None, 10, 30,
                         "Route53 accepts 10 (fast) or 30", allowed=(10, 30))
    threshold = r.integer("all", "georelay_dns_health_threshold",
                          raw.get("georelay_dns_health_threshold"), None, 1, 10,
                          "use 1-10 consecutive failures")
    path = raw.get("georelay_dns_health_path") or default_str("georelay_dns_health_path")
    if not _is_url_path(path):
        r.problem("all", "georelay_dns_health_path", f"{path!r} is not a URL path",
                  "start it with / and leave out spaces and quotes, e.g. /healthz")
        path = default_str("georelay_dns_health_path")
    search = raw.get("georelay_dns_health_search")
    if search is not None and (not isinstance(search, str) or not 1 <= len(search) <= 255):
        r.problem("all", "georelay_dns_health_search", f"{search!r} is not usable",
                  "give a string of 1-255 characters, or leave it unset")
        search = None
    return HealthSettings(str(path), interval, threshold,
                          _checker_regions(r, raw.get("georelay_dns_health_regions")), search)


def _checker_regions(r: Reader, value: object) -> tuple[str, ...]:
    field = "georelay_dns_health_regions"
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        r.problem("all", field, "must be a list of regions",
                  f"list at least 3 of {', '.join(CHECKER_REGIONS)}")
        return ()
    bad = sorted(set(value) - set(CHECKER_REGIONS))
    if bad:
        r.problem("all", field, f"{', '.join(bad)} is not a Route53 checker region",
                  f"choose from {', '.join(CHECKER_REGIONS)}")
        return ()
    if len(set(value)) < 3:
        r.problem("all", field, f"lists {len(set(value))} region(s); Route53 requires at "
                  "least 3", "list 3 or more checker regions, or leave it unset for the default")
        return ()
    return tuple(sorted(set(value)))


def check_regional_names(r: Reader, s: DnsSettings, zone: str,
                         services: tuple[Service, ...], regions: list[str]) -> None:
    """Proxy mode: georelay_dns_regional_name gives every service and region its own name
    in the zone."""
    field = "georelay_dns_regional_name"
    found = set(re.findall(r"\{[^}]*\}", s.regional_name))
    if found - PLACEHOLDERS:
        r.problem("all", field, f"unknown placeholder(s) "
                  f"{', '.join(sorted(found - PLACEHOLDERS))}",
                  "use {region}, {label}, {parent} and {hostname} only")
        return
    if "{region}" not in found:
        r.problem("all", field, "has no {region}",
                  "each region needs its own weighted set: include {region}")
        return
    seen: set[str] = set()
    public = {svc.hostname for svc in services}
    for svc in services:
        for region in regions:
            name = s.regional(svc.hostname, region)
            if not is_dns_name(name) or not name.endswith("." + zone):
                r.problem("all", field, f"gives {name!r} for {svc.hostname} in {region}, "
                          f"not a name in {zone}",
                          "keep {parent} (or the zone) at the end of the pattern")
                return
            if name in public or name in seen:
                r.problem("all", field, f"gives {name} twice (or a public hostname)",
                          "include {label} or {hostname} so every service and region gets "
                          "its own name")
                return
            seen.add(name)


def _direct_targets(r: Reader, value: object, services: tuple[Service, ...]
                    ) -> dict[tuple[str, str], DirectTarget]:
    field = "georelay_dns_direct_targets"
    example = ("{us-east-1: {fast.example.com: {domain_name: d-abc.execute-api.us-east-1."
               "amazonaws.com, hosted_zone_id: Z1UJRXOUMOOFQ8}}}")
    if not isinstance(value, Mapping) or not value:
        r.problem("all", field, "is not set (direct mode needs it)",
                  f"give each region's API Gateway regional domain per service: {example}")
        return {}
    out: dict[tuple[str, str], DirectTarget] = {}
    for region, per_service in sorted(value.items()):
        at = f"all.{field}.{region}"
        if not isinstance(region, str) or not REGION_RE.match(region):
            r.problem(at, field, f"{region!r} is not an AWS region name",
                      "key the mapping by region code, e.g. us-east-1")
            continue
        if not isinstance(per_service, Mapping):
            r.problem(at, field, "is not a mapping", example)
            continue
        for svc in services:
            target = per_service.get(svc.hostname)
            if not isinstance(target, Mapping):
                r.problem(at, svc.hostname, "has no target for this service",
                          "add {domain_name: <RegionalDomainName>, hosted_zone_id: "
                          "<RegionalHostedZoneId>} from aws apigateway get-domain-name")
                continue
            domain = str(target.get("domain_name", "")).lower().rstrip(".")
            zone_id = str(target.get("hosted_zone_id", ""))
            if not is_dns_name(domain):
                r.problem(at, f"{svc.hostname}.domain_name", f"{domain!r} is not a DNS name",
                          "copy RegionalDomainName of the custom domain")
            elif not ZONE_ID_RE.match(zone_id):
                r.problem(at, f"{svc.hostname}.hosted_zone_id", f"{zone_id!r} is not a zone "
                          "id", "copy RegionalHostedZoneId of the custom domain")
            else:
                out[(region, svc.hostname)] = DirectTarget(domain, zone_id)
        for extra in sorted(set(per_service) - {s.hostname for s in services}):
            r.problem(at, str(extra), "is not a service in georelay_services",
                      "remove it or add the service")
    return out

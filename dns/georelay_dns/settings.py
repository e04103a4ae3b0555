"""The inventory as georelay-dns needs it: the fleet (from the shared model) plus DNS settings.

Every ``georelay_dns_*`` variable is fleet-wide (set it in ``group_vars/all``); it is read
here, validated, and reported with the same :class:`Problem` type as the model's, so one
run lists every problem of the inventory at once and nothing is touched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from georelay_model import Fleet, InventoryError, Problem, Region, Service, fleet_from_hostvars
from georelay_model.contract import VARS
from georelay_model.load import REGION_RE, Reader, is_dns_name, read_services

MODES = ("proxy", "direct")
# Regions Route53 health checkers run from (HealthCheckConfig.Regions).
CHECKER_REGIONS = ("us-east-1", "us-west-1", "us-west-2", "eu-west-1", "ap-southeast-1",
                   "ap-southeast-2", "ap-northeast-1", "sa-east-1")
DEFAULTS: dict[str, Any] = {v.name: v.default for v in VARS if v.name.startswith("georelay_dns_")
                            and v.name not in ("georelay_dns_cli", "georelay_dns_force")}
OWNER_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")
ZONE_ID_RE = re.compile(r"^Z[A-Z0-9]{1,31}$")
PLACEHOLDERS = {"{region}", "{label}", "{parent}", "{hostname}"}


@dataclass(frozen=True)
class HealthSettings:
    path: str = "/healthz"
    interval: int = 10  # RequestInterval, seconds: 10 (fast) or 30
    threshold: int = 2  # FailureThreshold
    regions: tuple[str, ...] = ()  # () = Route53's default checker regions
    search: str | None = None  # HTTPS_STR_MATCH when set


@dataclass(frozen=True)
class DirectTarget:
    """An API Gateway regional custom domain: what a direct-mode latency alias points at."""

    domain_name: str  # RegionalDomainName, e.g. d-abc123.execute-api.us-east-1.amazonaws.com
    hosted_zone_id: str  # RegionalHostedZoneId, e.g. Z1UJRXOUMOOFQ8


@dataclass(frozen=True)
class DnsSettings:
    mode: str = "proxy"
    owner: str = "georelay"
    zone_id: str | None = None
    ttl: int = 60
    regional_name: str = "proxy-{region}-{label}.{parent}"
    health: HealthSettings = field(default_factory=HealthSettings)
    direct: Mapping[tuple[str, str], DirectTarget] = field(default_factory=dict)

    def regional(self, hostname: str, region: str) -> str:
        label, _, parent = hostname.partition(".")
        return (self.regional_name.replace("{region}", region).replace("{label}", label)
                .replace("{parent}", parent).replace("{hostname}", hostname))


@dataclass(frozen=True)
class Inputs:
    """Everything the desired tree is built from."""

    fleet: Fleet
    settings: DnsSettings


def load_inputs(hostvars: Mapping[str, Mapping[str, Any]]) -> Inputs:
    """Validate hostvars into fleet + DNS settings, or raise InventoryError (every problem)."""
    problems: list[Problem] = []
    raw, where_problems = _fleet_wide(hostvars)
    problems += where_problems
    mode = raw.get("georelay_dns_mode") or "proxy"
    if mode not in MODES:
        problems.append(Problem("all", "georelay_dns_mode", f"{mode!r} is not a mode",
                                "use proxy (the default) or direct"))
        raise InventoryError(problems)
    fleet: Fleet | None = None
    if mode == "proxy":
        try:
            fleet = fleet_from_hostvars(hostvars)
        except InventoryError as e:
            problems += e.problems
    else:
        fleet, fleet_problems = _direct_fleet(raw)
        problems += fleet_problems
    settings, setting_problems = _settings(raw, mode, fleet)
    problems += setting_problems
    if problems or fleet is None:
        raise InventoryError(problems)
    return Inputs(fleet, settings)


def _fleet_wide(hostvars: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, Any],
                                                                    list[Problem]]:
    """georelay_zone/services and georelay_dns_* must agree on every host that sets them."""
    names = ("georelay_zone", "georelay_services", *DEFAULTS)
    proxies = {h: v for h, v in sorted(hostvars.items()) if "aws_region" in v}
    hosts = proxies or dict(sorted(hostvars.items()))
    out: dict[str, Any] = {}
    problems: list[Problem] = []
    for name in names:
        seen: dict[str, Any] = {h: hv.get(name) for h, hv in hosts.items() if name in hv}
        if not seen:
            continue
        first_host, first = next(iter(seen.items()))
        out[name] = first
        for host, value in seen.items():
            if value != first:
                problems.append(Problem(host, name, f"differs from {first_host}'s value",
                                        "set georelay-dns variables once, in group_vars/all"))
                break
    return out, problems


def _direct_fleet(raw: Mapping[str, Any]) -> tuple[Fleet | None, list[Problem]]:
    """Direct mode has no proxies: zone and services (the model's rules), regions from
    georelay_dns_direct_targets."""
    r = Reader(rendered=False)
    zone = r.dns_name("all", "georelay_zone", raw.get("georelay_zone"))
    services = read_services(r, raw.get("georelay_services"), zone)
    targets = raw.get("georelay_dns_direct_targets")
    regions: list[Region] = []
    if isinstance(targets, Mapping):
        regions = [Region(str(name), ()) for name in sorted(targets)]
    if r.problems:
        return None, r.problems
    return Fleet(zone=zone, services=services, regions=tuple(regions)), []


def _int(raw: Mapping[str, Any], name: str, lo: int, hi: int, fix: str,
         problems: list[Problem], allowed: tuple[int, ...] = ()) -> int:
    value = raw.get(name, DEFAULTS[name])
    if value is None:
        return int(DEFAULTS[name])
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi or (
            allowed and value not in allowed):
        problems.append(Problem("all", name, f"{value!r} is not allowed", fix))
        return int(DEFAULTS[name])
    return value


def _settings(raw: Mapping[str, Any], mode: str, fleet: Fleet | None) -> tuple[DnsSettings,
                                                                               list[Problem]]:
    p: list[Problem] = []
    owner = raw.get("georelay_dns_owner") or DEFAULTS["georelay_dns_owner"]
    if not isinstance(owner, str) or not OWNER_RE.match(owner):
        p.append(Problem("all", "georelay_dns_owner", f"{owner!r} is not an owner id",
                         "use 1-24 lowercase letters, digits or '-', e.g. georelay-prod"))
        owner = "georelay"
    zone_id = raw.get("georelay_dns_zone_id")
    if zone_id is not None:
        zone_id = str(zone_id).removeprefix("/hostedzone/")
        if not ZONE_ID_RE.match(zone_id):
            p.append(Problem("all", "georelay_dns_zone_id", f"{zone_id!r} is not a zone id",
                             "copy the Id of the hosted zone, e.g. Z0123456789ABCDEFGHIJ, or "
                             "leave it unset to find the zone by georelay_zone"))
            zone_id = None
    ttl = _int(raw, "georelay_dns_ttl", 1, 60,
               "use 1-60 seconds: a longer TTL delays failover by as long", p)
    interval = _int(raw, "georelay_dns_health_interval", 10, 30,
                    "Route53 accepts 10 (fast) or 30", p, allowed=(10, 30))
    threshold = _int(raw, "georelay_dns_health_threshold", 1, 10,
                     "use 1-10 consecutive failures", p)
    path = raw.get("georelay_dns_health_path") or DEFAULTS["georelay_dns_health_path"]
    if not isinstance(path, str) or not path.startswith("/") or len(path) > 255 or any(
            c in path for c in " \t\r\n\"'"):
        p.append(Problem("all", "georelay_dns_health_path", f"{path!r} is not a URL path",
                         "start it with / and leave out spaces and quotes, e.g. /healthz"))
        path = "/healthz"
    search = raw.get("georelay_dns_health_search")
    if search is not None and (not isinstance(search, str) or not 1 <= len(search) <= 255):
        p.append(Problem("all", "georelay_dns_health_search", f"{search!r} is not usable",
                         "give a string of 1-255 characters, or leave it unset"))
        search = None
    regions = _checker_regions(raw.get("georelay_dns_health_regions"), p)
    pattern = raw.get("georelay_dns_regional_name") or DEFAULTS["georelay_dns_regional_name"]
    settings = DnsSettings(mode=mode, owner=owner, zone_id=zone_id, ttl=ttl,
                           regional_name=str(pattern),
                           health=HealthSettings(path, interval, threshold, regions, search))
    if mode == "proxy" and fleet is not None:
        _check_regional(settings, fleet, p)
    if mode == "direct":
        direct = _direct_targets(raw.get("georelay_dns_direct_targets"),
                                 fleet.services if fleet else (), p)
        settings = DnsSettings(**{**settings.__dict__, "direct": direct})
    elif raw.get("georelay_dns_direct_targets") is not None:
        p.append(Problem("all", "georelay_dns_direct_targets", "is set but georelay_dns_mode "
                         "is proxy", "set georelay_dns_mode: direct, or remove the targets"))
    return settings, p


def _checker_regions(value: object, p: list[Problem]) -> tuple[str, ...]:
    if value is None or value == []:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        p.append(Problem("all", "georelay_dns_health_regions", "must be a list of regions",
                         f"list at least 3 of {', '.join(CHECKER_REGIONS)}"))
        return ()
    bad = sorted(set(value) - set(CHECKER_REGIONS))
    if bad:
        p.append(Problem("all", "georelay_dns_health_regions",
                         f"{', '.join(bad)} is not a Route53 checker region",
                         f"choose from {', '.join(CHECKER_REGIONS)}"))
        return ()
    if len(set(value)) < 3:
        p.append(Problem("all", "georelay_dns_health_regions",
                         f"lists {len(set(value))} region(s); Route53 requires at least 3",
                         "list 3 or more checker regions, or leave it unset for the default"))
        return ()
    return tuple(sorted(set(value)))


def _check_regional(s: DnsSettings, fleet: Fleet, p: list[Problem]) -> None:
    field_ = "georelay_dns_regional_name"
    found = set(re.findall(r"\{[^}]*\}", s.regional_name))
    if found - PLACEHOLDERS:
        p.append(Problem("all", field_, f"unknown placeholder(s) "
                         f"{', '.join(sorted(found - PLACEHOLDERS))}",
                         "use {region}, {label}, {parent} and {hostname} only"))
        return
    if "{region}" not in found:
        p.append(Problem("all", field_, "has no {region}",
                         "each region needs its own weighted set: include {region}"))
        return
    seen: dict[str, str] = {}
    public = {svc.hostname for svc in fleet.services}
    for svc in fleet.services:
        for region in fleet.regions:
            name = s.regional(svc.hostname, region.name)
            if not is_dns_name(name) or not name.endswith("." + fleet.zone):
                p.append(Problem("all", field_, f"gives {name!r} for {svc.hostname} in "
                                 f"{region.name}, not a name in {fleet.zone}",
                                 "keep {parent} (or the zone) at the end of the pattern"))
                return
            if name in public or name in seen:
                p.append(Problem("all", field_, f"gives {name} twice (or a public hostname)",
                                 "include {label} or {hostname} so every service and region "
                                 "gets its own name"))
                return
            seen[name] = svc.hostname


def _direct_targets(value: object, services: tuple[Service, ...],
                    p: list[Problem]) -> dict[tuple[str, str], DirectTarget]:
    field_ = "georelay_dns_direct_targets"
    example = ("{us-east-1: {fast.example.com: {domain_name: d-abc.execute-api.us-east-1."
               "amazonaws.com, hosted_zone_id: Z1UJRXOUMOOFQ8}}}")
    if not isinstance(value, Mapping) or not value:
        p.append(Problem("all", field_, "is not set (direct mode needs it)",
                         f"give each region's API Gateway regional domain per service: {example}"))
        return {}
    out: dict[tuple[str, str], DirectTarget] = {}
    for region, per_service in sorted(value.items()):
        at = f"all.{field_}.{region}"
        if not isinstance(region, str) or not REGION_RE.match(region):
            p.append(Problem(at, field_, f"{region!r} is not an AWS region name",
                             "key the mapping by region code, e.g. us-east-1"))
            continue
        if not isinstance(per_service, Mapping):
            p.append(Problem(at, field_, "is not a mapping", example))
            continue
        for svc in services:
            target = per_service.get(svc.hostname)
            if not isinstance(target, Mapping):
                p.append(Problem(at, svc.hostname, "has no target for this service",
                                 "add {domain_name: <RegionalDomainName>, hosted_zone_id: "
                                 "<RegionalHostedZoneId>} from aws apigateway get-domain-name"))
                continue
            domain = str(target.get("domain_name", "")).lower().rstrip(".")
            zone_id = str(target.get("hosted_zone_id", ""))
            if not is_dns_name(domain):
                p.append(Problem(at, f"{svc.hostname}.domain_name", f"{domain!r} is not a "
                                 "DNS name", "copy RegionalDomainName of the custom domain"))
            elif not ZONE_ID_RE.match(zone_id):
                p.append(Problem(at, f"{svc.hostname}.hosted_zone_id", f"{zone_id!r} is not a "
                                 "zone id", "copy RegionalHostedZoneId of the custom domain"))
            else:
                out[(region, svc.hostname)] = DirectTarget(domain, zone_id)
        for extra in sorted(set(per_service) - {s.hostname for s in services}):
            p.append(Problem(at, str(extra), "is not a service in georelay_services",
                             "remove it or add the service"))
    return out

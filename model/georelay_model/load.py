"""Build a :class:`Fleet` from inventory host vars, collecting every problem before failing.

The input is what ``ansible-inventory --list`` calls ``_meta.hostvars`` (or Ansible's own
``hostvars``): one merged dict per host. A host is a proxy when it has ``aws_region``.
The fleet-wide settings (zone, services, certificates, Route53) are read by settings.py,
the rest (regions, proxies) here.
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from georelay_model.contract import KNOWN, RETIRED
from georelay_model.errors import InventoryError
from georelay_model.facts import MAX_SOCKET_PATH, socket_paths
from georelay_model.fleet import Endpoint, Fleet, Proxy, Region, Service
from georelay_model.management import read_management
from georelay_model.reader import REGION_RE, Reader, default_str, is_dns_name
from georelay_model.settings import check_regional_names, read_settings

SERVICE_MANAGERS = ("systemd", "process")
# Set per region group: every proxy of a region must agree.
REGION_VARS = ("georelay_backup_regions", "georelay_backup_limit",
               "georelay_bridging_keeps_in_dns", "georelay_onebox_enabled")

def fleet_from_hostvars(hostvars: Mapping[str, Mapping[str, Any]], *,
                        rendered: bool = False) -> Fleet:
    """Validate the inventory and build the fleet, or raise :class:`InventoryError`.

    ``rendered`` says the values were templated by Ansible (the role); the DNS tool reads
    ``ansible-inventory --list`` output, where Jinja is still raw text, so path variables
    that only the role uses are taken as they are.
    """
    r = Reader(rendered)
    proxies_vars = {h: v for h, v in sorted(hostvars.items()) if "aws_region" in v}
    _check_names(r, proxies_vars or hostvars)
    settings = read_settings(r, proxies_vars or hostvars)
    if settings.dns.mode == "direct":  # no proxies: Route53 points at the gateways
        regions = tuple(Region(name, ()) for name in sorted({reg for reg, _ in
                                                             settings.dns.direct}))
        if r.problems:
            raise InventoryError(r.problems)
        return Fleet(zone=settings.zone, services=settings.services, regions=regions,
                     dns=settings.dns, latency=settings.latency)
    if not proxies_vars:
        r.problem("inventory", "aws_region", "no host has aws_region, so there are no proxies",
                  "put proxy hosts in a group per region whose vars set aws_region: us-east-1")
        raise InventoryError(r.problems)
    services = settings.services

    by_region: dict[str, list[Proxy]] = {}
    apigw: dict[str, Endpoint | None] = {}
    region_vars: dict[str, dict[str, tuple[str, object]]] = {}
    for host, hv in proxies_vars.items():
        proxy = _proxy(r, host, hv)
        if proxy is None:
            continue
        by_region.setdefault(proxy.region, []).append(proxy)
        address = _endpoint(r, host, hv.get("georelay_apigw_address"))
        if proxy.region in apigw and apigw[proxy.region] != address:
            r.problem(host, "georelay_apigw_address",
                      f"differs from other proxies of {proxy.region}",
                      f"set it once in the vars of the {proxy.region} group")
        apigw.setdefault(proxy.region, address)
        seen = region_vars.setdefault(proxy.region, {})
        for name in REGION_VARS:
            value = hv.get(name)
            if name in seen and seen[name][1] != value:
                r.problem(host, name, f"differs from {seen[name][0]}'s value",
                          f"set it once in the vars of the {proxy.region} group")
            seen.setdefault(name, (host, value))

    names = sorted(by_region)
    regions = tuple(
        Region(name, tuple(ps), apigw.get(name),
               backup_regions=_backup_regions(r, name, region_vars[name], names),
               backup_limit=_backup_limit(r, name, region_vars[name]),
               bridging_keeps_in_dns=_boolean(r, region_vars[name],
                                              "georelay_bridging_keeps_in_dns"),
               onebox_enabled=_boolean(r, region_vars[name], "georelay_onebox_enabled",
                                       default=True))
        for name, ps in sorted(by_region.items()))
    _check_fleet(r, services, regions)
    check_regional_names(r, settings.dns, settings.zone, services, names)
    if r.problems:
        raise InventoryError(r.problems)
    return Fleet(zone=settings.zone, services=services, regions=regions,
                 tls_pem=settings.tls_pem, backend_ca=settings.backend_ca, dns=settings.dns,
                 latency=settings.latency, onebox=settings.onebox, edge=settings.edge)


def _backup_regions(r: Reader, region: str, seen: Mapping[str, tuple[str, object]],
                    names: list[str]) -> tuple[str, ...] | None:
    field = "georelay_backup_regions"
    host, raw = seen.get(field, (region, None))
    if raw is None:
        return None
    example = ", ".join(n for n in names if n != region) or "us-west-2"
    fix = (f"list other regions of the fleet in order of preference, e.g. [{example}], "
           "or [] for no backup")
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        r.problem(host, field, f"{raw!r} is not a list of region names", fix)
        return None
    out: list[str] = []
    for name in raw:
        if name == region:
            r.problem(host, field, f"names {region}, the proxy's own region", fix)
        elif name not in names:
            r.problem(host, field, f"{name!r} is not a region of this fleet", fix)
        elif name in out:
            r.problem(host, field, f"lists {name} twice", fix)
        else:
            out.append(name)
    return tuple(out)


def _backup_limit(r: Reader, region: str, seen: Mapping[str, tuple[str, object]]) -> int:
    host, raw = seen.get("georelay_backup_limit", (region, None))
    return r.integer(host, "georelay_backup_limit", raw, None, 0, 50,
                     "give how many of the nearest regions back this one up (0 for none), "
                     "or list them in georelay_backup_regions")


def _boolean(r: Reader, seen: Mapping[str, tuple[str, object]], field: str, *,
             default: bool = False) -> bool:
    host, raw = seen.get(field, ("all", None))
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "false", "no"):
        return raw.strip().lower() in ("true", "yes")
    r.problem(host, field, f"{raw!r} is not true or false", f"write {field}: true or false")
    return default


def _check_names(r: Reader, hostvars: Mapping[str, Mapping[str, Any]]) -> None:
    """Every georelay_* variable must be one georelay reads (contract.py): a misspelt or
    made-up name would otherwise be ignored without a word. haproxy_* names may belong to
    other roles on the same hosts, so only a near miss of a known one is refused."""
    unknown: dict[str, list[str]] = {}
    for host, hv in hostvars.items():
        for name in hv:
            if name.startswith(("georelay_", "haproxy_")) and name not in KNOWN:
                unknown.setdefault(name, []).append(host)
    for name, hosts in sorted(unknown.items()):
        close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.85)
        if not close and not name.startswith("georelay_") and name not in RETIRED:
            continue
        where = "all" if len(hosts) == len(hostvars) else ", ".join(hosts[:3]) + (
            f" and {len(hosts) - 3} more" if len(hosts) > 3 else "")
        set_on = ("every host (group_vars/all or the all group's vars)" if where == "all"
                  else f"host(s) {where}")
        if name in RETIRED:
            r.problem(where, name, f"is no longer read (set for {set_on})", RETIRED[name])
            continue
        known = _known_like(name)
        fix = (f"did you mean {close[0]}? Rename it, or remove it" if close else
               f"remove it; georelay reads only the variables of README.md, 'The inventory "
               f"contract'{known}")
        r.problem(where, name, f"is not a georelay variable (set for {set_on})", fix)


def _known_like(name: str) -> str:
    """Known variables of the same family (georelay_dns_*, georelay_agent_*...), as a hint."""
    family = "_".join(name.split("_")[:2]) + "_"
    same = sorted(k for k in KNOWN if k.startswith(family))
    if family == "georelay_" or not same or len(same) > 16:
        return ""
    return f" (the {family}* ones: {', '.join(same)})"


def _proxy(r: Reader, host: str, hv: Mapping[str, Any]) -> Proxy | None:
    before = len(r.problems)
    region = r.string(host, "aws_region", hv.get("aws_region"), required=True) or ""
    if region and not REGION_RE.match(region):
        r.problem(host, "aws_region", f"{region!r} is not an AWS region name",
                  "use the region code, e.g. us-east-1 or eu-west-2")
    public_ip = r.string(host, "public_ip", hv.get("public_ip"), required=False)
    public_dns = r.string(host, "public_dns", hv.get("public_dns"), required=False)
    if public_ip:
        try:
            ipaddress.ip_address(public_ip)
        except ValueError:
            r.problem(host, "public_ip", f"{public_ip!r} is not an IP address",
                      "give the IPv4 or IPv6 address users reach, or use public_dns")
    if public_ip and public_dns:
        r.problem(host, "public_ip", "public_ip and public_dns are both set",
                  "keep one: public_ip for an A/AAAA record, public_dns for a CNAME")
    elif not public_ip and not public_dns:
        r.problem(host, "public_ip", "neither public_ip nor public_dns is set",
                  "set the address Route53 should hand out for this proxy")
    if public_dns:
        public_dns = r.dns_name(host, "public_dns", public_dns)
    weight = r.integer(host, "dns_weight", hv.get("dns_weight"), None, 0, 255,
                       "Route53 weights are whole numbers from 0 to 255")
    bind = r.string(host, "haproxy_bind_address", hv.get("haproxy_bind_address"),
                    required=False) or ""
    if bind and bind != "*":
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            r.problem(host, "haproxy_bind_address", f"{bind!r} is not an IP address",
                      "give an address of this host, or leave it unset to listen on all")
    port_fix = "use a TCP port from 1 to 65535"
    https = r.integer(host, "haproxy_https_port", hv.get("haproxy_https_port"), None, 1, 65535,
                      port_fix)
    http = r.integer(host, "haproxy_http_port", hv.get("haproxy_http_port"), None, 1, 65535,
                     port_fix)
    if https == http:
        r.problem(host, "haproxy_http_port", f"equals haproxy_https_port ({https})",
                  "give the plain-HTTP redirect listener its own port")
    manager = r.string(host, "georelay_service_manager", hv.get("georelay_service_manager"),
                       required=False) or default_str("georelay_service_manager")
    if manager not in SERVICE_MANAGERS:
        r.problem(host, "georelay_service_manager", f"{manager!r} is not supported",
                  "use systemd, or process where there is no systemd (containers, labs)")
    root = r.string(host, "georelay_root", hv.get("georelay_root"),
                    required=False) or default_str("georelay_root")
    if not root.startswith("/"):
        r.problem(host, "georelay_root", f"{root!r} is not an absolute path",
                  "give an absolute directory such as / or /srv/georelay/lab1")
    root = posixpath.normpath(root)
    longest = max(socket_paths(root), key=len)
    if len(longest) > MAX_SOCKET_PATH:
        r.problem(host, "georelay_root", f"{root!r} makes socket paths too long for HAProxy "
                  f"({len(longest)} > {MAX_SOCKET_PATH} characters)",
                  f"use a root of at most {MAX_SOCKET_PATH - len(longest) + len(root)} "
                  "characters")
    agent_bind = r.string(host, "georelay_agent_bind_address",
                          hv.get("georelay_agent_bind_address"),
                          required=False) or default_str("georelay_agent_bind_address")
    try:
        ipaddress.ip_address(agent_bind)
    except ValueError:
        r.problem(host, "georelay_agent_bind_address", f"{agent_bind!r} is not an IP address",
                  "give a local address such as 127.0.0.1 (the agent is only for HAProxy)")
    agent_port = r.integer(host, "georelay_agent_port", hv.get("georelay_agent_port"), None,
                           1, 65535, port_fix)
    if agent_port in (https, http) and agent_bind in (bind, ""):
        r.problem(host, "georelay_agent_port", f"{agent_port} is also an HAProxy listener port",
                  "give the agent a port of its own")
    agent = Endpoint(agent_bind, agent_port)
    management = read_management(r, host, hv, bind=bind, ports={https, http},
                                 public_ip=public_ip, agent=agent)
    if len(r.problems) > before or management is None:
        return None
    return Proxy(name=host, region=region, public_ip=public_ip, public_dns=public_dns,
                 dns_weight=weight, bind_address="" if bind == "*" else bind,
                 https_port=https, http_port=http, service_manager=manager, root=root,
                 agent=agent, management=management)


def _endpoint(r: Reader, host: str, raw: object) -> Endpoint | None:
    value = r.string(host, "georelay_apigw_address", raw, required=False)
    if value is None:
        return None
    m = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", value) or re.match(r"^([^:\[\]]+):(\d+)$",
                                                                       value)
    if not m or not 1 <= int(m.group(2)) <= 65535:
        r.problem(host, "georelay_apigw_address", f"{value!r} is not host:port",
                  "write ip:port such as 10.0.0.5:443 ([v6]:port for IPv6)")
        return None
    endpoint = Endpoint(m.group(1).lower(), int(m.group(2)))
    if not endpoint.is_ip and not is_dns_name(endpoint.host):
        r.problem(host, "georelay_apigw_address", f"{endpoint.host!r} is neither an IP "
                  "address nor a DNS name", "write ip:port or name:port")
        return None
    return endpoint


def _check_fleet(r: Reader, services: tuple[Service, ...], regions: tuple[Region, ...]) -> None:
    endpoints: dict[tuple[str, int], str] = {}
    for region in regions:
        for proxy in region.proxies:
            key = (proxy.public_address, proxy.https_port)
            if key in endpoints:
                r.problem(proxy.name, "public_ip", f"{proxy.public_address}:{proxy.https_port} "
                          f"is also {endpoints[key]}'s address",
                          "give every proxy its own public address")
            endpoints[key] = proxy.name
        domains: dict[str, str] = {}
        for service in services:
            domain = service.apigw_domain(region.name)
            if domain in domains:
                r.problem("all", "georelay_services", f"{service.hostname} and "
                          f"{domains[domain]} both map to {domain} in {region.name}",
                          "give each service its own apigw_domain pattern")
            domains[domain] = service.hostname
        for service in services:  # every one-box domain is a custom domain of its own
            onebox = service.onebox_domain(region.name)
            if onebox is not None and onebox in domains:
                r.problem("all", "onebox_domain", f"{service.hostname}'s one-box domain "
                          f"{onebox} is also {domains[onebox]}'s gateway in {region.name}",
                          "give the one-box its own custom domain, e.g. "
                          "'{region}-onebox-fast.example.com'")
            elif onebox is not None:
                domains[onebox] = service.hostname + " (one-box)"

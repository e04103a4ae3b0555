"""Build a :class:`Fleet` from inventory host vars, collecting every problem before failing.

The input is what ``ansible-inventory --list`` calls ``_meta.hostvars`` (or Ansible's own
``hostvars``): one merged dict per host. A host is a proxy when it has ``aws_region``.
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from georelay_model.contract import KNOWN, SERVICE_KEYS
from georelay_model.errors import InventoryError, Problem
from georelay_model.facts import MAX_SOCKET_PATH, socket_paths
from georelay_model.fleet import Endpoint, Fleet, Proxy, Region, Service

REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
FLEET_VARS = ("georelay_zone", "georelay_services", "georelay_tls_pem", "georelay_backend_ca")
SERVICE_MANAGERS = ("systemd", "process")
# Set per region group: every proxy of a region must agree.
REGION_VARS = ("georelay_backup_regions", "georelay_backup_limit",
               "georelay_bridging_keeps_in_dns")
# Read only by the role, which sees them templated. Where the inventory is read raw
# (georelay-dns), a Jinja value in one of these is left alone instead of refused.
ROLE_ONLY = frozenset({"haproxy_bind_address", "haproxy_http_port", "georelay_service_manager",
                       "georelay_root", "georelay_tls_pem", "georelay_backend_ca",
                       "georelay_apigw_address", "georelay_agent_bind_address",
                       "georelay_agent_port"})


def is_dns_name(name: str) -> bool:
    if not name or len(name) > 253 or "." not in name:
        return False
    return all(LABEL_RE.match(label) for label in name.split("."))


def is_jinja(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class Reader:
    """Reads and checks values, remembering every problem instead of stopping at the first."""

    def __init__(self, rendered: bool) -> None:
        self.rendered = rendered
        self.problems: list[Problem] = []

    def problem(self, where: str, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(where, field, message, fix))

    def string(self, where: str, field: str, value: object, *, required: bool) -> str | None:
        if value is None or value == "":
            if required:
                self.problem(where, field, "is not set", f"set {field} in the inventory")
            return None
        if not isinstance(value, str):
            self.problem(where, field, f"must be a string, not {type(value).__name__}",
                         "quote the value in YAML")
            return None
        if not self.rendered and is_jinja(value):
            if field in ROLE_ONLY:
                return None
            self.problem(where, field, f"is a Jinja expression ({value!r})",
                         "georelay reads this variable without templating: set it literally")
            return None
        return value.strip()

    def integer(self, where: str, field: str, value: object, default: int,
                lo: int, hi: int, fix: str) -> int:
        if value is None or value == "" or (not self.rendered and field in ROLE_ONLY
                                                and is_jinja(value)):
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, field, f"{value!r} is not a whole number", fix)
            return default
        if not lo <= value <= hi:
            self.problem(where, field, f"{value} is out of range", fix)
            return default
        return value

    def dns_name(self, where: str, field: str, value: object, *, required: bool = True) -> str:
        name = self.string(where, field, value, required=required)
        if name is None:
            return ""
        name = name.lower().rstrip(".")
        if not is_dns_name(name):
            self.problem(where, field, f"{value!r} is not a DNS name",
                         "use letters, digits and hyphens in dot-separated labels, "
                         "e.g. fast.example.com")
            return ""
        return name


def fleet_from_hostvars(hostvars: Mapping[str, Mapping[str, Any]], *,
                        rendered: bool = False) -> Fleet:
    """Validate the inventory and build the fleet, or raise :class:`InventoryError`.

    ``rendered`` says the values were templated by Ansible (the role); the DNS tool reads
    ``ansible-inventory --list`` output, where Jinja is still raw text, so path variables
    that only the role uses are taken as they are.
    """
    r = Reader(rendered)
    proxies_vars = {h: v for h, v in sorted(hostvars.items()) if "aws_region" in v}
    if not proxies_vars:
        r.problem("inventory", "aws_region", "no host has aws_region, so there are no proxies",
                  "put proxy hosts in a group per region whose vars set aws_region: us-east-1")
        raise InventoryError(r.problems)

    for host, hv in proxies_vars.items():
        _check_spelling(r, host, hv)
    fleet_vars = _fleet_vars(r, proxies_vars)
    zone = r.dns_name("all", "georelay_zone", fleet_vars.get("georelay_zone"))
    services = read_services(r, fleet_vars.get("georelay_services"), zone)
    tls_pem = _path(r, "georelay_tls_pem", fleet_vars.get("georelay_tls_pem"), required=True)
    backend_ca = _path(r, "georelay_backend_ca", fleet_vars.get("georelay_backend_ca"),
                       required=False)

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
                                              "georelay_bridging_keeps_in_dns"))
        for name, ps in sorted(by_region.items()))
    _check_fleet(r, services, regions)
    if r.problems:
        raise InventoryError(r.problems)
    return Fleet(zone=zone, services=services, regions=regions, tls_pem=tls_pem,
                 backend_ca=backend_ca)


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
    return r.integer(host, "georelay_backup_limit", raw, 3, 0, 50,
                     "give how many of the nearest regions back this one up (0 for none), "
                     "or list them in georelay_backup_regions")


def _boolean(r: Reader, seen: Mapping[str, tuple[str, object]], field: str) -> bool:
    host, raw = seen.get(field, ("all", None))
    if raw is None or raw == "":
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "yes", "false", "no"):
        return raw.strip().lower() in ("true", "yes")
    r.problem(host, field, f"{raw!r} is not true or false", f"write {field}: true or false")
    return False


def _check_spelling(r: Reader, host: str, hv: Mapping[str, Any]) -> None:
    for name in hv:
        if name.startswith(("georelay_", "haproxy_")) and name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.85)
            if close:
                r.problem(host, name, "is not a georelay variable",
                          f"did you mean {close[0]}?")


def _fleet_vars(r: Reader, proxies_vars: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Fleet-wide variables must be the same on every proxy (set them in all vars)."""
    out: dict[str, Any] = {}
    first = next(iter(proxies_vars))
    for name in FLEET_VARS:
        values = {h: hv.get(name) for h, hv in proxies_vars.items()}
        out[name] = values[first]
        for host, value in values.items():
            if value != values[first]:
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
        if health is not None and (not health.startswith("/") or any(c in health for c in
                                                                     " \t\r\n\"'")):
            r.problem(at, "health_path", f"{health!r} is not an absolute URL path",
                      "start it with / and leave out spaces and quotes, e.g. /ping")
            health = None
        if hostname and pattern:
            services.append(Service(hostname, pattern, health))
    return tuple(services)


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
    weight = r.integer(host, "dns_weight", hv.get("dns_weight"), 1, 0, 255,
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
    https = r.integer(host, "haproxy_https_port", hv.get("haproxy_https_port"), 443, 1, 65535,
                      port_fix)
    http = r.integer(host, "haproxy_http_port", hv.get("haproxy_http_port"), 80, 1, 65535,
                     port_fix)
    if https == http:
        r.problem(host, "haproxy_http_port", f"equals haproxy_https_port ({https})",
                  "give the plain-HTTP redirect listener its own port")
    manager = r.string(host, "georelay_service_manager", hv.get("georelay_service_manager"),
                       required=False) or "systemd"
    if manager not in SERVICE_MANAGERS:
        r.problem(host, "georelay_service_manager", f"{manager!r} is not supported",
                  "use systemd, or process where there is no systemd (containers, labs)")
    root = r.string(host, "georelay_root", hv.get("georelay_root"), required=False) or "/"
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
                          hv.get("georelay_agent_bind_address"), required=False) or "127.0.0.1"
    try:
        ipaddress.ip_address(agent_bind)
    except ValueError:
        r.problem(host, "georelay_agent_bind_address", f"{agent_bind!r} is not an IP address",
                  "give a local address such as 127.0.0.1 (the agent is only for HAProxy)")
    agent_port = r.integer(host, "georelay_agent_port", hv.get("georelay_agent_port"), 8405,
                           1, 65535, port_fix)
    if agent_port in (https, http) and agent_bind in (bind, ""):
        r.problem(host, "georelay_agent_port", f"{agent_port} is also an HAProxy listener port",
                  "give the agent a port of its own")
    if len(r.problems) > before:
        return None
    return Proxy(name=host, region=region, public_ip=public_ip, public_dns=public_dns,
                 dns_weight=weight, bind_address="" if bind == "*" else bind,
                 https_port=https, http_port=http, service_manager=manager, root=root,
                 agent=Endpoint(agent_bind, agent_port))


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

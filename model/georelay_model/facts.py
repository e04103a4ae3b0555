"""What the role renders for one proxy host: paths under georelay_root and its backends."""

from __future__ import annotations

import posixpath
from typing import Any

from georelay_model.fleet import SYSTEM_CA_BUNDLE, Endpoint, Fleet, Proxy, Region, Service

# HAProxy refuses unix socket paths longer than this (sun_path less its own suffixes).
MAX_SOCKET_PATH = 97


def proxy_paths(proxy: Proxy) -> dict[str, str]:
    """Every file and socket of one proxy, below its georelay_root (Debian's layout at /)."""
    return paths_below(proxy.root)


def socket_paths(root: str) -> list[str]:
    paths = paths_below(root)
    return [paths["admin_socket"], paths["user_socket"], paths["master_socket"]]


def paths_below(root: str) -> dict[str, str]:
    def p(rel: str) -> str:
        return posixpath.join(root, rel)

    return {
        "conf_dir": p("etc/haproxy"),
        "config": p("etc/haproxy/haproxy.cfg"),
        "certs_dir": p("etc/haproxy/certs"),
        "tls_pem": p("etc/haproxy/certs/georelay.pem"),
        "backend_ca": p("etc/haproxy/certs/backend-ca.pem"),
        "run_dir": p("run/haproxy"),
        "admin_socket": p("run/haproxy/admin.sock"),
        "user_socket": p("run/haproxy/user.sock"),
        "master_socket": p("run/haproxy-master.sock"),
        "pid_file": p("run/haproxy.pid"),
        "chroot": p("var/lib/haproxy"),
        "state_file": p("var/lib/haproxy/server-state"),
        "log_dir": p("var/log/haproxy"),
        "log_file": p("var/log/haproxy/haproxy.log"),
        # The one-box percentages: HAProxy loads it at start; a runtime change (`set map`)
        # rewrites it too (plugins/module_utils/haproxy_runtime.py), so a reload keeps it.
        "onebox_map": p("etc/haproxy/onebox-percent.map"),
        # Edge rules (README "Edge rules"): each service's deploy version (runtime `set map`
        # rewrites it too, like the one-box map), the AWS ip-ranges map of regional
        # redirects, and one pattern file of denied paths per service.
        "edge_version_map": p("etc/haproxy/edge-version.map"),
        "ip_ranges_map": p("etc/haproxy/aws-ip-ranges.map"),
        "edge_dir": p("etc/haproxy/edge"),
    }


def url_host(address: str) -> str:
    """An address as it stands before :port in a bind line or a URL ([v6] bracketed)."""
    return f"[{address}]" if ":" in address else address


def probe_address(bind_address: str) -> str:
    """The address a local client reaches a listener bound to bind_address on."""
    if bind_address == "::":
        return "::1"
    if bind_address in ("", "0.0.0.0"):
        return "127.0.0.1"
    return bind_address


def _hash_fetch(item: str) -> str:
    """The HAProxy sample fetch of one georelay_onebox_hash input (headers in full:
    req.hdr() would keep only the text after a header value's last comma)."""
    if item == "src":
        return "src"
    return "req.fhdr(" + item.removeprefix("header:") + ")"


def _backend(fleet: Fleet, region: Region, backup_regions: tuple[Region, ...],
             service: Service, *, onebox: bool) -> dict[str, Any]:
    """One service backend: the regular gateways, or (onebox) the one-box ones: the home
    region's and, as backups, those of the backup regions that have a one-box."""
    def domain(r: Region) -> str | None:
        return fleet.onebox_domain(service, r.name) if onebox else service.apigw_domain(r.name)

    def gateway(r: Region, name: str) -> Endpoint:
        # A region's custom domains share its endpoint; Host and SNI pick the domain.
        return (r.apigw_address or Endpoint(name, 443)) if onebox else r.gateway(service)

    home = domain(region)
    assert home is not None
    backups = []
    for b in backup_regions:
        name = domain(b)
        if name is not None:
            backup = gateway(b, name)
            backups.append({"region": b.name, "domain": name, "server": backup.haproxy,
                            "resolve": not backup.is_ip})
    main = gateway(region, home)
    out: dict[str, Any] = {
        "name": service.onebox_backend_name if onebox else service.backend_name,
        "hostname": service.hostname,
        "domain": home,
        "server": main.haproxy,
        "resolve": not main.is_ip,
        "health_path": service.health_path,
        "backups": backups,
        # Real traffic's errors mark the home gateway down at once only where there is
        # a backup to go to (haproxy.cfg.j2 explains why).
        "mark_down_on_errors": bool(backups),
    }
    out["edge"] = _edge(service, out["name"])
    if not onebox:
        # The one-box of this service here: None when it has none or the region switched
        # it off (the service then still overwrites X-Req-Partition: regular).
        has = service.onebox_domain_pattern is not None
        out["onebox"] = None if not has else {
            "percent": service.onebox_percent,
            "backend": (_backend(fleet, region, backup_regions, service, onebox=True)
                        if fleet.onebox_domain(service, region.name) else None)}
    return out


def _edge(service: Service, backend: str) -> dict[str, Any]:
    """A service backend's edge rules as the template renders them (README "Edge rules")."""
    e = service.edge
    cache = e.cache
    return {
        "deny": list(e.deny_paths),
        "deny_file": f"{service.hostname}.deny" if e.deny_paths else None,
        "deny_status": e.deny_status,
        "accept": ({"classes": [{"contains": c.contains, "value": c.value}
                                for c in e.accept_classes], "default": e.accept_default}
                   if e.normalises_accept else None),
        # One cache section per service, shared by its one-box backend (its key differs).
        "cache": None if cache is None else {
            "name": "georelay_" + service.backend_name.removeprefix("be_"),
            "max_age": cache.max_age, "max_object_size": cache.max_object_size,
            "total_size": cache.total_size, "header": cache.header, "backend": backend},
        "redirect": None if not e.redirects else {
            "suffixes": list(e.redirect_suffixes),
            "origins": [{"region": r, "url": u} for r, u in e.redirect_origins]},
    }


def proxy_facts(fleet: Fleet, host: str) -> dict[str, Any]:
    """The normalised view of one proxy that roles/haproxy/templates/haproxy.cfg.j2 renders
    (and roles/georelay_agent's agent.json)."""
    proxy = fleet.proxy(host)
    region = fleet.region(proxy.region)
    paths = proxy_paths(proxy)
    backup_regions = fleet.backups_of(region.name)
    services = fleet.services
    backends = [_backend(fleet, region, backup_regions, service, onebox=False)
                for service in services]
    onebox = [b for b in backends if b["onebox"] is not None]
    return {
        "name": proxy.name,
        "region": proxy.region,
        "bind_address": proxy.bind_address,
        "bind_host": url_host(proxy.bind_address),  # before :port in haproxy.cfg's bind
        # Where the role's own check reaches the public listener (https://HOST:port/).
        "self_check_host": url_host(proxy.bind_address or "127.0.0.1"),
        # Where the agent's probe reaches the public listener: the bind address, or the
        # loopback of its family when HAProxy listens on every address.
        "probe_address": probe_address(proxy.bind_address),
        "https_port": proxy.https_port,
        "http_port": proxy.http_port,
        "service_manager": proxy.service_manager,
        "root": proxy.root,
        # systemd at /: Debian's package owns /run/haproxy and the chroot, and the traffic
        # log goes to journald (/dev/log); else the role makes its own layout and, in
        # process mode, the master's output is the log.
        "debian_layout": proxy.service_manager == "systemd" and proxy.root == "/",
        "log_target": "stdout format raw" if proxy.service_manager == "process" else "/dev/log",
        "paths": paths,
        # Some gateway is addressed by name: haproxy.cfg gets a resolvers section.
        "resolving": any(b["resolve"] or any(k["resolve"] for k in b["backups"])
                         for b in backends + [o["onebox"]["backend"] for o in onebox
                                              if o["onebox"]["backend"]]),
        # What Route53's health checks ask (georelay_dns_health_path), which HAProxy sends to
        # the agent.
        "healthz_path": fleet.dns.health.path,
        "backend_ca": paths["backend_ca"] if fleet.backend_ca else SYSTEM_CA_BUNDLE,
        "backend_ca_source": fleet.backend_ca,
        "tls_pem_source": fleet.tls_pem,
        "backends": backends,
        # The one-box canary (README "One-box canary"): the services that split their users
        # on this proxy, the map file of their percentages and the bucket cookie. Empty
        # services: haproxy.cfg has no trace of it.
        "onebox": {
            "services": [b["hostname"] for b in onebox],
            "map_file": paths["onebox_map"],
            "cookie": fleet.onebox.cookie,
            "max_age": fleet.onebox.max_age,
            "samesite": fleet.onebox.samesite,
            "hash": [_hash_fetch(item) for item in fleet.onebox.hash],
            "fallback_table": "georelay_onebox_fallback",
        },
        "edge": _edge_facts(fleet, services, paths),
        "bridging_keeps_in_dns": region.bridging_keeps_in_dns,
        # Why the backups come in their order (inventory, measured, or partly estimated).
        "backup_order": fleet.backup_order_note(region.name),
        "agent": {"address": proxy.agent.host, "port": proxy.agent.port,
                  "server": proxy.agent.haproxy},
        # The management listener (README "Monitoring"): HAProxy's exporter and the agent's
        # metrics, for the allowed sources, with basic auth when a user is set.
        "metrics": {"bind": proxy.management.listen.haproxy,
                    "address": proxy.management.listen.host,
                    "port": proxy.management.listen.port,
                    "allow": list(proxy.management.allow),
                    "auth": ({"user": proxy.management.user,
                              "password": proxy.management.password}
                             if proxy.management.user else None)},
    }


def _edge_facts(fleet: Fleet, services: tuple[Service, ...],
                paths: dict[str, str]) -> dict[str, Any]:
    """The fleet's edge files and switches (README "Edge rules")."""
    edge = fleet.edge
    cached = [s.hostname for s in services if s.edge.cache is not None]
    return {
        "version_map": paths["edge_version_map"],
        "ip_map": paths["ip_ranges_map"],
        "dir": paths["edge_dir"],
        "cached": cached,
        # Responses a cache may store get their one-box cookie, HSTS and Vary after the
        # store (http-after-response): what http-response adds is stored and replayed.
        "after_store": bool(cached),
        # One alternation per service: HAProxy runs each line of a pattern file as its own
        # regex, so one line is one (JIT) match per request instead of one per pattern.
        "deny_files": {f"{s.hostname}.deny": "|".join(f"(?:{p})" for p in s.edge.deny_paths)
                       for s in services if s.edge.deny_paths},
        "redirecting": any(s.edge.redirects for s in services),
        "ip_ranges_source": edge.ip_ranges_file,
        "proxy_protocol": edge.proxy_protocol,
        "proxy_protocol_from": list(edge.proxy_protocol_from),
    }

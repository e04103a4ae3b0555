"""What the role renders for one proxy host: paths under georelay_root and its backends."""

from __future__ import annotations

import posixpath
from typing import Any

from georelay_model.fleet import SYSTEM_CA_BUNDLE, Fleet, Proxy

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


def proxy_facts(fleet: Fleet, host: str) -> dict[str, Any]:
    """The normalised view of one proxy that roles/haproxy/templates/haproxy.cfg.j2 renders
    (and roles/georelay_agent's agent.json)."""
    proxy = fleet.proxy(host)
    region = fleet.region(proxy.region)
    paths = proxy_paths(proxy)
    backends = []
    backup_regions = fleet.backups_of(region.name)
    for service in fleet.services:
        gateway = region.gateway(service)
        backups = []
        for b in backup_regions:
            backup = b.gateway(service)
            backups.append({"region": b.name, "domain": service.apigw_domain(b.name),
                            "server": backup.haproxy, "resolve": not backup.is_ip})
        backends.append({
            "name": service.backend_name,
            "hostname": service.hostname,
            "domain": service.apigw_domain(region.name),
            "server": gateway.haproxy,
            "resolve": not gateway.is_ip,
            "health_path": service.health_path,
            "backups": backups,
            # Real traffic's errors mark the home gateway down at once only where there is
            # a backup to go to (haproxy.cfg.j2 explains why).
            "mark_down_on_errors": bool(backups),
        })
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
                         for b in backends),
        # What Route53's health checks ask (georelay_dns_health_path), which HAProxy sends to
        # the agent.
        "healthz_path": fleet.dns.health.path,
        "backend_ca": paths["backend_ca"] if fleet.backend_ca else SYSTEM_CA_BUNDLE,
        "backend_ca_source": fleet.backend_ca,
        "tls_pem_source": fleet.tls_pem,
        "backends": backends,
        "bridging_keeps_in_dns": region.bridging_keeps_in_dns,
        # Why the backups come in their order (inventory, measured, or partly estimated).
        "backup_order": fleet.backup_order_note(region.name),
        "agent": {"address": proxy.agent.host, "port": proxy.agent.port,
                  "server": proxy.agent.haproxy},
    }

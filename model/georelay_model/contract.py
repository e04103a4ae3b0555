"""The inventory contract: every variable georelay reads, where it is set, and its default.

Add a variable here when a part of georelay (role, dns, agent) starts reading it: the
loader uses this list to catch misspelt georelay_* variables.

README.md documents the same table for people; tests check the two agree with the role's
meta/argument_specs.yml.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Var:
    name: str
    scope: str  # "all", "region" or "host"
    default: object
    doc: str


VARS: tuple[Var, ...] = (
    Var("georelay_zone", "all", None, "Route53 hosted zone name, e.g. example.com"),
    Var("georelay_services", "all", None, "list of {hostname, apigw_domain, health_path}"),
    Var("georelay_tls_pem", "all", None, "control-node path to the PEM (chain + key)"),
    Var("georelay_backend_ca", "all", None,
        "control-node CA bundle to verify gateways (default: the host's system store)"),
    Var("aws_region", "region", None, "AWS region of the group, e.g. us-east-1"),
    Var("georelay_apigw_address", "region", None, "ip:port (or host:port) of the gateway"),
    Var("public_ip", "host", None, "address Route53 hands out for this proxy"),
    Var("public_dns", "host", None, "DNS name Route53 hands out (CNAME) instead of an IP"),
    Var("dns_weight", "host", 1, "weight within the region, 0-255"),
    Var("haproxy_bind_address", "host", "", "address HAProxy listens on (default: all)"),
    Var("haproxy_https_port", "host", 443, "TLS listener port"),
    Var("haproxy_http_port", "host", 80, "plain HTTP listener port (redirects to https)"),
    Var("georelay_service_manager", "host", "systemd", "systemd or process"),
    Var("georelay_root", "host", "/", "filesystem prefix for config, certs, sockets"),
)

KNOWN: frozenset[str] = frozenset(v.name for v in VARS)

SERVICE_KEYS: frozenset[str] = frozenset({"hostname", "apigw_domain", "health_path"})


"""The validated fleet: services, regions and their proxies, with every default applied."""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field

from georelay_model.edge import EdgeRules, EdgeSettings
from georelay_model.latency import Latency
from georelay_model.reader import default_int, default_str

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # on the proxy host


@dataclass(frozen=True)
class Service:
    """A public hostname relayed to one API Gateway custom domain per region."""

    hostname: str  # public name, e.g. fast.example.com
    apigw_domain_pattern: str  # e.g. {region}-fast.example.com
    health_path: str | None = None  # a path on the API that answers 200
    # The one-box (canary) custom domain per region, e.g. {region}-onebox-fast.example.com;
    # None: the service has no one-box.
    onebox_domain_pattern: str | None = None
    # Share of users (0-100) sent to the one-box when no rollout holds another value.
    onebox_percent: int = 0
    # What the proxy answers itself: denied paths, Accept classes, cache, redirects (edge.py).
    edge: EdgeRules = field(default_factory=EdgeRules)

    def apigw_domain(self, region: str) -> str:
        return self.apigw_domain_pattern.replace("{region}", region)

    def onebox_domain(self, region: str) -> str | None:
        """The one-box custom domain of ``region`` (None: no one-box pattern). Pure: the
        per-region switch (georelay_onebox_enabled) is applied by Fleet.onebox_domain."""
        if self.onebox_domain_pattern is None:
            return None
        return self.onebox_domain_pattern.replace("{region}", region)

    @property
    def backend_name(self) -> str:
        return "be_" + self.hostname.replace(".", "_").replace("-", "_")

    @property
    def onebox_backend_name(self) -> str:
        return self.backend_name + "_onebox"


@dataclass(frozen=True)
class Endpoint:
    """Where a proxy connects to reach a region's gateway (host and port)."""

    host: str
    port: int

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def haproxy(self) -> str:
        """The address as an HAProxy server line wants it (IPv6 in brackets)."""
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Management:
    """A proxy's management listener (management.py): HAProxy's Prometheus exporter and the
    agent's metrics, for the allowed networks only, with optional basic auth."""

    listen: Endpoint = Endpoint("127.0.0.1", 8404)
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    user: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Proxy:
    """One HAProxy host of a region (an inventory host with aws_region)."""

    name: str
    region: str
    public_ip: str | None
    public_dns: str | None
    dns_weight: int = 1
    bind_address: str = ""  # "" = every address
    https_port: int = 443
    http_port: int = 80
    service_manager: str = "systemd"  # or "process"
    root: str = "/"
    agent: Endpoint = Endpoint("127.0.0.1", 8405)  # where /healthz is answered
    management: Management = Management()  # where Prometheus scrapes (management.py)

    @property
    def public_address(self) -> str:
        return self.public_ip or self.public_dns or ""

    def path(self, *parts: str) -> str:
        """A path below this proxy's georelay_root."""
        return posixpath.join(self.root, *parts)


@dataclass(frozen=True)
class Region:
    name: str
    proxies: tuple[Proxy, ...]
    apigw_address: Endpoint | None = None  # None: resolve each service's domain on :443
    # Other regions this region's proxies fall back to, in order; None: the backup_limit
    # nearest other regions of the fleet (Fleet.latency).
    backup_regions: tuple[str, ...] | None = None
    backup_limit: int = 3  # how many of the nearest when backup_regions is None
    # Keep this region's proxies in DNS while they bridge through a backup region.
    bridging_keeps_in_dns: bool = False
    # georelay_onebox_enabled: false sends every user of this region to the regular gateway.
    onebox_enabled: bool = True

    def gateway(self, service: Service) -> Endpoint:
        return self.apigw_address or Endpoint(service.apigw_domain(self.name), 443)


@dataclass(frozen=True)
class HealthSettings:
    """The Route53 health check of every proxy (georelay_dns_health_*); HAProxy routes the
    same path to the agent."""

    path: str = default_str("georelay_dns_health_path")  # /healthz
    interval: int = default_int("georelay_dns_health_interval")  # 10 (fast) or 30 s
    threshold: int = default_int("georelay_dns_health_threshold")  # FailureThreshold
    regions: tuple[str, ...] = ()  # () = Route53's default checker regions
    search: str | None = None  # HTTPS_STR_MATCH when set


@dataclass(frozen=True)
class DirectTarget:
    """An API Gateway regional custom domain: what a direct-mode latency alias points at."""

    domain_name: str  # RegionalDomainName, e.g. d-abc123.execute-api.us-east-1.amazonaws.com
    hosted_zone_id: str  # RegionalHostedZoneId, e.g. Z1UJRXOUMOOFQ8


@dataclass(frozen=True)
class DnsSettings:
    """How Route53 serves the fleet (georelay_dns_*, fleet-wide; docs/DNS.md)."""

    mode: str = default_str("georelay_dns_mode")  # proxy or direct
    owner: str = default_str("georelay_dns_owner")
    zone_id: str | None = None
    ttl: int = default_int("georelay_dns_ttl")
    regional_name: str = default_str("georelay_dns_regional_name")
    health: HealthSettings = field(default_factory=HealthSettings)
    direct: Mapping[tuple[str, str], DirectTarget] = field(default_factory=dict)

    def regional(self, hostname: str, region: str) -> str:
        label, _, parent = hostname.partition(".")
        return (self.regional_name.replace("{region}", region).replace("{label}", label)
                .replace("{parent}", parent).replace("{hostname}", hostname))


@dataclass(frozen=True)
class OneboxSettings:
    """How the proxies split users between a service's one-box and regular gateways
    (georelay_onebox_*, fleet-wide; README "One-box canary")."""

    cookie: str = default_str("georelay_onebox_cookie")  # holds the user's bucket 0-99
    max_age: int = default_int("georelay_onebox_cookie_max_age")  # seconds
    samesite: str = default_str("georelay_onebox_cookie_samesite")  # Lax, Strict or None
    # What buckets a user without a valid cookie: "src" (client address), "user-agent"
    # (the full header) and "header:NAME" (any request header, in full).
    hash: tuple[str, ...] = ("src", "user-agent")


@dataclass(frozen=True)
class Fleet:
    zone: str
    services: tuple[Service, ...]
    regions: tuple[Region, ...]
    tls_pem: str | None = None  # control-node path; None when the reader does not need it
    backend_ca: str | None = None  # control-node CA file; None: the host's system store
    dns: DnsSettings = field(default_factory=DnsSettings)  # Route53 (and the /healthz path)
    # Round trips between regions: georelay_region_latency, else the shipped measurements
    latency: Latency = field(default_factory=Latency, compare=False)
    onebox: OneboxSettings = field(default_factory=OneboxSettings)
    edge: EdgeSettings = field(default_factory=EdgeSettings)
    extra: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def proxies(self) -> tuple[Proxy, ...]:
        return tuple(p for r in self.regions for p in r.proxies)

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise KeyError(name)

    def onebox_domain(self, service: Service, region: str) -> str | None:
        """The one-box domain ``service`` has in ``region``: None when the service has no
        one-box or the region switched it off (georelay_onebox_enabled: false)."""
        if not self.region(region).onebox_enabled:
            return None
        return service.onebox_domain(region)

    def backups_of(self, name: str) -> tuple[Region, ...]:
        """The regions a proxy of region ``name`` falls back to, most preferred first."""
        region = self.region(name)
        if region.backup_regions is not None:
            return tuple(self.region(b) for b in region.backup_regions)
        others = [r.name for r in self.regions if r.name != name]
        nearest = self.latency.nearest_first(name, others)[:region.backup_limit]
        return tuple(self.region(b) for b in nearest)

    def backup_order_note(self, name: str) -> str:
        """Why region ``name``'s backups are in their order: set in the inventory, or
        nearest first by which latency source ('' when it has no backups)."""
        region = self.region(name)
        backups = [b.name for b in self.backups_of(name)]
        if not backups:
            return ""
        if region.backup_regions is not None:
            return "order: georelay_backup_regions"
        note = self.latency.order_note(name, [r.name for r in self.regions])
        if note:
            return note
        sources = {self.latency.rtt(name, b)[1] for b in backups}
        return ("order: nearest first, georelay_region_latency" if sources == {"inventory"}
                else "order: nearest first, measured round trips (docs/DNS.md)")

    def proxy(self, name: str) -> Proxy:
        for p in self.proxies:
            if p.name == name:
                return p
        raise KeyError(name)

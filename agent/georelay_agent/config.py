"""The agent's configuration: loaded from JSON (or YAML when PyYAML is there), fully validated.

Every problem names the field it is about (``haproxy.read_timeout``, ``services[1].backend``)
so an operator can fix the file without reading code. Unknown fields are errors: a misspelt
option must not be silently ignored.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_SCHEMA_VERSION = 1
DEFAULT_CONFIG = "/etc/georelay-agent/agent.json"
CONFIG_ENV = "GEORELAY_AGENT_CONFIG"
VENV = ("opt", "georelay-agent", "venv")  # the role's virtualenv, below georelay_root
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]"
                       r"([a-z0-9-]{0,61}[a-z0-9])?$")


def default_config_path(prefix: str | None = None) -> str:
    """The config file read without --config and $GEORELAY_AGENT_CONFIG.

    <root>/etc/georelay-agent/agent.json when the interpreter's prefix (``sys.prefix``, the
    virtualenv) is <root>/opt/georelay-agent/venv, as the role installs it below
    ``georelay_root``: /etc/georelay-agent/agent.json on a host, the proxy's own config in
    a demo or test root. Any other interpreter reads /etc/georelay-agent/agent.json.
    """
    venv = Path(sys.prefix if prefix is None else prefix)
    if venv.is_absolute() and venv.parts[-len(VENV):] == VENV:
        return str(venv.parents[len(VENV) - 1] / DEFAULT_CONFIG.lstrip("/"))
    return DEFAULT_CONFIG


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and every field."""


@dataclass(frozen=True)
class Backup:
    """Another region's gateway, a `backup` server in the service's backend."""

    region: str
    server: str  # the HAProxy server name (its gateway domain)


@dataclass(frozen=True)
class Onebox:
    """The service's one-box on this proxy (README "One-box canary"): its backend and the map
    file of the percentages, as haproxy.cfg names them."""

    backend: str
    map_file: str


@dataclass(frozen=True)
class EdgeCache:
    """The service's edge cache on this proxy (README "Edge rules"): the map file of the
    deploy versions, as haproxy.cfg names it (its key is the service's hostname)."""

    version_map: str


@dataclass(frozen=True)
class Service:
    hostname: str
    backend: str
    domain: str
    probe_path: str | None
    home_server: str = ""  # HAProxy server name of the region's own gateway; "" = domain
    backups: tuple[Backup, ...] = ()  # in order of preference, as in haproxy.cfg
    onebox: Onebox | None = None  # None: no one-box here (none, or switched off)
    edge_cache: EdgeCache | None = None  # None: the service has no edge cache

    @property
    def home(self) -> str:
        return self.home_server or self.domain

    def backup_region(self, server: str) -> str | None:
        return next((b.region for b in self.backups if b.server == server), None)


@dataclass(frozen=True)
class HAProxySettings:
    stats_socket: str
    master_socket: str | None
    config_file: str | None
    connect_timeout: float
    read_timeout: float
    reload_grace: float


@dataclass(frozen=True)
class ProbeSettings:
    enabled: bool
    address: str
    port: int
    timeout: float
    interval: float
    ca_file: str | None
    expect_status: int


@dataclass(frozen=True)
class CheckSettings:
    state_dir: str
    cert_warn_days: int
    http_5xx_warn_ratio: float
    http_5xx_min_requests: int
    agent_timeout: float


@dataclass(frozen=True)
class Config:
    path: str
    proxy: str
    region: str
    listen_address: str
    listen_port: int
    interval: float
    rise: int
    fall: int
    stale_after: float
    healthz_path: str
    ok_body: str
    haproxy: HAProxySettings
    services: tuple[Service, ...]
    probe: ProbeSettings
    drain_dir: str
    check: CheckSettings
    # Keep answering 200 while a service is served by a backup region's gateway.
    bridging_keeps_in_dns: bool = False
    # The AWS ip-ranges map of regional redirects (its header dates it); None: no redirects.
    ip_ranges_map: str | None = None


_SERVER = re.compile(r"^[A-Za-z0-9_.:-]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


class _Reader:
    """Reads one mapping, collecting problems instead of stopping at the first."""

    def __init__(self, problems: list[str], data: Any, where: str) -> None:
        self.problems = problems
        self.where = where
        self.seen: set[str] = set()
        if not isinstance(data, dict):
            self.problem(where or "(top level)", f"must be a mapping, got {_kind(data)}")
            data = {}
        self.data: dict[str, Any] = data

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def problem(self, field: str, text: str) -> None:
        self.problems.append(f"field '{field}': {text}")

    def raw(self, key: str, default: Any) -> Any:
        self.seen.add(key)
        return self.data.get(key, default)

    def string(self, key: str, default: str | None = None, *, optional: bool = False,
               pattern: re.Pattern[str] | None = None, hint: str = "") -> str | None:
        value = self.raw(key, default)
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            what = "is required" if value is None else f"must be a non-empty string, got " \
                f"{_kind(value)}"
            self.problem(self.field(key), what)
            return None
        if pattern is not None and not pattern.match(value):
            self.problem(self.field(key), f"{value!r} is not valid{hint}")
        return value

    def path(self, key: str, default: str | None = None, *, optional: bool = False) -> str | None:
        value = self.string(key, default, optional=optional)
        if value is not None and not value.startswith("/"):
            self.problem(self.field(key), f"{value!r} must be an absolute path")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(self.field(key), f"must be a number, got {_kind(value)}")
            return default
        if not low <= value <= high:
            self.problem(self.field(key), f"{value} is out of range {low}-{high}")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(self.field(key), f"must be an integer, got {_kind(value)}")
            return default
        if not low <= value <= high:
            self.problem(self.field(key), f"{value} is out of range {low}-{high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.problem(self.field(key), f"must be true or false, got {_kind(value)}")
            return default
        return value

    def sub(self, key: str) -> _Reader:
        return _Reader(self.problems, self.raw(key, {}), self.field(key))

    def finish(self) -> None:
        for key in sorted(set(self.data) - self.seen):
            close = difflib.get_close_matches(key, sorted(self.seen), n=1, cutoff=0.7)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            self.problem(self.field(key), f"unknown field{hint}")


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"[:80]


def _address(r: _Reader, key: str, default: str) -> str:
    value = r.string(key, default) or default
    try:
        ipaddress.ip_address(value)
    except ValueError:
        r.problem(r.field(key), f"{value!r} is not an IP address")
    return value


def _backups(problems: list[str], s: _Reader, home_server: str) -> tuple[Backup, ...]:
    """services[i].backups: [{region, server}, ...] in order of preference (may be absent)."""
    raw = s.raw("backups", [])
    if not isinstance(raw, list):
        s.problem(s.field("backups"), f"must be a list of {{region, server}}, got {_kind(raw)}")
        return ()
    out: list[Backup] = []
    for j, item in enumerate(raw):
        b = _Reader(problems, item, s.field(f"backups[{j}]"))
        region = b.string("region", pattern=_REGION, hint=": an AWS region such as us-west-2")
        server = b.string("server", pattern=_SERVER,
                          hint=": the HAProxy server name of that region's gateway (its domain)")
        b.finish()
        if server and server == home_server:
            b.problem(b.field("server"), f"{server!r} is the home server: a backup is another "
                      "region's gateway")
        elif server and any(server == o.server for o in out):
            b.problem(b.field("server"), f"{server!r} is listed twice")
        if region and server:
            out.append(Backup(region, server))
    return tuple(out)


def _onebox(s: _Reader, backend: str) -> Onebox | None:
    """services[i].onebox: {backend, map_file}, or absent (no one-box on this proxy)."""
    if s.raw("onebox", None) is None:
        return None
    o = s.sub("onebox")
    name = o.string("backend", pattern=_SERVER, hint=": the HAProxy backend name of the "
                    "service's one-box, such as be_fast_example_com_onebox")
    map_file = o.path("map_file")
    o.finish()
    if name and name == backend:
        o.problem(o.field("backend"), f"{name!r} is the service's regular backend: the "
                  "one-box has its own (<backend>_onebox)")
    return Onebox(name, map_file) if name and map_file else None


def _edge_cache(s: _Reader) -> EdgeCache | None:
    """services[i].edge_cache: {version_map}, or absent (no edge cache)."""
    if s.raw("edge_cache", None) is None:
        return None
    e = s.sub("edge_cache")
    version_map = e.path("version_map")
    e.finish()
    return EdgeCache(version_map) if version_map else None


def parse(data: Any, path: str = "<config>") -> Config:
    """A validated Config, or ConfigError listing every problem of ``data``."""
    problems: list[str] = []
    top = _Reader(problems, data, "")
    top.raw("comment", None)  # free text for people, e.g. "managed by Ansible"
    version = top.raw("schema_version", None)
    if version != CONFIG_SCHEMA_VERSION:
        top.problem("schema_version", f"must be {CONFIG_SCHEMA_VERSION}, got {_kind(version)}")
    proxy = top.string("proxy") or ""
    region = top.string("region") or ""
    listen = top.sub("listen")
    listen_address = _address(listen, "address", "127.0.0.1")
    listen_port = listen.integer("port", 8405, 1, 65535)
    listen.finish()
    interval = top.number("interval", 1.0, 0.1, 60.0)
    rise = top.integer("rise", 2, 1, 10)
    fall = top.integer("fall", 2, 1, 10)
    if rise > fall:
        top.problem("rise", f"{rise} is more than fall ({fall}): a failure would be held "
                    "longer than a success; use rise <= fall")

    hz = top.sub("healthz")
    healthz_path = hz.string("path", "/healthz", pattern=re.compile(r"^/\S*$"),
                             hint=": a path such as /healthz") or "/healthz"
    ok_body = hz.string("ok_body", "georelay-healthy", pattern=re.compile(r"^[\x21-\x7e]+$"),
                        hint=": printable ASCII without spaces") or "georelay-healthy"
    hz.finish()

    h = top.sub("haproxy")
    haproxy = HAProxySettings(
        stats_socket=h.path("stats_socket") or "",
        master_socket=h.path("master_socket", optional=True),
        config_file=h.path("config_file", optional=True),
        connect_timeout=h.number("connect_timeout", 0.5, 0.05, 10.0),
        read_timeout=h.number("read_timeout", 1.0, 0.05, 30.0),
        reload_grace=h.number("reload_grace", 120.0, 0.0, 3600.0),
    )
    h.finish()

    services: list[Service] = []
    raw_services = top.raw("services", None)
    if not isinstance(raw_services, list) or not raw_services:
        top.problem("services", f"must be a non-empty list, got {_kind(raw_services)}")
        raw_services = []
    for i, item in enumerate(raw_services):
        s = _Reader(problems, item, f"services[{i}]")
        hostname = s.string("hostname", pattern=_HOSTNAME, hint=": a lowercase DNS name") or ""
        backend = s.string("backend", pattern=re.compile(r"^[A-Za-z0-9_.:-]+$"),
                           hint=": an HAProxy backend name") or ""
        domain = s.string("domain", pattern=_HOSTNAME, hint=": a lowercase DNS name") or ""
        probe_path = s.string("probe_path", optional=True, pattern=re.compile(r"^/\S*$"),
                              hint=": a path starting with /")
        if probe_path is not None and probe_path.split("?")[0] == healthz_path:
            s.problem(s.field("probe_path"), f"{probe_path} is the health path itself: "
                      "HAProxy would route the probe back to this agent")
        home_server = s.string("home_server", optional=True, pattern=_SERVER,
                               hint=": the HAProxy server name of the region's own gateway "
                               "(its domain)") or domain
        backups = _backups(problems, s, home_server)
        onebox = _onebox(s, backend)
        edge_cache = _edge_cache(s)
        s.finish()
        services.append(Service(hostname, backend, domain, probe_path, home_server,
                                backups, onebox, edge_cache))
    for field in ("hostname", "backend"):
        values = [getattr(s, field) for s in services]
        for dup in sorted({v for v in values if v and values.count(v) > 1}):
            top.problem("services", f"{field} {dup!r} appears more than once")

    p = top.sub("probe")
    probe = ProbeSettings(
        enabled=p.boolean("enabled", True),
        address=_address(p, "address", "127.0.0.1"),
        port=p.integer("port", 443, 1, 65535),
        timeout=p.number("timeout", 2.0, 0.1, 30.0),
        interval=p.number("interval", interval, 0.1, 3600.0),
        ca_file=p.path("ca_file", optional=True),
        expect_status=p.integer("expect_status", 200, 100, 599),
    )
    p.finish()

    # The longest tick: three Runtime API commands (info, stat, master's proc) at their
    # timeouts, a fourth with a one-box (its maps and fallback table in one round trip), a
    # fifth with an edge cache (the version maps); probes run beside them, in parallel.
    commands = 3 + any(s.onebox for s in services) + any(s.edge_cache for s in services)
    worst_tick = max(commands * (haproxy.connect_timeout + haproxy.read_timeout),
                     probe.timeout if probe.enabled else 0.0)
    stale_after = top.number("stale_after", interval * 3 + worst_tick, 1.0, 600.0)
    drain_dir = top.path("drain_dir") or ""
    keeps_in_dns = top.boolean("bridging_keeps_in_dns", False)
    ip_ranges_map = top.path("ip_ranges_map", optional=True)
    c = top.sub("check")
    check = CheckSettings(
        state_dir=c.path("state_dir") or "",
        cert_warn_days=c.integer("cert_warn_days", 21, 0, 365),
        http_5xx_warn_ratio=c.number("http_5xx_warn_ratio", 0.05, 0.0, 1.0),
        http_5xx_min_requests=c.integer("http_5xx_min_requests", 20, 0, 10**9),
        agent_timeout=c.number("agent_timeout", 2.0, 0.1, 30.0),
    )
    c.finish()
    top.finish()

    if stale_after <= interval + worst_tick:
        top.problem("stale_after", f"{stale_after:g}s must exceed interval plus the longest "
                    f"collection ({interval + worst_tick:g}s), or a slow but working agent "
                    "would report itself stale")
    if problems:
        raise ConfigError(f"invalid config {path}:\n  " + "\n  ".join(problems))
    return Config(path, proxy, region, listen_address, listen_port, interval, rise, fall,
                  stale_after, healthz_path, ok_body, haproxy, tuple(services), probe,
                  drain_dir, check, keeps_in_dns, ip_ranges_map)


def load(path: str) -> Config:
    """Read and validate the file at ``path`` (JSON; YAML if PyYAML is importable)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as json_exc:
        if not path.endswith((".yml", ".yaml")):
            raise ConfigError(f"invalid config {path}: not JSON: {json_exc}") from json_exc
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError as exc:
            raise ConfigError(f"invalid config {path}: YAML needs PyYAML, which is not "
                              "installed; write the config as JSON") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid config {path}: not YAML: {exc}") from exc
    return parse(data, path)

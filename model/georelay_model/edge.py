"""Edge rules of a service (README "Edge rules"): what a proxy answers itself, before or
instead of a gateway. Each is opt-in per entry of ``georelay_services``:

- ``deny_paths`` / ``deny_status``: path regexes answered at the edge (raw and URL-decoded
  path), never relayed;
- ``accept_classes`` / ``accept_default``: the Accept header normalised to a few values;
- ``edge_cache``: HAProxy's cache, keyed by the service's deploy version;
- ``regional_redirects``: a client inside an AWS region (georelay_ip_ranges_file) asking
  for a listed suffix gets a 302 to that region's origin.

And the fleet-wide ``georelay_ip_ranges_file``, ``georelay_proxy_protocol`` and
``georelay_proxy_protocol_from``. Read here, validated, for facts.py to render.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from georelay_model.reader import REGION_RE, Reader
from georelay_model.regions import SITES

EDGE_KEYS = frozenset({"deny_paths", "deny_status", "accept_classes", "accept_default",
                       "edge_cache", "regional_redirects"})
CACHE_KEYS = frozenset({"max_age", "max_object_size", "total_size", "header"})
# HAProxy's replies for deny_status: a refusal, 4xx or 5xx.
DENY_STATUSES = range(400, 600)
ACCEPT_VALUE_RE = re.compile(r"^[A-Za-z0-9*/+.;=, _-]{1,200}$")
HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SUFFIX_RE = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
MAX_TOTAL_MB = 4095  # HAProxy's total-max-size bound


@dataclass(frozen=True)
class AcceptClass:
    contains: str  # a client Accept containing this ...
    value: str  # ... is sent (and cached) as this


@dataclass(frozen=True)
class EdgeCache:
    max_age: int = 30  # seconds an object is served at most (bounds a missed version push)
    max_object_size: int = 262144  # bytes; larger responses are relayed, not stored
    total_size: int = 64  # megabytes of shared memory per service
    header: str | None = None  # response header telling HIT or MISS, e.g. X-Cache


@dataclass(frozen=True)
class EdgeRules:
    deny_paths: tuple[str, ...] = ()
    deny_status: int = 403
    accept_classes: tuple[AcceptClass, ...] = ()
    accept_default: str | None = None  # None (and no classes): Accept untouched
    cache: EdgeCache | None = None
    redirect_suffixes: tuple[str, ...] = ()
    redirect_origins: tuple[tuple[str, str], ...] = ()  # (region, https origin), sorted

    @property
    def normalises_accept(self) -> bool:
        return bool(self.accept_classes) or self.accept_default is not None

    @property
    def redirects(self) -> bool:
        return bool(self.redirect_origins)


@dataclass(frozen=True)
class EdgeSettings:
    ip_ranges_file: str | None = None  # control-node ip-ranges.json
    proxy_protocol: bool = False
    proxy_protocol_from: tuple[str, ...] = ()  # () with proxy_protocol: all but loopback


def read_rules(r: Reader, at: str, item: Mapping[str, Any]) -> EdgeRules:
    """The edge rules of one georelay_services entry (problems go to r)."""
    deny = _deny_paths(r, at, item.get("deny_paths"))
    status = r.integer(at, "deny_status", item.get("deny_status"), 403, DENY_STATUSES.start,
                       DENY_STATUSES.stop - 1, "give a 4xx or 5xx status, e.g. deny_status: 404")
    if item.get("deny_status") is not None and not deny:
        r.problem(at, "deny_status", "is set but the service has no deny_paths",
                  "add deny_paths or remove deny_status")
    classes = _accept_classes(r, at, item.get("accept_classes"))
    default = _accept_value(r, at, "accept_default", item.get("accept_default"))
    if default is None and classes:
        default = "*/*"
    suffixes, origins = _redirects(r, at, item.get("regional_redirects"))
    return EdgeRules(deny, status, classes, default, _cache(r, at, item), suffixes, origins)


def read_edge_settings(r: Reader, raw: Mapping[str, Any]) -> EdgeSettings:
    path = raw.get("georelay_ip_ranges_file")
    if path is not None and path != "":
        if not isinstance(path, str):
            r.problem("all", "georelay_ip_ranges_file", "is not a path",
                      "give the control-node path of AWS's ip-ranges.json")
            path = None
        elif r.rendered and not os.path.isfile(path):
            r.problem("all", "georelay_ip_ranges_file", f"{path} is not a file",
                      "download https://ip-ranges.amazonaws.com/ip-ranges.json there, or "
                      "correct the path")
            path = None
    else:
        path = None
    on = raw.get("georelay_proxy_protocol")
    if on is None:
        on = False
    if not isinstance(on, bool):
        r.problem("all", "georelay_proxy_protocol", f"{on!r} is not true or false",
                  "write georelay_proxy_protocol: true behind a load balancer that sends "
                  "the PROXY protocol, else leave it out")
        on = False
    nets = _networks(r, raw.get("georelay_proxy_protocol_from"))
    if nets and not on:
        r.problem("all", "georelay_proxy_protocol_from", "is set but georelay_proxy_protocol "
                  "is not true", "set georelay_proxy_protocol: true or remove it")
    return EdgeSettings(path, on, nets)


def check_redirect_source(r: Reader, services: tuple[Any, ...], settings: EdgeSettings) -> None:
    """Redirects look client addresses up in the map built from georelay_ip_ranges_file."""
    if settings.ip_ranges_file is None and any(s.edge.redirects for s in services):
        r.problem("all", "georelay_ip_ranges_file", "is not set but a service has "
                  "regional_redirects", "download AWS's ip-ranges.json to the control node "
                  "and set georelay_ip_ranges_file to its path")


def _list(r: Reader, at: str, field: str, value: object, example: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        r.problem(at, field, f"must be a list, not {type(value).__name__}", example)
        return []
    return value


def _deny_paths(r: Reader, at: str, value: object) -> tuple[str, ...]:
    field = "deny_paths"
    out = []
    for i, pattern in enumerate(_list(r, at, field, value, r"write e.g. ['^/\.git', '\.php$']")):
        where = f"{field}[{i}]"
        if not isinstance(pattern, str) or not pattern.strip():
            r.problem(at, where, f"{pattern!r} is not a regex", r"give a path regex, e.g. ^/\.env")
            continue
        if pattern != pattern.strip() or pattern.startswith("#") or "\n" in pattern:
            r.problem(at, where, f"{pattern!r} starts with # or has surrounding spaces or a "
                      "newline (a pattern file line)", r"write spaces as \s and # as [#]")
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            r.problem(at, where, f"{pattern!r} is not a valid regex ({exc})",
                      r"escape special characters, e.g. \.php$ for a literal dot")
            continue
        out.append(pattern)
    return tuple(out)


def _accept_value(r: Reader, at: str, field: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not ACCEPT_VALUE_RE.match(value):
        r.problem(at, field, f"{value!r} is not an Accept value",
                  "give media ranges like image/webp,*/* (letters, digits, */+.;=, only)")
        return None
    return value


def _accept_classes(r: Reader, at: str, value: object) -> tuple[AcceptClass, ...]:
    field = "accept_classes"
    out = []
    for i, item in enumerate(_list(r, at, field, value,
                                   "write e.g. [{contains: image/webp, value: 'image/webp,*/*'}]")):
        where = f"{field}[{i}]"
        if not isinstance(item, Mapping) or set(item) != {"contains", "value"}:
            r.problem(at, where, f"{item!r} is not {{contains, value}}",
                      "write {contains: image/webp, value: 'image/webp,*/*'}")
            continue
        contains = _accept_value(r, at, where + ".contains", item["contains"])
        result = _accept_value(r, at, where + ".value", item["value"])
        if contains and " " in contains:
            r.problem(at, where + ".contains", f"{contains!r} has a space",
                      "match on a media type such as image/webp")
        elif contains and result:
            out.append(AcceptClass(contains, result))
    return tuple(out)


def _cache(r: Reader, at: str, item: Mapping[str, Any]) -> EdgeCache | None:
    if "edge_cache" not in item:
        return None
    raw = item["edge_cache"]
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        r.problem(at, "edge_cache", f"must be a mapping, not {type(raw).__name__}",
                  "write edge_cache: {max_age: 30} (or {} for the defaults)")
        return None
    for key in sorted(set(raw) - CACHE_KEYS):
        r.problem(at, f"edge_cache.{key}", "is not an edge_cache key",
                  f"use only {', '.join(sorted(CACHE_KEYS))}")
    d = EdgeCache()
    age = r.integer(at, "edge_cache.max_age", raw.get("max_age"), d.max_age, 1, 86400,
                    "give seconds from 1 to 86400, e.g. max_age: 30")
    total = r.integer(at, "edge_cache.total_size", raw.get("total_size"), d.total_size, 1,
                      MAX_TOTAL_MB, f"give megabytes from 1 to {MAX_TOTAL_MB}, e.g. "
                      "total_size: 64")
    obj = r.integer(at, "edge_cache.max_object_size", raw.get("max_object_size"),
                    d.max_object_size, 1, 2**31 - 1,
                    "give bytes, e.g. max_object_size: 262144")
    if obj > total * 1024 * 1024 // 2:
        r.problem(at, "edge_cache.max_object_size", f"{obj} bytes is over half of total_size "
                  f"({total} MB)", "lower max_object_size or raise total_size")
        obj = min(obj, total * 1024 * 1024 // 2)
    header = raw.get("header")
    if header is not None and (not isinstance(header, str) or not HEADER_RE.match(header)):
        r.problem(at, "edge_cache.header", f"{header!r} is not a header name",
                  "write e.g. header: X-Cache, or leave it out")
        header = None
    return EdgeCache(age, obj, total, header)


def _redirects(r: Reader, at: str, raw: object
               ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    field = "regional_redirects"
    example = ("write {suffixes: ['.tar.gz'], origins: {us-east-1: "
               "'https://us-east-1-downloads.example.com'}}")
    if raw is None:
        return (), ()
    if not isinstance(raw, Mapping) or set(raw) - {"suffixes", "origins"}:
        r.problem(at, field, "must be a mapping of suffixes and origins", example)
        return (), ()
    suffixes = []
    for i, s in enumerate(_list(r, at, field + ".suffixes", raw.get("suffixes"), example)):
        if not isinstance(s, str) or not SUFFIX_RE.match(s):
            r.problem(at, f"{field}.suffixes[{i}]", f"{s!r} is not a path suffix",
                      "give the end of a file name, e.g. .tar.gz or .iso")
        else:
            suffixes.append(s)
    origins = raw.get("origins")
    if not isinstance(origins, Mapping) or not origins:
        r.problem(at, field + ".origins", "is not a mapping of region to origin URL", example)
        return (), ()
    out = []
    for region, url in sorted(origins.items(), key=lambda kv: str(kv[0])):
        where = f"{field}.origins.{region}"
        if not isinstance(region, str) or not REGION_RE.match(region) or region not in SITES:
            r.problem(at, where, f"{region!r} is not a known AWS region",
                      "use a region code of ip-ranges.json, e.g. us-east-1")
            continue
        parts = urlsplit(url) if isinstance(url, str) else None
        if (parts is None or parts.scheme != "https" or not parts.hostname or parts.query
                or parts.fragment or '"' in url or " " in url or url.endswith("/")):
            r.problem(at, where, f"{url!r} is not an https origin",
                      "give https://HOST[:PORT][/PREFIX] without a trailing slash, query or "
                      "quotes; the request's path and query are appended")
            continue
        out.append((region, url))
    if out and not suffixes:
        r.problem(at, field + ".suffixes", "is empty", "list what is redirected, e.g. "
                  "['.tar.gz', '.iso']")
        return (), ()
    return tuple(suffixes), tuple(out)


def _networks(r: Reader, value: object) -> tuple[str, ...]:
    field = "georelay_proxy_protocol_from"
    out = []
    for i, net in enumerate(_list(r, "all", field, value, "write e.g. ['10.0.0.0/16']")):
        try:
            out.append(str(ipaddress.ip_network(str(net), strict=False)))
        except ValueError:
            r.problem("all", f"{field}[{i}]", f"{net!r} is not a network",
                      "give the load balancers' networks, e.g. 10.0.0.0/16 or 2001:db8::/56")
    return tuple(out)

"""Prometheus metrics, rendered by prometheus_client from the current snapshot.

The snapshot's numbers are exposed through a custom collector (exporter style: read at
scrape time, never duplicated into global metric objects); the agent's own activity uses
ordinary Counter/Histogram objects. Both live in one registry that /metrics serves.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from georelay_agent.snapshot import Snapshot

STATES = ("healthy", "bridging", "unhealthy", "draining", "starting")


class SnapshotCollector(Collector):
    def __init__(self, current: Callable[[], Snapshot]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        snap = self.current()
        doc = snap.doc
        labels = [doc["agent"]["proxy"], doc["agent"]["region"]]
        state = GaugeMetricFamily("georelay_agent_state", "1 for the agent's current state",
                                  labels=["proxy", "region", "state"])
        for name in STATES:
            state.add_metric([*labels, name], 1.0 if snap.state == name else 0.0)
        yield state
        yield _gauge("georelay_agent_healthy", "1 when /healthz answers 200",
                     labels, 1.0 if snap.healthy else 0.0)
        yield _gauge("georelay_agent_snapshot_age_seconds", "Age of the served snapshot",
                     labels, snap.age())
        yield _gauge("georelay_agent_draining", "Active drains", labels,
                     float(sum(1 for d in doc["drains"] if d["active"])))
        hp = doc["haproxy"]
        yield _gauge("georelay_agent_haproxy_up", "1 when the Runtime API answers",
                     labels, 1.0 if hp["up"] else 0.0)
        yield _counter("georelay_agent_haproxy_reloads_seen",
                       "HAProxy worker changes seen by this agent", labels, hp["reloads_seen"])
        if hp["failed_reloads"] is not None:
            yield _gauge("georelay_agent_haproxy_failed_reloads",
                         "Failed reloads reported by the HAProxy master", labels,
                         hp["failed_reloads"])
        yield _gauge("georelay_agent_haproxy_config_pending",
                     "1 when haproxy.cfg is newer than the running worker (past the grace)",
                     labels, 1.0 if hp["config_pending"] else 0.0)
        yield _gauge("georelay_agent_warnings", "Warnings in the snapshot", labels,
                     float(len(doc["warnings"])))
        svc = ["proxy", "region", "service", "backend"]
        up = GaugeMetricFamily("georelay_agent_backend_up",
                               "1 when the service's backend has a usable server (hysteresis)",
                               labels=svc)
        usable = GaugeMetricFamily("georelay_agent_backend_usable_servers",
                                   "Servers able to take requests (home and backups)",
                                   labels=svc)
        req = CounterMetricFamily("georelay_agent_backend_requests",
                                  "HTTP requests of the backend (HAProxy req_tot)", labels=svc)
        e5 = CounterMetricFamily("georelay_agent_backend_http_5xx",
                                 "5xx answers of the backend (HAProxy hrsp_5xx)", labels=svc)
        errs = CounterMetricFamily("georelay_agent_backend_errors",
                                   "Connection/response errors and retries (econ/eresp/wretr)",
                                   labels=[*svc, "kind"])
        lookups = CounterMetricFamily("georelay_agent_backend_cache_lookups",
                                      "Edge cache lookups of the backend (HAProxy "
                                      "cache_lookups; 0 without edge_cache)", labels=svc)
        hits = CounterMetricFamily("georelay_agent_backend_cache_hits",
                                   "Edge cache hits of the backend (HAProxy cache_hits): "
                                   "lookups - hits are the misses", labels=svc)
        probe_up = GaugeMetricFamily("georelay_agent_probe_up",
                                     "1 when the end-to-end probe passes (hysteresis)", labels=svc)
        probe_s = GaugeMetricFamily("georelay_agent_probe_duration_seconds",
                                    "Duration of the last end-to-end probe", labels=svc)
        cert = GaugeMetricFamily("georelay_agent_certificate_expiry_timestamp_seconds",
                                 "notAfter of the certificate the proxy serves", labels=svc)
        home_up = GaugeMetricFamily("georelay_agent_home_up",
                                    "1 when the service's own region's gateway is usable "
                                    "(hysteresis)", labels=svc)
        bridging = GaugeMetricFamily("georelay_agent_bridging",
                                     "1 for the backup region whose gateway serves the service "
                                     "while its home gateway is down", labels=[*svc,
                                                                               "backup_region"])
        yield from _onebox(doc, labels)
        yield from _edge(doc, labels)
        for s in doc["services"]:
            sl = [*labels, s["hostname"], s["backend"]]
            up.add_metric(sl, 1.0 if s["up"] else 0.0)
            home = s.get("home")
            if home is not None:
                home_up.add_metric(sl, 1.0 if home["up"] else 0.0)
                serving = (s.get("bridging") or {}).get("region")
                regions = [sv["region"] or sv["name"] for sv in s["servers"] if sv.get("backup")]
                for region in dict.fromkeys(regions):
                    bridging.add_metric([*sl, region], 1.0 if region == serving else 0.0)
            usable.add_metric(sl, float(s["usable_servers"]))
            if s["requests_total"] is not None:
                req.add_metric(sl, float(s["requests_total"]))
                e5.add_metric(sl, float(s["http_5xx_total"]))
                for kind, value in s["errors"].items():
                    errs.add_metric([*sl, kind], float(value))
            if s.get("cache_lookups") is not None:
                lookups.add_metric(sl, float(s["cache_lookups"]))
                hits.add_metric(sl, float(s["cache_hits"] or 0))
            p = s["probe"]
            if p is not None:
                probe_up.add_metric(sl, 1.0 if p["up"] else 0.0)
                probe_s.add_metric(sl, p["duration_s"])
                if p["cert_not_after"] is not None:
                    cert.add_metric(sl, p["cert_not_after"])
        yield from (up, usable, home_up, bridging, req, e5, errs, lookups, hits, probe_up,
                    probe_s, cert)


def _onebox(doc: dict[str, Any], labels: list[str]) -> Iterator[Metric]:
    """The one-box of each service that has one on this proxy (README "One-box canary")."""
    ol = ["proxy", "region", "service"]
    percent = GaugeMetricFamily("georelay_agent_onebox_percent",
                                "Share of users sent to the one-box (the running map value)",
                                labels=ol)
    usable = GaugeMetricFamily("georelay_agent_onebox_usable_servers",
                               "Servers of the one-box backend able to take requests",
                               labels=ol)
    fallback = CounterMetricFamily("georelay_agent_onebox_fallback_requests",
                                   "Requests of one-box users served by regular: the one-box had "
                                   "no usable server (HAProxy's georelay_onebox_fallback "
                                   "http_req_cnt; a reload resets it)", labels=ol)
    falling = GaugeMetricFamily("georelay_agent_onebox_falling_back",
                                "1 while the one-box has a percentage above 0 and no usable "
                                "server: its users are served by regular", labels=ol)
    for s in doc["services"]:
        ob = s.get("onebox")
        if ob is None:
            continue
        sl = [*labels, s["hostname"]]
        if ob["percent"] is not None:
            percent.add_metric(sl, float(ob["percent"]))
        if ob["usable_servers"] is not None:
            usable.add_metric(sl, float(ob["usable_servers"]))
        if ob["fallback_requests"] is not None:
            fallback.add_metric(sl, float(ob["fallback_requests"]))
        falling.add_metric(sl, 1.0 if ob["falling_back"] else 0.0)
    yield from (percent, usable, fallback, falling)


def _edge(doc: dict[str, Any], labels: list[str]) -> Iterator[Metric]:
    """The edge rules of this proxy (README "Edge rules"): each edge cache's running deploy
    version, and the createDate of the ip-ranges map of regional redirects."""
    version = GaugeMetricFamily(
        "georelay_agent_edge_version",
        "Deploy version of the service's edge cache in the running HAProxy (its version map; "
        "no entry runs 1). No series while the version is not a whole number or unread",
        labels=["proxy", "region", "service"])
    for s in doc["services"]:
        value = (s.get("edge_cache") or {}).get("version")
        if isinstance(value, str) and value.isdigit():
            version.add_metric([*labels, s["hostname"]], float(value))
    yield version
    header = doc.get("ip_ranges")
    if header is not None:
        created = GaugeMetricFamily(
            "georelay_agent_ip_ranges_created_timestamp_seconds",
            "createDate of the AWS ip-ranges map this proxy holds for regional redirects "
            "(the map file's header); absent while unreadable", labels=["proxy", "region"])
        if header["created"] is not None:
            created.add_metric(labels, header["created"])
        yield created


def _gauge(name: str, doc: str, labels: list[str], value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["proxy", "region"])
    g.add_metric(labels, value)
    return g


def _counter(name: str, doc: str, labels: list[str], value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["proxy", "region"])
    c.add_metric(labels, value)
    return c


class AgentMetrics:
    """The registry /metrics serves, and the agent's own instruments."""

    def __init__(self, current: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(current))
        self.collections = Histogram(
            "georelay_agent_collection_duration_seconds", "Duration of one observation",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry)
        self.requests = Counter("georelay_agent_http_requests", "HTTP requests answered",
                                ["path", "code"], registry=self.registry)
        self.transitions = Counter("georelay_agent_state_transitions",
                                   "Changes of the agent's state", ["to"],
                                   registry=self.registry)
        self.started = time.time()

    def observed(self, duration_s: float) -> None:
        self.collections.observe(duration_s)

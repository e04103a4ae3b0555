"""The desired Route53 tree: records and health checks that the inventory calls for.

Per service hostname H and region R (proxy mode):

* ``H`` latency record, ``Region=R``, ALIAS to ``regional(H, R)`` with EvaluateTargetHealth;
* ``regional(H, R)`` one weighted record per proxy (A/AAAA to public_ip or CNAME to
  public_dns), weight ``dns_weight``, one TTL, the proxy's health check;
* one HTTPS health check per (H, proxy): the proxy's address and port, SNI = H.

Direct mode: ``H`` latency ALIAS per region straight to the API Gateway regional domain.

Operator state (:mod:`georelay_dns.operator_state`, read from Route53): an evacuated
region's latency records are withheld (kept in ``Tree.withheld``, not published), so
Route53 has no record for that region whatever its health checks say; a weight override
replaces the proxy's ``dns_weight``.

:func:`check_tree` refuses trees Route53 would accept but that cannot fail over.
"""

from __future__ import annotations

import ipaddress
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from georelay_dns.inputs import Inputs
from georelay_dns.operator_state import OperatorState
from georelay_dns.records import Alias, HealthCheck, Record, norm_name, set_id
from georelay_model import Proxy, Service
from georelay_model.fleet import DnsSettings
from georelay_model.latency import Latency

SELF_ZONE = "SELF"  # alias target zone placeholder until the hosted zone id is known
@dataclass
class Tree:
    zone: str
    zone_id: str
    records: list[Record]
    health_checks: list[HealthCheck]
    warnings: list[str] = field(default_factory=list)
    # Latency records of evacuated regions: what the inventory calls for but is not published.
    withheld: list[Record] = field(default_factory=list)
    state: OperatorState | None = None  # the operator state the tree honours
    inventory_weights: dict[str, int] = field(default_factory=dict)  # proxy -> dns_weight
    state_warnings: list[str] = field(default_factory=list)  # about the operator state (too)
    # Round trips between regions (the fleet's): the order simulate and status evaluate with
    latency: Latency = field(default_factory=Latency)

    def health_check(self, key: str) -> HealthCheck:
        for hc in self.health_checks:
            if hc.key == key:
                return hc
        raise KeyError(key)


def leaf_type(proxy: Proxy) -> str:
    if proxy.public_ip:
        return "AAAA" if ipaddress.ip_address(proxy.public_ip).version == 6 else "A"
    return "CNAME"


def health_config(service: Service, proxy: Proxy, s: DnsSettings) -> dict[str, Any]:
    h = s.health
    cfg: dict[str, Any] = {
        "Type": "HTTPS_STR_MATCH" if h.search else "HTTPS",
        "Port": proxy.https_port,
        "ResourcePath": h.path,
        "RequestInterval": h.interval,
        "FailureThreshold": h.threshold,
        "MeasureLatency": False,
        "Inverted": False,
        "Disabled": False,
        "EnableSNI": True,
    }
    if proxy.public_ip:
        cfg["IPAddress"] = proxy.public_ip
        cfg["FullyQualifiedDomainName"] = service.hostname  # Host header and SNI
    else:  # Route53 resolves the proxy's name; Host/SNI are that name (docs/DNS.md)
        cfg["FullyQualifiedDomainName"] = proxy.public_dns
    if h.search:
        cfg["SearchString"] = h.search
    if h.regions:
        cfg["Regions"] = list(h.regions)
    return cfg


def build_tree(inputs: Inputs, zone_id: str = SELF_ZONE,
               state: OperatorState | None = None) -> Tree:
    """The records and checks the inventory calls for, honouring the operator state."""
    fleet, s = inputs.fleet, inputs.settings
    tree = Tree(zone=fleet.zone, zone_id=zone_id, records=[], health_checks=[], state=state,
                inventory_weights={p.name: p.dns_weight for p in fleet.proxies},
                latency=fleet.latency)
    evacuated = set(state.evacuated) if state else set()
    weights = dict(state.weights) if state else {}
    _state_warnings(tree, inputs, evacuated, weights)
    for svc in fleet.services:
        for region in fleet.regions:
            latency = tree.withheld if region.name in evacuated else tree.records
            if s.mode == "direct":
                target = s.direct[(region.name, svc.hostname)]
                latency.append(Record(
                    svc.hostname, "A", set_id(s.owner, "lat", svc.hostname, region.name),
                    region=region.name, alias=Alias(target.hosted_zone_id,
                                                    norm_name(target.domain_name), True),
                    service=svc.hostname, site=region.name))
                continue
            regional = s.regional(svc.hostname, region.name)
            types = {leaf_type(p) for p in region.proxies}
            for proxy in region.proxies:
                hc = HealthCheck(f"{svc.hostname}/{proxy.name}", svc.hostname, region.name,
                                 proxy.name, json.dumps(health_config(svc, proxy, s),
                                                        sort_keys=True))
                tree.health_checks.append(hc)
                value = proxy.public_ip or norm_name(proxy.public_dns or "")
                if proxy.public_ip and ":" in value:
                    value = ipaddress.ip_address(value).compressed
                tree.records.append(Record(
                    regional, leaf_type(proxy), set_id(s.owner, "w", svc.hostname, proxy.name),
                    weight=weights.get(proxy.name, proxy.dns_weight), ttl=s.ttl,
                    values=(value,), health_check=hc.key,
                    service=svc.hostname, site=region.name, proxy=proxy.name))
            for rtype in sorted(types) or ["A"]:
                latency.append(Record(
                    svc.hostname, rtype, set_id(s.owner, "lat", svc.hostname, region.name),
                    region=region.name, alias=Alias(zone_id, regional, True),
                    service=svc.hostname, site=region.name))
            if len(region.proxies) == 1 and region.name not in evacuated:
                tree.warnings.append(f"{region.name} has a single proxy "
                                     f"({region.proxies[0].name}): when it fails, users near "
                                     f"{region.name} fail over to another region")
    problems = check_tree(tree)
    if problems:
        raise TreeError(problems)
    return tree


def _state_warnings(tree: Tree, inputs: Inputs, evacuated: set[str],
                    weights: dict[str, int]) -> None:
    fleet = inputs.fleet
    regions = {r.name for r in fleet.regions}
    hosts = {p.name for p in fleet.proxies}
    out = tree.state_warnings
    for region in sorted(evacuated - regions):
        out.append(f"the operator state evacuates {region}, which is not a region of the "
                   f"inventory: georelay-dns restore {region} clears it")
    for host in sorted(set(weights) - hosts):
        out.append(f"the operator state overrides the weight of {host}, which is not a proxy "
                   f"of the inventory: georelay-dns weight {host} --reset clears it")
    if regions and regions <= evacuated:
        out.append("every region is evacuated: Route53 has no latency record left and gives "
                   "users no answer; georelay-dns restore REGION brings one back")
    for region in fleet.regions:
        if set(weights) & {p.name for p in region.proxies} and all(
                weights.get(p.name, p.dns_weight) == 0 for p in region.proxies):
            out.append(f"every proxy of {region.name} has weight 0: Route53 then shares its "
                       "traffic equally among them")
    tree.warnings.extend(out)


class TreeError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("refusing a tree that cannot fail over:\n" +
                         "\n".join(f"  - {p}" for p in problems))


def check_tree(tree: Tree) -> list[str]:
    """What makes a tree unable to fail over (Route53 itself would accept all of these)."""
    out: list[str] = []
    sets: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in tree.records:
        sets[(r.name, r.type)].append(r)
    types_at: dict[str, set[str]] = defaultdict(set)
    for r in tree.records:
        types_at[r.name].add(r.type)
        if r.kind == "weighted" and not r.health_check:
            out.append(f"weighted record {r.name} {r.type} {r.set_id} has no health check: "
                       "Route53 would keep handing out a dead proxy")
        if r.kind == "latency" and (r.alias is None or not r.alias.evaluate):
            out.append(f"latency record {r.name} {r.type} {r.region} is not an ALIAS with "
                       "EvaluateTargetHealth: its region could never be failed away from")
    for name, types in sorted(types_at.items()):
        if "CNAME" in types and len(types) > 1:
            out.append(f"{name} mixes CNAME with {', '.join(sorted(types - {'CNAME'}))}: give "
                       "every proxy the same kind of address (all public_ip or all public_dns)")
    latency_types = {r.type for r in tree.records if r.kind == "latency"}
    if len(latency_types) > 1:
        out.append(f"the latency records mix {', '.join(sorted(latency_types))}: a query for "
                   "one type could not fail over to regions holding only the other; give every "
                   "proxy the same kind of address")
    for (name, rtype), records in sorted(sets.items()):
        ttls = {r.ttl for r in records if r.alias is None}
        if len(ttls) > 1:
            out.append(f"{name} {rtype} has mixed TTLs {sorted(t or 0 for t in ttls)}: use one")
        regions = [r.region for r in records if r.region]
        for region in sorted({x for x in regions if regions.count(x) > 1}):
            out.append(f"{name} {rtype} has two latency records for {region}")
        for r in records:
            if r.kind == "latency" and r.alias and r.alias.zone_id == tree.zone_id and \
                    (r.alias.dns_name, rtype) not in sets:
                out.append(f"latency record {name} {rtype} for {r.region} points at "
                           f"{r.alias.dns_name}, which has no records (a region with no "
                           "proxies)")
    return out

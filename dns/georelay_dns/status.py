"""The live tree: georelay's records, each health check's status, and what users get now."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Any

from georelay_dns.plan import meta_from_set_id
from georelay_dns.records import Live, Record, owner_prefix
from georelay_dns.route53 import Sleep, call
from georelay_dns.simulate import Evaluator
from georelay_dns.state_record import state_set_id
from georelay_dns.tree import Tree

# Route53 deems an endpoint healthy when more than 18% of its checkers report it healthy.
HEALTHY_SHARE = 0.18


def checker_verdict(observations: list[dict[str, Any]]) -> tuple[bool, int, int]:
    ok = sum(1 for o in observations
             if str(o.get("StatusReport", {}).get("Status", "")).startswith("Success"))
    total = len(observations)
    return (total > 0 and ok / total > HEALTHY_SHARE), ok, total


def owned_records(live: Live, owner: str, desired: Tree | None = None) -> list[Record]:
    """georelay's records (not the operator state record), with service/region/proxy
    recovered from the desired tree (withheld records included: an evacuated region has
    leaves but no latency record to name its region) or else from SetIdentifiers."""
    mine = [r for r in live.records
            if r.set_id.startswith(owner_prefix(owner)) and r.set_id != state_set_id(owner)]
    site_of = {r.alias.dns_name: r.region for r in mine if r.alias and r.region}
    known = {r.set_id: r for r in [*desired.records, *desired.withheld]} if desired else {}
    out = []
    for r in mine:
        service, site, proxy = meta_from_set_id(r, known)
        out.append(dataclasses.replace(r, service=service, site=site or site_of.get(r.name, ""),
                                       proxy=proxy))
    return out


def live_status(client: Any, live: Live, owner: str, sleep: Sleep = time.sleep,
                desired: Tree | None = None,
                operator_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """operator_state: :func:`georelay_dns.operator_state.summary` of the live state."""
    records = owned_records(live, owner, desired)
    health: dict[str, bool] = {}
    checks: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.health_check and r.health_check not in checks:
            got = call(client, "get_health_check_status", sleep=sleep,
                       HealthCheckId=r.health_check)
            ok, good, total = checker_verdict(got.get("HealthCheckObservations", []))
            health[r.health_check] = ok
            checks[r.health_check] = {"healthy": ok, "checkers_ok": good, "checkers": total}
    ev = Evaluator(records, live.zone_id, health,
                   latency=desired.latency if desired else None)
    services: dict[str, Any] = defaultdict(lambda: {"regions": {}, "answers": {}})
    for r in records:
        if r.region:
            services[r.service]["regions"].setdefault(r.region, [])
    for r in records:
        if r.weight is not None:
            services[r.service]["regions"].setdefault(r.site, []).append({
                "proxy": r.proxy, "name": r.name, "value": ", ".join(r.values),
                "weight": r.weight, "health_check": r.health_check,
                **checks.get(r.health_check or "", {})})
    for service, data in services.items():
        for origin in sorted(data["regions"]):
            outcome = ev.resolve(service, origin)
            data["answers"][origin] = {
                "answers": [{"region": a.region, "proxy": a.target, "value": a.value,
                             "share": float(a.share)} for a in outcome.answers],
                "notes": outcome.notes}
    return {"zone_id": live.zone_id, "services": dict(services),
            "operator_state": operator_state or {"evacuated": {}, "weights": {}}}


def render_status(st: dict[str, Any]) -> str:
    lines = [f"zone {st['zone_id']}"]
    op = st.get("operator_state") or {}
    evacuated, weights = op.get("evacuated", {}), op.get("weights", {})
    if evacuated or weights:
        lines.append("operator state:")
    for region, e in sorted(evacuated.items()):
        lines.append(f"  EVACUATED {region} since {e['at']} by {e['by']}: {e['reason']} "
                     f"(undo: georelay-dns restore {region})")
    for host, w in sorted(weights.items()):
        lines.append(f"  weight override {host}: {w['weight']} (inventory dns_weight "
                     f"{w['inventory'] if w['inventory'] is not None else '-'}; undo: "
                     f"georelay-dns weight {host} --reset)")
    for service, data in sorted(st["services"].items()):
        lines.append(f"{service}:")
        for region, proxies in sorted(data["regions"].items()):
            lines.append(f"  {region}:" + ("  EVACUATED: no latency record, users go to the "
                                           "next region" if region in evacuated else ""))
            for p in proxies:
                state = "healthy" if p.get("healthy") else "UNHEALTHY"
                over = " (override)" if p["proxy"] in weights else ""
                lines.append(f"    {p['proxy']:<16} {p['value']:<20} weight {p['weight']:<3}{over} "
                             f"{state} ({p.get('checkers_ok', 0)}/{p.get('checkers', 0)} "
                             f"checkers) hc {p['health_check']}")
        for origin, ans in sorted(data["answers"].items()):
            got = ", ".join(f"{a['proxy']}@{a['region']} {a['share']:.0%}"
                            for a in ans["answers"])
            lines.append(f"  users near {origin} get: {got}")
            lines += [f"    note: {n}" for n in ans["notes"]]
    return "\n".join(lines)

"""A pure evaluator of a georelay tree, following Route53's documented rules.

* A record without a health check is healthy; one with a health check is as healthy as
  the check. An ALIAS with EvaluateTargetHealth is healthy when any record of its target
  set is healthy (an alias to another zone/API Gateway: unless its region is down).
* Latency: users get the lowest-latency *healthy* record; when every record of the set is
  unhealthy, Route53 answers as if all were healthy (fail open): the nearest one.
* Weighted: healthy records with weight > 0 share traffic by weight; weight-0 records are
  used only when every non-zero one is unhealthy (equally); when all are unhealthy Route53
  treats all as healthy again. All weights 0: equal shares.

Latency between regions comes from :mod:`georelay_model.latency` (the inventory's
georelay_region_latency, else the shipped measurements, else a distance estimate, said so).
Used by ``georelay-dns simulate`` and ``status``, and as the oracle in the tests.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from georelay_dns.records import Record
from georelay_dns.tree import Tree
from georelay_model.latency import Latency


@dataclass(frozen=True)
class Answer:
    region: str
    target: str  # proxy name (or the alias target in direct mode)
    value: str  # what the resolver gets: IP, name, or alias target
    share: Fraction


@dataclass
class Outcome:
    hostname: str
    origin: str
    answers: list[Answer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def region(self) -> str | None:
        return self.answers[0].region if self.answers else None


class Evaluator:
    def __init__(self, records: Iterable[Record], zone_id: str,
                 health: Mapping[str, bool] | None = None,
                 down_regions: Iterable[str] = (), latency: Latency | None = None) -> None:
        """health: health-check key or id -> healthy (absent: healthy).
        down_regions: regions whose external alias targets (direct mode) are down.
        latency: the round trips users near a region see (default: the shipped data)."""
        self.zone_id = zone_id
        self.latency = latency or Latency()
        self.health = dict(health or {})
        self.down_regions = set(down_regions)
        self.sets: dict[tuple[str, str], list[Record]] = defaultdict(list)
        for r in records:
            self.sets[(r.name, r.type)].append(r)

    def healthy(self, r: Record) -> bool:
        if r.alias and r.alias.evaluate:
            if r.alias.zone_id != self.zone_id:
                return (r.region or r.site) not in self.down_regions
            target = self.sets.get((r.alias.dns_name, r.type), [])
            return any(self.healthy(t) for t in target)
        if r.health_check:
            return self.health.get(r.health_check, True)
        return True

    def resolve(self, hostname: str, origin: str, rtype: str | None = None) -> Outcome:
        out = Outcome(hostname, origin)
        types = [rtype] if rtype else [t for (n, t) in self.sets if n == hostname]
        if not types:
            out.notes.append(f"no records for {hostname}")
            return out
        records = self.sets[(hostname, types[0])]
        self._answer(records, origin, out, Fraction(1), site="")
        return out

    def _answer(self, records: list[Record], origin: str, out: Outcome, share: Fraction,
                site: str) -> None:
        latency = [r for r in records if r.region]
        if latency:
            by_region = {r.region: r for r in latency if r.region}
            order = self.latency.nearest_first(origin, by_region)
            note = self.latency.order_note(origin, by_region)
            if note and note not in out.notes:
                out.notes.append(note)
            healthy = [reg for reg in order if self.healthy(by_region[reg])]
            if healthy:
                chosen = healthy[0]
                skipped = order[:order.index(chosen)]
                if skipped:
                    out.notes.append(f"{', '.join(skipped)} unhealthy: latency fails over to "
                                     f"{chosen}")
            else:
                chosen = order[0]
                out.notes.append("every region is unhealthy: Route53 fails open and answers "
                                 f"the nearest, {chosen}")
            self._follow(by_region[chosen], origin, out, share, chosen)
            return
        weighted = [r for r in records if r.weight is not None]
        if weighted:
            for r, part in self._weights(weighted, out):
                self._follow(r, origin, out, share * part, site)
            return
        for r in records:  # simple record
            self._follow(r, origin, out, share / len(records), site)

    def _weights(self, records: list[Record], out: Outcome) -> list[tuple[Record, Fraction]]:
        healthy = [r for r in records if self.healthy(r)]
        pool = [r for r in healthy if r.weight]
        if not pool:
            pool = [r for r in healthy if not r.weight]
        if not pool:
            out.notes.append(f"every record of {records[0].name} is unhealthy: Route53 fails "
                             "open and answers as if all were healthy")
            pool = [r for r in records if r.weight] or list(records)
        total = sum(r.weight or 0 for r in pool)
        if total == 0:
            return [(r, Fraction(1, len(pool))) for r in pool]
        return [(r, Fraction(r.weight or 0, total)) for r in pool]

    def _follow(self, r: Record, origin: str, out: Outcome, share: Fraction, site: str) -> None:
        site = r.region or site or r.site
        if r.alias and r.alias.zone_id == self.zone_id:
            target = self.sets.get((r.alias.dns_name, r.type), [])
            if target:
                self._answer(target, origin, out, share, site)
                return
        value = r.alias.dns_name if r.alias else ", ".join(r.values)
        out.answers.append(Answer(site, r.proxy or value, value, share))


def health_for(records: Iterable[Record], down_proxies: Iterable[str],
               down_regions: Iterable[str]) -> dict[str, bool]:
    """A health map for a desired tree: the checks of down proxies/regions fail."""
    dp, dr = set(down_proxies), set(down_regions)
    return {r.health_check: not (r.proxy in dp or r.site in dr)
            for r in records if r.health_check}


def who_answers(ev: Evaluator, hostname: str, origin: str) -> str:
    """'us-east-2 (p0 75%, p1 25%)': the region users near origin get, and the shares."""
    out = ev.resolve(hostname, origin)
    if not out.answers:
        return "no answer (no latency record left)"
    by_region: dict[str, list[Answer]] = defaultdict(list)
    for a in out.answers:
        by_region[a.region].append(a)
    return "; ".join(f"{region} ({', '.join(f'{a.target} {float(a.share):.0%}' for a in got)})"
                     for region, got in by_region.items())


def effect_lines(before: Tree, after: Tree, hostnames: Iterable[str], origins: Iterable[str],
                 down: Iterable[str] = (), down_regions: Iterable[str] = ()) -> list[str]:
    """Who answers users near each origin before -> after a change (one block when every
    service gives the same answers, else one per service)."""
    down, down_regions = list(down), list(down_regions)
    evs = [Evaluator(t.records, t.zone_id, health_for(t.records, down, down_regions),
                     down_regions, t.latency) for t in (before, after)]
    blocks: dict[str, list[str]] = {}
    for hostname in hostnames:
        rows = []
        for origin in origins:
            was, now = (who_answers(ev, hostname, origin) for ev in evs)
            if was == now:
                rows.append(f"  near {origin:<15} {was}  (unchanged)")
            else:
                rows += [f"  near {origin:<15} {was}", f"  {'':<20} -> {now}"]
        blocks[hostname] = rows
    healthy = "every proxy healthy" if not (down or down_regions) else \
        "down: " + ", ".join([*down, *down_regions])
    if len({tuple(rows) for rows in blocks.values()}) == 1:
        return [f"who answers users (every service, {healthy}):", *next(iter(blocks.values()))]
    out = []
    for hostname, rows in blocks.items():
        out += [f"who answers users of {hostname} ({healthy}):", *rows]
    return out

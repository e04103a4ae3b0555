"""How far apart AWS regions are in round-trip time, and the order that follows from it.

Route53 latency routing answers each user with the lowest-latency *healthy* region, using
latency data AWS measures from users' resolvers and does not publish. georelay needs a
stand-in for that order in two places, and both read this module: ``georelay-dns simulate``
(which region answers users near REGION when some are down) and the proxies' backup
regions (``Fleet.backups_of``, the order of the backup servers in haproxy.cfg).

Where each round trip comes from, first found wins:

1. ``inventory``: the ``georelay_region_latency`` variable (``{from: {to: ms}}``), the
   operator's own measurements (``georelay-dns latency import`` writes it);
2. ``measured``: the matrix shipped in ``data/region_latency.json`` (a public
   region-to-region measurement, named and dated in the file and in docs/DNS.md);
3. ``estimated``: the great-circle estimate of :mod:`georelay_model.regions`, for a region
   neither knows (a region newer than the data). Every place that shows an order says when
   part of it is estimated.

A pair missing in one direction takes the other direction's value. Ties are broken by
region name, so every order is deterministic.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from georelay_model import regions
from georelay_model.reader import REGION_RE, Reader

MAX_RTT_MS = 2000.0  # no real inter-region round trip is near this; a typo is
DATA_FILE = "region_latency.json"

MEASURED, INVENTORY, ESTIMATED, UNKNOWN = "measured", "inventory", "estimated", "unknown"


@dataclass(frozen=True)
class Matrix:
    """Round trips in ms by (from, to), and where they were published."""

    rtt: Mapping[tuple[str, str], float]
    source: str  # e.g. "CloudPing (cloudping.co), p50 of TCP round trips, 2025-10..."
    url: str = ""
    period: str = ""

    @property
    def regions(self) -> frozenset[str]:
        return frozenset(r for pair in self.rtt for r in pair)

    def get(self, a: str, b: str) -> float | None:
        return either_way(self.rtt, a, b)


def either_way(table: Mapping[tuple[str, str], float], a: str, b: str) -> float | None:
    """The round trip a -> b, else b -> a (a pair measured in one direction serves both)."""
    got = table.get((a, b))
    return got if got is not None else table.get((b, a))


def matrix_from_json(doc: Mapping[str, Any], where: str) -> Matrix:
    """A :class:`Matrix` from ``{"source": ..., "rtt_ms": {from: {to: ms}}}``; ValueError
    names the entry that is wrong."""
    table = doc.get("rtt_ms")
    if not isinstance(table, Mapping) or not table:
        raise ValueError(f"{where}: no rtt_ms mapping ({{from: {{to: ms}}}})")
    return Matrix(pairs(table, where), str(doc.get("source", "")), str(doc.get("url", "")),
                  str(doc.get("period", "")))


def pairs(table: Mapping[Any, Any], where: str) -> dict[tuple[str, str], float]:
    """``{from: {to: ms}}`` checked into ``{(from, to): ms}``; ValueError names the entry."""
    out: dict[tuple[str, str], float] = {}
    for a, row in table.items():
        if not isinstance(a, str) or not REGION_RE.match(a):
            raise ValueError(f"{where}: {a!r} is not an AWS region name (e.g. us-east-1)")
        if not isinstance(row, Mapping):
            raise ValueError(f"{where}.{a}: is not a mapping of region to ms")
        for b, ms in row.items():
            if not isinstance(b, str) or not REGION_RE.match(b):
                raise ValueError(f"{where}.{a}: {b!r} is not an AWS region name")
            if isinstance(ms, bool) or not isinstance(ms, int | float) or (not (
                    0 < ms <= MAX_RTT_MS) and a != b):
                raise ValueError(f"{where}.{a}.{b}: {ms!r} is not a round trip in ms (a "
                                 f"number above 0, at most {MAX_RTT_MS:.0f})")
            if a != b:
                out[(a, b)] = float(ms)
    return out


@cache
def shipped() -> Matrix:
    """The measured matrix georelay ships (data/region_latency.json)."""
    text = resources.files("georelay_model").joinpath("data", DATA_FILE).read_text("utf-8")
    return matrix_from_json(json.loads(text), DATA_FILE)


@dataclass(frozen=True)
class Latency:
    """The round trip between any two regions, with where it comes from."""

    override: Mapping[tuple[str, str], float] = field(default_factory=dict)
    override_source: str = ""  # georelay_region_latency_source
    measured: Matrix = field(default_factory=shipped)

    def rtt(self, a: str, b: str) -> tuple[float | None, str]:
        """(ms, origin): origin is inventory, measured, estimated or unknown (ms None)."""
        if a == b:
            return 0.0, MEASURED
        got = either_way(self.override, a, b)
        if got is not None:
            return got, INVENTORY
        got = self.measured.get(a, b)
        if got is not None:
            return got, MEASURED
        if a in regions.SITES and b in regions.SITES:
            return regions.rtt_ms(a, b), ESTIMATED
        return None, UNKNOWN

    def nearest_first(self, origin: str, candidates: Iterable[str]) -> list[str]:
        """The candidates ordered by round trip from origin, nearest first; a region whose
        round trip is unknown sorts last, by name."""
        def key(r: str) -> tuple[int, float, str]:
            ms, _ = self.rtt(origin, r)
            return (0, ms, r) if ms is not None else (1, 0.0, r)

        return sorted(set(candidates), key=key)

    def not_measured(self, origin: str, candidates: Iterable[str]) -> dict[str, str]:
        """The candidates whose round trip from origin is estimated or unknown, with which."""
        out = {}
        for r in sorted(set(candidates) - {origin}):
            _, how = self.rtt(origin, r)
            if how in (ESTIMATED, UNKNOWN):
                out[r] = how
        return out

    def order_note(self, origin: str, candidates: Iterable[str]) -> str:
        """'' when the whole order from origin is measured (or the inventory's), else a
        sentence saying which part is estimated from distance or unknown."""
        missing = self.not_measured(origin, candidates)
        if not missing:
            return ""
        est = [r for r, how in missing.items() if how == ESTIMATED]
        unk = [r for r, how in missing.items() if how == UNKNOWN]
        parts = []
        if est:
            parts.append(f"estimated from distance for {', '.join(est)}")
        if unk:
            parts.append(f"unknown for {', '.join(unk)} (sorted last)")
        return (f"order from {origin} {' and '.join(parts)}: no measured round trip in "
                f"the shipped data or georelay_region_latency")

    @property
    def known(self) -> frozenset[str]:
        """Every region with a measured round trip (shipped or inventory)."""
        return self.measured.regions | frozenset(r for pair in self.override for r in pair)

    def describe(self) -> str:
        m = self.measured
        text = f"measured: {m.source}" + (f", {m.period}" if m.period else "")
        if self.override:
            text += (f"; {len(self.override)} pair(s) from georelay_region_latency"
                     + (f" ({self.override_source})" if self.override_source else ""))
        return text


class RegionError(ValueError):
    """A region name that is not an AWS region; the message lists the known ones."""


def check_region(name: str, latency: Latency | None = None, *, what: str = "region") -> str:
    """'' for a region the data measures; a note that its order is estimated for a
    well-formed AWS region the data lacks; RegionError (listing the known regions) for a
    name that is not an AWS region at all (``mars-1``, ``us-east``, ``US-EAST-1``)."""
    latency = latency or Latency()
    if name in latency.known:
        return ""
    if not REGION_RE.match(name):
        known = sorted(latency.known | regions.SITES.keys())
        raise RegionError(f"{what} {name!r} is not an AWS region. Fix: use a region code, one "
                          f"of {', '.join(known)}")
    if name in regions.SITES:
        return (f"{name} has no measured round trips in the shipped data: its order is "
                "estimated from distance (docs/DNS.md, 'Region latency')")
    return (f"{name} is not in the latency data or the region table: regions sort after "
            "every known one for it (set georelay_region_latency to fix the order)")


def read_latency(r: Reader, value: object, source: object) -> Latency:
    """georelay_region_latency (and its _source) checked into a :class:`Latency`; problems
    go to ``r`` and the shipped data is used alone."""
    field_name = "georelay_region_latency"
    if source not in (None, "") and not isinstance(source, str):
        r.problem("all", "georelay_region_latency_source", "must be a string",
                  "say where the numbers come from, e.g. 'our pings, 2026-11'")
        source = ""
    if value in (None, {}):
        return Latency(override_source=str(source or ""))
    if not isinstance(value, Mapping):
        r.problem("all", field_name, f"must be a mapping, not {type(value).__name__}",
                  "give round trips as {us-east-1: {eu-west-1: 68}} (ms), or run "
                  "georelay-dns latency import")
        return Latency()
    try:
        override = pairs(value, field_name)
    except ValueError as e:
        r.problem("all", field_name, str(e).removeprefix(field_name).lstrip(".: "),
                  "give round trips as {us-east-1: {eu-west-1: 68}}: region codes, ms "
                  f"above 0 and at most {MAX_RTT_MS:.0f}")
        return Latency()
    return Latency(override, str(source or ""))


def read_matrix_file(path: str) -> Matrix:
    """A round-trip matrix from a file, for ``georelay-dns latency import``:

    * JSON: ``{"source": ..., "rtt_ms": {from: {to: ms}}}`` (the shipped file's format) or
      a bare ``{from: {to: ms}}``;
    * CSV with a ``from,to,rtt_ms`` header, one pair per line;
    * CSV as a grid: the first row names the destination regions, each further row starts
      with its source region (how latency dashboards export their table).

    ValueError says what is wrong and where (line, region)."""
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    if path.endswith(".json") or text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from e
        if not isinstance(doc, Mapping):
            raise ValueError(f"{path}: expected a JSON object")
        if "rtt_ms" in doc:
            return matrix_from_json(doc, path)
        return Matrix(pairs(doc, path), source=path)
    rows = [[c.strip() for c in row] for row in csv.reader(text.splitlines()) if row]
    if not rows:
        raise ValueError(f"{path}: empty")
    head = [c.lower() for c in rows[0]]
    table: dict[str, dict[str, object]] = {}
    if head[:3] == ["from", "to", "rtt_ms"]:
        for n, row in enumerate(rows[1:], start=2):
            if len(row) < 3:
                raise ValueError(f"{path}:{n}: expected from,to,rtt_ms")
            table.setdefault(row[0], {})[row[1]] = _ms(row[2], f"{path}:{n}")
    else:
        targets = rows[0][1:]
        for n, row in enumerate(rows[1:], start=2):
            for target, cell in zip(targets, row[1:], strict=False):
                if cell and target != row[0]:
                    table.setdefault(row[0], {})[target] = _ms(cell, f"{path}:{n} {target}")
    return Matrix(pairs(table, path), source=path)


def _ms(cell: str, where: str) -> float:
    try:
        return float(cell.removesuffix("ms").strip())
    except ValueError:
        raise ValueError(f"{where}: {cell!r} is not a number of ms") from None

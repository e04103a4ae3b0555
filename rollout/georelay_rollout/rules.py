"""When a rollout step aborts, holds or may advance: pure functions of the proxies' counters.

A leaf module (no I/O): the controller (controller.py) feeds it what every targeted proxy
answered (proxies.Reading) and the baseline it took when the step began, and acts on the
Verdict. The counters are HAProxy's per-backend totals (``show stat`` req_tot and
hrsp_5xx of the regular and the one-box backend) and the one-box fallback table: they grow
until a reload resets them, which is detected here (a new worker, or a total that went
down) and answered by taking that proxy's baseline again.

The rules, in the order they are checked (docs/ROLLOUT.md):

- hold: a targeted proxy did not answer (unreachable, or its one-box could not be read);
- abort: the one-box backend has no usable server on a proxy, or its users were sent to
  regular (fallback requests grew): a dead canary never passes for a healthy one;
- abort: a spike, the one-box's 5xx share of the requests since the last evaluation above
  ``spike_ratio`` (20%) on at least ``spike_min_requests``;
- abort: over the step's window the one-box's 5xx ratio above
  max(``ratio_floor`` 1%, ``ratio_factor`` 2 x the regular's + ``ratio_margin`` 0.5
  points), on at least ``min_requests``, for ``consecutive`` evaluations in a row;
- abort: the one-box's share of the service's requests far from the set percentage
  (more than ``share_tolerance`` points and more than half of it), on ``min_requests``;
- hold: fewer than ``min_requests`` one-box requests in the window: too little traffic to
  judge, so the step neither advances nor aborts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

COUNTERS = ("onebox_requests", "onebox_5xx", "regular_requests", "regular_5xx",
            "fallback_requests")


class Counted(Protocol):
    """What rules need of one proxy's reading (proxies.Reading has it)."""

    host: str
    ok: bool
    error: str | None
    percent: int | None
    usable_servers: int | None
    process: str | None
    onebox_requests: int
    onebox_5xx: int
    regular_requests: int
    regular_5xx: int
    fallback_requests: int


@dataclass(frozen=True)
class Thresholds:
    min_requests: int = 200
    ratio_floor: float = 0.01
    ratio_factor: float = 2.0
    ratio_margin: float = 0.005
    consecutive: int = 3
    spike_ratio: float = 0.20
    spike_min_requests: int = 20
    share_tolerance: float = 0.10  # points of share, as a fraction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Thresholds:
        return cls(**{k: doc[k] for k in cls.__dataclass_fields__ if k in doc})

    def limit(self, regular_ratio: float) -> float:
        """The one-box 5xx ratio above which an evaluation is bad."""
        return max(self.ratio_floor, self.ratio_factor * regular_ratio + self.ratio_margin)


@dataclass(frozen=True)
class Sample:
    """One proxy's counters at one moment, with the worker that counted them."""

    process: str | None
    counts: tuple[int, ...]  # in COUNTERS order

    @classmethod
    def of(cls, reading: Counted) -> Sample:
        return cls(reading.process, tuple(int(getattr(reading, c)) for c in COUNTERS))

    def to_list(self) -> list[Any]:
        return [self.process, *self.counts]

    @classmethod
    def from_list(cls, doc: list[Any]) -> Sample:
        return cls(doc[0], tuple(int(x) for x in doc[1:]))

    def reset_since(self, earlier: Sample) -> bool:
        """A reload between the two: another worker, or a total that went down."""
        return (self.process != earlier.process
                or any(n < o for n, o in zip(self.counts, earlier.counts, strict=True)))

    def minus(self, earlier: Sample) -> tuple[int, ...]:
        return tuple(n - o for n, o in zip(self.counts, earlier.counts, strict=True))


@dataclass(frozen=True)
class Totals:
    onebox_requests: int = 0
    onebox_5xx: int = 0
    regular_requests: int = 0
    regular_5xx: int = 0
    fallback_requests: int = 0

    @classmethod
    def summed(cls, deltas: list[tuple[int, ...]]) -> Totals:
        return cls(*(sum(d[i] for d in deltas) for i in range(len(COUNTERS))))

    @property
    def onebox_ratio(self) -> float:
        return self.onebox_5xx / self.onebox_requests if self.onebox_requests else 0.0

    @property
    def regular_ratio(self) -> float:
        return self.regular_5xx / self.regular_requests if self.regular_requests else 0.0

    @property
    def share(self) -> float | None:
        """The one-box's share of the service's requests (None: no requests)."""
        total = self.onebox_requests + self.regular_requests
        return self.onebox_requests / total if total else None


@dataclass
class Verdict:
    action: str  # "ok" (may advance once baked), "hold" or "abort"
    reason: str
    window: Totals = field(default_factory=Totals)
    interval: Totals = field(default_factory=Totals)
    bad_evaluations: int = 0
    unanswered: bool = False  # a hold because proxies did not answer: the bake clock stops
    rebaselined: list[str] = field(default_factory=list)  # proxies whose counters reset
    baseline: dict[str, Sample] = field(default_factory=dict)
    last: dict[str, Sample] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "reason": self.reason, "window": asdict(self.window),
                "interval": asdict(self.interval), "bad_evaluations": self.bad_evaluations,
                "rebaselined": self.rebaselined}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def evaluate(readings: Mapping[str, Counted], percent: int, baseline: Mapping[str, Sample],
             last: Mapping[str, Sample], bad_evaluations: int, t: Thresholds) -> Verdict:
    """The verdict on the current step from the targeted proxies' readings. ``baseline``:
    each proxy's counters when the step began (missing: take them now); ``last``: at the
    previous evaluation (for the spike rule); ``bad_evaluations``: consecutive evaluations
    over the ratio limit so far. The returned verdict carries the new baseline and last."""
    down = sorted(h for h, r in readings.items() if not r.ok)
    if down:
        why = "; ".join(f"{h}: {readings[h].error or 'no answer'}" for h in down)
        return Verdict("hold", f"{len(down)} proxy(ies) did not answer ({why}): holding, "
                               "neither advancing nor aborting", bad_evaluations=bad_evaluations,
                       unanswered=True, baseline=dict(baseline), last=dict(last))
    new_base: dict[str, Sample] = {}
    new_last: dict[str, Sample] = {}
    rebased: list[str] = []
    window: list[tuple[int, ...]] = []
    interval: list[tuple[int, ...]] = []
    for host, r in sorted(readings.items()):
        now = Sample.of(r)
        base = baseline.get(host)
        prev = last.get(host, base)
        if base is None or now.reset_since(base):
            if base is not None:
                rebased.append(host)
            base = prev = now
        elif prev is None or now.reset_since(prev):
            prev = now
        new_base[host], new_last[host] = base, now
        window.append(now.minus(base))
        interval.append(now.minus(prev))
    w, i = Totals.summed(window), Totals.summed(interval)

    def verdict(action: str, reason: str, bad: int = 0) -> Verdict:
        return Verdict(action, reason, w, i, bad, False, rebased, new_base, new_last)

    dead = sorted(h for h, r in readings.items() if r.usable_servers == 0)
    if dead:
        return verdict("abort", f"the one-box backend has no usable server on "
                                f"{', '.join(dead)}: its users are served by regular")
    if w.fallback_requests:
        return verdict("abort", f"{w.fallback_requests} one-box request(s) fell back to "
                                "regular in this step (the one-box backend was down)")
    if i.onebox_requests >= t.spike_min_requests and i.onebox_ratio > t.spike_ratio:
        return verdict("abort", f"5xx spike: {_pct(i.onebox_ratio)} of "
                                f"{i.onebox_requests} one-box requests since the last "
                                f"evaluation (limit {_pct(t.spike_ratio)})")
    bad = 0
    if w.onebox_requests >= t.min_requests:
        limit = t.limit(w.regular_ratio)
        if w.onebox_ratio > limit:
            bad = bad_evaluations + 1
            what = (f"one-box 5xx {_pct(w.onebox_ratio)} of {w.onebox_requests} requests "
                    f"vs regular {_pct(w.regular_ratio)} (limit {_pct(limit)})")
            if bad >= t.consecutive:
                return verdict("abort", f"{what}, {bad} evaluations in a row", bad)
        share = w.share
        if share is not None and abs(share - percent / 100) > max(t.share_tolerance,
                                                                    percent / 200):
            return verdict("abort", f"the one-box got {_pct(share)} of the requests while "
                                    f"{percent}% is set", bad)
        if bad:
            return verdict("ok", f"{what}: bad evaluation {bad} of {t.consecutive}", bad)
        return verdict("ok", f"one-box 5xx {_pct(w.onebox_ratio)} of {w.onebox_requests} "
                             f"requests, regular {_pct(w.regular_ratio)} of "
                             f"{w.regular_requests}")
    return verdict("hold", f"too little traffic to judge: {w.onebox_requests} of "
                           f"{t.min_requests} one-box requests in this step")

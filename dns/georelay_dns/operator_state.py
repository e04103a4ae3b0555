"""Operator state: evacuated regions and weight overrides, the values.

What an operator changed by hand (georelay-dns evacuate / restore / weight), as plain
values that the tree (tree.py) honours. Kept in Route53 as one TXT record: state_record.py
writes and reads it. A leaf module: it imports nothing of georelay.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

VERSION = 1
REASON_MAX = 200
BY_MAX = 64
WEIGHT_MAX = 255


class StateError(ValueError):
    """The state record cannot be read or written safely; the message names the fix."""


@dataclass(frozen=True)
class Evacuation:
    reason: str
    at: str  # UTC, 2025-01-02T03:04:05Z
    by: str  # user@host that evacuated


@dataclass(frozen=True)
class OperatorState:
    evacuated: Mapping[str, Evacuation] = field(default_factory=dict)
    weights: Mapping[str, int] = field(default_factory=dict)
    serial: int = 0  # writes so far (0: never written)

    @property
    def empty(self) -> bool:
        return not (self.evacuated or self.weights)

    def same_as(self, other: OperatorState) -> bool:
        """Same evacuations and weights (the serial aside)."""
        return (dict(self.evacuated), dict(self.weights)) == (dict(other.evacuated),
                                                              dict(other.weights))

    def next(self) -> OperatorState:
        return replace(self, serial=self.serial + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"v": VERSION, "serial": self.serial,
                "evacuated": {r: {"reason": e.reason, "at": e.at, "by": e.by}
                              for r, e in sorted(self.evacuated.items())},
                "weights": dict(sorted(self.weights.items()))}

    def evacuate(self, region: str, evacuation: Evacuation) -> OperatorState:
        return replace(self, evacuated={**self.evacuated, region: evacuation})

    def restore(self, region: str) -> OperatorState:
        return replace(self, evacuated={r: e for r, e in self.evacuated.items() if r != region})

    def with_weight(self, host: str, weight: int | None) -> OperatorState:
        """weight None removes the override (the inventory's dns_weight applies)."""
        weights = {h: w for h, w in self.weights.items() if h != host}
        if weight is not None:
            weights[host] = weight
        return replace(self, weights=weights)


def check_reason(reason: str) -> str:
    """The reason as stored, or StateError naming the fix."""
    text = " ".join(reason.split())
    if not text:
        raise StateError("--reason is empty. Fix: say why, e.g. --reason 'gateway 5xx in "
                         "us-east-1, INC-1234'")
    if len(text) > REASON_MAX:
        raise StateError(f"--reason has {len(text)} characters. Fix: keep it to {REASON_MAX} "
                         "(it is stored in DNS); link a ticket for the details")
    if not text.isprintable():
        raise StateError("--reason holds control characters. Fix: use plain text")
    return text


def describe(state: OperatorState, inventory_weights: Mapping[str, int]) -> list[str]:
    """One line per evacuation and weight override, for people."""
    lines = [f"evacuated {region} since {e.at} by {e.by}: {e.reason} (its latency records "
             f"are withheld; undo: georelay-dns restore {region})"
             for region, e in sorted(state.evacuated.items())]
    for host, w in sorted(state.weights.items()):
        inv = inventory_weights.get(host)
        lines.append(f"weight {host} {w} (inventory dns_weight "
                     f"{inv if inv is not None else '-, not in the inventory'})")
    return lines


def summary(state: OperatorState, inventory_weights: Mapping[str, int]) -> dict[str, Any]:
    """The state as data for status/plan JSON: weights with the inventory's value beside."""
    d = state.to_dict()
    d["weights"] = {h: {"weight": w, "inventory": inventory_weights.get(h)}
                    for h, w in d["weights"].items()}
    return d

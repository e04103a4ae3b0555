"""georelay-rollout's command line (filled in below)."""

from __future__ import annotations


def main() -> None:
    raise SystemExit("georelay-rollout: not built yet")

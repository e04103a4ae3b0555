"""Inventory problems: each names the variable, what is wrong and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the inventory."""

    where: str  # host name, "all" or "all.georelay_services[1]"
    field: str  # the variable, e.g. "haproxy_https_port"
    message: str  # what is wrong with the value
    fix: str  # what to do instead

    def __str__(self) -> str:
        end = "" if self.fix.endswith(("?", ".", "!")) else "."
        return f"{self.where}: {self.field}: {self.message}. Fix: {self.fix}{end}"


class InventoryError(ValueError):
    """The inventory cannot be used; nothing was changed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"the inventory has {len(problems)} problem(s):\n{lines}")

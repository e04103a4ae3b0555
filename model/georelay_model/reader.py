"""Reading inventory values: checks that remember every problem instead of stopping.

A leaf of the model (it imports only the contract and the problem type): the fleet-wide
settings (settings.py) and the per-host and per-region reads (load.py) share it.
"""

from __future__ import annotations

import re

from georelay_model.contract import VARS
from georelay_model.errors import Problem

# Every default of the inventory contract, by variable name (contract.py is the one place).
DEFAULTS: dict[str, object] = {v.name: v.default for v in VARS}

REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
# Read only by the role, which sees them templated. Where the inventory is read raw
# (georelay-dns), a Jinja value in one of these is left alone instead of refused.
ROLE_ONLY = frozenset({"haproxy_bind_address", "haproxy_http_port", "georelay_service_manager",
                       "georelay_root", "georelay_tls_pem", "georelay_backend_ca",
                       "georelay_apigw_address", "georelay_agent_bind_address",
                       "georelay_agent_port", "georelay_metrics_listen",
                       "georelay_metrics_allow", "georelay_metrics_basic_auth"})


def is_dns_name(name: str) -> bool:
    if not name or len(name) > 253 or "." not in name:
        return False
    return all(LABEL_RE.match(label) for label in name.split("."))


def is_jinja(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


class Reader:
    """Reads and checks values, remembering every problem instead of stopping at the first."""

    def __init__(self, rendered: bool) -> None:
        self.rendered = rendered
        self.problems: list[Problem] = []

    def problem(self, where: str, field: str, message: str, fix: str) -> None:
        self.problems.append(Problem(where, field, message, fix))

    def string(self, where: str, field: str, value: object, *, required: bool) -> str | None:
        if value is None or value == "":
            if required:
                self.problem(where, field, "is not set", f"set {field} in the inventory")
            return None
        if not isinstance(value, str):
            self.problem(where, field, f"must be a string, not {type(value).__name__}",
                         "quote the value in YAML")
            return None
        if not self.rendered and is_jinja(value):
            if field in ROLE_ONLY:
                return None
            self.problem(where, field, f"is a Jinja expression ({value!r})",
                         "georelay reads this variable without templating: set it literally")
            return None
        return value.strip()

    def integer(self, where: str, field: str, value: object, default: int | None,
                lo: int, hi: int, fix: str, allowed: tuple[int, ...] = ()) -> int:
        """A whole number from lo to hi (and in ``allowed`` when given); ``default`` None
        takes the contract's default of ``field``."""
        if default is None:
            default = default_int(field)
        if value is None or value == "" or (not self.rendered and field in ROLE_ONLY
                                                and is_jinja(value)):
            return default
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, field, f"{value!r} is not a whole number", fix)
            return default
        if not lo <= value <= hi:
            self.problem(where, field, f"{value} is out of range", fix)
            return default
        if allowed and value not in allowed:
            self.problem(where, field, f"{value} is not one of {', '.join(map(str, allowed))}",
                         fix)
            return default
        return value

    def dns_name(self, where: str, field: str, value: object, *, required: bool = True) -> str:
        name = self.string(where, field, value, required=required)
        if name is None:
            return ""
        name = name.lower().rstrip(".")
        if not is_dns_name(name):
            self.problem(where, field, f"{value!r} is not a DNS name",
                         "use letters, digits and hyphens in dot-separated labels, "
                         "e.g. fast.example.com")
            return ""
        return name


def default_int(name: str) -> int:
    value = DEFAULTS[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"contract.py: the default of {name} is not a whole number")
    return value


def default_str(name: str) -> str:
    value = DEFAULTS[name]
    if not isinstance(value, str):
        raise TypeError(f"contract.py: the default of {name} is not a string")
    return value

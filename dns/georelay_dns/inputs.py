"""The inventory as georelay-dns needs it: the fleet and its Route53 settings.

Both come from the fleet model in one read (``georelay_model``: settings.py reads the
fleet-wide variables, georelay_dns_* among them, with the contract's defaults), so one run
lists every problem of the inventory at once and nothing is touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from georelay_model import Fleet, fleet_from_hostvars
from georelay_model.fleet import DnsSettings


@dataclass(frozen=True)
class Inputs:
    """Everything the desired tree is built from."""

    fleet: Fleet

    @property
    def settings(self) -> DnsSettings:
        return self.fleet.dns


def load_inputs(hostvars: Mapping[str, Mapping[str, Any]]) -> Inputs:
    """Validate hostvars into the fleet and its DNS settings, or raise InventoryError
    (every problem). The inventory is read raw (``ansible-inventory --list``), untemplated."""
    return Inputs(fleet_from_hostvars(hostvars, rendered=False))

"""The georelay fleet model: the Ansible inventory, validated and normalised.

Data flows one way: inventory (host vars) -> :class:`Fleet` -> rendered haproxy.cfg
(roles/) or a Route53 plan (dns/). Every consumer builds the fleet with
:func:`fleet_from_hostvars` so that defaults and rules live in one place.
"""

from georelay_model.errors import InventoryError, Problem
from georelay_model.fleet import Fleet, Proxy, Region, Service
from georelay_model.inventory import load_inventory
from georelay_model.load import fleet_from_hostvars

__all__ = [
    "Fleet",
    "InventoryError",
    "Problem",
    "Proxy",
    "Region",
    "Service",
    "fleet_from_hostvars",
    "load_inventory",
]

"""Bad inventories: each names the variable and the fix, and nothing reaches Route53."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from georelay_dns.inputs import load_inputs
from georelay_dns.tree import TreeError, build_tree
from georelay_model import InventoryError, load_inventory
from georelay_testing.dns_zone import fleet, write_inventory

CASES: list[tuple[str, dict[str, Any], str]] = [
    ("mode", {"georelay_dns_mode": "anycast"}, "georelay_dns_mode: 'anycast' is not a mode"),
    ("ttl", {"georelay_dns_ttl": 120}, "georelay_dns_ttl: 120 is out of range. Fix: use 1-60"),
    ("interval", {"georelay_dns_health_interval": 20},
     "georelay_dns_health_interval: 20 is not one of 10, 30. Fix: Route53 accepts 10"),
    ("threshold", {"georelay_dns_health_threshold": 0},
     "georelay_dns_health_threshold: 0 is out of range"),
    ("path", {"georelay_dns_health_path": "healthz"},
     "georelay_dns_health_path: 'healthz' is not a URL path"),
    ("two checker regions", {"georelay_dns_health_regions": ["us-east-1", "eu-west-1"]},
     "Route53 requires at least 3"),
    ("owner", {"georelay_dns_owner": "Geo Relay"}, "georelay_dns_owner: 'Geo Relay'"),
    ("zone id", {"georelay_dns_zone_id": "not-a-zone"}, "georelay_dns_zone_id: 'not-a-zone'"),
    ("pattern without region", {"georelay_dns_regional_name": "proxy-{label}.{parent}"},
     "georelay_dns_regional_name: has no {region}"),
    ("pattern outside zone", {"georelay_dns_regional_name": "{region}-{label}.example.net"},
     "not a name in example.com"),
    ("pattern collides", {"georelay_dns_regional_name": "proxy-{region}.{parent}"},
     "include {label} or {hostname}"),
    ("direct without targets", {"georelay_dns_mode": "direct"},
     "georelay_dns_direct_targets: is not set"),
    ("targets in proxy mode", {"georelay_dns_direct_targets": {"us-east-1": {}}},
     "is set but georelay_dns_mode is proxy"),
    ("misspelt", {"georelay_dns_tll": 30}, "georelay_dns_tll: is not a georelay variable"),
]


@pytest.mark.parametrize(("name", "extra", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_dns_setting(tmp_path: Path, name: str, extra: dict[str, Any],
                         message: str) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2}), **extra)
    with pytest.raises(InventoryError) as err:
        load_inputs(load_inventory(inv))
    assert message in str(err.value)
    assert all(p.fix for p in err.value.problems)


def test_mixed_address_kinds_cannot_fail_over(tmp_path: Path) -> None:
    regions = fleet({"us-east-1": 2, "us-west-2": 2})
    regions["us-west-2"] = {"usw2-a": {"public_dns": "a.proxies.example.net"},
                            "usw2-b": {"public_dns": "b.proxies.example.net"}}
    inv = write_inventory(tmp_path / "inv", regions)
    with pytest.raises(TreeError, match="mix A, CNAME"):
        build_tree(load_inputs(load_inventory(inv)))


def test_cname_proxies_get_name_checks(tmp_path: Path) -> None:
    regions = {"us-east-1": {"a": {"public_dns": "a.proxies.example.net", "dns_weight": 2},
                             "b": {"public_dns": "b.proxies.example.net"}}}
    tree = build_tree(load_inputs(load_inventory(write_inventory(tmp_path / "inv", regions))))
    leaves = [r for r in tree.records if r.weight is not None]
    assert {r.type for r in leaves} == {"CNAME"}
    assert {r.type for r in tree.records if r.region} == {"CNAME"}
    cfg = tree.health_check(leaves[0].health_check or "").config
    assert "IPAddress" not in cfg and cfg["FullyQualifiedDomainName"].endswith(
        ".proxies.example.net")

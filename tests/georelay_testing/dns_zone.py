"""Helpers of the georelay-dns tests: the moto zone wrapper and YAML test inventories."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class Zone:
    """The example.com hosted zone in a freshly reset moto_server."""

    def __init__(self, client: Any, zone_id: str) -> None:
        self.client = client
        self.id = zone_id

    def records(self) -> list[dict[str, Any]]:
        pages = self.client.get_paginator("list_resource_record_sets").paginate(
            HostedZoneId=self.id)
        return [rr for p in pages for rr in p["ResourceRecordSets"]
                if rr["Type"] not in ("NS", "SOA")]

    def health_checks(self) -> list[dict[str, Any]]:
        return self.client.list_health_checks()["HealthChecks"]

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        key = lambda d: str(sorted(d.items()))  # noqa: E731
        return sorted(self.records(), key=key), sorted(self.health_checks(), key=key)


SERVICES = [
    {"hostname": "fast.example.com", "apigw_domain": "{region}-fast.example.com"},
    {"hostname": "api.example.com", "apigw_domain": "{region}-api.example.com"},
]


def write_inventory(path: Path, regions: dict[str, dict[str, dict[str, Any]]], *,
                    services: list[dict[str, Any]] | None = None,
                    **all_vars: Any) -> Path:
    """An inventory directory: one group per region ({region: {host: hostvars}})."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "group_vars").mkdir(exist_ok=True)
    children = {
        region.replace("-", "_"): {"vars": {"aws_region": region}, "hosts": hosts}
        for region, hosts in regions.items()}
    (path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": children}}))
    (path / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "georelay_zone": "example.com", "georelay_services": services or SERVICES,
        "georelay_tls_pem": "/nonexistent/public.pem", **all_vars}))
    return path


def fleet(n_regions: dict[str, int], weights: dict[str, int] | None = None
          ) -> dict[str, dict[str, dict[str, Any]]]:
    """{region: count} -> hosts named <region>-p<i> with distinct TEST-NET addresses."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for ri, (region, count) in enumerate(n_regions.items()):
        out[region] = {}
        for i in range(count):
            host = f"{region}-p{i}"
            out[region][host] = {"public_ip": f"198.51.{ri}.{i + 1}"}
            if weights and host in weights:
                out[region][host]["dns_weight"] = weights[host]
    return out

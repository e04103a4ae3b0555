"""georelay-dns against a real moto_server process (Route53 over HTTP)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from georelay_dns.apply import apply_plan
from georelay_testing.dns_drive import cli, library_plan, plan_json, recording_client
from georelay_testing.dns_zone import Zone, fleet, write_inventory

DEMO = Path(__file__).resolve().parents[2] / "inventories" / "demo"


def _apply(inv: Path, *extra: str) -> str:
    code, out = cli("apply", "-i", str(inv), "--yes", *extra)
    assert code == 0, out
    return out


def _base(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2}))


def test_empty_zone_gets_the_full_demo_tree(zone: Zone) -> None:
    code, plan = plan_json(DEMO)
    assert code == 2
    assert plan["counts"]["healthcheck_create"] == 8 and plan["counts"]["record_create"] == 12
    _apply(DEMO)
    records = zone.records()
    checks = {h["Id"]: h for h in zone.health_checks()}
    assert len(records) == 12 and len(checks) == 8
    latency = [r for r in records if "Region" in r]
    weighted = [r for r in records if "Weight" in r]
    assert {(r["Name"], r["Region"]) for r in latency} == {
        (f"{s}.example.com.", reg) for s in ("fast", "api") for reg in ("us-east-1", "us-west-2")}
    for r in latency:
        target = r["AliasTarget"]
        label = r["Name"].split(".")[0]
        assert target["EvaluateTargetHealth"] is True
        assert target["DNSName"] == f"proxy-{r['Region']}-{label}.example.com."
        assert target["HostedZoneId"].endswith(zone.id)
    assert len({r["SetIdentifier"] for r in records}) == len(records)  # zone-unique
    assert {r["TTL"] for r in weighted} == {60}
    for r in weighted:
        hc = checks[r["HealthCheckId"]]["HealthCheckConfig"]
        service = r["SetIdentifier"].split(":")[2]
        assert hc["IPAddress"] == r["ResourceRecords"][0]["Value"]
        # the demo asks for the agent's own answer (georelay_dns_health_search)
        assert (hc["Type"], hc["Port"], hc["ResourcePath"]) == ("HTTPS_STR_MATCH", 443,
                                                                "/healthz")
        assert hc["SearchString"] == "georelay-healthy"
        assert hc["FullyQualifiedDomainName"] == service and hc["EnableSNI"] is True
        assert (hc["RequestInterval"], hc["FailureThreshold"]) == (10, 2)
    tags = zone.client.list_tags_for_resources(ResourceType="healthcheck",
                                               ResourceIds=list(checks)[:8])
    for ts in tags["ResourceTagSets"]:
        kv = {t["Key"]: t["Value"] for t in ts["Tags"]}
        assert kv["georelay:owner"] == "georelay" and kv["Name"].startswith("georelay ")
    code, again = plan_json(DEMO)
    assert code == 0 and again["records"] == [] and again["healthcheck_creates"] == []


def test_add_proxy_is_minimal(zone: Zone, tmp_path: Path) -> None:
    _apply(_base(tmp_path))
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 3, "us-west-2": 2}))
    code, plan = plan_json(tmp_path / "inv")
    assert code == 2
    assert plan["counts"] == {"healthcheck_create": 2, "healthcheck_update": 0,
                              "healthcheck_delete": 0, "record_create": 2,
                              "record_upsert": 0, "record_delete": 0}
    assert {c["config"]["IPAddress"] for c in plan["healthcheck_creates"]} == {"198.51.0.3"}
    _apply(tmp_path / "inv")
    assert plan_json(tmp_path / "inv")[0] == 0


def test_remove_proxy_deletes_record_then_its_health_check(zone: Zone, tmp_path: Path) -> None:
    _apply(_base(tmp_path))
    before = {h["Id"] for h in zone.health_checks()}
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 1, "us-west-2": 2}))
    client, ops = recording_client()
    client, _, plan = library_plan(tmp_path / "inv", client)
    assert plan.counts() == {"healthcheck_create": 0, "healthcheck_update": 0,
                             "healthcheck_delete": 2, "record_create": 0,
                             "record_upsert": 0, "record_delete": 2}
    gone = {d.id for d in plan.hc_deletes}
    ops.clear()
    apply_plan(client, plan)
    assert ops.index("ChangeResourceRecordSets") < ops.index("GetChange") < \
        ops.index("DeleteHealthCheck")
    assert {h["Id"] for h in zone.health_checks()} == before - gone
    assert not any(r.get("HealthCheckId") in gone for r in zone.records())
    assert plan_json(tmp_path / "inv")[0] == 0


def test_change_weight_upserts_only_that_record(zone: Zone, tmp_path: Path) -> None:
    _apply(_base(tmp_path))
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2},
                                            weights={"us-west-2-p1": 5}))
    code, plan = plan_json(tmp_path / "inv")
    assert code == 2
    assert [(r["action"], r["set_id"], r["weight"]) for r in plan["records"]] == [
        ("UPSERT", "georelay:w:api.example.com:us-west-2-p1", 5),
        ("UPSERT", "georelay:w:fast.example.com:us-west-2-p1", 5)]
    assert plan["counts"]["healthcheck_create"] == plan["counts"]["healthcheck_update"] == 0
    _apply(tmp_path / "inv")
    weights = {r["SetIdentifier"]: r["Weight"] for r in zone.records() if "Weight" in r}
    assert weights["georelay:w:fast.example.com:us-west-2-p1"] == 5
    assert weights["georelay:w:fast.example.com:us-west-2-p0"] == 1
    assert plan_json(tmp_path / "inv")[0] == 0


def test_add_region_creates_leaves_before_aliases(zone: Zone, tmp_path: Path) -> None:
    _apply(_base(tmp_path))
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2,
                                             "eu-west-1": 2}))
    code, plan = plan_json(tmp_path / "inv")
    assert code == 2
    assert plan["counts"]["healthcheck_create"] == 4
    assert [(r["action"], r["phase"]) for r in plan["records"]] == \
        [("CREATE", "leaves")] * 4 + [("CREATE", "aliases")] * 2
    assert {r["region"] for r in plan["records"]} == {"eu-west-1"}
    _apply(tmp_path / "inv")
    assert plan_json(tmp_path / "inv")[0] == 0


def test_add_service(zone: Zone, tmp_path: Path) -> None:
    _apply(_base(tmp_path))
    services = [{"hostname": "fast.example.com", "apigw_domain": "{region}-fast.example.com"},
                {"hostname": "api.example.com", "apigw_domain": "{region}-api.example.com"},
                {"hostname": "cdn.example.com", "apigw_domain": "{region}-cdn.example.com"}]
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2}),
                    services=services)
    code, plan = plan_json(tmp_path / "inv")
    assert code == 2
    assert plan["counts"] == {"healthcheck_create": 4, "healthcheck_update": 0,
                              "healthcheck_delete": 0, "record_create": 6,
                              "record_upsert": 0, "record_delete": 0}
    assert {r["service"] for r in plan["records"]} == {"cdn.example.com"}
    _apply(tmp_path / "inv")
    assert plan_json(tmp_path / "inv")[0] == 0


def _add_foreign(zone: Zone) -> str:
    hc = zone.client.create_health_check(CallerReference="other-tool-1", HealthCheckConfig={
        "Type": "HTTP", "IPAddress": "203.0.113.9", "Port": 80, "ResourcePath": "/"})
    hc_id = hc["HealthCheck"]["Id"]
    zone.client.change_resource_record_sets(HostedZoneId=zone.id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": "fast.example.com.", "Type": "TXT", "TTL": 300,
            "ResourceRecords": [{"Value": '"v=spf1 -all"'}]}},
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": "www.example.com.", "Type": "A", "TTL": 300,
            "ResourceRecords": [{"Value": "203.0.113.1"}]}},
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": "mail.example.com.", "Type": "A", "TTL": 60, "SetIdentifier": "other-1",
            "Weight": 10, "HealthCheckId": hc_id,
            "ResourceRecords": [{"Value": "203.0.113.9"}]}}]})
    return hc_id


def test_foreign_records_and_health_checks_survive(zone: Zone, tmp_path: Path) -> None:
    hc_id = _add_foreign(zone)
    foreign_before = [r for r in zone.records()]
    _apply(_base(tmp_path))
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 1, "us-west-2": 2},
                                            weights={"us-west-2-p0": 3}))
    _apply(tmp_path / "inv")
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2}))
    _apply(tmp_path / "inv", "--force")
    after = zone.records()
    for rr in foreign_before:
        assert rr in after
    assert hc_id in {h["Id"] for h in zone.health_checks()}
    assert len(zone.health_checks()) == 1 + 8


def test_foreign_record_in_the_way_is_refused(zone: Zone, tmp_path: Path) -> None:
    zone.client.change_resource_record_sets(HostedZoneId=zone.id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": "api.example.com.", "Type": "A", "TTL": 300,
            "ResourceRecords": [{"Value": "203.0.113.7"}]}}]})
    before = zone.snapshot()
    code, out = cli("plan", "-i", str(_base(tmp_path)))
    assert code == 1 and "CONFLICT api.example.com A" in out and "never overwrites" in out
    code, out = cli("apply", "-i", str(tmp_path / "inv"), "--yes")
    assert code == 1 and "not own" in out
    assert zone.snapshot() == before


def test_threshold_refuses_mass_delete_without_force(zone: Zone, tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 3, "us-west-2": 3}))
    _apply(inv)
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 3}))
    before = zone.snapshot()
    code, out = cli("apply", "-i", str(inv), "--yes")
    assert code == 1 and "--force" in out and "more than 30%" in out
    assert zone.snapshot() == before
    _apply(inv, "--force")
    assert {r["Region"] for r in zone.records() if "Region" in r} == {"us-east-1"}
    assert len(zone.health_checks()) == 6
    assert plan_json(inv)[0] == 0


def test_checksum_must_match(zone: Zone, tmp_path: Path) -> None:
    inv = _base(tmp_path)
    _, plan = plan_json(inv)
    code, out = cli("apply", "-i", str(inv), "--checksum", "sha256:0000")
    assert code == 1 and "plan changed since review" in out and zone.records() == []
    code, out = cli("apply", "-i", str(inv))
    assert code == 1 and "--yes or --checksum" in out and zone.records() == []
    code, out = cli("apply", "-i", str(inv), "--checksum", plan["checksum"])
    assert code == 0 and len(zone.records()) == 12


def test_health_check_settings_update_in_place_or_replace(zone: Zone, tmp_path: Path) -> None:
    inv = _base(tmp_path)
    _apply(inv)
    ids = {h["Id"] for h in zone.health_checks()}
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2}),
                    georelay_dns_health_threshold=3)
    code, plan = plan_json(inv)
    assert plan["counts"]["healthcheck_update"] == 8 and plan["records"] == []
    assert all(u["changes"] == {"FailureThreshold": 3} for u in plan["healthcheck_updates"])
    _apply(inv, "--force")
    assert {h["Id"] for h in zone.health_checks()} == ids
    assert {h["HealthCheckConfig"]["FailureThreshold"] for h in zone.health_checks()} == {3}
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-west-2": 2}),
                    georelay_dns_health_threshold=3, georelay_dns_health_interval=30)
    code, plan = plan_json(inv)
    assert code == 2 and plan["counts"]["healthcheck_create"] == 8
    assert plan["counts"]["record_upsert"] == 8 and plan["counts"]["healthcheck_delete"] == 8
    _apply(inv, "--force")
    new = zone.health_checks()
    assert len(new) == 8 and not ids & {h["Id"] for h in new}
    assert {h["HealthCheckConfig"]["RequestInterval"] for h in new} == {30}
    assert plan_json(inv)[0] == 0


def test_bad_inventory_touches_nothing(zone: Zone, tmp_path: Path) -> None:
    regions = fleet({"us-east-1": 2})
    regions["us-east-1"]["us-east-1-p0"]["dns_weight"] = 300
    inv = write_inventory(tmp_path / "inv", regions, georelay_dns_ttl=300,
                          georelay_dns_health_regions=["us-east-1", "mars-1"])
    code, out = cli("apply", "-i", str(inv), "--yes")
    assert code == 1
    assert "us-east-1-p0: dns_weight: 300 is out of range" in out
    assert "georelay_dns_ttl: 300 is out of range. Fix: use 1-60 seconds" in out
    assert "georelay_dns_health_regions: mars-1 is not a Route53 checker region" in out
    assert zone.records() == [] and zone.health_checks() == []


def test_interrupted_apply_converges_on_rerun(zone: Zone, tmp_path: Path) -> None:
    """The interruption (a crash after the health checks, before the record batch) is a
    botocore event hook raising; Route53 itself is moto_server."""
    inv = _base(tmp_path)
    client, _, plan = library_plan(inv)

    def crash(**_: object) -> None:
        raise KeyboardInterrupt("operator pressed ^C")

    client.meta.events.register("before-call.route53.ChangeResourceRecordSets", crash)
    with pytest.raises(KeyboardInterrupt):
        apply_plan(client, plan)
    assert len(zone.health_checks()) == 8 and zone.records() == []
    code, again = plan_json(inv)
    assert code == 2
    assert again["counts"]["healthcheck_create"] == 0 and again["counts"]["record_create"] == 12
    _apply(inv)
    assert len(zone.health_checks()) == 8 and len(zone.records()) == 12
    assert plan_json(inv)[0] == 0


def test_direct_mode(zone: Zone, tmp_path: Path) -> None:
    targets = {region: {s: {"domain_name": f"d-{i}{j}.execute-api.{region}.amazonaws.com",
                            "hosted_zone_id": zid}
                        for j, s in enumerate(["fast.example.com", "api.example.com"])}
               for i, (region, zid) in enumerate([("us-east-1", "Z1UJRXOUMOOFQ8"),
                                                  ("eu-west-1", "ZLY8HYME6SFDD")])}
    inv = tmp_path / "direct"
    inv.mkdir()
    (inv / "hosts.yml").write_text("all:\n  hosts:\n    localhost: {}\n")
    (inv / "group_vars").mkdir()
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "georelay_zone": "example.com", "georelay_dns_mode": "direct",
        "georelay_services": [{"hostname": "fast.example.com",
                               "apigw_domain": "{region}-fast.example.com"},
                              {"hostname": "api.example.com",
                               "apigw_domain": "{region}-api.example.com"}],
        "georelay_dns_direct_targets": targets}))
    code, plan = plan_json(inv)
    assert code == 2 and plan["counts"]["record_create"] == 4
    assert plan["counts"]["healthcheck_create"] == 0
    _apply(inv)
    by = {(r["Name"], r["Region"]): r["AliasTarget"] for r in zone.records()}
    assert by[("fast.example.com.", "eu-west-1")]["DNSName"].startswith(
        "d-10.execute-api.eu-west-1.amazonaws.com")
    assert all(t["EvaluateTargetHealth"] for t in by.values())
    assert plan_json(inv)[0] == 0


def test_alias_read_back_with_a_ttl_is_still_in_sync() -> None:
    """Route53 never gives an alias a TTL; moto reports TTL 0 for some. Either way: no diff."""
    from georelay_dns.route53 import record_from_rrset

    rr = {"Name": "fast.example.com.", "Type": "A", "SetIdentifier": "georelay:lat:x:us-east-1",
          "Region": "us-east-1", "TTL": 0,
          "AliasTarget": {"HostedZoneId": "Z1", "DNSName": "proxy-us-east-1-fast.example.com.",
                          "EvaluateTargetHealth": True}}
    without_ttl = {k: v for k, v in rr.items() if k != "TTL"}
    assert record_from_rrset(rr) == record_from_rrset(without_ttl)
    assert record_from_rrset(rr).ttl is None

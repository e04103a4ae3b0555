"""Route53 behaviour moto does not model, with botocore's Stubber standing in for AWS.

Stubbed here: HealthCheckAlreadyExists for a used CallerReference, InvalidChangeBatch,
a Throttling / PriorRequestNotComplete that botocore gave up on (botocore's retries
themselves are driven over HTTP in test_dns_retries.py), changes that stay PENDING,
HealthCheckVersionMismatch, and Route53 refusing the DELETE of an operator state value
that another operator changed meanwhile (moto checks a DELETE against every value
ever written, not against the current one). The plans themselves are real: built from
YAML inventories read through ansible-inventory.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from georelay_dns import operations
from georelay_dns.apply import (
    ApplyError,
    Step,
    apply_plan,
    change_size,
    count_steps,
    split_batches,
    wait_insync,
)
from georelay_dns.inputs import load_inputs
from georelay_dns.operator_state import OperatorState
from georelay_dns.plan import Plan, RecordChange, make_plan
from georelay_dns.records import Live, LiveHealthCheck, Record
from georelay_dns.route53 import call, record_from_rrset, rrset_from_record
from georelay_dns.state_record import decode, read_state, state_record
from georelay_dns.tree import Tree, build_tree
from georelay_model import load_inventory
from georelay_testing.dns_zone import fleet, write_inventory

ZONE = "Z0STUB"
HC = {"Id": "hc-new", "CallerReference": "x", "HealthCheckVersion": 1,
      "HealthCheckConfig": {"Type": "HTTPS"}}
CHANGE = {"ChangeInfo": {"Id": "/change/C1", "Status": "PENDING",
                         "SubmittedAt": "2024-01-01T00:00:00Z"}}
INSYNC = {"ChangeInfo": {**CHANGE["ChangeInfo"], "Status": "INSYNC"}}


@pytest.fixture(scope="module")
def one_proxy_tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    inv = write_inventory(tmp_path_factory.mktemp("inv"), fleet({"us-east-1": 1}),
                          services=[{"hostname": "fast.example.com",
                                     "apigw_domain": "{region}-fast.example.com"}])
    return build_tree(load_inputs(load_inventory(inv)), ZONE)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    for k, v in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_ENDPOINT_URL_ROUTE_53", raising=False)
    return boto3.client("route53")


def _plan(tree: Tree, checks: list[LiveHealthCheck] | None = None) -> Plan:
    return make_plan(tree, Live(ZONE, [], {}, checks or []), "georelay")


def test_used_caller_reference_moves_to_next_generation(one_proxy_tree: Tree,
                                                         client: Any) -> None:
    plan = _plan(one_proxy_tree)
    check = plan.hc_creates[0].check
    ref0, ref1 = check.caller_reference("georelay", 0), check.caller_reference("georelay", 1)
    assert ref0 != ref1 and ref0.startswith("grl:georelay:") and len(ref1) <= 64
    with Stubber(client) as stub:
        stub.add_client_error("create_health_check", "HealthCheckAlreadyExists",
                              expected_params={"CallerReference": ref0,
                                               "HealthCheckConfig": check.config})
        stub.add_response("create_health_check", {"HealthCheck": HC, "Location": "l"},
                          {"CallerReference": ref1, "HealthCheckConfig": check.config})
        stub.add_response("change_tags_for_resource", {}, {
            "ResourceType": "healthcheck", "ResourceId": "hc-new", "AddTags": ANY})
        stub.add_response("change_resource_record_sets", CHANGE)
        stub.add_response("get_change", INSYNC, {"Id": "/change/C1"})
        res = apply_plan(client, plan, sleep=lambda _: None)
        stub.assert_no_pending_responses()
    assert res.created == {check.key: "hc-new"}


def test_invalid_change_batch_stops_before_deleting_health_checks(one_proxy_tree: Tree,
                                                                  client: Any) -> None:
    old = LiveHealthCheck("hc-old", "grl:georelay:000000000000:00000000:0", 1,
                          {"Type": "HTTPS", "IPAddress": "192.0.2.1", "Port": 443})
    plan = _plan(one_proxy_tree, [old])
    assert [d.id for d in plan.hc_deletes] == ["hc-old"]
    with Stubber(client) as stub:
        stub.add_response("create_health_check", {"HealthCheck": HC, "Location": "l"})
        stub.add_response("change_tags_for_resource", {})
        stub.add_client_error("change_resource_record_sets", "InvalidChangeBatch",
                              "RRSet with DNS name fast.example.com. is not permitted")
        with pytest.raises(ApplyError, match=r"refused record batch 1/1.*not permitted"):
            apply_plan(client, plan, sleep=lambda _: None)
        stub.assert_no_pending_responses()  # and no DeleteHealthCheck was sent


def test_steps_count_every_unit_of_work_and_reach_the_total(one_proxy_tree: Tree,
                                                            client: Any) -> None:
    """A health check already deleted (NoSuchHealthCheck) and a change PENDING on the first
    poll still count, so a progress bar ends full."""
    old = LiveHealthCheck("hc-old", "grl:georelay:000000000000:00000000:0", 1,
                          {"Type": "HTTPS", "IPAddress": "192.0.2.1", "Port": 443})
    plan = _plan(one_proxy_tree, [old])
    assert count_steps(plan) == 1 + 2 + 1  # create, batch + INSYNC, delete
    steps: list[Step] = []
    lines: list[str] = []
    with Stubber(client) as stub:
        stub.add_response("create_health_check", {"HealthCheck": HC, "Location": "l"})
        stub.add_response("change_tags_for_resource", {})
        stub.add_response("change_resource_record_sets", CHANGE)
        stub.add_response("get_change", CHANGE)
        stub.add_response("get_change", INSYNC)
        stub.add_client_error("delete_health_check", "NoSuchHealthCheck", http_status_code=404)
        apply_plan(client, plan, sleep=lambda _: None, progress=lines.append,
                   on_step=steps.append)
        stub.assert_no_pending_responses()
    assert {s.total for s in steps} == {4}
    assert [s.done for s in steps] == [1, 2, 2, 3, 3, 4]
    assert lines == [s.message for s in steps if s.message] == [
        "health checks created: 1/1", "record batch 1/1: 2 change(s) submitted",
        "waiting for 1 change(s) to be INSYNC", "all changes INSYNC",
        "health checks deleted: 0"]


def test_an_error_reaching_georelay_is_not_retried_again(one_proxy_tree: Tree,
                                                          client: Any) -> None:
    """Retries are botocore's alone (tests/dns/test_dns_retries.py drives them over HTTP).
    A stubbed answer skips botocore's retry handler, so each error here is what botocore
    hands over once its attempts are used up: georelay-dns sends nothing more."""
    plan = _plan(one_proxy_tree)
    with Stubber(client) as stub:
        stub.add_client_error("create_health_check", "Throttling", http_status_code=400)
        with pytest.raises(ClientError, match="Throttling"):
            apply_plan(client, plan, sleep=lambda _: None)
        stub.assert_no_pending_responses()
        stub.add_client_error("change_resource_record_sets", "PriorRequestNotComplete",
                              http_status_code=400)
        with pytest.raises(ClientError, match="PriorRequestNotComplete"):
            call(client, "change_resource_record_sets", HostedZoneId=ZONE, ChangeBatch={
                "Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                    "Name": "a.example.com.", "Type": "A", "TTL": 60,
                    "ResourceRecords": [{"Value": "192.0.2.1"}]}}]})
        stub.add_client_error("get_change", "NoSuchChange", http_status_code=404)
        with pytest.raises(ClientError, match="NoSuchChange"):
            call(client, "get_change", Id="C1")
        stub.assert_no_pending_responses()


def _leaf(i: int, value: str) -> Record:
    return Record(f"proxy-us-east-1-fast{i // 100}.example.com", "CNAME" if len(value) > 20
                  else "A", f"georelay:w:fast.example.com:p{i}", weight=1, ttl=60,
                  values=(value,), health_check=f"hc-{i}", service="fast.example.com",
                  site="us-east-1", proxy=f"p{i}")


def test_batches_respect_route53_limits(client: Any) -> None:
    plan = Plan("example.com", ZONE, "georelay")
    plan.records = [RecordChange("CREATE", _leaf(i, f"192.0.2.{i % 250}"), None, 0)
                    for i in range(1200)]
    plan.records += [RecordChange("UPSERT", _leaf(2000 + i, f"198.51.100.{i % 250}"), None, 0)
                     for i in range(300)]
    sent: list[list[dict[str, Any]]] = []
    client.meta.events.register(
        "provide-client-params.route53.ChangeResourceRecordSets",
        lambda params, **_: sent.append(params["ChangeBatch"]["Changes"]))
    with Stubber(client) as stub:
        stub.add_response("change_resource_record_sets", CHANGE)
        stub.add_response("change_resource_record_sets",
                          {"ChangeInfo": {**CHANGE["ChangeInfo"], "Id": "/change/C2"}})
        stub.add_response("get_change", INSYNC, {"Id": "/change/C1"})
        stub.add_response("get_change", INSYNC, {"Id": "/change/C2"})
        res = apply_plan(client, plan, sleep=lambda _: None)
        stub.assert_no_pending_responses()
    assert res.batches == 2 and [len(b) for b in sent] == [1000, 500]
    rrs = [sum(change_size(c)[0] for c in b) for b in sent]
    assert rrs == [1000, 800]  # 200 CREATE + 300 UPSERT counted twice
    flat = [c["ResourceRecordSet"]["SetIdentifier"] for b in sent for c in b]
    assert flat == [c.record.set_id for c in plan.records]  # order kept across batches
    long_name = "x" * 60 + ".proxies.example.net"
    by_chars = split_batches([{"Action": "UPSERT", "ResourceRecordSet": {
        "Name": "a.example.com.", "Type": "CNAME", "TTL": 60,
        "ResourceRecords": [{"Value": long_name}]}}] * 300)
    assert all(sum(change_size(c)[1] for c in b) <= 32000 for b in by_chars)
    assert [len(b) for b in by_chars] == [200, 100]


def test_insync_wait_is_bounded(client: Any) -> None:
    now = [0.0]

    def sleep(s: float) -> None:
        now[0] += s

    with Stubber(client) as stub:
        for _ in range(30):
            stub.add_response("get_change", CHANGE)
        with pytest.raises(ApplyError, match="not INSYNC after 60s"):
            wait_insync(client, ["/change/C1"], sleep=sleep, timeout=60,
                        clock=lambda: now[0])
    assert 60 <= now[0] < 90


def test_health_check_changed_since_plan(one_proxy_tree: Tree, client: Any) -> None:
    check = one_proxy_tree.health_checks[0]
    live = LiveHealthCheck("hc-1", check.caller_reference("georelay", 0), 7,
                           {**check.config, "FailureThreshold": 5})
    plan = _plan(one_proxy_tree, [live])
    assert [(u.id, u.version, u.changes) for u in plan.hc_updates] == [
        ("hc-1", 7, {"FailureThreshold": check.config["FailureThreshold"]})]
    with Stubber(client) as stub:
        stub.add_client_error("update_health_check", "HealthCheckVersionMismatch",
                              expected_params={"HealthCheckId": "hc-1",
                                               "HealthCheckVersion": 7,
                                               "FailureThreshold": 2})
        with pytest.raises(ApplyError, match="changed since the plan"):
            apply_plan(client, plan, sleep=lambda _: None)
    assert json.dumps(plan.to_dict())  # the plan stays serialisable for --output json


def test_plan_output_is_deterministic(one_proxy_tree: Tree) -> None:
    a, b = _plan(one_proxy_tree), _plan(one_proxy_tree)
    assert a.checksum == b.checksum and a.checksum.startswith("sha256:")
    changed = _plan(one_proxy_tree, [LiveHealthCheck(
        "hc-x", "grl:georelay:000000000000:00000000:0", 1, {"Type": "HTTPS"})])
    assert changed.checksum != a.checksum


def _live_zone(inputs_path: Any, state: OperatorState | None) -> operations.Context:
    """A zone holding the inventory's tree (and a state record), as read from Route53."""
    inputs = load_inputs(load_inventory(inputs_path))
    tree = build_tree(inputs, ZONE)
    records = [r for r in tree.records]
    if state is not None:
        records.append(state_record(state, "georelay", "example.com"))
    raw = {}
    for r in records:
        rr = rrset_from_record(r)
        if "HealthCheckId" in rr:
            rr["HealthCheckId"] = "hc-" + r.set_id.rsplit(":", 1)[1]
        raw[r.key] = rr
    live = Live(ZONE, [record_from_rrset(rr) for rr in raw.values()], raw, [])
    return operations.Context(inputs, ZONE, live, read_state(live, "georelay", "example.com"))


def test_state_changed_by_someone_else_refuses_the_whole_batch(
        tmp_path: Any, client: Any) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-east-2": 2}))
    ctx = _live_zone(inv, OperatorState(weights={"us-east-2-p0": 0}, serial=3))
    change = operations.evacuate(ctx, "us-east-1", "INC-9", by="alice@ops1",
                                 at="2025-01-02T03:04:05Z")
    first, second, *rest = change.plan.records
    assert (first.action, second.action) == ("DELETE", "CREATE")  # compare-and-swap
    assert change.plan.raw_deletes[first.record.key] == ctx.current.raw
    written = decode(second.record.values[0], "new")
    assert written.serial == 4 and written.weights == {"us-east-2-p0": 0}
    assert set(written.evacuated) == {"us-east-1"}
    assert [(c.action, c.record.site) for c in rest] == [("DELETE", "us-east-1")] * 2
    with Stubber(client) as stub:
        stub.add_client_error(
            "change_resource_record_sets", "InvalidChangeBatch",
            "Tried to delete resource record set [name='_georelay-state.example.com.', "
            "type='TXT', set-identifier='georelay:state'] but the values provided do not "
            "match the current values",
            expected_params={"HostedZoneId": ZONE, "ChangeBatch": {
                "Comment": ANY, "Changes": [
                    {"Action": "DELETE", "ResourceRecordSet": ctx.current.raw}, ANY, ANY,
                    ANY]}})
        with pytest.raises(ApplyError, match=r"values provided do not match.*nothing "
                                             r"changed\. Fix: run the command again"):
            operations.execute(client, change, sleep=lambda _: None)
        stub.assert_no_pending_responses()


def test_first_state_write_is_a_create_that_fails_if_someone_was_first(
        tmp_path: Any) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-east-2": 2}))
    ctx = _live_zone(inv, None)
    change = operations.set_weight(ctx, "us-east-1-p1", 4)
    assert [c.action for c in change.plan.records] == ["CREATE", "UPSERT", "UPSERT"]
    assert decode(change.plan.records[0].record.values[0], "new").serial == 1

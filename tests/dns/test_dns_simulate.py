"""The simulator (Route53's documented evaluation rules) as a table of failure scenarios,
checked on the desired tree and on the tree read back from moto_server after apply."""

from __future__ import annotations

import json
from fractions import Fraction as F
from pathlib import Path

import pytest

from georelay_dns.inputs import load_inputs
from georelay_dns.route53 import make_client, read_live
from georelay_dns.simulate import Evaluator, health_for
from georelay_dns.status import owned_records
from georelay_dns.tree import Tree, build_tree
from georelay_model import load_inventory
from georelay_model.latency import Latency
from georelay_model.regions import rtt_ms
from georelay_testing.dns_drive import cli
from georelay_testing.dns_zone import Zone, fleet, write_inventory

H = "fast.example.com"
SERVICES = [{"hostname": H, "apigw_domain": "{region}-fast.example.com"}]
WEIGHTS = {"us-west-2-p0": 3, "us-west-2-p1": 1, "eu-west-1-p0": 0, "eu-west-1-p1": 2}
ALL = ("us-east-1", "us-east-2", "us-west-2", "eu-west-1")

# origin, down proxies, down regions -> {proxy: share}, fail-open note expected
SCENARIOS = [
    ("us-east-1", (), (), {"us-east-1-p0": F(1, 2), "us-east-1-p1": F(1, 2)}, False),
    ("us-east-1", ("us-east-1-p0",), (), {"us-east-1-p1": F(1)}, False),
    ("us-east-1", (), ("us-east-1",), {"us-east-2-p0": F(1)}, False),
    ("us-east-1", (), ("us-east-1", "us-east-2"),
     {"us-west-2-p0": F(3, 4), "us-west-2-p1": F(1, 4)}, False),
    ("us-east-1", (), ALL, {"us-east-1-p0": F(1, 2), "us-east-1-p1": F(1, 2)}, True),
    ("us-west-2", (), (), {"us-west-2-p0": F(3, 4), "us-west-2-p1": F(1, 4)}, False),
    ("eu-west-1", (), (), {"eu-west-1-p1": F(1)}, False),  # weight 0 gets nothing
    ("eu-west-1", ("eu-west-1-p1",), (), {"eu-west-1-p0": F(1)}, False),  # ...until alone
    ("eu-west-1", ("eu-west-1-p0", "eu-west-1-p1"), (),
     {"us-east-1-p0": F(1, 2), "us-east-1-p1": F(1, 2)}, False),
    ("us-east-2", ("us-east-2-p0",), (), {"us-east-1-p0": F(1, 2), "us-east-1-p1": F(1, 2)},
     False),
]


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inventory(tmp_path_factory.mktemp("sim"),
                           fleet({"us-east-1": 2, "us-east-2": 1, "us-west-2": 2,
                                  "eu-west-1": 2}, weights=WEIGHTS), services=SERVICES)


@pytest.fixture(scope="module")
def tree(inventory: Path) -> Tree:
    return build_tree(load_inputs(load_inventory(inventory)), "ZSIM")


def _shares(ev: Evaluator, origin: str) -> tuple[dict[str, F], bool]:
    out = ev.resolve(H, origin)
    assert sum(a.share for a in out.answers) == 1
    return {a.target: a.share for a in out.answers}, any("fails open" in n for n in out.notes)


@pytest.mark.parametrize(("origin", "down", "down_regions", "expected", "fail_open"),
                         SCENARIOS)
def test_desired_tree(tree: Tree, origin: str, down: tuple[str, ...],
                      down_regions: tuple[str, ...], expected: dict[str, F],
                      fail_open: bool) -> None:
    ev = Evaluator(tree.records, tree.zone_id, health_for(tree.records, down, down_regions))
    assert _shares(ev, origin) == (expected, fail_open)


def test_live_tree_answers_the_same(zone: Zone, inventory: Path, tree: Tree) -> None:
    code, out = cli("apply", "-i", str(inventory), "--yes")
    assert code == 0, out
    live = owned_records(read_live(make_client(), zone.id), "georelay")
    assert len(live) == len(tree.records)
    for origin, down, down_regions, expected, fail_open in SCENARIOS:
        health = {r.health_check: not (r.proxy in down or r.site in down_regions)
                  for r in live if r.health_check}
        assert _shares(Evaluator(live, zone.id, health), origin) == (expected, fail_open)


def test_single_proxy_region_is_warned(tree: Tree) -> None:
    assert any("us-east-2 has a single proxy" in w for w in tree.warnings)


def test_simulate_cli(inventory: Path) -> None:
    code, out = cli("simulate", "-i", str(inventory), "--from", "us-east-1",
                    "--down-region", "us-east-1")
    assert code == 0 and "us-east-2-p0" in out and "fails over to us-east-2" in out
    code, out = cli("simulate", "-i", str(inventory), "--from", "us-east-1", "--down", "nope")
    assert code == 1 and "--down nope: not a proxy" in out


def test_latency_orders_regions_like_the_map() -> None:
    """The measured order (tests/dns/test_dns_latency.py holds it against another
    measurement); the distance estimate, the fallback, is at least symmetric and sane."""
    nearest_first = Latency().nearest_first
    assert nearest_first("us-east-1", ["eu-west-1", "us-west-2", "us-east-2"]) == [
        "us-east-2", "us-west-2", "eu-west-1"]
    assert nearest_first("eu-west-2", ["eu-central-1", "eu-west-1", "ap-south-1"])[0] == \
        "eu-west-1"
    assert nearest_first("ap-southeast-2", ["ap-southeast-4", "ap-northeast-1"])[0] == \
        "ap-southeast-4"
    assert rtt_ms("us-east-1", "us-east-1") == 0
    assert rtt_ms("us-east-1", "eu-west-1") == rtt_ms("eu-west-1", "us-east-1")
    assert 40 < rtt_ms("us-east-1", "us-west-2") < 120


def test_iam_policy_is_scoped_to_the_zone_and_names(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2}),
                          georelay_dns_zone_id="Z0123456789ABC")
    code, out = cli("iam-policy", "-i", str(inv))
    assert code == 0
    doc = json.loads(out)
    change = next(s for s in doc["Statement"] if s["Sid"] == "ChangeGeorelayRecords")
    assert change["Resource"] == "arn:aws:route53:::hostedzone/Z0123456789ABC"
    names = change["Condition"]["ForAllValues:StringEquals"][
        "route53:ChangeResourceRecordSetsNormalizedRecordNames"]
    assert set(names) == {"fast.example.com", "api.example.com",
                          "proxy-us-east-1-fast.example.com", "proxy-us-east-1-api.example.com",
                          "_georelay-state.example.com"}  # evacuate/restore/weight write it

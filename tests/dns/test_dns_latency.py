"""Region latency: the shipped measurements order failover and backups, held against an
independent, older measurement; the inventory's override; region names checked everywhere
a command takes one; `georelay-dns latency import/show/compare` on real inventories (read
back through the real ansible-inventory)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from georelay_dns.cli_latency import agreement
from georelay_dns.inputs import load_inputs
from georelay_model import InventoryError, load_inventory
from georelay_model.facts import proxy_facts
from georelay_model.latency import (
    ESTIMATED,
    INVENTORY,
    MEASURED,
    Latency,
    Matrix,
    RegionError,
    check_region,
    read_matrix_file,
    shipped,
)
from georelay_testing.dns_drive import cli, cli_streams
from georelay_testing.dns_zone import fleet, write_inventory

REFERENCE = Path(__file__).parent / "data" / "cloudping-2023-03.csv"
DISTANCE_ONLY = Latency(measured=Matrix({}, "none"))


def test_shipped_data_names_its_source_and_covers_the_regions() -> None:
    m = shipped()
    assert "cloudping" in m.source.lower() and m.url.startswith("https://")
    assert "2025" in m.period
    assert len(m.regions) >= 30
    assert {"us-east-1", "eu-west-1", "ap-southeast-2", "sa-east-1", "af-south-1"} <= m.regions
    # both directions measured, and they are near each other
    a, b = m.rtt[("us-east-1", "eu-west-1")], m.rtt[("eu-west-1", "us-east-1")]
    assert 50 < a < 100 and abs(a - b) < 10


@pytest.mark.parametrize(("origin", "nearer", "farther"), [
    ("ap-southeast-2", "us-west-1", "af-south-1"),  # 138 vs 411 ms; distance said af-south-1
    ("sa-east-1", "us-east-1", "af-south-1"),  # 114 vs 342 ms
    ("ap-northeast-1", "us-east-1", "eu-west-1"),  # ~146 vs ~200 ms
])
def test_measured_order_fixes_what_distance_got_wrong(origin: str, nearer: str,
                                                      farther: str) -> None:
    assert Latency().nearest_first(origin, [farther, nearer]) == [nearer, farther]
    assert DISTANCE_ONLY.nearest_first(origin, [farther, nearer]) == [farther, nearer]


def test_order_agrees_with_an_independent_measurement() -> None:
    """The next-nearest region of every 3-region fleet, and every region's top 3, against
    CloudPing's 2023 grid (tests/dns/data/README.md): the shipped 2025 data must agree within
    10 ms in at least 97% of cases; the distance estimate, for contrast, does not."""
    ref = read_matrix_file(str(REFERENCE))
    ours = agreement(Latency(), ref, 10.0)
    estimate = agreement(DISTANCE_ONLY, ref, 10.0)
    assert ours["regions"] == 21 and ours["next_nearest"]["cases"] == 3990
    assert ours["next_nearest"]["share"] >= 0.97, ours
    assert ours["top3"]["agree"] >= 20, ours["top3"]
    assert estimate["next_nearest"]["share"] < 0.92, estimate
    assert estimate["top3"]["agree"] < ours["top3"]["agree"]


def test_region_names_are_checked() -> None:
    assert check_region("us-east-1") == ""
    assert "estimated from distance" in check_region("us-gov-west-1")  # no measurement
    assert "not in the latency data" in check_region("ap-east-9")  # well-formed, unknown
    for bad in ("mars-1", "us-east", "US-EAST-1", "useast1", ""):
        with pytest.raises(RegionError) as e:
            check_region(bad, what="--from")
        assert "not an AWS region" in str(e.value) and "us-east-1, us-east-2" in str(e.value)
    lat = Latency()
    assert lat.rtt("us-east-1", "eu-west-1")[1] == MEASURED
    assert lat.rtt("us-gov-west-1", "us-east-1")[1] == ESTIMATED
    assert "estimated from distance for us-gov-west-1" in lat.order_note(
        "us-east-1", ["us-gov-west-1", "eu-west-1"])
    assert lat.order_note("us-east-1", ["us-west-2", "eu-west-1"]) == ""


def _inv(tmp_path: Path, **all_vars: object) -> Path:
    return write_inventory(tmp_path / "inv", fleet({"us-east-1": 1, "eu-west-1": 1,
                                                    "ap-southeast-2": 1, "us-west-1": 1}),
                           **all_vars)


def test_backups_follow_measurements_and_the_inventory_override(tmp_path: Path) -> None:
    inv = _inv(tmp_path)
    f = load_inputs(load_inventory(inv)).fleet
    assert [b.name for b in f.backups_of("ap-southeast-2")] == [
        "us-west-1", "us-east-1", "eu-west-1"]
    facts = proxy_facts(f, "ap-southeast-2-p0")
    assert facts["backup_order"] == "order: nearest first, measured round trips (docs/DNS.md)"

    override = {"ap-southeast-2": {"eu-west-1": 20, "us-west-1": 300}}
    inv2 = write_inventory(tmp_path / "inv2", fleet({"us-east-1": 1, "eu-west-1": 1,
                                                     "ap-southeast-2": 1, "us-west-1": 1}),
                           georelay_region_latency=override,
                           georelay_region_latency_source="our pings")
    f2 = load_inputs(load_inventory(inv2)).fleet
    assert [b.name for b in f2.backups_of("ap-southeast-2")] == [
        "eu-west-1", "us-east-1", "us-west-1"]
    assert f2.latency.rtt("us-west-1", "ap-southeast-2") == (300.0, INVENTORY)  # both ways
    assert "our pings" in f2.latency.describe()


@pytest.mark.parametrize(("value", "says"), [
    ("fast", "must be a mapping"),
    ({"mars-1": {"us-east-1": 5}}, "'mars-1' is not an AWS region name"),
    ({"us-east-1": {"eu-west-1": -3}}, "us-east-1.eu-west-1: -3 is not a round trip"),
    ({"us-east-1": {"eu-west-1": "70ms"}}, "is not a round trip in ms"),
    ({"us-east-1": 70}, "is not a mapping of region to ms"),
])
def test_bad_override_is_refused_naming_the_variable(tmp_path: Path, value: object,
                                                     says: str) -> None:
    inv = _inv(tmp_path, georelay_region_latency=value)
    with pytest.raises(InventoryError) as e:
        load_inputs(load_inventory(inv))
    text = str(e.value)
    assert "georelay_region_latency" in text and says in text and "Fix:" in text


def test_simulate_refuses_a_made_up_region_and_notes_estimates(tmp_path: Path) -> None:
    inv = _inv(tmp_path)
    code, out, err = cli_streams("simulate", "-i", str(inv), "--from", "mars-1")
    assert code == 1 and out == ""
    assert "--from 'mars-1' is not an AWS region" in err and "eu-west-1" in err
    code, out = cli("simulate", "-i", str(inv), "--from", "us-gov-west-1")
    assert code == 0, out
    assert "estimated from distance" in out
    code, out = cli("simulate", "-i", str(inv), "--from", "ap-southeast-2",
                    "--down-region", "ap-southeast-2")
    assert code == 0, out
    assert "latency fails over to us-west-1" in out and "estimated" not in out
    for flag in ("--down-region", "--evacuate"):
        code, out, err = cli_streams("simulate", "-i", str(inv), "--from", "us-east-1",
                                     flag, "mars-1")
        assert code == 1 and "mars-1: not a region of the inventory" in err, err


def _matrix_files(tmp_path: Path) -> dict[str, Path]:
    long = tmp_path / "long.csv"
    long.write_text("from,to,rtt_ms\nap-southeast-2,eu-west-1,20\n"
                    "ap-southeast-2,us-west-1,300\nus-east-1,eu-west-1,70.5\n")
    grid = tmp_path / "grid.csv"
    grid.write_text(",eu-west-1,us-west-1\nap-southeast-2,20 ms,300\nus-east-1,70.5,\n")
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"source": "ours", "rtt_ms": {
        "ap-southeast-2": {"eu-west-1": 20, "us-west-1": 300}, "us-east-1": {"eu-west-1": 70.5}}}))
    return {"long": long, "grid": grid, "json": js}


@pytest.mark.parametrize("kind", ["long", "grid", "json"])
def test_import_writes_the_inventory_and_everything_reads_it(tmp_path: Path,
                                                             kind: str) -> None:
    inv = _inv(tmp_path)
    file = _matrix_files(tmp_path)[kind]
    all_yml = inv / "group_vars" / "all.yml"
    before = all_yml.read_text()

    code, out = cli("latency", "import", str(file), "-i", str(inv), "--dry-run",
                    "--output", "json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["pairs"] == 3 and doc["dry_run"] is True
    assert doc["backup_order_changes"]["ap-southeast-2"] == {
        "before": ["us-west-1", "us-east-1", "eu-west-1"],
        "after": ["eu-west-1", "us-east-1", "us-west-1"]}
    assert all_yml.read_text() == before  # a dry run writes nothing

    code, out = cli("latency", "import", str(file), "-i", str(inv), "--source", "our pings")
    assert code == 0, out
    assert "ap-southeast-2 backups: us-west-1, us-east-1, eu-west-1 -> eu-west-1" in out
    assert "undo:" in out
    text = all_yml.read_text()
    assert text.startswith(before)  # the operator's file is kept, the block appended
    f = load_inputs(load_inventory(inv)).fleet
    assert f.latency.rtt("us-east-1", "eu-west-1") == (70.5, INVENTORY)
    assert next(b.name for b in f.backups_of("ap-southeast-2")) == "eu-west-1"
    code, out = cli("simulate", "-i", str(inv), "--from", "ap-southeast-2",
                    "--down-region", "ap-southeast-2")
    assert code == 0 and "fails over to eu-west-1" in out, out
    code, out = cli("latency", "show", "-i", str(inv), "--output", "json")
    assert code == 0, out
    shown = json.loads(out)
    assert "our pings" in shown["source"]
    assert shown["regions"]["ap-southeast-2"]["backups"][0] == {
        "region": "eu-west-1", "rtt_ms": 20.0, "origin": "inventory"}

    # a second import replaces its block instead of adding another
    code, out = cli("latency", "import", str(file), "-i", str(inv))
    assert code == 0, out
    assert all_yml.read_text().count("# BEGIN georelay-dns latency import") == 1


def test_import_into_a_group_vars_directory(tmp_path: Path) -> None:
    inv = _inv(tmp_path)
    gv = inv / "group_vars"
    (gv / "all").mkdir()
    (gv / "all.yml").rename(gv / "all" / "main.yml")
    file = _matrix_files(tmp_path)["long"]
    code, out = cli("latency", "import", str(file), "-i", str(inv))
    assert code == 0, out
    written = yaml.safe_load((gv / "all" / "georelay_region_latency.yml").read_text())
    assert written["georelay_region_latency"]["us-east-1"] == {"eu-west-1": 70.5}
    assert load_inputs(load_inventory(inv)).fleet.latency.override


@pytest.mark.parametrize(("content", "says"), [
    ("from,to,rtt_ms\nus-east-1,mars-1,5\n", "'mars-1' is not an AWS region name"),
    ("from,to,rtt_ms\nus-east-1,eu-west-1,fast\n", ":2: 'fast' is not a number of ms"),
    ("from,to,rtt_ms\nus-east-1,eu-west-1,0\n", "is not a round trip in ms"),
    ('{"rtt_ms": []}', "no rtt_ms mapping"),
    ("from,to,rtt_ms\nap-south-1,me-south-1,30\n", "no round trip has a region of the fleet"),
])
def test_import_refuses_bad_files_and_touches_nothing(tmp_path: Path, content: str,
                                                      says: str) -> None:
    inv = _inv(tmp_path)
    snapshot = {p: p.read_text() for p in inv.rglob("*") if p.is_file()}
    bad = tmp_path / ("bad.json" if content.startswith("{") else "bad.csv")
    bad.write_text(content)
    code, _out, err = cli_streams("latency", "import", str(bad), "-i", str(inv))
    assert code == 1 and says in err, err
    assert {p: p.read_text() for p in inv.rglob("*") if p.is_file()} == snapshot


def test_import_refuses_a_value_set_outside_its_block(tmp_path: Path) -> None:
    inv = _inv(tmp_path, georelay_region_latency={"us-east-1": {"eu-west-1": 70}})
    before = (inv / "group_vars" / "all.yml").read_text()
    code, _out, err = cli_streams("latency", "import", str(_matrix_files(tmp_path)["long"]),
                                 "-i", str(inv))
    assert code == 1 and "already sets georelay_region_latency" in err, err
    assert (inv / "group_vars" / "all.yml").read_text() == before


def test_compare_reports_both_figures(tmp_path: Path) -> None:
    code, out = cli("latency", "compare", str(REFERENCE), "--output", "json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["georelay"]["next_nearest"]["share"] >= 0.97
    assert doc["distance_estimate"]["next_nearest"]["share"] < \
        doc["georelay"]["next_nearest"]["share"]

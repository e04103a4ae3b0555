"""evacuate / restore / weight against a real moto_server (Route53 over HTTP), driven through
the click CLI the way operators run it; inventories are YAML read by ansible-inventory.

Three regions: from us-east-1 the next closest is us-east-2, then eu-west-1. Each inventory
version is read once through the real ansible-inventory and reused by later commands (what
these tests check is Route53; reading inventories is tested elsewhere)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import georelay_dns.cli_common
from georelay_dns.operator_state import Evacuation, OperatorState, StateError, check_reason
from georelay_dns.route53 import make_client, read_live
from georelay_dns.simulate import Evaluator
from georelay_dns.state_record import STRING_MAX, decode, encode
from georelay_dns.status import owned_records
from georelay_model import load_inventory
from georelay_testing.dns_drive import cli, cli_streams, plan_json
from georelay_testing.dns_zone import Zone, fleet, write_inventory

STATE = "_georelay-state.example.com."
HOSTNAMES = ("fast.example.com.", "api.example.com.")


@pytest.fixture(autouse=True)
def inventory_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[tuple[str, str], Any] = {}

    def cached(path: Path | str) -> Any:
        files = sorted(p for p in Path(path).rglob("*") if p.is_file())
        key = (str(path), "".join(p.read_text() for p in files))
        if key not in seen:
            seen[key] = load_inventory(path)
        return seen[key]

    monkeypatch.setattr(georelay_dns.cli_common, "load_inventory", cached)


@pytest.fixture
def inv(zone: Zone, tmp_path: Path) -> Path:
    path = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-east-2": 2,
                                                    "eu-west-1": 2}))
    code, out = cli("apply", "-i", str(path), "--yes")
    assert code == 0, out
    return path


def _latency(zone: Zone) -> list[dict[str, Any]]:
    return sorted((r for r in zone.records() if "Region" in r), key=lambda r: (
        r["Name"], r["Region"]))


def _regions(zone: Zone) -> set[tuple[str, str]]:
    return {(r["Name"], r["Region"]) for r in _latency(zone)}


def _state(zone: Zone) -> dict[str, Any]:
    found = [r for r in zone.records() if r["Name"] == STATE]
    assert len(found) == 1 and found[0]["Type"] == "TXT"
    assert found[0]["SetIdentifier"] == "georelay:state"  # georelay's ownership marker
    value = found[0]["ResourceRecords"][0]["Value"]
    return decode(value, STATE).to_dict()


def _run(*args: str) -> str:
    code, out, err = cli_streams(*args)
    assert code == 0, out + err
    return out


def _answer_regions(zone: Zone, origin: str, down: set[str]) -> set[str]:
    """Who Route53 answers users near origin with, evaluated on the records read back from
    moto, with the health checks of the proxies in down failing."""
    live = owned_records(read_live(make_client(), zone.id), "georelay")
    health = {r.health_check: r.proxy not in down for r in live if r.health_check}
    regions: set[str] = set()
    for hostname in HOSTNAMES:
        out = Evaluator(live, zone.id, health).resolve(hostname.rstrip("."), origin)
        regions |= {a.region for a in out.answers}
    return regions


def test_evacuate_removes_the_region_and_apply_keeps_it(zone: Zone, inv: Path) -> None:
    checks = {h["Id"] for h in zone.health_checks()}
    leaves = [r for r in zone.records() if "Weight" in r]
    out = _run("evacuate", "us-east-1", "--reason", "gateway 5xx, INC-1234", "-i", str(inv))
    assert f"undo: georelay-dns restore us-east-1 -i {inv}" in out
    assert "near us-east-1       us-east-1 (us-east-1-p0 50%, us-east-1-p1 50%)" in out
    assert "-> us-east-2 (us-east-2-p0 50%, us-east-2-p1 50%)" in out
    # every service's latency record for us-east-1 is gone; nothing else changed
    assert _regions(zone) == {(h, r) for h in HOSTNAMES for r in ("us-east-2", "eu-west-1")}
    assert [r for r in zone.records() if "Weight" in r and r["Name"] != STATE] == leaves
    assert {h["Id"] for h in zone.health_checks()} == checks
    state = _state(zone)
    assert state["evacuated"]["us-east-1"]["reason"] == "gateway 5xx, INC-1234"
    assert state["evacuated"]["us-east-1"]["at"].endswith("Z") and state["weights"] == {}

    # plan and apply honour the state: nothing to do, the evacuation stays
    code, plan = plan_json(inv)
    assert code == 0 and plan["records"] == [] and sum(plan["counts"].values()) == 0
    assert plan["operator_state"]["evacuated"]["us-east-1"]["reason"] == \
        "gateway 5xx, INC-1234"
    before = zone.snapshot()
    out = _run("apply", "-i", str(inv), "--yes")
    assert "evacuated us-east-1 since" in out and "nothing to do" in out
    assert zone.snapshot() == before

    # users near us-east-1 get the next closest region, read live from Route53
    out = _run("simulate", "-i", str(inv), "--from", "us-east-1", "--live")
    assert "evacuated us-east-1 since" in out and "us-east-1 is evacuated" in out
    answered = [line.split()[1] for line in out.splitlines()
                if line.startswith("  ") and "%" in line]
    assert answered and set(answered) == {"us-east-2"}

    # proxies of the evacuated region failing (or every proxy failing: Route53 fails open
    # among the records that exist) never bring it back: it has no record to answer with
    use1 = {"us-east-1-p0", "us-east-1-p1"}
    everyone = use1 | {f"{r}-p{i}" for r in ("us-east-2", "eu-west-1") for i in (0, 1)}
    assert _answer_regions(zone, "us-east-1", set()) == {"us-east-2"}
    assert _answer_regions(zone, "us-east-1", {"us-east-1-p0"}) == {"us-east-2"}
    assert _answer_regions(zone, "us-east-1", use1) == {"us-east-2"}
    assert _answer_regions(zone, "us-east-1", everyone - use1) == {"us-east-2"}  # fail open
    assert _answer_regions(zone, "us-east-1", {"us-east-2-p0", "us-east-2-p1"}) == \
        {"eu-west-1"}

    out = _run("status", "-i", str(inv))
    assert "EVACUATED us-east-1 since" in out and "gateway 5xx, INC-1234" in out
    assert "users near us-east-1 get: us-east-2-p0@us-east-2 50%" in out
    st = json.loads(_run("status", "-i", str(inv), "--output", "json"))
    assert set(st["operator_state"]["evacuated"]) == {"us-east-1"}


def test_restore_brings_it_back_and_both_are_idempotent(zone: Zone, inv: Path) -> None:
    original = _latency(zone)
    _run("evacuate", "us-east-1", "--reason", "first", "-i", str(inv))
    evacuated = zone.snapshot()
    out = _run("evacuate", "us-east-1", "--reason", "second", "-i", str(inv))
    assert "us-east-1 is already evacuated" in out and "nothing changed" in out
    assert "kept the first reason (first)" in out
    assert zone.snapshot() == evacuated

    out = _run("restore", "us-east-1", "-i", str(inv))
    assert "restored us-east-1" in out
    assert "undo: georelay-dns evacuate us-east-1 --reason first -i" in out
    assert _latency(zone) == original
    assert _state(zone)["evacuated"] == {}
    assert plan_json(inv)[0] == 0
    restored = zone.snapshot()
    out = _run("restore", "us-east-1", "-i", str(inv))
    assert "us-east-1 is not evacuated; nothing changed" in out
    assert zone.snapshot() == restored

    # and once more round: every write of the state is a new value (its serial grows)
    _run("evacuate", "us-east-1", "--reason", "again", "-i", str(inv))
    assert ("fast.example.com.", "us-east-1") not in _regions(zone)
    _run("restore", "us-east-1", "-i", str(inv))
    assert _latency(zone) == original and _state(zone)["serial"] == 4


def test_dry_run_changes_nothing(zone: Zone, inv: Path) -> None:
    before = zone.snapshot()
    out = _run("evacuate", "us-east-1", "--reason", "drill", "-i", str(inv), "--dry-run")
    assert "- fast.example.com A [georelay:lat:fast.example.com:us-east-1]" in out
    assert "- api.example.com A [georelay:lat:api.example.com:us-east-1]" in out
    assert "+ _georelay-state.example.com TXT [georelay:state]" in out
    assert "dry run: nothing changed" in out and "-> us-east-2" in out
    out = _run("weight", "us-east-2-p0", "0", "-i", str(inv), "--dry-run")
    assert "dry run: nothing changed" in out and "us-east-2-p1 100%" in out
    assert zone.snapshot() == before
    _run("evacuate", "us-east-1", "--reason", "drill", "-i", str(inv))
    after = zone.snapshot()
    out = _run("restore", "us-east-1", "-i", str(inv), "--dry-run")
    assert "+ fast.example.com A [georelay:lat:fast.example.com:us-east-1]" in out
    assert zone.snapshot() == after


def test_last_serving_region_needs_force(zone: Zone, inv: Path) -> None:
    _run("evacuate", "us-east-1", "--reason", "a", "-i", str(inv))
    _run("evacuate", "us-east-2", "--reason", "b", "-i", str(inv))
    before = zone.snapshot()
    code, out, err = cli_streams("evacuate", "eu-west-1", "--reason", "c", "-i", str(inv))
    assert code == 1
    assert "eu-west-1 is the last region still serving users" in err
    assert "restore another region first" in err and "--force" in err
    assert zone.snapshot() == before
    out = _run("evacuate", "eu-west-1", "--reason", "c", "-i", str(inv), "--force")
    assert "no answer" in out  # who answers after: nobody
    assert _latency(zone) == []
    assert set(_state(zone)["evacuated"]) == {"us-east-1", "us-east-2", "eu-west-1"}
    code, plan = plan_json(inv)
    assert code == 0 and any("every region is evacuated" in w for w in plan["warnings"])
    _run("restore", "us-east-2", "-i", str(inv))
    assert _regions(zone) == {(h, "us-east-2") for h in HOSTNAMES}


def test_weight_override_is_kept_by_apply_and_reset(zone: Zone, inv: Path,
                                                    tmp_path: Path) -> None:
    def weights() -> dict[str, int]:
        return {r["SetIdentifier"]: r["Weight"] for r in zone.records()
                if "Weight" in r and r["Name"] != STATE}

    out = _run("weight", "us-east-1-p0", "0", "-i", str(inv))
    assert "weight of us-east-1-p0: 1 -> 0" in out
    assert "near us-east-1       us-east-1 (us-east-1-p0 50%, us-east-1-p1 50%)" in out
    assert "-> us-east-1 (us-east-1-p1 100%)" in out
    assert f"undo: georelay-dns weight us-east-1-p0 --reset -i {inv}" in out
    w = weights()
    assert w["georelay:w:fast.example.com:us-east-1-p0"] == 0
    assert w["georelay:w:api.example.com:us-east-1-p0"] == 0
    assert _state(zone)["weights"] == {"us-east-1-p0": 0}
    assert plan_json(inv)[0] == 0
    out = _run("weight", "us-east-1-p0", "0", "-i", str(inv))
    assert "already has weight 0" in out and "nothing changed" in out

    # an unrelated inventory change is applied; the override stays
    write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-east-2": 2, "eu-west-1": 2},
                                            weights={"us-east-1-p1": 3}))
    pending = {"georelay:w:fast.example.com:us-east-1-p1",
               "georelay:w:api.example.com:us-east-1-p1"}
    code, plan = plan_json(inv)
    assert code == 2 and {r["set_id"] for r in plan["records"]} == pending
    # an operator command does only what it names: the pending change stays for apply
    out = _run("evacuate", "eu-west-1", "--reason", "drill", "-i", str(inv))
    assert "Route53 also differs from the inventory by 2 change(s)" in out
    code, plan = plan_json(inv)
    assert code == 2 and {r["set_id"] for r in plan["records"]} == pending
    _run("apply", "-i", str(inv), "--yes")
    assert weights()["georelay:w:fast.example.com:us-east-1-p0"] == 0

    out = _run("weight", "us-east-1-p0", "--reset", "-i", str(inv))
    assert "the inventory's dns_weight again" in out
    assert "undo: georelay-dns weight us-east-1-p0 0 -i" in out
    assert weights()["georelay:w:fast.example.com:us-east-1-p0"] == 1
    assert _state(zone)["weights"] == {}
    assert plan_json(inv)[0] == 0
    out = _run("weight", "us-east-1-p0", "--reset", "-i", str(inv))
    assert "already has weight 1" in out


BAD = [
    (("evacuate", "mars-1", "--reason", "x"),
     "mars-1 is not a region of the inventory. Fix: use one of eu-west-1, us-east-1, "
     "us-east-2"),
    (("evacuate", "us-east-1", "--reason", "  "), "--reason is empty. Fix:"),
    (("restore", "mars-1"), "mars-1 is neither evacuated nor a region of the inventory"),
    (("weight", "us-east-1-p0", "300"), "N: '300' is not a weight. Fix: give a whole number "
     "from 0 to 255"),
    (("weight", "us-east-1-p0", "many"), "N: 'many' is not a weight"),
    (("weight", "nope", "3"), "HOST: nope is not a proxy of the inventory. Fix: use one of "
     "eu-west-1-p0, eu-west-1-p1, us-east-1-p0"),
    (("weight", "us-east-1-p0"), "N is missing. Fix:"),
    (("weight", "us-east-1-p0", "3", "--reset"), "give N or --reset, not both"),
    (("simulate", "--from", "us-east-1", "--weight", "us-east-1-p0"), "expected HOST=N"),
    (("simulate", "--from", "us-east-1", "--evacuate", "mars-1"),
     "--evacuate mars-1: not a region of the inventory"),
]


def test_bad_input_is_refused_and_touches_nothing(zone: Zone, inv: Path) -> None:
    before = zone.snapshot()
    for args, message in BAD:
        code, _, err = cli_streams(*args, "-i", str(inv))
        assert code == 1, args
        assert message in err, (args, err)
    assert zone.snapshot() == before


def test_a_damaged_state_record_stops_plan_and_commands(zone: Zone, inv: Path) -> None:
    zone.client.change_resource_record_sets(HostedZoneId=zone.id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": {
            "Name": STATE, "Type": "TXT", "TTL": 60, "SetIdentifier": "georelay:state",
            "Weight": 1, "ResourceRecords": [{"Value": '"{\\"v\\":1,\\"evacuated\\":"'}]}}]})
    before = zone.snapshot()
    for args in (("plan",), ("apply", "--yes"), ("evacuate", "us-east-1", "--reason", "x"),
                 ("weight", "us-east-1-p0", "0")):
        code, _, err = cli_streams(*args, "-i", str(inv))
        assert code == 1, args
        assert "_georelay-state.example.com TXT [georelay:state]: not JSON" in err
        assert "Fix: repair or delete the TXT record" in err
    assert zone.snapshot() == before


def _json(*args: str) -> dict[str, Any]:
    """A command's --output json: exit 0, one document on stdout; progress on stderr only."""
    code, out, err = cli_streams(*args, "--output", "json")
    assert code == 0, out + err
    assert all(line.startswith("... ") for line in err.splitlines()), err
    return dict(json.loads(out))


def _near(doc: dict[str, Any], region: str, when: str) -> set[str]:
    return {a["region"] for w in doc["who_answers"] if w["near"] == region
            for a in w[when]["answers"]}


KEYS = {"zone", "zone_id", "owner", "noop", "dry_run", "applied", "done", "changes",
        "warnings", "notes", "pending", "who_answers", "undo", "result"}


def test_operator_commands_output_json(zone: Zone, inv: Path) -> None:
    doc = _json("evacuate", "us-east-1", "--reason", "INC-7", "-i", str(inv))
    assert set(doc) == KEYS and doc["zone_id"] == zone.id
    assert doc["applied"] is True and doc["dry_run"] is False and doc["noop"] is False
    assert doc["undo"] == f"georelay-dns restore us-east-1 -i {inv}"
    assert doc["result"]["record_batches"] == 1 and doc["result"]["change_ids"]
    changed = {(c["action"], c["name"], c.get("region")) for c in doc["changes"]}
    assert {("DELETE", h.rstrip("."), "us-east-1") for h in HOSTNAMES} <= changed
    assert ("CREATE", STATE.rstrip("."), "") in changed
    assert _near(doc, "us-east-1", "before") == {"us-east-1"}
    assert _near(doc, "us-east-1", "after") == {"us-east-2"}
    assert _near(doc, "eu-west-1", "before") == _near(doc, "eu-west-1", "after") == {
        "eu-west-1"}
    assert {w["service"] for w in doc["who_answers"]} == {h.rstrip(".") for h in HOSTNAMES}
    assert "evacuated" in doc["done"] and _state(zone)["evacuated"]["us-east-1"]

    again = _json("evacuate", "us-east-1", "--reason", "INC-8", "-i", str(inv))
    assert again["noop"] is True and again["applied"] is False and again["undo"] is None
    assert again["changes"] == [] and again["who_answers"] == []
    assert any("kept the first reason" in n for n in again["notes"])

    before = zone.snapshot()
    dry = _json("restore", "us-east-1", "-i", str(inv), "--dry-run")
    assert dry["dry_run"] is True and dry["applied"] is False and dry["result"] is None
    assert dry["undo"] == f"georelay-dns evacuate us-east-1 --reason INC-7 -i {inv}"
    assert _near(dry, "us-east-1", "after") == {"us-east-1"}
    assert zone.snapshot() == before

    w = _json("weight", "us-east-2-p0", "0", "-i", str(inv))
    assert w["applied"] is True
    assert w["undo"] == f"georelay-dns weight us-east-2-p0 --reset -i {inv}"
    assert {(c["action"], c.get("weight")) for c in w["changes"]
            if c["name"] != STATE.rstrip(".")} == {("UPSERT", 0)}
    shares = {a["target"]: a["share"] for x in w["who_answers"] if x["near"] == "us-east-2"
              for a in x["after"]["answers"]}
    assert shares == {"us-east-2-p1": 1.0}  # us-east-2-p0 is standby now

    code, out, err = cli_streams("weight", "us-east-2-p0", "-i", str(inv), "--output", "json")
    assert code == 1 and out == "" and "N is missing" in err


def test_simulate_shows_before_and_after_without_aws(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "us-east-2": 2,
                                                   "eu-west-1": 2}))
    out = _run("simulate", "-i", str(inv), "--from", "us-east-1", "--service",
               "fast.example.com", "--evacuate", "us-east-1", "--evacuate", "us-east-2",
               "--weight", "eu-west-1-p0=3")
    before, after = out.split("  after --evacuate us-east-1 --evacuate us-east-2 "
                              "--weight eu-west-1-p0=3:")
    assert "us-east-1-p0" in before and "eu-west-1" not in before
    assert "eu-west-1-p0     eu-west-1" in after and "75.0%" in after and "25.0%" in after
    assert "us-east-1 is evacuated" in after


def test_iam_policy_covers_the_operator_commands(tmp_path: Path) -> None:
    inv = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2}),
                          georelay_dns_zone_id="Z0123456789ABC")
    doc = json.loads(_run("iam-policy", "-i", str(inv)))
    change = next(s for s in doc["Statement"] if s["Sid"] == "ChangeGeorelayRecords")
    cond = change["Condition"]["ForAllValues:StringEquals"]
    assert "_georelay-state.example.com" in cond[
        "route53:ChangeResourceRecordSetsNormalizedRecordNames"]
    assert {"A", "TXT"} <= set(cond["route53:ChangeResourceRecordSetsRecordTypes"])
    actions = {a for s in doc["Statement"] for a in (
        s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    # what evacuate/restore/weight/status call
    assert {"route53:ListHostedZonesByName", "route53:ListResourceRecordSets",
            "route53:ListHealthChecks", "route53:ChangeResourceRecordSets",
            "route53:GetChange", "route53:GetHealthCheckStatus"} <= actions


def test_state_codec_round_trips_in_255_character_strings() -> None:
    state = OperatorState(
        {"us-east-1": Evacuation('gateway "5xx" in Zürich \\ INC-1', "2025-01-02T03:04:05Z",
                                 "alice@ops1")},
        {f"proxy{i:03d}-use1": i % 256 for i in range(60)}, serial=7)
    value = encode(state)
    strings = value[1:-1].split('" "')
    assert len(strings) > 1
    assert all(len(s.replace('\\"', '"').replace("\\\\", "\\")) <= STRING_MAX
               for s in strings)
    assert decode(value, "here") == state
    # Route53 may hand characters back as octal escapes
    assert decode('"{\\"v\\":1,\\"evacuated\\":{},\\"weights\\":{\\"z\\303\\274\\":2}}"',
                  "here").weights == {"zü": 2}


def test_state_codec_refuses_what_it_cannot_keep() -> None:
    huge = OperatorState({}, {f"a-rather-long-proxy-name-{i:04d}": 1 for i in range(200)})
    with pytest.raises(StateError, match="more than Route53's 4000 per TXT value"):
        encode(huge)
    with pytest.raises(StateError, match=r"newer georelay-dns .*Fix: upgrade"):
        decode('"{\\"v\\":2}"', "here")
    with pytest.raises(StateError, match=r"weights\.a = 300 is not 0-255"):
        decode('"{\\"v\\":1,\\"weights\\":{\\"a\\":300}}"', "here")
    with pytest.raises(StateError, match="keep it to 200"):
        check_reason("x" * 201)
    assert check_reason("  two\n lines ") == "two lines"

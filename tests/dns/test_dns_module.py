"""The module georelay.relay.route53_fleet against a real moto_server, run by the real
ansible-playbook from a playbook of a few lines: the same plan as georelay-dns (checksum,
counts, lines), its refusals (a changed checksum, a record georelay does not own, a bad
inventory, bad options, no credentials) each naming the fix with nothing touched, the
operator state kept, and its documentation as ansible-doc shows it."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest

from georelay_testing.dns_zone import Zone, fleet, write_inventory
from georelay_testing.fleet import BIN, REPO, run

LOCAL = {"ansible_connection": "local",
         "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
PLAYBOOK = """\
- name: Route53 for the fleet
  hosts: all
  gather_facts: false
  run_once: true
  tasks:
    - name: Plan and apply
      georelay.relay.route53_fleet:
        force: "{{ force | default(false) }}"
        checksum: "{{ checksum | default(omit) }}"
        wait_timeout: "{{ wait_timeout | default(600) }}"
      delegate_to: localhost
      register: result
      ignore_errors: true

    - name: Keep the result for the test
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
      delegate_to: localhost
      check_mode: false
"""


@pytest.fixture
def module(tmp_path: Path) -> Any:
    """module(inventory, *ansible-playbook args, env=..., **extra vars) -> the task's result."""
    book = tmp_path / "route53.yml"
    book.write_text(PLAYBOOK)
    out = tmp_path / "result.json"

    def call(inventory: Path, *args: str, env: dict[str, str] | None = None,
             **extra: Any) -> dict[str, Any]:
        out.unlink(missing_ok=True)
        got = run([str(BIN / "ansible-playbook"), "-i", str(inventory), str(book),
                   "-e", json.dumps({"out": str(out), **extra}), *args], env=env)
        assert got.returncode == 0, got.stdout[-4000:] + got.stderr[-2000:]
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    return call


def cli(*args: str) -> tuple[int, str, str]:
    got = run([str(BIN / "georelay-dns"), *args])
    return got.returncode, got.stdout, got.stderr


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "eu-west-1": 2}), **LOCAL)


def test_same_plan_as_the_cli_then_applies_the_reviewed_checksum(
        zone: Zone, inventory: Path, module: Any) -> None:
    rc, out, err = cli("plan", "-i", str(inventory), "--output", "json")
    assert rc == 2, out + err
    cli_plan = json.loads(out)

    preview = module(inventory, "--check")
    assert not preview.get("failed"), preview
    assert preview["changed"] is True
    assert preview["checksum"] == cli_plan["checksum"]
    assert preview["counts"] == cli_plan["counts"] == {
        "healthcheck_create": 8, "healthcheck_update": 0, "healthcheck_delete": 0,
        "record_create": 12, "record_upsert": 0, "record_delete": 0}
    assert preview["owned"] == 0 and preview["over_threshold"] is False
    assert any("[georelay:lat:fast.example.com:us-east-1]" in line
               for line in preview["changes"]), preview["changes"]
    assert "applied" not in preview
    assert zone.records() == [] and zone.health_checks() == []

    done = module(inventory, checksum=preview["checksum"])
    assert not done.get("failed"), done
    assert done["changed"] is True and done["checksum"] == preview["checksum"]
    created = done["applied"]["healthchecks_created"]
    assert sorted(created) == sorted(f"{s}.example.com/{p}" for s in ("fast", "api")
                                     for p in ("us-east-1-p0", "us-east-1-p1",
                                               "eu-west-1-p0", "eu-west-1-p1"))
    assert sorted(created.values()) == sorted(h["Id"] for h in zone.health_checks())
    assert done["applied"]["record_batches"] == 1
    rc, out, err = cli("plan", "-i", str(inventory))
    assert rc == 0 and "nothing to do" in out, out + err

    again = module(inventory)
    assert again["changed"] is False and again["counts"] == dict.fromkeys(again["counts"], 0)
    assert "nothing to do" in again["msg"]


def test_a_changed_plan_is_refused_by_checksum(zone: Zone, inventory: Path,
                                               module: Any) -> None:
    got = module(inventory, checksum="sha256:0123456789abcdef0123456789abcdef")
    assert got["failed"] is True and got["changed"] is False
    assert "the plan changed since review (sha256:0123456789abcdef0123456789abcdef != " \
        f"{got['checksum']}); run plan again" in got["msg"]
    assert zone.records() == [] and zone.health_checks() == []


def test_a_record_georelay_does_not_own_stops_it(zone: Zone, inventory: Path,
                                                 module: Any) -> None:
    zone.client.change_resource_record_sets(HostedZoneId=zone.id, ChangeBatch={"Changes": [{
        "Action": "CREATE", "ResourceRecordSet": {
            "Name": "fast.example.com.", "Type": "A", "TTL": 300,
            "ResourceRecords": [{"Value": "192.0.2.10"}]}}]})
    before = zone.snapshot()
    for args in ((), ("--check",)):
        got = module(inventory, *args)
        assert got["failed"] is True, got
        assert got["msg"].startswith("refusing: records that georelay does not own are in "
                                     "the way"), got["msg"]
        assert "CONFLICT fast.example.com A is not georelay's" in got["msg"]
        assert got["conflicts"] and "never overwrites it" in got["conflicts"][0]
        assert zone.snapshot() == before


def test_the_operator_state_is_kept(zone: Zone, inventory: Path, module: Any) -> None:
    assert module(inventory)["changed"] is True
    rc, out, err = cli("evacuate", "eu-west-1", "--reason", "INC-7", "-i", str(inventory))
    assert rc == 0, out + err
    evacuated = zone.snapshot()

    got = module(inventory)
    assert got["changed"] is False, got
    assert set(got["operator_state"]["evacuated"]) == {"eu-west-1"}
    assert zone.snapshot() == evacuated
    assert not any(r.get("Region") == "eu-west-1" for r in zone.records())


def test_inventory_problems_fail_before_any_call(zone: Zone, tmp_path: Path,
                                                 module: Any) -> None:
    regions = fleet({"us-east-1": 2, "eu-west-1": 2})
    regions["us-east-1"]["us-east-1-p0"]["dns_weight"] = 900
    bad = write_inventory(tmp_path / "bad", regions, georelay_dns_tll=30, **LOCAL)
    got = module(bad)
    assert got["failed"] is True
    assert any("us-east-1-p0" in p and "dns_weight" in p for p in got["problems"]), got
    assert any("georelay_dns_tll" in p and "georelay_dns_ttl" in p for p in got["problems"])
    assert zone.records() == [] and zone.health_checks() == []

    # read as georelay-dns reads it: a Jinja DNS value is refused by both, the same way
    regions = fleet({"us-east-1": 2, "eu-west-1": 2})
    regions["eu-west-1"]["eu-west-1-p1"]["public_ip"] = "{{ '198.51.1.2' }}"
    jinja = write_inventory(tmp_path / "jinja", regions, **LOCAL)
    got = module(jinja)
    rc, _, err = cli("plan", "-i", str(jinja))
    assert got["failed"] is True and rc == 1
    problem = next(p for p in got["problems"] if "public_ip" in p)
    assert "is a Jinja expression" in problem and problem in err, (problem, err)


def test_bad_options_name_the_option(zone: Zone, inventory: Path, module: Any) -> None:
    got = module(inventory, wait_timeout=0)
    assert got["failed"] is True
    assert got["msg"].startswith("wait_timeout: 0.0 is not a number of seconds. Fix: give "
                                 "more than 0"), got["msg"]
    got = module(inventory, force="sometimes")
    assert got["failed"] is True and "force" in got["msg"], got["msg"]
    assert zone.records() == [] and zone.health_checks() == []


def test_no_credentials_fail_with_the_cli_line(zone: Zone, inventory: Path, module: Any,
                                               tmp_path: Path) -> None:
    nothing = str(tmp_path / "none")
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "",
           "AWS_SHARED_CREDENTIALS_FILE": nothing, "AWS_CONFIG_FILE": nothing,
           "AWS_EC2_METADATA_DISABLED": "true"}
    got = module(inventory, env=env)
    assert got["failed"] is True
    assert got["msg"] == ("no AWS credentials: set AWS_PROFILE or the AWS_* variables "
                          "(standard boto3 chain)"), got["msg"]
    plan = run([str(BIN / "georelay-dns"), "plan", "-i", str(inventory)], env=env)
    assert plan.returncode == 1 and plan.stderr.strip() == f"georelay-dns: {got['msg']}"


def _argument_spec() -> dict[str, Any]:
    tree = ast.parse((REPO / "plugins/action/route53_fleet.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and node.target.id == "ARGUMENT_SPEC" and node.value is not None):
            spec: dict[str, Any] = ast.literal_eval(node.value)
            return spec
    raise AssertionError("plugins/action/route53_fleet.py has no ARGUMENT_SPEC")


def test_ansible_doc_documents_every_option() -> None:
    got = run([str(BIN / "ansible-doc"), "-t", "module", "--json",
               "georelay.relay.route53_fleet"])
    assert got.returncode == 0, got.stdout + got.stderr
    doc = json.loads(got.stdout)["georelay.relay.route53_fleet"]
    options = doc["doc"]["options"]
    spec = _argument_spec()
    assert set(options) == set(spec)
    for name, want in spec.items():
        assert options[name]["type"] == want["type"], name
        assert options[name].get("default") == want.get("default"), name
    assert doc["examples"] and {"checksum", "counts", "changes", "applied"} <= set(
        doc["return"])
    text = run([str(BIN / "ansible-doc"), "-t", "module", "georelay.relay.route53_fleet"])
    assert text.returncode == 0 and "EXAMPLES" in text.stdout and "RETURN" in text.stdout

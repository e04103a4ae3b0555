"""playbooks/dns.yml (module georelay.relay.route53_fleet) against a real moto_server, with
the real ansible-playbook: --check --diff previews every record and health check and writes
nothing, a run builds the tree, the next finds nothing to do, georelay-dns agrees with it,
and the 30% threshold stops the play until georelay_dns_force is given."""

from __future__ import annotations

import re
from pathlib import Path

from georelay_testing.dns_zone import Zone, fleet, write_inventory
from georelay_testing.fleet import BIN, recap, run

LOCAL = {"ansible_connection": "local",
         "ansible_python_interpreter": "{{ ansible_playbook_python }}"}


def play(inventory: Path, *args: str) -> list[str]:
    return [str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/dns.yml", *args]


def changed(output: str) -> int:
    return sum(c["changed"] for c in recap(output).values())


def cli_plan(inventory: Path) -> tuple[int, str]:
    got = run([str(BIN / "georelay-dns"), "plan", "-i", str(inventory)])
    return got.returncode, got.stdout + got.stderr


def diff_headers(output: str) -> list[str]:
    """The '+++ after: ...' header of each per-object diff Ansible printed."""
    return re.findall(r"^\+\+\+ after: (.*)$", output, re.M)


def test_playbook_previews_applies_then_is_idempotent(zone: Zone, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "eu-west-1": 2}),
                                **LOCAL)

    check = run(play(inventory, "--check", "--diff"))
    assert check.returncode == 0, check.stdout[-3000:]
    assert zone.records() == [] and zone.health_checks() == []  # --check only plans
    assert changed(check.stdout) == 1, check.stdout[-3000:]
    headers = diff_headers(check.stdout)
    # 2 services x 4 proxies: 8 health checks, 8 weighted records, 2 x 2 latency records
    assert len(headers) == 8 + 8 + 4, headers
    assert sum(h.startswith("health check ") for h in headers) == 8, headers
    assert ("proxy-us-east-1-fast.example.com A [georelay:w:fast.example.com:us-east-1-p0] "
            "(create)") in headers
    assert "fast.example.com A [georelay:lat:fast.example.com:eu-west-1] (create)" in headers
    # a creation: nothing before, the record set as Route53 will hold it after
    assert "+- Value: 198.51.0.1\n" in check.stdout
    assert "+  DNSName: proxy-eu-west-1-fast.example.com.\n" in check.stdout

    first = run(play(inventory))
    assert first.returncode == 0, first.stdout[-3000:]
    assert changed(first.stdout) == 1
    assert len(zone.health_checks()) == 8
    assert len(zone.records()) == 12
    assert diff_headers(first.stdout) == []  # no --diff, no diff

    # the CLI on-call uses reads the same inventory into the same tree
    rc, out = cli_plan(inventory)
    assert rc == 0 and "nothing to do" in out, out

    # people look at the live tree between runs; reading it must not make a diff
    status = run([str(BIN / "georelay-dns"), "status", "-i", str(inventory)])
    assert status.returncode == 0, status.stdout + status.stderr
    assert "users near us-east-1 get" in status.stdout

    second = run(play(inventory, "--diff"))
    assert second.returncode == 0, second.stdout[-3000:]
    assert changed(second.stdout) == 0, second.stdout[-3000:]
    assert diff_headers(second.stdout) == []


def test_check_diff_shows_each_update_and_touches_nothing(zone: Zone, tmp_path: Path) -> None:
    regions = fleet({"us-east-1": 2, "eu-west-1": 2})
    inventory = write_inventory(tmp_path / "inv", regions, **LOCAL)
    assert run(play(inventory)).returncode == 0
    before = zone.snapshot()

    regions["us-east-1"]["us-east-1-p1"]["dns_weight"] = 3
    regions["eu-west-1"]["eu-west-1-p0"]["public_ip"] = "198.51.1.9"
    write_inventory(inventory, regions, **LOCAL)
    check = run(play(inventory, "--check", "--diff"))
    assert check.returncode == 0, check.stdout[-3000:]
    assert zone.snapshot() == before
    headers = diff_headers(check.stdout)
    # the moved proxy's health checks change in place, its records their value; the other
    # proxy's records their weight
    checks = [h for h in headers if h.startswith("health check ")]
    assert len(checks) == 2 and all("/eu-west-1-p0 " in h and h.endswith("(update)")
                                    for h in checks), headers
    weighted = [h for h in headers if "[georelay:w:" in h]
    assert sorted(weighted) == sorted(
        f"proxy-{region}-{s}.example.com A [georelay:w:{s}.example.com:{proxy}] (update)"
        for s in ("fast", "api")
        for region, proxy in (("us-east-1", "us-east-1-p1"), ("eu-west-1", "eu-west-1-p0"))
    ), headers
    assert len(headers) == 6, headers
    assert "-Weight: 1\n+Weight: 3\n" in check.stdout
    assert "-IPAddress: 198.51.1.1\n+IPAddress: 198.51.1.9\n" in check.stdout
    assert "-- Value: 198.51.1.1\n+- Value: 198.51.1.9\n" in check.stdout


def test_threshold_refusal_names_force(zone: Zone, tmp_path: Path) -> None:
    regions = fleet({"us-east-1": 2, "eu-west-1": 2})
    inventory = write_inventory(tmp_path / "inv", regions, **LOCAL)
    # a zone georelay-dns built: the module finds its own tree in it
    cli = run([str(BIN / "georelay-dns"), "apply", "--yes", "-i", str(inventory)])
    assert cli.returncode == 0, cli.stdout + cli.stderr
    same = run(play(inventory))
    assert same.returncode == 0 and changed(same.stdout) == 0, same.stdout[-3000:]
    before = zone.snapshot()

    # eu-west-1 leaves: 6 records and 4 health checks of 20 owned would be deleted
    write_inventory(inventory, {"us-east-1": regions["us-east-1"]}, **LOCAL)
    # the preview shows what would go, and that the run stops there
    preview = run(play(inventory, "--check", "--diff"))
    assert preview.returncode == 0, preview.stdout[-3000:]
    deleted = [h for h in diff_headers(preview.stdout) if h.endswith("(delete)")]
    records = [h for h in deleted if not h.startswith("health check ")]
    assert len(records) == 6 and all("eu-west-1" in h for h in records), deleted
    # a health check georelay deletes is named by its id and address (eu-west-1: 198.51.1.*)
    checks = [h for h in deleted if h.startswith("health check ")]
    assert len(checks) == 4 and all(" 198.51.1." in h for h in checks), deleted
    assert "without --check this task fails: refusing: this would update or delete 10" \
        in " ".join((preview.stdout + preview.stderr).split()), preview.stderr
    assert zone.snapshot() == before

    refused = run(play(inventory))
    assert refused.returncode != 0
    assert sum(c["failed"] for c in recap(refused.stdout).values()) == 1
    assert "update or delete 10 of the 20 records and health checks" in refused.stdout
    assert "pass force: true" in refused.stdout
    assert "-e georelay_dns_force=true" in refused.stdout
    assert zone.snapshot() == before
    # georelay-dns refuses it with the same words, its own flag named
    cli = run([str(BIN / "georelay-dns"), "apply", "--yes", "-i", str(inventory)])
    assert cli.returncode == 1
    assert ("update or delete 10 of the 20 records and health checks georelay owns (more "
            "than 30%); check the inventory, then pass --force") in cli.stderr, cli.stderr

    forced = run(play(inventory, "-e", "georelay_dns_force=true"))
    assert forced.returncode == 0, forced.stdout[-3000:]
    assert changed(forced.stdout) == 1
    assert len(zone.health_checks()) == 4
    rc, out = cli_plan(inventory)
    assert rc == 0 and "nothing to do" in out, out

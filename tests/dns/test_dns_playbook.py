"""playbooks/dns.yml against a real moto_server: applies once, then reports nothing to do."""

from __future__ import annotations

from pathlib import Path

from georelay_testing.dns_zone import Zone, fleet, write_inventory
from georelay_testing.fleet import BIN, recap, run


def test_playbook_applies_then_is_idempotent(zone: Zone, tmp_path: Path) -> None:
    inventory = write_inventory(tmp_path / "inv", fleet({"us-east-1": 2, "eu-west-1": 2}),
                                ansible_connection="local",
                                ansible_python_interpreter="{{ ansible_playbook_python }}")
    play = [str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/dns.yml"]

    check = run([*play, "--check"])
    assert check.returncode == 0, check.stdout[-3000:]
    assert zone.records() == []  # --check only plans

    first = run(play)
    assert first.returncode == 0, first.stdout[-3000:]
    assert sum(c["changed"] for c in recap(first.stdout).values()) == 1
    assert len(zone.health_checks()) == 8  # 2 services x 4 proxies

    # people look at the live tree between runs; reading it must not make a diff
    status = run([str(BIN / "georelay-dns"), "status", "-i", str(inventory)])
    assert status.returncode == 0, status.stdout + status.stderr
    assert "users near us-east-1 get" in status.stdout

    second = run(play)
    assert second.returncode == 0, second.stdout[-3000:]
    assert sum(c["changed"] for c in recap(second.stdout).values()) == 0, second.stdout[-3000:]

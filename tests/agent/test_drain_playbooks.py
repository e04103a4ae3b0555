"""playbooks/drain.yml and undrain.yml through the real ansible-playbook on the lab fleet.

Route53's view is the public /healthz of the drained proxy: 503 "draining: <reason>" while
drained, 200 again after undrain. Each run must say what it did and how to undo it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from georelay_testing.agent_fleet import AgentFleet
from georelay_testing.fleet import Played

REASON = "kernel upgrade CHG-1234"
WITH_REASON = ("-e", f"reason='{REASON}'")  # quoted: -e splits key=value words on spaces


def play(fleet: AgentFleet, playbook: str, *args: str) -> Played:
    proc = fleet.play(*args, playbook=f"playbooks/{playbook}", timeout=120)
    return Played(proc.returncode, proc.stdout, proc.stderr)


def spool(fleet: AgentFleet, proxy: str) -> list[str]:
    out = fleet.agent_cli(proxy, "drains", "--json")
    return [d["id"] for d in json.loads(out.stdout)]


@pytest.fixture
def undrained(agent_fleet: AgentFleet) -> Iterator[AgentFleet]:
    for proxy in agent_fleet.proxy_names():
        agent_fleet.wait_public(proxy, 200, timeout=5)
    yield agent_fleet
    for proxy in agent_fleet.proxy_names():  # leave the shared fleet as it was found
        agent_fleet.agent_cli(proxy, "undrain")


def test_drain_and_undrain_one_proxy(undrained: AgentFleet) -> None:
    fleet = undrained
    # --check: says what it would do, changes nothing.
    run = play(fleet, "drain.yml", "-l", "e1", *WITH_REASON, "--check")
    assert run.changed() == {"e1": 1}
    assert f"would drain (--check, nothing changed) e1: {REASON} (id playbook" in run.text
    assert spool(fleet, "e1") == []
    assert fleet.public_healthz("e1")[0] == 200

    run = play(fleet, "drain.yml", "-l", "e1", *WITH_REASON)
    assert run.changed() == {"e1": 1}
    assert f"drained e1: {REASON} (id playbook, by " in run.text
    assert f"the agent now answers /healthz with 503: draining: {REASON}" in run.text
    assert f"to undo, run ansible-playbook -i {fleet.inventory} " in run.text
    assert " georelay.relay.undrain -l e1" in run.text
    assert fleet.public_healthz("e1") == (503, f"draining: {REASON}\n")
    assert fleet.public_healthz("w1")[0] == 200  # only the targeted proxy
    # HAProxy is not touched: users who still hold its address are served.
    assert fleet.fetch("e1", "fast.example.com", "/hello").status == 200

    run = play(fleet, "drain.yml", "-l", "e1", *WITH_REASON)
    assert run.changed() == {"e1": 0}
    assert f"already drained e1: {REASON}" in run.text
    assert spool(fleet, "e1") == ["playbook"]

    run = play(fleet, "undrain.yml", "-l", "e1", "--check")
    assert run.changed() == {"e1": 1}
    assert f"would remove drain: playbook | {REASON}" in run.text
    assert fleet.public_healthz("e1")[0] == 503

    run = play(fleet, "undrain.yml", "-l", "e1")
    assert run.changed() == {"e1": 1}
    assert f"removed drain: playbook | {REASON}" in run.text
    assert "the agent now answers /healthz with 200: georelay-healthy" in run.text
    assert " georelay.relay.drain -l e1 -e" in run.text  # how to drain it again
    assert fleet.public_healthz("e1") == (200, "georelay-healthy\n")

    run = play(fleet, "undrain.yml", "-l", "e1")
    assert run.changed() == {"e1": 0}
    assert "nothing to undrain on e1" in run.text


def test_drain_refuses_without_a_reason_or_when_every_proxy_is_targeted(
        undrained: AgentFleet) -> None:
    fleet = undrained
    run = play(fleet, "drain.yml", "-l", "e1")
    assert run.rc != 0
    assert "Say why: run with -e \"reason='kernel upgrade CHG-1234'\"" in run.text
    run = play(fleet, "drain.yml", "-e", "reason=everything")
    assert run.rc != 0
    assert "This play targets every proxy of the inventory (e1, w1)" in run.text
    assert "-e force=true" in run.text
    assert spool(fleet, "e1") == spool(fleet, "w1") == []
    assert fleet.public_healthz("e1")[0] == fleet.public_healthz("w1")[0] == 200
    # force=true lets it through (as a dry run here: the shared fleet stays in DNS).
    run = play(fleet, "drain.yml", "-e", "reason=everything", "-e", "force=true", "--check")
    assert run.changed() == {"e1": 1, "w1": 1}
    assert spool(fleet, "e1") == spool(fleet, "w1") == []

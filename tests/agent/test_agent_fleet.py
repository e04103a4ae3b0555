"""The agent on a deployed two-region fleet: real haproxy, real TLS, the lab's gateways.

Route53's view is the public listener: https://<public name>/healthz on the proxy address.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import tomllib

import jsonschema
import pytest

from georelay_agent.schema import STATUS_SCHEMA
from georelay_testing.agent_fleet import AgentFleet, parse_nagios
from georelay_testing.fleet import REPO, recap


def test_all_healthy_answers_200_through_the_public_listener(agent_fleet: AgentFleet) -> None:
    for proxy in agent_fleet.proxy_names():
        agent_fleet.wait_public(proxy, 200, timeout=5)
        for hostname in ("fast.example.com", "api.example.com"):
            code, body = agent_fleet.public_healthz(proxy, hostname)
            assert (code, body) == (200, "georelay-healthy\n")
        assert agent_fleet.agent_get(proxy, "/live")[0] == 200


def test_every_gateway_down_fails_within_3s_and_recovers_within_5s(
        agent_fleet: AgentFleet, record_property: pytest.RecordProperty) -> None:
    """No usable server at all, home or backup: 503 and CRITICAL. (One region losing its
    gateway bridges through the other: test_agent_bridging.py.)"""
    lab = agent_fleet.lab()
    for proxy in agent_fleet.proxy_names():
        agent_fleet.wait_public(proxy, 200, timeout=5)
    start = time.monotonic()
    try:
        assert lab.stop_gateway("us-west-2") and lab.stop_gateway("us-east-1")
        agent_fleet.wait_public("w1", 503, timeout=3)
        down_s = time.monotonic() - start
        record_property("gateways_down_to_503_s", round(down_s, 2))
        assert down_s <= 3.0, f"503 after {down_s:.2f}s"
        # The probe (through HAProxy to the gateways) sees it first; HAProxy's checks (and
        # real traffic's connection errors) take the home and backup servers DOWN after.
        # Backups are checked every haproxy_backup_check_interval (5 s): until then HAProxy
        # believes the backup UP and the agent may say "bridging" (also 503).
        deadline = time.monotonic() + 8
        while True:
            status = agent_fleet.status("w1")
            assert status["state"] in ("unhealthy", "bridging") and not status["healthy"]
            if status["state"] == "unhealthy" and all(
                    not s["up"] and s["usable_servers"] == 0 for s in status["services"]):
                break
            assert time.monotonic() < deadline, status["services"]
            time.sleep(0.1)
        body = agent_fleet.public_healthz("w1")[1]
        assert "no usable server" in body and "(backup us-east-1)" in body, body
        check = agent_fleet.agent_cli("w1", "check")
        assert check.returncode == 2 and "CRITICAL" in check.stdout, check.stdout
    finally:
        for region in ("us-west-2", "us-east-1"):
            lab.start_gateway(lab.fleet.region(region))  # returns once the gateway listens
    start = time.monotonic()
    up_s, body = agent_fleet.wait_public("w1", 200, timeout=5)
    up_s = time.monotonic() - start
    record_property("gateways_back_to_200_s", round(up_s, 2))
    print(f"\nw1: every gateway stopped -> 503 in {down_s:.2f}s; restarted -> 200 in "
          f"{up_s:.2f}s")
    # HAProxy's checks (rise 2) take the home UP, then the probe passes (rise 2).
    assert up_s <= 5.0, f"200 after {up_s:.2f}s"
    assert body == "georelay-healthy\n"
    agent_fleet.wait_public("e1", 200, timeout=5)


def test_drain_with_reason_expiry_and_undrain(agent_fleet: AgentFleet) -> None:
    agent_fleet.wait_public("e1", 200, timeout=5)
    out = agent_fleet.agent_cli("e1", "drain", "--reason", "kernel upgrade CHG-1234")
    assert out.returncode == 0, out.stderr
    _, body = agent_fleet.wait_public("e1", 503, timeout=2)
    assert body == "draining: kernel upgrade CHG-1234\n"
    # Existing traffic continues: the proxy still relays.
    assert agent_fleet.fetch("e1", "fast.example.com", "/hello").status == 200
    status = agent_fleet.status("e1")
    assert status["state"] == "draining"
    (drain,) = status["drains"]
    assert drain["reason"] == "kernel upgrade CHG-1234" and drain["active"]
    assert drain["who"] and drain["created"] > 0 and drain["expires"] is None
    listing = agent_fleet.agent_cli("e1", "drains")
    assert "kernel upgrade CHG-1234" in listing.stdout and "active" in listing.stdout

    check = agent_fleet.agent_cli("e1", "check")
    word, summary, _ = parse_nagios(check.stdout)
    assert (check.returncode, word) == (1, "WARNING")
    assert "draining: kernel upgrade CHG-1234" in summary

    assert agent_fleet.agent_cli("e1", "undrain").returncode == 0
    agent_fleet.wait_public("e1", 200, timeout=2)

    # A drain that expires: 503 while it lasts, 200 after, without anybody undraining.
    out = agent_fleet.agent_cli("e1", "drain", "--reason", "short", "--expires", "2s",
                                "--id", "short")
    assert out.returncode == 0, out.stderr
    _, body = agent_fleet.wait_public("e1", 503, timeout=2)
    assert body == "draining: short\n"
    agent_fleet.wait_public("e1", 200, timeout=4)
    listing = agent_fleet.agent_cli("e1", "drains", "--json")
    assert [d["active"] for d in json.loads(listing.stdout)] == [False]
    assert agent_fleet.agent_cli("e1", "undrain", "short").returncode == 0


def test_drain_requires_a_reason(agent_fleet: AgentFleet) -> None:
    out = agent_fleet.agent_cli("e1", "drain", "--reason", "   ")
    assert out.returncode == 64 and "--reason is required" in out.stderr  # EX_USAGE
    missing = agent_fleet.agent_cli("e1", "drain")  # argparse: missing --reason
    assert missing.returncode == 64 and "required: --reason" in missing.stderr


def test_the_installed_agent_finds_its_config_and_knows_its_version(
        agent_fleet: AgentFleet) -> None:
    """The agent the role installed in <root>/opt/georelay-agent/venv, run with neither
    --config nor $GEORELAY_AGENT_CONFIG (no wrapper), reads <root>/etc/georelay-agent/
    agent.json, and reports the version of agent/pyproject.toml, here and in its status."""
    python = agent_fleet.root("e1") / "opt/georelay-agent/venv/bin/python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("GEORELAY_AGENT_CONFIG", "PYTHONPATH")}
    out = subprocess.run([str(python), "-m", "georelay_agent", "validate"], env=env,
                         cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout == f"{agent_fleet.agent_config('e1')}: valid (2 service(s))\n", \
        out.stdout + out.stderr
    release = tomllib.loads((REPO / "agent/pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([str(python), "-m", "georelay_agent", "--version"], env=env,
                         cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert out.stdout == f"georelay-agent {release}\n", out.stdout + out.stderr
    assert agent_fleet.status("e1")["agent"]["version"] == release


def test_status_json_is_versioned_and_matches_its_schema(agent_fleet: AgentFleet) -> None:
    status = agent_fleet.status("e1")
    jsonschema.validate(status, STATUS_SCHEMA)
    assert status["schema_version"] == 1
    assert status["agent"]["proxy"] == "e1" and status["agent"]["region"] == "us-east-1"
    assert {s["hostname"] for s in status["services"]} == {"fast.example.com",
                                                            "api.example.com"}
    for s in status["services"]:
        assert s["servers"][0]["check_status"] == "L7OK"
        assert s["probe"]["ok"] and s["probe"]["cert_not_after"] > time.time()
    assert status["haproxy"]["up"] and status["haproxy"]["failed_reloads"] == 0
    assert 0 <= status["snapshot_age_s"] < 2


def test_metrics_are_prometheus_text(agent_fleet: AgentFleet) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    code, body = agent_fleet.agent_get("e1", "/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    healthy = families["georelay_agent_healthy"].samples[0]
    assert healthy.labels == {"proxy": "e1", "region": "us-east-1"} and healthy.value == 1
    up = {s.labels["service"]: s.value for s in families["georelay_agent_backend_up"].samples}
    assert up == {"fast.example.com": 1.0, "api.example.com": 1.0}
    assert "georelay_agent_collection_duration_seconds" in families
    assert "georelay_agent_backend_http_5xx" in families


def test_no_control_over_http(agent_fleet: AgentFleet) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(agent_fleet.agent_url("e1", "/healthz"), data=b"x",
                                 method="POST")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 405


def test_check_ok_with_perfdata_and_json(agent_fleet: AgentFleet) -> None:
    agent_fleet.wait_public("e1", 200, timeout=5)
    out = agent_fleet.agent_cli("e1", "check")
    word, summary, perf = parse_nagios(out.stdout)
    assert (out.returncode, word) == (0, "OK"), out.stdout + out.stderr
    assert "e1 (us-east-1)" in summary
    labels = {p.split("=")[0] for p in perf}
    assert {"services_up", "'fast.example.com_usable_servers'", "'fast.example.com_probe'",
            "'fast.example.com_cert_days'", "drains", "collection"} <= labels
    out = agent_fleet.agent_cli("e1", "check", "--json")
    assert out.returncode == 0
    doc = json.loads(out.stdout)
    jsonschema.validate(doc, STATUS_SCHEMA)
    assert doc["check"]["status"] == "OK" and doc["check"]["agent_http_status"] == 200


def test_a_hitless_reload_keeps_healthz_200_and_is_counted(agent_fleet: AgentFleet) -> None:
    from georelay_testing.fleet import unix_cli

    agent_fleet.wait_public("e1", 200, timeout=5)
    before = agent_fleet.status("e1")["haproxy"]
    unix_cli(agent_fleet.master_socket("e1"), "reload", timeout=10)  # as the role reloads
    answers: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        answers.append(agent_fleet.agent_get("e1", "/healthz"))
        time.sleep(0.02)
    after = agent_fleet.status("e1")["haproxy"]
    assert {code for code, _ in answers} == {200}, [a for a in answers if a[0] != 200]
    assert after["pid"] != before["pid"]
    assert after["reloads_seen"] == before["reloads_seen"] + 1
    assert after["reloads"] == before["reloads"] + 1 and after["failed_reloads"] == 0


def test_second_run_changes_nothing(agent_fleet: AgentFleet) -> None:
    pids = {p: agent_fleet.status(p)["agent"]["pid"] for p in agent_fleet.proxy_names()}
    proc = agent_fleet.deploy()
    changed = [block.split("\n", 1)[0] + " " + line
               for block in re.split(r"\n(?=TASK |RUNNING HANDLER )", proc.stdout)
               for line in block.splitlines() if line.startswith("changed:")]
    for host, counts in recap(proc.stdout).items():
        assert counts["changed"] == 0, (host, changed)
    assert pids == {p: agent_fleet.status(p)["agent"]["pid"] for p in agent_fleet.proxy_names()}


def test_healthz_under_200_requests_per_second_for_10s_has_no_error(
        agent_fleet: AgentFleet, record_property: pytest.RecordProperty) -> None:
    """Route53's path: a new TLS connection per request through the public listener."""
    import subprocess
    import sys

    agent_fleet.wait_public("e1", 200, timeout=5)
    proc = subprocess.run(
        [sys.executable, "-m", "georelay_tools.bench_healthz", "--address",
         agent_fleet.address("e1"), "--port", str(agent_fleet.https_port), "--host",
         "fast.example.com", "--ca-file", agent_fleet.ca_file, "--rate", "200",
         "--duration", "10"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.strip(), f"exit {proc.returncode}: {proc.stderr}"
    result = json.loads(proc.stdout)
    print(f"\n/healthz load: {json.dumps(result)}")
    for key in ("requests", "errors", "p50_ms", "p99_ms", "max_ms", "achieved_rps"):
        record_property(f"load_{key}", result[key])
    assert result["requests"] == 2000 and result["answered"] == 2000
    assert result["errors"] == 0, result["error_kinds"]
    assert result["status_codes"] == {"200": 2000}
    assert proc.returncode == 0, proc.stderr

"""The agent reports the one-box canary (README "One-box canary"): percentage, the one-box
backend's usable servers, and its fallback to regular, which is a warning and never makes
/healthz fail.

The config and HAProxy's answers as units, then the real thing: a fleet deployed by
playbooks/proxies.yml (real haproxy 2.6, real TLS, the lab's strict stand-in gateway serving
the one-box domain), whose one-box is broken with the lab's fault injection (its health
checks answer 503).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest

from georelay_agent.config import ConfigError, Onebox, parse
from georelay_agent.gather import Gatherer
from georelay_agent.health import HealthMachine
from georelay_agent.metrics import AgentMetrics
from georelay_agent.onebox import command
from georelay_agent.onebox import parse as parse_answer
from georelay_agent.schema import STATUS_SCHEMA
from georelay_agent.snapshot import status_document
from georelay_testing.agent_fleet import AgentFleet, make_fleet, parse_nagios
from georelay_testing.fleet import BIN, REPO, run, running_fleet

HOST = "fast.example.com"
ONEBOX_BACKEND = "be_fast_example_com_onebox"
MAP = "/etc/haproxy/onebox-percent.map"
GOOD: dict[str, Any] = {
    "schema_version": 1, "proxy": "p1", "region": "us-east-1",
    "haproxy": {"stats_socket": "/run/haproxy/user.sock"},
    "services": [{"hostname": HOST, "backend": "be_fast_example_com",
                  "domain": "us-east-1-fast.example.com", "probe_path": "/ping",
                  "onebox": {"backend": ONEBOX_BACKEND, "map_file": MAP}}],
    "drain_dir": "/var/lib/georelay-agent/drains",
    "check": {"state_dir": "/var/lib/georelay-agent/check"},
}


def with_onebox(onebox: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data["services"][0]["onebox"] = onebox
    return data


# --- the config ----------------------------------------------------------------------------

def test_the_config_names_the_onebox_backend_and_map_file() -> None:
    (s,) = parse(GOOD).services
    assert s.onebox is not None
    assert (s.onebox.backend, s.onebox.map_file) == (ONEBOX_BACKEND, MAP)


def test_an_agent_json_without_onebox_keeps_working() -> None:
    old = copy.deepcopy(GOOD)
    del old["services"][0]["onebox"]
    c = parse(old)
    assert c.services[0].onebox is None
    # one Runtime API round trip more per observation only with a one-box
    assert parse(GOOD).stale_after == c.stale_after + 1.5


@pytest.mark.parametrize(("onebox", "message"), [
    ("be_x_onebox", "field 'services[0].onebox': must be a mapping, got str 'be_x_onebox'"),
    ({"map_file": MAP}, "field 'services[0].onebox.backend': is required"),
    ({"backend": "be fast", "map_file": MAP},
     "field 'services[0].onebox.backend': 'be fast' is not valid: the HAProxy backend name of "
     "the service's one-box, such as be_fast_example_com_onebox"),
    ({"backend": ONEBOX_BACKEND, "map_file": "onebox.map"},
     "field 'services[0].onebox.map_file': 'onebox.map' must be an absolute path"),
    ({"backend": ONEBOX_BACKEND, "map_file": MAP, "percent": 5},
     "field 'services[0].onebox.percent': unknown field"),
    ({"backend": "be_fast_example_com", "map_file": MAP},
     "field 'services[0].onebox.backend': 'be_fast_example_com' is the service's regular "
     "backend: the one-box has its own (<backend>_onebox)"),
])
def test_a_bad_onebox_names_the_field_and_the_fix(onebox: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(with_onebox(onebox), "agent.json")
    assert message in str(err.value).splitlines()[1:][0].strip()


def test_the_role_renders_the_onebox_only_where_this_region_has_one(tmp_path: Path) -> None:
    """roles/georelay_agent's template through Ansible: a service with its one-box here gets
    onebox {backend, map_file}; one whose region switched it off (no one-box backend) and
    one without a one-box get none."""
    root = str(tmp_path)

    def backend(host: str, onebox: Any) -> dict[str, Any]:
        name = "be_" + host.replace(".", "_")
        return {"name": name, "hostname": host, "domain": f"us-east-1-{host}",
                "server": "127.0.10.1:8443", "resolve": False, "health_path": "/ping",
                "backups": [], "onebox": onebox}

    fact = {"name": "p1", "region": "us-east-1", "bind_address": "127.0.0.1", "https_port": 443,
            "healthz_path": "/healthz", "probe_address": "127.0.0.1",
            "service_manager": "process", "root": root,
            "agent": {"address": "127.0.0.1", "port": 8405, "server": "127.0.0.1:8405"},
            "paths": {"user_socket": f"{root}/run/haproxy/user.sock",
                      "master_socket": f"{root}/run/haproxy-master.sock",
                      "config": f"{root}/etc/haproxy/haproxy.cfg"},
            "onebox": {"map_file": f"{root}{MAP}"},
            "backends": [
                backend(HOST, {"percent": 20, "backend": {"name": ONEBOX_BACKEND}}),
                backend("off.example.com", {"percent": 20, "backend": None}),
                backend("plain.example.com", None)]}
    defaults = yaml.safe_load((REPO / "roles/georelay_agent/defaults/main.yml").read_text())
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": {**{k: v for k, v in defaults.items() if "{{" not in str(v)},
                      "georelay_proxy": fact,
                      "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                      "georelay_agent_paths": {"drain_dir": f"{root}/drains",
                                               "check_dir": f"{root}/check"}},
             "tasks": [{"ansible.builtin.template": {
                 "src": str(REPO / "roles/georelay_agent/templates/georelay-agent.json.j2"),
                 "dest": str(tmp_path / "agent.json")}}]}]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play))
    out = run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "render.yml")],
              timeout=60)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    c = parse(json.loads((tmp_path / "agent.json").read_text()))
    assert [(s.hostname, s.onebox) for s in c.services] == [
        (HOST, Onebox(ONEBOX_BACKEND, f"{root}{MAP}")), ("off.example.com", None),
        ("plain.example.com", None)]


# --- HAProxy's answers (as HAProxy 2.6.12 gives them) ---------------------------------------

TABLE = "# table: georelay_onebox_fallback, type: string, size:1024, used:1\n"


def test_one_command_line_serves_every_map_and_the_table() -> None:
    assert command([MAP]) == f"show map {MAP}; show table georelay_onebox_fallback"
    answer = (f"0x55cf32a06710 {HOST} 50\n0x55cf32a06760 api.example.com 0\n\n"
              f"{TABLE}0x55cf32be25f8: key={HOST} use=0 exp=0 http_req_cnt=12\n\n")
    reading, problems = parse_answer(answer, [MAP])
    assert (reading.percents, reading.fallbacks, problems) == (
        {HOST: 50, "api.example.com": 0}, {HOST: 12}, [])
    # an empty map answers the empty line alone; a second map's first entry of a key wins
    reading, _ = parse_answer(f"\n0x1 {HOST} 7\n0x2 {HOST} 9\n\n{TABLE}\n", ["/a", "/b"])
    assert (reading.percents, reading.fallbacks) == ({HOST: 7}, {})


def test_a_socket_of_level_user_leaves_the_fallback_count_unknown() -> None:
    answer = (f"0x55cf32a06710 {HOST} 50\n\n{TABLE}"
              "# contents not dumped due to insufficient privileges\n\n")
    reading, problems = parse_answer(answer, [MAP])
    assert reading.percents == {HOST: 50} and reading.fallbacks is None
    assert problems == ["one-box: fallback requests unknown: HAProxy does not show the "
                        "entries of georelay_onebox_fallback on this socket (its level is "
                        "user): the fallback count needs a stats socket of level operator"]


def test_a_running_config_without_the_map_or_table_says_so() -> None:
    answer = "Unknown map identifier. Please use #<id> or <file>.\n\nNo such table\n\n"
    reading, problems = parse_answer(answer, [MAP])
    assert reading.percents is None and reading.fallbacks is None
    assert len(problems) == 2 and all("re-run playbooks/proxies.yml" in p for p in problems)
    assert problems[0].startswith(f"one-box: show map {MAP}: Unknown map identifier")


# --- the real thing ------------------------------------------------------------------------

SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com",
           "health_path": "/ping", "onebox_domain": "{region}-onebox-fast.example.com",
           "onebox_percent": 50}
ONEBOX_DOMAIN = "us-east-1-onebox-fast.example.com"
COOKIE = "georelay_partition"  # georelay_onebox_cookie's default
FALLING = f"one-box of {HOST} has no usable server: its 50% of users are served by regular"


@pytest.fixture(scope="module")
def fleet() -> Iterator[AgentFleet]:
    """One proxy (p1, us-east-1); fast.example.com's one-box at 50%. The agent's probe is
    off: it is a user of the public listener too (bucketed, and counted when it falls back),
    and the test counts its own requests."""
    with running_fleet(make=make_fleet, services=[dict(SERVICE)],
                       all_vars={"georelay_agent_probe": False}) as f:
        yield cast(AgentFleet, f)


def wait_status(fleet: AgentFleet, want: Callable[[dict[str, Any]], bool],
                timeout: float) -> tuple[float, dict[str, Any]]:
    """Seconds until the agent's /status.json satisfies want (and that document)."""
    start = time.monotonic()
    doc: dict[str, Any] = {}
    while time.monotonic() - start < timeout + 5:
        doc = fleet.status("p1")
        if want(doc):
            return time.monotonic() - start, doc
        time.sleep(0.05)
    raise AssertionError(f"never: {json.dumps(doc['services'][0].get('onebox'))}")


def onebox_of(doc: dict[str, Any]) -> dict[str, Any]:
    (service,) = doc["services"]
    return cast(dict[str, Any], service["onebox"])


def metric(text: str, name: str) -> float | None:
    m = re.search(rf'^{name}{{proxy="p1",region="us-east-1",service="{HOST}"}} (\S+)$', text,
                  re.M)
    return float(m.group(1)) if m else None


def user_socket_level(fleet: AgentFleet) -> str:
    m = re.search(r"stats socket \S+/user\.sock .*\blevel (\w+)", fleet.config("p1").read_text())
    assert m, "haproxy.cfg has no user.sock"
    return m.group(1)


def admin_config(fleet: AgentFleet, tmp_path: Path) -> Path:
    """The deployed agent's config on the admin socket (a level that dumps the fallback
    table), without the probe, with its own check state."""
    data = json.loads(fleet.agent_config("p1").read_text())
    data["haproxy"]["stats_socket"] = str(fleet.admin_socket("p1"))
    data["probe"]["enabled"] = False
    data["check"]["state_dir"] = str(tmp_path / "check")
    path = tmp_path / "agent-admin.json"
    path.write_text(json.dumps(data))
    return path


def observed(path: Path) -> tuple[dict[str, Any], str]:
    """One observation with the real Gatherer, judged: the status document and /metrics."""
    config = parse(json.loads(path.read_text()), str(path))
    gatherer = Gatherer(config)
    try:
        snap = HealthMachine(config, rise=1, fall=1).apply(gatherer.observe())
    finally:
        gatherer.close()
    return status_document(snap), generate_latest(AgentMetrics(lambda: snap).registry).decode()


def get(fleet: AgentFleet, bucket: int) -> str:
    """One request of a user with that bucket; the domain of the gateway that served it."""
    reply = fleet.fetch("p1", HOST, headers={"Cookie": f"{COOKIE}={bucket}"})
    assert reply.status == 200, reply.body
    return str(reply.json()["host"])


def test_the_agent_shows_the_percent_and_the_usable_servers(fleet: AgentFleet) -> None:
    service = json.loads(fleet.agent_config("p1").read_text())["services"][0]
    assert service["onebox"] == {"backend": ONEBOX_BACKEND, "map_file": str(
        fleet.root("p1") / "etc/haproxy/onebox-percent.map")}
    _, doc = wait_status(fleet, lambda d: onebox_of(d)["usable_servers"] == 1, timeout=3)
    jsonschema.validate(doc, STATUS_SCHEMA)
    ob = onebox_of(doc)
    assert (ob["percent"], ob["falling_back"], ob["status"]) == (50, False, "UP")
    assert doc["warnings"] == [] and doc["state"] == "healthy"
    code, body = fleet.agent_get("p1", "/metrics")
    text = body.decode()
    assert code == 200
    assert (metric(text, "georelay_agent_onebox_percent"),
            metric(text, "georelay_agent_onebox_usable_servers"),
            metric(text, "georelay_agent_onebox_falling_back")) == (50, 1, 0)
    assert get(fleet, 5) == ONEBOX_DOMAIN  # bucket 5 < 50: the one-box serves


def test_a_dead_onebox_is_reported_falling_back_and_the_proxy_stays_healthy(
        fleet: AgentFleet, tmp_path: Path) -> None:
    lab = fleet.lab()
    counted = user_socket_level(fleet) != "user"  # level user: HAProxy hides table entries
    admin = admin_config(fleet, tmp_path)
    lab.set_fault(ONEBOX_DOMAIN, 503, 1.0, health_checks=True)
    try:
        took, doc = wait_status(fleet, lambda d: onebox_of(d)["falling_back"], timeout=5)
        assert took <= 5.0, f"falling back reported after {took:.2f}s"
        assert onebox_of(doc)["usable_servers"] == 0 and onebox_of(doc)["percent"] == 50
        # Regular serves everyone: Route53 keeps the proxy.
        assert doc["state"] == "healthy" and doc["healthy"] is True
        assert fleet.public_healthz("p1") == (200, "georelay-healthy\n")

        # Three one-box users (bucket < 50) fall back, two regular users do not count.
        before = onebox_of(observed(admin)[0])["fallback_requests"]
        assert isinstance(before, int)
        assert [get(fleet, b) for b in (5, 0, 49, 50, 99)] == \
            ["us-east-1-fast.example.com"] * 5
        sent = 3
        doc, text = observed(admin)
        assert onebox_of(doc)["fallback_requests"] == before + sent
        assert f"{FALLING} (fallback requests: {before + sent})" in doc["warnings"]
        assert metric(text, "georelay_agent_onebox_fallback_requests_total") == before + sent
        assert metric(text, "georelay_agent_onebox_falling_back") == 1

        # The deployed agent: status and /metrics.
        _, doc = wait_status(fleet, lambda d: not counted or
                             onebox_of(d)["fallback_requests"] == before + sent, timeout=3)
        jsonschema.validate(doc, STATUS_SCHEMA)
        text = fleet.agent_get("p1", "/metrics")[1].decode()
        assert metric(text, "georelay_agent_onebox_falling_back") == 1
        assert metric(text, "georelay_agent_onebox_usable_servers") == 0
        if counted:
            assert f"{FALLING} (fallback requests: {before + sent})" in doc["warnings"]
            assert metric(text, "georelay_agent_onebox_fallback_requests_total") == \
                before + sent
        else:
            assert onebox_of(doc)["fallback_requests"] is None
            assert f"{FALLING} (fallback requests: unknown)" in doc["warnings"]
            assert any("needs a stats socket of level operator" in p
                       for p in doc["collection"]["problems"])
            assert metric(text, "georelay_agent_onebox_fallback_requests_total") is None
        assert fleet.agent_get("p1", "/healthz")[0] == 200

        # The cron check: WARNING (exit 1) with the warning and the one-box perfdata.
        exe = fleet.root("p1") / "opt/georelay-agent/venv/bin/georelay-agent"
        out = subprocess.run([str(exe), "check", "--config", str(admin)], capture_output=True,
                             text=True, timeout=60, check=False)
        word, summary, perf = parse_nagios(out.stdout)
        assert (out.returncode, word) == (1, "WARNING"), out.stdout + out.stderr
        assert f"{FALLING} (fallback requests: {before + sent})" in summary
        assert f"'{HOST}_onebox_falling_back'=1;0;;0;1" in perf
        assert f"'{HOST}_onebox_fallback'={before + sent}c;;;0" in perf
        assert f"'{HOST}_onebox_usable_servers'=0;;;0" in perf
        assert f"'{HOST}_onebox_percent'=50;;;0;100" in perf
    finally:
        lab.clear_fault(ONEBOX_DOMAIN)
    took, doc = wait_status(fleet, lambda d: onebox_of(d)["usable_servers"] == 1, timeout=5)
    assert not onebox_of(doc)["falling_back"] and doc["warnings"] == []
    assert get(fleet, 5) == ONEBOX_DOMAIN

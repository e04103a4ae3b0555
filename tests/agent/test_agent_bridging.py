"""Bridging: a service's home gateway is DOWN and HAProxy relays to a backup region's gateway.

Requests still succeed, so `check` says WARNING; /healthz answers 503 "home gateway down,
bridging via backup <region>" (users are better served by proxies next to a healthy
gateway) unless bridging_keeps_in_dns. Unit tests of the decision first, then the real thing
on the two-region lab fleet.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from georelay_agent.check import run as run_check
from georelay_agent.config import Config, ConfigError, parse
from georelay_agent.drains import Drain
from georelay_agent.haproxy_api import parse_stat
from georelay_agent.health import HealthMachine
from georelay_agent.metrics import AgentMetrics
from georelay_agent.observation import Observation
from georelay_agent.schema import STATUS_SCHEMA
from georelay_agent.server import verdict
from georelay_agent.snapshot import Snapshot, status_document
from georelay_testing.agent_fleet import AgentFleet, parse_nagios
from georelay_testing.fleet import BIN, REPO, run

FAST = {"hostname": "fast.example.com", "backend": "be_fast_example_com",
        "domain": "us-east-1-fast.example.com", "probe_path": None,
        "home_server": "us-east-1-fast.example.com",
        "backups": [{"region": "us-west-2", "server": "us-west-2-fast.example.com"},
                    {"region": "eu-west-1", "server": "eu-west-1-fast.example.com"}]}
API = {"hostname": "api.example.com", "backend": "be_api_example_com",
       "domain": "us-east-1-api.example.com", "probe_path": None,
       "home_server": "us-east-1-api.example.com",
       "backups": [{"region": "us-west-2", "server": "us-west-2-api.example.com"}]}


def agent_config(tmp_path: Path, services: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"schema_version": 1, "proxy": "e1", "region": "us-east-1",
            "haproxy": {"stats_socket": str(tmp_path / "user.sock")},
            "services": services, "probe": {"enabled": False},
            "drain_dir": str(tmp_path / "drains"),
            "check": {"state_dir": str(tmp_path / "check")}, **extra}


COLUMNS = ("pxname,svname,status,weight,act,bck,check_status,check_code,last_chk,lastchg,"
           "req_tot,hrsp_5xx,econ,eresp,wretr")


def stat(*backends: tuple[str, list[tuple[str, str, bool]]]) -> str:
    """`show stat` text: per backend, its servers (name, status, backup) in config order."""
    rows = [f"# {COLUMNS}"]
    for backend, servers in backends:
        for name, status, backup in servers:
            check = "L7OK" if status == "UP" else "L4CON"
            desc = "" if status == "UP" else "Connection refused"
            rows.append(f"{backend},{name},{status},1,{int(not backup)},{int(backup)},{check},"
                        f"{200 if status == 'UP' else ''},{desc},3,,,,,")
        rows.append(f"{backend},BACKEND,UP,1,1,0,,,,3,10,0,0,0,0")
    return "\n".join(rows) + "\n"


def fast(home: str, west: str, eu: str) -> tuple[str, list[tuple[str, str, bool]]]:
    return ("be_fast_example_com", [("us-east-1-fast.example.com", home, False),
                                    ("us-west-2-fast.example.com", west, True),
                                    ("eu-west-1-fast.example.com", eu, True)])


def api(home: str, west: str) -> tuple[str, list[tuple[str, str, bool]]]:
    return ("be_api_example_com", [("us-east-1-api.example.com", home, False),
                                   ("us-west-2-api.example.com", west, True)])


def at_once(c: Config) -> HealthMachine:
    """The state machine as `check` uses it: each observation believed at once."""
    return HealthMachine(c, rise=1, fall=1)


def observe(state: HealthMachine, text: str, drains: list[Drain] | None = None) -> Snapshot:
    return state.apply(Observation(at=time.time(), info={"Pid": "7", "Uptime_sec": "9"},
                                   backends=parse_stat(text), drains=drains or []))


def metric(snap: Snapshot, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family in /metrics for this snapshot, by their labels."""
    registry = AgentMetrics(lambda: snap).registry
    out = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_home_down_backup_up_is_bridging_503_naming_the_first_usable_backup(
        tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST]))
    snap = observe(at_once(c), stat(fast("DOWN", "DOWN", "UP")))
    assert snap.state == "bridging" and not snap.healthy
    assert snap.reason == "home gateway down, bridging via backup eu-west-1"
    assert verdict(snap, c) == (503, "home gateway down, bridging via backup eu-west-1")
    doc = status_document(snap)
    jsonschema.validate(doc, STATUS_SCHEMA)
    (s,) = doc["services"]
    assert s["up"] and s["usable_servers"] == 1
    assert s["home"]["server"] == "us-east-1-fast.example.com"
    assert s["home"]["status"] == "DOWN" and not s["home"]["up"] and not s["home"]["usable"]
    assert s["bridging"]["region"] == "eu-west-1"
    assert s["bridging"]["server"] == "eu-west-1-fast.example.com"
    assert [(v["name"], v["backup"], v["region"]) for v in s["servers"]] == [
        ("us-east-1-fast.example.com", False, "us-east-1"),
        ("us-west-2-fast.example.com", True, "us-west-2"),
        ("eu-west-1-fast.example.com", True, "eu-west-1")]
    assert doc["warnings"] == [] and doc["agent"]["bridging_keeps_in_dns"] is False
    bridging = metric(snap, "georelay_agent_bridging")
    assert {dict(k)["backup_region"]: v for k, v in bridging.items()} == \
        {"us-west-2": 0.0, "eu-west-1": 1.0}
    assert set(metric(snap, "georelay_agent_home_up").values()) == {0.0}
    states = metric(snap, "georelay_agent_state")
    assert {dict(k)["state"]: v for k, v in states.items()}["bridging"] == 1.0
    assert set(metric(snap, "georelay_agent_healthy").values()) == {0.0}

    # HAProxy prefers the first backup in config order when several are UP.
    snap = observe(at_once(c), stat(fast("DOWN", "UP", "UP")))
    assert snap.reason == "home gateway down, bridging via backup us-west-2"


def test_bridging_keeps_in_dns_answers_200_and_still_reports_it(tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST], bridging_keeps_in_dns=True))
    snap = observe(at_once(c), stat(fast("DOWN", "UP", "DOWN")))
    assert snap.state == "bridging" and snap.healthy
    assert verdict(snap, c) == (200, "georelay-healthy")
    doc = status_document(snap)
    jsonschema.validate(doc, STATUS_SCHEMA)
    assert doc["healthy"] is True and doc["state"] == "bridging"
    assert doc["reason"] == "home gateway down, bridging via backup us-west-2"
    assert doc["services"][0]["bridging"]["region"] == "us-west-2"
    assert doc["agent"]["bridging_keeps_in_dns"] is True
    assert set(metric(snap, "georelay_agent_healthy").values()) == {1.0}
    assert {dict(k)["backup_region"]: v for k, v in
            metric(snap, "georelay_agent_bridging").items()}["us-west-2"] == 1.0


def test_home_down_and_no_backup_up_is_unhealthy_naming_every_server(tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST]))
    snap = observe(at_once(c), stat(fast("DOWN", "DOWN", "DOWN")))
    assert snap.state == "unhealthy"
    assert snap.reason is not None and snap.reason.startswith(
        "fast.example.com: no usable server in be_fast_example_com (us-east-1-fast.example.com "
        "DOWN L4CON Connection refused; us-west-2-fast.example.com (backup us-west-2) DOWN")
    assert verdict(snap, c)[0] == 503
    assert status_document(snap)["services"][0]["bridging"] is None


def test_several_services_name_the_bridging_ones(tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST, API]))
    snap = observe(at_once(c), stat(fast("DOWN", "UP", "UP"), api("UP", "UP")))
    assert snap.reason == "home gateway down, bridging via backup us-west-2 (fast.example.com)"
    snap = observe(at_once(c), stat(fast("DOWN", "DOWN", "UP"), api("DOWN", "UP")))
    assert snap.reason == ("home gateway down, bridging via backup eu-west-1 (fast.example.com), "
                           "us-west-2 (api.example.com)")


def test_bridging_follows_hysteresis_both_ways(tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST], rise=2, fall=2))
    state = HealthMachine(c)
    assert observe(state, stat(fast("UP", "UP", "UP"))).state == "healthy"
    assert observe(state, stat(fast("DOWN", "UP", "UP"))).state == "healthy"  # 1 of fall 2
    assert observe(state, stat(fast("DOWN", "UP", "UP"))).state == "bridging"
    assert observe(state, stat(fast("UP", "UP", "UP"))).state == "bridging"  # 1 of rise 2
    assert observe(state, stat(fast("UP", "UP", "UP"))).state == "healthy"


def test_never_healthy_while_the_backup_falls_too(tmp_path: Path) -> None:
    """Home DOWN and then the backup DOWN too: bridging holds (503) until the backend has
    no usable server for `fall` observations, then unhealthy; never a 200 in between."""
    c = parse(agent_config(tmp_path, [FAST], rise=2, fall=2))
    state = HealthMachine(c)
    seen = [observe(state, stat(fast(*servers))) for servers in (
        ("UP", "UP", "DOWN"), ("DOWN", "UP", "DOWN"), ("DOWN", "UP", "DOWN"),
        ("DOWN", "DOWN", "DOWN"), ("DOWN", "DOWN", "DOWN"), ("DOWN", "DOWN", "DOWN"))]
    assert [snap.state for snap in seen] == ["healthy", "healthy", "bridging", "bridging",
                                             "unhealthy", "unhealthy"]
    assert seen[3].reason == "home gateway down, bridging via backup us-west-2"
    assert "no usable server" in (seen[4].reason or "")
    # Back: the home recovers first; no stale bridging is remembered.
    seen = [observe(state, stat(fast(*servers))) for servers in (
        ("UP", "DOWN", "DOWN"), ("UP", "DOWN", "DOWN"), ("DOWN", "DOWN", "UP"),
        ("DOWN", "DOWN", "UP"))]
    assert [snap.state for snap in seen] == ["unhealthy", "healthy", "healthy", "bridging"]
    assert seen[3].reason == "home gateway down, bridging via backup eu-west-1"


def test_a_drain_wins_and_bridging_stays_a_warning(tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST], bridging_keeps_in_dns=True))
    drain = Drain("d1", "kernel upgrade", "ops@e1", time.time() - 5, None)
    snap = observe(at_once(c), stat(fast("DOWN", "UP", "UP")), [drain])
    assert (snap.state, snap.reason, snap.healthy) == ("draining", "draining: kernel upgrade",
                                                       False)
    assert snap.warnings == ("home gateway down, bridging via backup us-west-2",)


def test_an_old_config_without_backups_still_works(tmp_path: Path) -> None:
    old = {k: v for k, v in FAST.items() if k not in ("home_server", "backups")}
    c = parse(agent_config(tmp_path, [old]))
    assert c.services[0].home == "us-east-1-fast.example.com" and c.services[0].backups == ()
    assert not c.bridging_keeps_in_dns
    no_backups = ("be_fast_example_com", [("us-east-1-fast.example.com", "DOWN", False)])
    snap = observe(at_once(c), stat(no_backups))
    assert snap.state == "unhealthy" and "no usable server" in (snap.reason or "")
    assert status_document(snap)["services"][0]["home"]["up"] is False
    # haproxy.cfg already has a backup the config does not name: bridging is still seen.
    snap = observe(at_once(c), stat(fast("DOWN", "UP", "UP")))
    assert snap.reason == "home gateway down, bridging via backup us-west-2-fast.example.com"


def test_config_and_haproxy_cfg_disagreeing_is_a_warning(tmp_path: Path) -> None:
    c = parse(agent_config(tmp_path, [FAST]))
    text = stat(("be_fast_example_com", [("us-east-1-fast.example.com", "UP", False),
                                         ("us-west-2-fast.example.com", "UP", True)]))
    snap = observe(at_once(c), text)
    assert snap.state == "healthy"
    assert snap.warnings == ("fast.example.com: backup server eu-west-1-fast.example.com "
                             "(eu-west-1) is not a backup in be_fast_example_com: agent config "
                             "and haproxy.cfg disagree; re-run playbooks/proxies.yml",)


@pytest.mark.parametrize(("change", "message"), [
    ({"backups": {"region": "us-west-2"}},
     "field 'services[0].backups': must be a list of {region, server}, got dict"),
    ({"backups": [{"region": "US West", "server": "us-west-2-fast.example.com"}]},
     "field 'services[0].backups[0].region': 'US West' is not valid: an AWS region"),
    ({"backups": [{"region": "us-west-2"}]},
     "field 'services[0].backups[0].server': is required"),
    ({"backups": [{"region": "us-west-2", "server": "us-west-2-fast.example.com",
                   "weight": 1}]},
     "field 'services[0].backups[0].weight': unknown field"),
    ({"backups": [{"region": "us-west-2", "server": "us-east-1-fast.example.com"}]},
     "field 'services[0].backups[0].server': 'us-east-1-fast.example.com' is the home server"),
    ({"backups": [FAST["backups"][0], FAST["backups"][0]]},
     "field 'services[0].backups[1].server': 'us-west-2-fast.example.com' is listed twice"),
    ({"home_server": "us east"}, "field 'services[0].home_server': 'us east' is not valid"),
])
def test_bad_bridging_config_names_the_field(tmp_path: Path, change: dict[str, Any],
                                             message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse(agent_config(tmp_path, [{**FAST, **change}]), "agent.json")
    assert message in str(exc.value)
    with pytest.raises(ConfigError, match="field 'bridging_keeps_in_dns': must be true or false"):
        parse(agent_config(tmp_path, [FAST], bridging_keeps_in_dns="yes"))


class FakeHAProxy:
    """A Runtime API socket that answers `show info` and `show stat` (the given text)."""

    def __init__(self, path: Path, stat_text: str) -> None:
        self.stat_text = stat_text
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.05)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                command = conn.makefile().readline().strip()
                answer = "Pid: 7\nUptime_sec: 9\nVersion: 2.6\n" if command == "show info" \
                    else self.stat_text
                conn.sendall(answer.encode())

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()


class FakeAgent(ThreadingHTTPServer):
    """The running agent as `check` asks it: one fixed /healthz answer."""

    def __init__(self, code: int, body: str) -> None:
        answer = (code, body.encode())

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(answer[0])
                self.send_header("Content-Length", str(len(answer[1])))
                self.end_headers()
                self.wfile.write(answer[1])

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()


@pytest.fixture
def check_env(tmp_path: Path) -> Iterator[Any]:
    made: list[Any] = []

    def make(stat_text: str, code: int, body: str, **extra: Any) -> Any:
        made.append(FakeHAProxy(tmp_path / "user.sock", stat_text))
        fake = FakeAgent(code, body)
        made.append(fake)
        data = agent_config(tmp_path, [FAST], listen={"address": "127.0.0.1",
                                                      "port": fake.server_address[1]}, **extra)
        return run_check(parse(data))

    yield make
    for thing in made:
        if isinstance(thing, FakeAgent):
            thing.shutdown()
            thing.server_close()
        else:
            thing.close()


def test_check_says_warning_while_bridging_and_critical_without_a_backup(check_env: Any) -> None:
    reason = "home gateway down, bridging via backup us-west-2"
    result = check_env(stat(fast("DOWN", "UP", "DOWN")), 503, reason)
    assert result.code == 1, result.line
    assert result.line.startswith(f"GEORELAY-AGENT WARNING - e1 (us-east-1): {reason}; "
                                  "/healthz answers 503, Route53 sends users to proxies next to "
                                  "a healthy gateway | ")
    assert "'fast.example.com_bridging'=1;0;;0;1" in result.perfdata
    jsonschema.validate(result.document, STATUS_SCHEMA)
    assert result.document["check"]["status"] == "WARNING"


def test_check_says_warning_while_bridging_kept_in_dns(check_env: Any) -> None:
    result = check_env(stat(fast("DOWN", "UP", "DOWN")), 200, "georelay-healthy",
                       bridging_keeps_in_dns=True)
    assert result.code == 1, result.line
    assert "bridging via backup us-west-2; kept in DNS (bridging_keeps_in_dns)" in result.line


def test_check_says_critical_when_no_backup_is_up(check_env: Any) -> None:
    result = check_env(stat(fast("DOWN", "DOWN", "DOWN")), 503, "fast.example.com: no usable")
    assert result.code == 2, result.line
    assert "no usable server in be_fast_example_com" in result.summary


def test_check_ok_with_backups_standing_by(check_env: Any) -> None:
    result = check_env(stat(fast("UP", "UP", "UP")), 200, "georelay-healthy")
    assert result.code == 0, result.line
    assert "'fast.example.com_bridging'=0;0;;0;1" in result.perfdata


def test_the_role_template_renders_backups_and_the_switch(tmp_path: Path) -> None:
    """roles/georelay_agent/templates/georelay-agent.json.j2 through Ansible: the current
    fact (backups, switch on) and a fact from before backups existed both give a valid agent
    config."""
    backend = {"name": "be_fast_example_com", "hostname": "fast.example.com",
               "domain": "us-east-1-fast.example.com", "server": "127.0.10.1:8443",
               "resolve": False, "health_path": "/ping"}
    new = {**backend, "backups": [
        {"region": "us-west-2", "domain": "us-west-2-fast.example.com",
         "server": "127.0.10.2:8443", "resolve": False},
        {"region": "eu-west-1", "domain": "eu-west-1-fast.example.com",
         "server": "eu-west-1-fast.example.com:443", "resolve": True}]}
    root = str(tmp_path)
    fact = {"name": "e1", "region": "us-east-1", "bind_address": "127.0.0.1",
            "https_port": 443, "healthz_path": "/georelay-health", "probe_address": "127.0.0.1",
            "service_manager": "process", "root": root,
            "agent": {"address": "127.0.0.1", "port": 8405, "server": "127.0.0.1:8405"},
            "paths": {"user_socket": f"{root}/run/haproxy/user.sock",
                      "master_socket": f"{root}/run/haproxy-master.sock",
                      "config": f"{root}/etc/haproxy/haproxy.cfg"}}
    facts = {"new": {**fact, "backends": [new], "bridging_keeps_in_dns": True},
             "old": {**fact, "backends": [backend]}}
    defaults = yaml.safe_load((REPO / "roles/georelay_agent/defaults/main.yml").read_text())
    agent_vars = {k: v for k, v in defaults.items() if "{{" not in str(v)}
    play = [{"hosts": "localhost", "gather_facts": False, "connection": "local",
             "vars": {**agent_vars, "facts": facts,
                      "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                      "georelay_agent_paths": {"drain_dir": f"{root}/drains",
                                               "check_dir": f"{root}/check"}},
             "tasks": [{"ansible.builtin.debug": {"msg": {
                 name: f"{{{{ lookup('ansible.builtin.template', src, template_vars="
                       f"{{'georelay_proxy': facts.{name}}}) }}}}" for name in facts}},
                 "vars": {"src": str(REPO / "roles/georelay_agent/templates/"
                                     "georelay-agent.json.j2")}}]}]
    (tmp_path / "render.yml").write_text(yaml.safe_dump(play))
    out = run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(tmp_path / "render.yml")],
              timeout=60, env={"ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",
                               "ANSIBLE_CALLBACK_TREE_DIR": str(tmp_path / "tree")})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    msg = json.loads((tmp_path / "tree/localhost").read_text())["msg"]
    rendered = {k: v if isinstance(v, dict) else json.loads(v) for k, v in msg.items()}
    c = parse(rendered["new"])
    assert c.bridging_keeps_in_dns is True and c.healthz_path == "/georelay-health"
    (s,) = c.services
    assert s.home_server == "us-east-1-fast.example.com"
    assert [(b.region, b.server) for b in s.backups] == [
        ("us-west-2", "us-west-2-fast.example.com"), ("eu-west-1", "eu-west-1-fast.example.com")]
    c = parse(rendered["old"])
    assert c.bridging_keeps_in_dns is False and c.services[0].backups == ()


# The real thing: the two-region lab fleet (e1 in us-east-1, w1 in us-west-2), where each
# proxy's backends hold the other region's gateway as a backup server.

BRIDGED = "home gateway down, bridging via backup us-west-2"
SERVICES = ("fast.example.com", "api.example.com")


def wait_for(fleet: AgentFleet, proxy: str, want: Callable[[int, str], bool],
             timeout: float) -> tuple[float, int, str]:
    """Seconds until the public /healthz answer satisfies `want` (and that answer); polls a
    little past `timeout` so a slow answer fails the caller's bound, not this loop."""
    start = time.monotonic()
    code, body = -1, ""
    while time.monotonic() - start < timeout + 5:
        try:
            code, body = fleet.public_healthz(proxy)
        except OSError as exc:
            code, body = -1, str(exc)
        if want(code, body):
            return time.monotonic() - start, code, body
        time.sleep(0.05)
    raise AssertionError(f"{proxy}: /healthz never matched; last: {code} {body!r}")


def test_a_region_losing_its_gateway_bridges_through_the_next_region(
        agent_fleet: AgentFleet, record_property: pytest.RecordProperty) -> None:
    lab = agent_fleet.lab()
    for proxy in agent_fleet.proxy_names():
        agent_fleet.wait_public(proxy, 200, timeout=5)
    start = time.monotonic()
    assert lab.stop_gateway("us-east-1")
    try:
        took, _, body = wait_for(agent_fleet, "e1",
                                 lambda code, body: code == 503 and body.startswith(BRIDGED),
                                 timeout=5)
        record_property("gateway_down_to_bridging_503_s", round(took, 2))
        print(f"\ne1: us-east-1 gateway stopped -> 503 {body.strip()!r} in {took:.2f}s")
        assert took <= 5.0, f"bridging 503 after {took:.2f}s"
        # Each service's home falls on its own checks: wait until both are bridged.
        wait_for(agent_fleet, "e1", lambda code, body: code == 503 and body.startswith(
            f"{BRIDGED} ({', '.join(SERVICES)})"), timeout=5)
        took = time.monotonic() - start
        assert took <= 5.0, f"both services bridged after {took:.2f}s"

        # Users of e1 are still served: by us-west-2's gateway, with its Host and SNI.
        for hostname in SERVICES:
            reply = agent_fleet.fetch("e1", hostname, "/anything")
            assert reply.status == 200, reply.body
            echo = reply.json()
            assert echo["region"] == "us-west-2"
            assert echo["host"] == echo["sni"] == f"us-west-2-{hostname.split('.')[0]}.example.com"
            assert echo["x_forwarded_host"].split(":")[0] == hostname

        status = agent_fleet.status("e1")
        jsonschema.validate(status, STATUS_SCHEMA)
        assert status["state"] == "bridging" and status["healthy"] is False
        for s in status["services"]:
            assert s["up"], s
            assert s["home"]["status"].startswith("DOWN") and not s["home"]["up"], s["home"]
            assert s["bridging"]["region"] == "us-west-2"
            assert s["bridging"]["server"] == s["servers"][1]["name"]
            assert s["servers"][1]["backup"] and s["servers"][1]["region"] == "us-west-2"
        _, raw = agent_fleet.agent_get("e1", "/metrics")
        samples = [x for f in text_string_to_metric_families(raw.decode())
                   if f.name == "georelay_agent_bridging" for x in f.samples]
        assert {(x.labels["service"], x.labels["backup_region"], x.value) for x in samples} == \
            {(h, "us-west-2", 1.0) for h in SERVICES}

        check = agent_fleet.agent_cli("e1", "check")
        word, summary, perf = parse_nagios(check.stdout)
        assert (check.returncode, word) == (1, "WARNING"), check.stdout + check.stderr
        assert BRIDGED in summary
        assert "'fast.example.com_bridging'=1;0;;0;1" in perf

        # The other region is untouched.
        assert agent_fleet.public_healthz("w1") == (200, "georelay-healthy\n")
    finally:
        lab.start_gateway(lab.fleet.region("us-east-1"))  # returns once it listens
    took, _, body = wait_for(agent_fleet, "e1", lambda code, body: code == 200, timeout=5)
    record_property("gateway_back_to_200_s", round(took, 2))
    print(f"e1: gateway back -> 200 in {took:.2f}s")
    assert took <= 5.0, f"200 after {took:.2f}s"
    assert body == "georelay-healthy\n"
    assert agent_fleet.fetch("e1", "fast.example.com", "/anything").json()["region"] == \
        "us-east-1"

"""The agent's parts without a fleet: config, Runtime API parsing, hysteresis, drains, lock."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from georelay_agent import drains
from georelay_agent.check import run as run_check
from georelay_agent.config import ConfigError, parse
from georelay_agent.haproxy_api import (
    ProcInfo,
    RuntimeAPI,
    RuntimeAPIError,
    parse_proc,
    parse_stat,
    pending_reload_failure,
)
from georelay_agent.health import HealthMachine
from georelay_agent.hysteresis import Hysteresis
from georelay_agent.schema import STATUS_SCHEMA
from georelay_agent.snapshot import status_document

GOOD: dict[str, Any] = {
    "schema_version": 1, "proxy": "p1", "region": "us-east-1",
    "haproxy": {"stats_socket": "/run/haproxy/user.sock"},
    "services": [{"hostname": "fast.example.com", "backend": "be_fast_example_com",
                  "domain": "us-east-1-fast.example.com", "probe_path": "/ping"}],
    "drain_dir": "/var/lib/georelay-agent/drains",
    "check": {"state_dir": "/var/lib/georelay-agent/check"},
}

STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,\
wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,\
throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,\
hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,\
req_tot,cli_abrt,srv_abrt,last_chk
https,FRONTEND,,,0,1,262124,5,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,1,,,,0,5,0,0,0,0,,0,1,5,,,
be_fast_example_com,us-east-1-fast.example.com,0,0,0,1,,3,0,0,,0,,2,0,1,0,DOWN,1,1,0,3,1,4,4,,1,3,\
1,,3,,2,0,,1,L4CON,,0,0,3,0,0,1,0,,,,,0,0,Connection refused
be_fast_example_com,BACKEND,0,0,0,1,26212,3,0,0,0,0,,2,0,1,0,DOWN,0,0,0,,1,4,4,,1,3,0,,3,,1,0,,1,\
,,,0,3,0,0,1,0,,,,4,0,0,
"""


def config(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data.update(changes)
    return data


def problems(data: Any) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(data, "agent.json")
    return str(exc.value)


def test_a_minimal_config_gets_sound_defaults() -> None:
    c = parse(GOOD)
    assert (c.listen_address, c.listen_port, c.interval, c.rise, c.fall) == \
        ("127.0.0.1", 8405, 1.0, 2, 2)
    assert c.healthz_path == "/healthz" and c.ok_body == "georelay-healthy"
    assert c.stale_after > c.interval + 3 * (0.5 + 1.0)
    assert c.probe.enabled and c.probe.interval == c.interval


@pytest.mark.parametrize(("change", "message"), [
    ({"schema_version": 2}, "field 'schema_version': must be 1, got int 2"),
    ({"proxy": ""}, "field 'proxy': must be a non-empty string"),
    ({"listen": {"port": 70000}}, "field 'listen.port': 70000 is out of range 1-65535"),
    ({"listen": {"address": "localhost"}}, "field 'listen.address': 'localhost' is not an IP"),
    ({"interval": "1s"}, "field 'interval': must be a number, got str '1s'"),
    ({"rise": 3, "fall": 2}, "field 'rise': 3 is more than fall (2)"),
    ({"services": []}, "field 'services': must be a non-empty list"),
    ({"services": [{"hostname": "Fast", "backend": "b", "domain": "d.example.com"}]},
     "field 'services[0].hostname': 'Fast' is not valid: a lowercase DNS name"),
    ({"services": [{**GOOD["services"][0], "probe_path": "/healthz"}]},
     "field 'services[0].probe_path': /healthz is the health path itself"),
    ({"services": [GOOD["services"][0], GOOD["services"][0]]},
     "field 'services': hostname 'fast.example.com' appears more than once"),
    ({"haproxy": {"stats_socket": "run/user.sock"}},
     "field 'haproxy.stats_socket': 'run/user.sock' must be an absolute path"),
    ({"haproxy": {"stats_sockett": "/x"}},
     "field 'haproxy.stats_sockett': unknown field (did you mean 'stats_socket'?)"),
    ({"stale_after": 2}, "field 'stale_after': 2s must exceed interval plus the longest"),
    ({"probe": {"enabled": "yes"}}, "field 'probe.enabled': must be true or false"),
])
def test_invalid_configs_name_the_field(change: dict[str, Any], message: str) -> None:
    assert message in problems(config(**change))


def test_every_problem_is_listed_at_once() -> None:
    text = problems({"schema_version": 1, "listen": {"port": 0}})
    for field in ("proxy", "region", "listen.port", "haproxy.stats_socket", "services",
                  "drain_dir", "check.state_dir"):
        assert f"field '{field}'" in text


def test_show_stat_parsing() -> None:
    backends = parse_stat(STAT)
    be = backends["be_fast_example_com"]
    assert (be.status, be.requests_total, be.http_5xx_total, be.errors_connect) == \
        ("DOWN", 4, 1, 2)
    (server,) = be.servers
    assert (server.status, server.check_status, server.check_desc, server.usable) == \
        ("DOWN", "L4CON", "Connection refused", False)
    assert be.usable_servers == 0
    with pytest.raises(RuntimeAPIError):
        parse_stat("Permission denied\n")


def test_show_proc_parsing() -> None:
    text = ("#<PID>          <type>          <reloads>       <uptime>        <version>\n"
            "1754            master          3 [failed: 1]   0d00h00m34s     2.6.12\n"
            "# workers\n1758            worker          0               0d00h00m34s     2.6.12\n")
    proc = parse_proc(text)
    assert (proc.reloads, proc.failed_reloads) == (3, 1)


def test_a_failed_reload_is_pending_until_one_succeeds() -> None:
    """Counters as HAProxy 2.6's master answers them (reloads, [failed: N]) through: start,
    a good reload, two bad ones, a good one (N is reset); and as a master that would keep N
    counting (the success still shows, as reloads - N going up)."""
    def follow(answers: list[tuple[int, int]]) -> list[bool]:
        last, pending, seen = 0, None, []
        for reloads, failed in answers:
            pending = pending_reload_failure(ProcInfo(reloads, failed), last, pending)
            last = failed
            seen.append(pending is not None)
        return seen

    assert follow([(0, 0), (1, 0), (2, 1), (3, 2), (3, 2), (4, 0), (4, 0)]) == \
        [False, False, True, True, True, False, False]
    assert follow([(0, 0), (1, 1), (2, 1), (3, 2)]) == [False, True, False, True]
    # An agent started after the master's latest reload failed warns at once.
    assert follow([(5, 1)]) == [True]


def test_hysteresis_rise_and_fall() -> None:
    h = Hysteresis(rise=2, fall=2)
    assert h.observe("x", True, None, 0).up  # the first observation is believed at once
    assert h.observe("x", False, "bad 1", 1).up
    st = h.observe("x", False, "bad 2", 2)
    assert (st.up, st.reason, st.since) == (False, "bad 2", 2)
    assert not h.observe("x", True, None, 3).up
    assert not h.observe("x", False, "bad 3", 4).up  # a failure resets the rise streak
    assert not h.observe("x", True, None, 5).up
    st = h.observe("x", True, None, 6)
    assert st.up and st.reason is None and st.transitions == 2


def test_runtime_api_gives_up_on_a_missing_socket_quickly(tmp_path: Path) -> None:
    api = RuntimeAPI(str(tmp_path / "missing.sock"), 0.2, 0.2, retry_pause=0.05)
    start = time.monotonic()
    with pytest.raises(RuntimeAPIError, match="No such file"):
        api.info()
    assert time.monotonic() - start < 1


def test_runtime_api_read_deadline_holds_against_a_trickling_socket(tmp_path: Path) -> None:
    """A server that sends a byte every 100 ms forever must not keep the reader."""
    path = tmp_path / "trickle.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = srv.accept()
        while not stop.wait(0.1):
            try:
                conn.send(b"x")
            except OSError:
                break
        conn.close()

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    start = time.monotonic()
    with pytest.raises(RuntimeAPIError, match=r"read timed out after 0\.5s"):
        RuntimeAPI(str(path), 0.5, 0.5).command("show info")
    assert time.monotonic() - start < 1
    stop.set()
    srv.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="drains are root only")
def test_drain_spool(tmp_path: Path) -> None:
    spool = tmp_path / "drains"
    now = time.time()
    d1 = drains.add(spool, "  disk\n replacement ", None, now=now)
    d2 = drains.add(spool, "short", drains.parse_duration("90s"), "short", now=now)
    assert d1.reason == "disk replacement" and d2.expires == now + 90
    assert oct((spool / "short.json").stat().st_mode & 0o777) == "0o644"
    found, problems_ = drains.read(spool)
    assert problems_ == [] and {d.id for d in found} == {d1.id, "short"}
    assert [d.id for d in drains.active(found, now + 100)] == [d1.id]
    (spool / "broken.json").write_text("{")
    found, problems_ = drains.read(spool)
    assert any(d.reason == "unreadable drain file broken.json" for d in found)
    assert problems_
    assert drains.remove(spool, "short") == ["short"]
    with pytest.raises(drains.DrainError, match="no drain"):
        drains.remove(spool, "short")
    assert sorted(drains.remove(spool)) == sorted([d1.id, "broken"])
    for bad in ("", "x" * 300, "tab\x07bell"):
        with pytest.raises(drains.DrainError):
            drains.check_reason(bad)
    for bad in ("0s", "10", "5w", "-1m"):
        with pytest.raises(drains.DrainError):
            drains.parse_duration(bad)


def test_check_lock_prevents_overlapping_runs(tmp_path: Path) -> None:
    data = config(check={"state_dir": str(tmp_path / "check")})
    c = parse(data)
    (tmp_path / "check").mkdir()
    with open(tmp_path / "check/check.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_check(c)
    assert result.code == 3 and result.line.startswith(
        "GEORELAY-AGENT UNKNOWN - another check is running")


def test_starting_and_observed_documents_match_the_schema(tmp_path: Path) -> None:
    from georelay_agent.haproxy_api import parse_stat as ps
    from georelay_agent.observation import Observation

    c = parse(config(drain_dir=str(tmp_path)))
    state = HealthMachine(c)
    jsonschema.validate(status_document(state.starting()), STATUS_SCHEMA)
    obs = Observation(at=time.time(), info={"Pid": "12", "Uptime_sec": "5",
                                            "Version": "2.6"}, backends=ps(STAT))
    snap = state.apply(obs)
    doc = status_document(snap)
    jsonschema.validate(doc, STATUS_SCHEMA)
    assert snap.state == "unhealthy"
    assert snap.reason and "no usable server in be_fast_example_com" in snap.reason
    assert "L4CON Connection refused" in snap.reason
    bad = json.loads(json.dumps(doc))
    bad["schema_version"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, STATUS_SCHEMA)


def test_role_spec_defaults_and_contract_name_the_same_variables() -> None:
    import yaml

    from georelay_model.contract import KNOWN
    from georelay_testing.fleet import REPO

    role = REPO / "roles/georelay_agent"
    spec = set(yaml.safe_load((role / "meta/argument_specs.yml").read_text())
               ["argument_specs"]["main"]["options"])
    defaults = set(yaml.safe_load((role / "defaults/main.yml").read_text()))
    assert spec == defaults
    assert defaults <= KNOWN
    assert all(name.startswith("georelay_agent_") for name in defaults)

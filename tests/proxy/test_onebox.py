"""The one-box canary on real proxies: real haproxy 2.6, real TLS with SNI, the lab's strict
stand-in gateways (a gateway that gets a Host or SNI other than one of its own custom
domains refuses), deployed with the real role through ansible-playbook.

The lab's stand-in gateway of each region serves its regular and one-box domains; the fleet is
us-east-1 (e1, one-box on) and us-west-2 (w1, one-box switched off by
georelay_onebox_enabled: false). The percentage is changed through the Runtime API with
haproxy_runtime.set_onebox_percent, the primitive a rollout controller uses.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from georelay_agent import onebox_map as ob
from georelay_lab import client
from georelay_model import fleet_from_hostvars
from georelay_model.facts import proxy_facts
from georelay_testing.fleet import DeployedFleet, running_fleet, unix_cli

SERVICE = {"hostname": "fast.example.com", "apigw_domain": "{region}-fast.example.com",
           "health_path": "/ping", "onebox_domain": "{region}-onebox-fast.example.com",
           "onebox_percent": 20}
HOST = "fast.example.com"
COOKIE = "georelay_partition"
CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/{v}.0.0.0 Safari/537.36")


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(regions={"us-east-1": ["e1"], "us-west-2": ["w1"]},
                       services=[dict(SERVICE)],
                       host_vars={"w1": {"georelay_onebox_enabled": False}}) as f:
        yield f


def map_file(fleet: DeployedFleet, proxy: str) -> str:
    return str(fleet.root(proxy) / "etc/haproxy/onebox-percent.map")


def set_percent(fleet: DeployedFleet, percent: int, proxy: str = "e1",
                hold: str | None = "test-rollout") -> int:
    return ob.set_onebox_percent(str(fleet.admin_socket(proxy)), map_file(fleet, proxy), HOST,
                                 percent, hold=hold)


class User:
    """One browser: a source address, a User-Agent, the cookies it was given."""

    def __init__(self, fleet: DeployedFleet, source: str, agent: str,
                 proxy: str = "e1") -> None:
        self.fleet, self.source, self.agent, self.proxy = fleet, source, agent, proxy
        self.cookie: str | None = None
        self.conn: http.client.HTTPSConnection | None = None

    def connect(self) -> http.client.HTTPSConnection:
        if self.conn is None:
            ctx = client.context(self.fleet.ca_file)
            conn = http.client.HTTPSConnection(HOST, self.fleet.https_port, context=ctx,
                                               timeout=10)
            raw = socket.create_connection((self.fleet.address(self.proxy),
                                            self.fleet.https_port), 10,
                                           source_address=(self.source, 0))
            conn.sock = ctx.wrap_socket(raw, server_hostname=HOST)
            self.conn = conn
        return self.conn

    def get(self, path: str = "/anything", headers: dict[str, str] | None = None,
            keep_cookie: bool = True) -> client.Reply:
        hdrs = {"User-Agent": self.agent, **(headers or {})}
        if self.cookie and keep_cookie and "Cookie" not in hdrs:
            hdrs["Cookie"] = f"{COOKIE}={self.cookie}"
        conn = self.connect()
        conn.request("GET", path, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        reply = client.Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
        reply.all_headers = resp.getheaders()  # type: ignore[attr-defined]
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie" and value.startswith(COOKIE + "="):
                self.cookie = value.split(";")[0].split("=", 1)[1]
        return reply

    def partition(self, **kw: Any) -> str:
        reply = self.get(**kw)
        assert reply.status == 200, reply.body
        echo = reply.json()
        onebox = echo["host"] == SERVICE["onebox_domain"].replace("{region}", echo["region"])
        assert echo["x_req_partition"] == ["one-box" if onebox else "regular"]
        return "one-box" if onebox else "regular"

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def users(fleet: DeployedFleet, sources: int, agents: int) -> list[User]:
    """sources x agents distinct users: loopback source addresses 127.9.x.y and Chrome-like
    User-Agents that differ only before their last comma (hdr() would see one)."""
    return [User(fleet, f"127.9.{1 + s // 200}.{1 + s % 200}", CHROME.format(v=100 + a))
            for s in range(sources) for a in range(agents)]


def set_cookie_headers(reply: client.Reply) -> list[str]:
    return [v for k, v in reply.all_headers  # type: ignore[attr-defined]
            if k.lower() == "set-cookie"]


def vary_values(reply: client.Reply) -> list[str]:
    return [v.strip() for k, value in reply.all_headers  # type: ignore[attr-defined]
            if k.lower() == "vary" for v in value.split(",")]


# --- no cost without it --------------------------------------------------------------------

def test_a_fleet_without_onebox_renders_nothing_of_it() -> None:
    from georelay_tools.scale import render

    hv = {"p1": {"georelay_zone": "example.com", "aws_region": "us-east-1",
                 "public_ip": "192.0.2.1", "georelay_tls_pem": "/x.pem",
                 "georelay_services": [{k: v for k, v in SERVICE.items()
                                        if not k.startswith("onebox")}]}}
    plain = render(proxy_facts(fleet_from_hostvars(hv, rendered=True), "p1"))
    for word in ("onebox", "ob_", "X-Req-Partition", "Vary", "Set-Cookie", "part="):
        assert word not in plain
    hv["p1"]["georelay_services"] = [dict(SERVICE)]
    split = render(proxy_facts(fleet_from_hostvars(hv, rendered=True), "p1"))
    assert "backend be_fast_example_com_onebox" in split
    assert "req.fhdr(user-agent)" in split and "req.hdr(user-agent)" not in split


# --- what a request gets -------------------------------------------------------------------

def test_onebox_gateway_gets_its_own_host_and_sni_and_a_forged_partition_is_replaced(
        fleet: DeployedFleet) -> None:
    set_percent(fleet, 100)
    user = User(fleet, "127.9.100.1", "curl/8.0")
    reply = user.get(headers={"X-Req-Partition": "regular"})
    echo = reply.json()
    assert (echo["host"], echo["sni"]) == ("us-east-1-onebox-fast.example.com",) * 2
    assert echo["x_req_partition"] == ["one-box"]
    set_percent(fleet, 0)
    echo = user.get(headers={"X-Req-Partition": "one-box"}).json()
    assert (echo["host"], echo["sni"]) == ("us-east-1-fast.example.com",) * 2
    assert echo["x_req_partition"] == ["regular"]
    user.close()


def test_a_region_with_onebox_switched_off_sends_everyone_to_regular(
        fleet: DeployedFleet) -> None:
    assert "onebox" not in fleet.config("w1").read_text().split("backend georelay_agent")[1]
    set_percent(fleet, 100, proxy="w1")
    try:
        user = User(fleet, "127.9.100.2", "curl/8.0", proxy="w1")
        echo = user.get(headers={"X-Req-Partition": "one-box"}).json()
        assert echo["host"] == "us-west-2-fast.example.com"
        assert echo["x_req_partition"] == ["regular"]
        user.close()
    finally:
        set_percent(fleet, 20, proxy="w1", hold=None)


def test_set_cookie_only_on_the_first_response_and_malformed_cookies_replaced(
        fleet: DeployedFleet) -> None:
    set_percent(fleet, 20)
    user = User(fleet, "127.9.100.3", "curl/8.0")
    first = user.get()
    (cookie,) = set_cookie_headers(first)
    value, *attrs = [a.strip() for a in cookie.split(";")]
    bucket = value.split("=", 1)[1]
    assert value.startswith(COOKIE + "=") and 0 <= int(bucket) <= 99
    assert set(attrs) == {"Max-Age=2592000", "Path=/", "Secure", "HttpOnly", "SameSite=Lax"}
    for _ in range(3):
        assert set_cookie_headers(user.get()) == []
    for bad in ("-5", "100", "07", "text", ""):
        reply = user.get(headers={"Cookie": f"{COOKIE}={bad}"})
        (fresh,) = set_cookie_headers(reply)
        # a fresh bucket: the same stable hash of this client as the first time
        assert fresh.split(";")[0] == value, bad
    user.close()


@pytest.mark.parametrize(("sent", "expected"), [
    (None, ["X-Req-Partition"]),
    ("Accept-Encoding", ["Accept-Encoding", "X-Req-Partition"]),
    ("Accept-Encoding, Accept-Language", ["Accept-Encoding", "Accept-Language",
                                          "X-Req-Partition"]),
    ("Origin, x-req-partition", ["Origin", "x-req-partition"]),
    ("*", ["*"]),
])
def test_vary_names_the_partition_once_and_keeps_the_gateways_values(
        fleet: DeployedFleet, sent: str | None, expected: list[str]) -> None:
    user = User(fleet, "127.9.100.4", "curl/8.0")
    for percent in (0, 100):  # both partitions
        set_percent(fleet, percent)
        path = "/anything" + (f"?vary={sent}" if sent else "")
        reply = user.get(path.replace(" ", "%20"))
        assert reply.status == 200
        assert vary_values(reply) == expected
    user.close()


# --- who goes where ------------------------------------------------------------------------

def test_distribution_within_3_points_over_2000_clients(fleet: DeployedFleet) -> None:
    set_percent(fleet, 20)
    everyone = users(fleet, 50, 42)  # 2100 clients
    assert len({(u.source, u.agent) for u in everyone}) >= 2000
    buckets: list[int] = []
    onebox = 0
    for source in range(50):  # one kept-alive connection per source address
        conn_owner = everyone[source * 42]
        for u in everyone[source * 42:(source + 1) * 42]:
            u.conn = conn_owner.connect()
            onebox += u.partition() == "one-box"
            assert u.cookie is not None
            buckets.append(int(u.cookie))
        conn_owner.close()
    share = 100 * onebox / len(everyone)
    assert abs(share - 20) <= 3, share
    # Chrome's User-Agents differ only before their last comma: with the full header they
    # still spread over the buckets (hdr() would give one bucket per address).
    assert len(set(buckets)) >= 95
    assert sum(b < 20 for b in buckets) == onebox  # in the one-box exactly when bucket < 20


def test_stickiness_as_the_percentage_grows_and_zero_returns_everyone(
        fleet: DeployedFleet) -> None:
    crowd = users(fleet, 10, 20)
    set_percent(fleet, 10)
    before = {id(u): u.partition() for u in crowd}
    for percent in (25, 50):
        set_percent(fleet, percent)
        now = {id(u): u.partition() for u in crowd}
        assert all(now[k] == "one-box" for k, v in before.items() if v == "one-box"), percent
        assert sum(v == "one-box" for v in now.values()) > sum(
            v == "one-box" for v in before.values())
        before = now
    set_percent(fleet, 0)
    assert {u.partition() for u in crowd} == {"regular"}  # the very next request
    for u in crowd:
        u.close()


def test_a_dead_onebox_falls_back_to_regular_visibly(fleet: DeployedFleet) -> None:
    set_percent(fleet, 100)
    sock = str(fleet.admin_socket("e1"))
    backend = "be_fast_example_com_onebox"
    server = "us-east-1-onebox-fast.example.com"
    before = ob.onebox_state(sock, map_file(fleet, "e1"), HOST)
    assert before.onebox_usable_servers == 1 and not before.falling_back
    unix_cli(fleet.admin_socket("e1"), f"set server {backend}/{server} state maint")
    try:
        user = User(fleet, "127.9.100.5", "curl/8.0")
        assert [user.partition() for _ in range(5)] == ["regular"] * 5
        user.close()
        after = ob.onebox_state(sock, map_file(fleet, "e1"), HOST)
        assert after.falling_back and after.onebox_usable_servers == 0
        assert after.fallback_requests >= before.fallback_requests + 5
        assert after.percent == 100
    finally:
        unix_cli(fleet.admin_socket("e1"), f"set server {backend}/{server} state ready")
        set_percent(fleet, 20)


# --- the percentage at runtime -------------------------------------------------------------

def test_percentage_changed_under_load_without_a_failure_or_a_reload(
        fleet: DeployedFleet) -> None:
    set_percent(fleet, 0)
    proc = fleet.proc("e1")
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    errors: list[str] = []

    def load(n: int) -> None:
        crowd = users(fleet, 1, 30)
        for u in crowd:
            u.source = f"127.9.200.{n + 1}"
        i = 0
        while not stop.is_set():
            u = crowd[i % len(crowd)]
            i += 1
            try:
                reply = u.get()
                results.append((reply.status, reply.json().get("host", "")))
            except Exception as exc:  # every failure is the finding
                errors.append(repr(exc))
                u.close()
        for u in crowd:
            u.close()

    threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    try:
        for percent in (10, 50, 100, 30, 0, 60):
            time.sleep(0.5)
            assert set_percent(fleet, percent) == percent
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert errors == []
    assert len(results) >= 500, len(results)
    assert {s for s, _ in results} == {200}
    assert {h for _, h in results} == {"us-east-1-fast.example.com",
                                       "us-east-1-onebox-fast.example.com"}
    after = fleet.proc("e1")
    assert (after.master_pid, after.reloads, after.worker_pids) == (
        proc.master_pid, proc.reloads, proc.worker_pids)


def test_a_reload_keeps_the_percentage(fleet: DeployedFleet) -> None:
    set_percent(fleet, 37)
    fleet.reload("e1")
    sock = str(fleet.admin_socket("e1"))
    assert ob.get_onebox_percent(sock, map_file(fleet, "e1"), HOST) == 37
    set_percent(fleet, 20)


def test_a_playbook_run_keeps_a_held_percentage_and_renders_a_released_one(
        fleet: DeployedFleet) -> None:
    sock, path = str(fleet.admin_socket("e1")), map_file(fleet, "e1")
    set_percent(fleet, 45, hold="release-42")
    reloads = fleet.reloads("e1")
    fleet.deploy()
    assert ob.get_onebox_percent(sock, path, HOST) == 45
    assert ob.read_map_file(path) == ({HOST: 45}, {HOST: "release-42"})
    assert fleet.reloads("e1") == reloads  # nothing to change: no reload
    set_percent(fleet, 45, hold=None)  # the rollout is over: the inventory's value again
    fleet.deploy()
    assert ob.get_onebox_percent(sock, path, HOST) == 20
    assert ob.read_map_file(path) == ({HOST: 20}, {})


def test_bad_runtime_changes_touch_nothing(fleet: DeployedFleet) -> None:
    sock, path = str(fleet.admin_socket("e1")), map_file(fleet, "e1")
    before = Path(path).read_text()
    for percent in (-1, 101, True):
        with pytest.raises(ValueError, match="percent"):
            ob.set_onebox_percent(sock, path, HOST, percent, hold=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"api\.example\.com has no one-box"):
        ob.set_onebox_percent(sock, path, "api.example.com", 5, hold=None)
    with pytest.raises(ValueError, match="hold"):
        ob.set_onebox_percent(sock, path, HOST, 5, hold="two words")
    assert Path(path).read_text() == before


def test_backend_names_agree_with_the_model() -> None:
    hv = {"p1": {"georelay_zone": "example.com", "aws_region": "us-east-1",
                 "public_ip": "192.0.2.1", "georelay_tls_pem": "/x.pem",
                 "georelay_services": [dict(SERVICE, hostname="a-b.fast.example.com")]}}
    svc = fleet_from_hostvars(hv, rendered=True).services[0]
    assert ob.backend_name(svc.hostname) == svc.backend_name
    assert ob.backend_name(svc.hostname) + "_onebox" == svc.onebox_backend_name

"""georelay-lab onebox-split, what make demo shows of the one-box canary: run as a command
against a deployed fleet with the demo inventory's services (real haproxy, real TLS, the
lab's strict stand-in gateway serving the regular and one-box domains)."""

from __future__ import annotations

import http.client
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from georelay_agent import onebox_map as ob
from georelay_lab import client
from georelay_lab.onebox_demo import user_agent
from georelay_testing.fleet import REPO, DeployedFleet, running_fleet, unix_cli

BIN = Path(sys.executable).parent
HOST = "fast.example.com"
COOKIE = "georelay_partition"
DEMO = yaml.safe_load((REPO / "inventories/demo/group_vars/all.yml").read_text())
USER = re.compile(r"^user (\d+) +bucket +(\d+) +gateway got X-Req-Partition: (\S+) +"
                  r"answered by (\S+) \((\S+)\)$")
FIRST = re.compile(r"^   1st, no cookie: +Set-Cookie: (.*?) +Vary: (.*)$")
SECOND = re.compile(r"^   2nd, with cookie +(\d+): Set-Cookie: (.*?) +Vary: (.*?) +"
                    r"X-Req-Partition: (\S+) at (\S+)$")
SPLIT = re.compile(r"^split over (\d+) users: (\d+) one-box \(([\d.]+)%\), (\d+) regular; "
                   r"set: (\d+)% \(sampling: \+/- ([\d.]+) points at \d+ users\)$")
LIVE = "set: {}% live in e1's HAProxy (onebox_percent 20% in the inventory)"

@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(regions={"us-east-1": ["e1"]},
                       services=DEMO["georelay_services"]) as f:
        yield f


def split(fleet: DeployedFleet, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "georelay-lab"), "onebox-split", "-i", str(fleet.inventory),
                           "--lab-dir", str(fleet.lab_dir), *args],
                          capture_output=True, text=True, timeout=120, check=False)


def set_percent(fleet: DeployedFleet, percent: int, hold: str | None) -> None:
    ob.set_onebox_percent(str(fleet.admin_socket("e1")),
                          str(fleet.root("e1") / "etc/haproxy/onebox-percent.map"), HOST,
                          percent, hold=hold)


def test_the_demo_inventory_gives_fast_a_20_percent_onebox_and_api_none() -> None:
    fast, api = DEMO["georelay_services"]
    assert (fast["hostname"], fast["onebox_domain"], fast["onebox_percent"]) == (
        HOST, "{region}-onebox-fast.example.com", 20)
    assert "onebox_domain" not in api and "onebox_percent" not in api


def test_each_user_gets_a_cookie_once_vary_once_and_the_partition_of_its_bucket(
        fleet: DeployedFleet) -> None:
    got = split(fleet, "--users", "8")  # and the default --measure 1000
    assert got.returncode == 0, got.stdout + got.stderr
    lines = got.stdout.splitlines()
    assert lines[0].startswith("https://fast.example.com/anything through e1 "), lines[0]
    assert lines[0].endswith("one-box while bucket < 20; " + LIVE.format(20)), lines[0]
    users = [i for i, line in enumerate(lines) if USER.match(line)]
    assert len(users) == 8, got.stdout
    for i in users:
        n, bucket, partition, domain, kind = USER.match(lines[i]).groups()  # type: ignore[union-attr]
        expected = "one-box" if int(bucket) < 20 else "regular"
        assert partition == kind == expected, lines[i]
        assert domain == ("us-east-1-onebox-fast.example.com" if expected == "one-box"
                          else "us-east-1-fast.example.com"), lines[i]
        first = FIRST.match(lines[i + 1])
        assert first, lines[i + 1]
        assert first.group(1) == (f"{COOKIE}={bucket}; Max-Age=2592000; Path=/; Secure; "
                                  "HttpOnly; SameSite=Lax"), lines[i + 1]
        assert first.group(2) == "X-Req-Partition", lines[i + 1]
        second = SECOND.match(lines[i + 2])
        assert second, lines[i + 2]
        assert second.groups() == (bucket, "(none)", "X-Req-Partition", expected, domain), \
            lines[i + 2]
        # The bucket printed is the proxy's: the same User-Agent from here gets it again.
        conn = client.PinnedHTTPSConnection(fleet.address("e1"), fleet.https_port, HOST,
                                            client.context(fleet.ca_file))
        assert own_bucket(conn, user_agent(int(n))) == bucket
    measured = SPLIT.match(lines[-1])
    assert measured, lines[-1]
    count, onebox, share, regular, percent, spread = measured.groups()
    assert (int(count), int(onebox) + int(regular), int(percent), spread) == (1000, 1000, 20,
                                                                              "1.3")
    assert abs(float(share) - 20) <= 4, lines[-1]  # 3 standard deviations


def own_bucket(conn: http.client.HTTPSConnection, agent: str) -> str:
    try:
        conn.request("GET", "/anything", headers={"User-Agent": agent})
        resp = conn.getresponse()
        resp.read()
        (cookie,) = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
        return cookie.split(";")[0].split("=", 1)[1]
    finally:
        conn.close()


def test_the_split_follows_the_percentage_haproxy_uses_now(fleet: DeployedFleet) -> None:
    set_percent(fleet, 0, hold="demo-test")
    try:
        got = split(fleet, "--users", "3", "--measure", "50")
        assert got.returncode == 0, got.stdout + got.stderr
        assert got.stdout.splitlines()[0].endswith(LIVE.format(0)), got.stdout
        assert got.stdout.splitlines()[-1] == (
            "split over 50 users: 0 one-box (0.0%), 50 regular; set: 0% (sampling: +/- 0.0 "
            "points at 50 users)")
        assert all(USER.match(line).group(3) == "regular"  # type: ignore[union-attr]
                   for line in got.stdout.splitlines() if USER.match(line))
    finally:
        set_percent(fleet, 20, hold=None)


def test_a_user_sent_to_the_wrong_partition_fails_the_command(fleet: DeployedFleet) -> None:
    """The command checks what it shows: a one-box with no usable server sends its users
    to the regular gateway (regular-fallback), which it reports and exits 1 on."""
    set_percent(fleet, 100, hold="demo-test")
    backend, server = "be_fast_example_com_onebox", "us-east-1-onebox-fast.example.com"
    admin = fleet.admin_socket("e1")
    unix_cli(admin, f"set server {backend}/{server} state maint")
    try:
        got = split(fleet, "--users", "2", "--measure", "10")
        assert got.returncode == 1, got.stdout + got.stderr
        assert "PROBLEM: 1st: gateway saw X-Req-Partition ['regular'] at " \
               "us-east-1-fast.example.com, expected one-box" in got.stdout, got.stdout
        assert "PROBLEM: 10 users were not in the partition of their bucket" in got.stdout
    finally:
        unix_cli(admin, f"set server {backend}/{server} state ready")
        set_percent(fleet, 20, hold=None)


@pytest.mark.parametrize(("args", "says"), [
    (["--service", "api.example.com"], "--service: api.example.com has no onebox_domain"),
    (["--service", "nope.example.com"], "give one of fast.example.com, api.example.com"),
    (["--proxy", "zz1"], "--proxy: zz1 is not a proxy of the inventory: give one of use1-a"),
])
def test_bad_options_name_the_option_and_exit_64(args: list[str], says: str) -> None:
    got = subprocess.run([str(BIN / "georelay-lab"), "onebox-split", "-i", "inventories/demo",
                          *args], capture_output=True, text=True, timeout=60, cwd=REPO,
                         check=False)
    assert got.returncode == 64, got.stdout + got.stderr
    assert says in " ".join(got.stderr.split()), got.stderr

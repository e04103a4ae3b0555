"""Regional redirects on real proxies (README "Edge rules"): a client inside an AWS region
asking for a listed file gets a 302 to that region's origin; everything else passes.

Client addresses come from the PROXY protocol (georelay_proxy_protocol), as behind a load
balancer: the test connects from 127.0.0.2, the one network listed in
georelay_proxy_protocol_from, and states the client address it plays (IPv4, IPv6, v4-mapped).
The ip-ranges file is a small one of AWS's shape: a regional prefix inside a GLOBAL one, a
region without an origin, an IPv6 prefix. Real haproxy 2.6, real TLS, the strict stand-in
gateways, the real role through ansible-playbook.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from georelay_agent import haproxy_runtime as rt
from georelay_lab import client
from georelay_model import ip_ranges
from georelay_testing.fleet import DeployedFleet, running_fleet, sha, unix_cli

HOST = "fast.example.com"
ORIGIN = "https://us-east-1-downloads.example.com"
LB = "127.0.0.2"  # the "load balancer": the only source that must send a PROXY header
RANGES = {
    "syncToken": "1764547200", "createDate": "2026-12-01-00-00-00",
    "prefixes": [
        {"ip_prefix": "3.0.0.0/8", "region": "GLOBAL", "service": "AMAZON"},
        {"ip_prefix": "3.5.0.0/16", "region": "us-east-1", "service": "AMAZON"},
        {"ip_prefix": "3.5.0.0/16", "region": "us-east-1", "service": "S3"},
        {"ip_prefix": "52.94.0.0/22", "region": "eu-west-1", "service": "EC2"},
    ],
    "ipv6_prefixes": [
        {"ipv6_prefix": "2600:1f18::/36", "region": "us-east-1", "service": "EC2"},
    ],
}
SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com", "health_path": "/ping",
           "regional_redirects": {"suffixes": [".tar.gz", ".iso"],
                                  "origins": {"us-east-1": ORIGIN}}}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedFleet]:
    ranges = tmp_path_factory.mktemp("aws") / "ip-ranges.json"
    ranges.write_text(json.dumps(RANGES))
    with running_fleet(regions={"us-east-1": ["e1"]}, services=[dict(SERVICE)],
                       all_vars={"georelay_ip_ranges_file": str(ranges),
                                 "georelay_proxy_protocol": True,
                                 "georelay_proxy_protocol_from": [f"{LB}/32"]}) as f:
        yield f


def via_lb(fleet: DeployedFleet, client_address: str, path: str,
           method: str = "GET") -> http.client.HTTPResponse:
    """One request as a load balancer relays it: PROXY v1 header, then TLS and HTTP."""
    family = "TCP6" if ":" in client_address else "TCP4"
    local = "::1" if family == "TCP6" else "127.0.0.1"
    raw = socket.create_connection((fleet.address("e1"), fleet.https_port), 10,
                                   source_address=(LB, 0))
    raw.sendall(f"PROXY {family} {client_address} {local} 40000 443\r\n".encode())
    tls = client.context(fleet.ca_file).wrap_socket(raw, server_hostname=HOST)
    tls.sendall(f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode())
    resp = http.client.HTTPResponse(tls, method=method)
    resp.begin()
    resp.read()
    tls.close()
    return resp


@pytest.mark.parametrize("address", ["3.5.1.2", "2600:1f18::5", "::ffff:3.5.1.2"])
def test_a_client_in_a_mapped_region_asking_for_a_listed_file_gets_a_302(
        fleet: DeployedFleet, address: str) -> None:
    for method in ("GET", "HEAD"):
        resp = via_lb(fleet, address, "/dl/tool-1.2.tar.gz?arch=amd64", method)
        assert resp.status == 302, (address, method, resp.status)
        assert resp.getheader("Location") == ORIGIN + "/dl/tool-1.2.tar.gz?arch=amd64"
        assert resp.getheader("Cache-Control") == "private, no-store"


@pytest.mark.parametrize(("address", "path", "method"), [
    ("52.94.1.1", "/dl/a.iso", "GET"),  # eu-west-1 has no origin
    ("3.200.0.1", "/dl/a.iso", "GET"),  # only in a GLOBAL prefix
    ("198.51.100.7", "/dl/a.iso", "GET"),  # not an AWS address
    ("3.5.1.2", "/dl/readme.txt", "GET"),  # not a listed suffix
    ("3.5.1.2", "/dl/a.iso", "POST"),  # not GET or HEAD
])
def test_everything_else_passes_through_to_the_gateway(fleet: DeployedFleet, address: str,
                                                       path: str, method: str) -> None:
    resp = via_lb(fleet, address, path, method)
    assert resp.status == 200, (address, path, method, resp.status)
    assert resp.getheader("x-lab-received-host") == "us-east-1-fast.example.com"
    assert resp.getheader("x-lab-xff") == address  # the real client address, from PROXY


def test_connections_not_from_the_load_balancer_are_served_directly(
        fleet: DeployedFleet) -> None:
    reply = fleet.fetch("e1", HOST, "/dl/a.iso")
    assert reply.status == 200


def test_a_truncated_ip_ranges_file_is_refused_and_changes_nothing(
        fleet: DeployedFleet, tmp_path: Path) -> None:
    map_file = fleet.root("e1") / "etc/haproxy/aws-ip-ranges.map"
    before = sha(map_file)
    assert "3.5.0.0/16 us-east-1" in map_file.read_text()
    bad = tmp_path / "ip-ranges.json"
    bad.write_text(json.dumps(RANGES)[:200])
    fleet.write(georelay_ip_ranges_file=str(bad), georelay_proxy_protocol=True,
                georelay_proxy_protocol_from=[f"{LB}/32"])
    proc = fleet.play()
    assert proc.returncode != 0
    assert "georelay_ip_ranges_file" in proc.stdout and "truncated" in proc.stdout, \
        proc.stdout[-3000:]
    assert sha(map_file) == before
    assert via_lb(fleet, "3.5.1.2", "/dl/a.iso").status == 302  # the running map is unchanged


def lookup(fleet: DeployedFleet, address: str) -> str:
    """What the running proxy's map answers for one address (`get map`)."""
    map_file = fleet.root("e1") / "etc/haproxy/aws-ip-ranges.map"
    answer = unix_cli(fleet.admin_socket("e1"), f"get map {map_file} {address}")
    m = re.search(r'value="([^"]*)"', answer)
    return m.group(1) if m else "none"


def worker_rss_kib(fleet: DeployedFleet) -> int:
    """The resident memory of e1's HAProxy worker (the process that holds the maps)."""
    info = unix_cli(fleet.admin_socket("e1"), "show info")
    pid = next(ln.split(":")[1].strip() for ln in info.splitlines() if ln.startswith("Pid:"))
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS:")))


def test_an_aws_sized_map_replaces_the_running_one_atomically_under_load(
        fleet: DeployedFleet) -> None:
    """13,400 prefixes (AWS's size) loaded in chunks below the CLI's 16 KB buffer while
    requests flow: the old map answers until the commit, the new one after, 0 failures."""
    doc = ip_ranges.realistic()
    doc["prefixes"].append({"ip_prefix": "52.94.0.0/22", "region": "us-east-1",
                            "service": "EC2"})
    new = ip_ranges.parse(json.dumps(doc), "realistic")
    lines = [f"{p} {r}" for p, r in new.entries]
    assert len(lines) > 13_000
    map_file = str(fleet.root("e1") / "etc/haproxy/aws-ip-ranges.map")
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            resp = via_lb(fleet, "52.94.1.1", "/dl/a.iso")
            if resp.status not in (200, 302):
                failures.append(str(resp.status))

    seen_before_commit: list[str] = []
    rss_before = worker_rss_kib(fleet)
    worker = threading.Thread(target=load)
    worker.start()
    try:
        started = time.monotonic()
        chunks = rt.replace_map(str(fleet.admin_socket("e1")), map_file, lines,
                                between=lambda: seen_before_commit.append(
                                    lookup(fleet, "52.94.1.1")))
        took = time.monotonic() - started
    finally:
        stop.set()
        worker.join(30)
    assert seen_before_commit == ["eu-west-1"]  # the old map, all chunks added
    assert lookup(fleet, "52.94.1.1") == "us-east-1"  # the new one
    assert via_lb(fleet, "52.94.1.1", "/dl/a.iso").status == 302
    assert chunks > 1 and failures == []
    grown = worker_rss_kib(fleet) - rss_before  # the new map's tree (the old one is freed)
    print(f"FIGURES map_entries={len(lines)} chunks={chunks} load_s={took:.2f} "
          f"worker_rss_growth_kib={grown} map_text_kib={len(chr(10).join(lines)) // 1024}")

"""georelay-edge (README "Edge rules"): the deploy version of a service's edge cache and the
AWS ip-ranges map, set on every proxy through the real ansible-playbook (playbooks and modules
georelay.relay.edge_version / edge_ip_ranges) and read back from the running HAProxy.

The fleet: us-east-1 (e1, e2) and us-west-2 (w1), real haproxy 2.6 with real TLS in front of
the lab's strict stand-in gateways; one service with an edge cache and regional redirects.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from georelay_testing.fleet import BIN, DeployedFleet, run, running_fleet, sha, unix_cli

pytestmark = pytest.mark.slow

HOST = "fast.example.com"
PROXIES = ("e1", "e2", "w1")
ORIGIN = "https://us-east-1-downloads.example.com"
SERVICE = {"hostname": HOST, "apigw_domain": "{region}-fast.example.com", "health_path": "/ping",
           "edge_cache": {"max_age": 60, "header": "X-Cache"},
           "regional_redirects": {"suffixes": [".iso"], "origins": {"us-east-1": ORIGIN}}}
PLAIN = {"hostname": "api.example.com", "apigw_domain": "{region}-api.example.com",
         "health_path": "/ping"}


def ranges(token: int, region_of_52: str = "eu-west-1") -> dict[str, object]:
    return {"syncToken": str(token), "createDate": "2026-12-01-00-00-00",
            "prefixes": [{"ip_prefix": "3.5.0.0/16", "region": "us-east-1", "service": "S3"},
                         {"ip_prefix": "52.94.0.0/22", "region": region_of_52,
                          "service": "EC2"}],
            "ipv6_prefixes": [{"ipv6_prefix": "2600:1f18::/36", "region": "us-east-1",
                               "service": "EC2"}]}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployedFleet]:
    first = tmp_path_factory.mktemp("aws") / "ip-ranges.json"
    first.write_text(json.dumps(ranges(100)))
    with running_fleet(regions={"us-east-1": ["e1", "e2"], "us-west-2": ["w1"]},
                       services=[dict(SERVICE), dict(PLAIN)],
                       all_vars={"georelay_ip_ranges_file": str(first)}) as f:
        yield f


def edge(fleet: DeployedFleet, *args: str, inventory: Path | None = None,
         timeout: float = 240) -> tuple[int, str, str]:
    proc = run([str(BIN / "georelay-edge"), *args, "-i", str(inventory or fleet.inventory)],
               timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def edge_json(fleet: DeployedFleet, *args: str, **kw: object) -> tuple[int, dict[str, object]]:
    rc, out, err = edge(fleet, *args, "--output", "json", **kw)  # type: ignore[arg-type]
    assert out.strip(), err
    return rc, json.loads(out)


def version_map(fleet: DeployedFleet, proxy: str) -> Path:
    return fleet.root(proxy) / "etc/haproxy/edge-version.map"


def ip_map(fleet: DeployedFleet, proxy: str) -> Path:
    return fleet.root(proxy) / "etc/haproxy/aws-ip-ranges.map"


def running_value(fleet: DeployedFleet, proxy: str, map_file: Path, key: str) -> str | None:
    answer = unix_cli(fleet.admin_socket(proxy), f"get map {map_file} {key}")
    m = re.search(r'value="([^"]*)"', answer)
    return m.group(1) if m else None


def x_cache(fleet: DeployedFleet, proxy: str, path: str) -> str:
    return fleet.fetch(proxy, HOST, path).headers["x-cache"]


# --- version -------------------------------------------------------------------------------

def test_a_bump_sets_one_new_version_on_every_proxy_and_every_proxy_misses(
        fleet: DeployedFleet) -> None:
    rc, shown = edge_json(fleet, "version", "show", HOST)
    assert rc == 0, shown
    start = shown["versions"]
    assert isinstance(start, list) and len(start) == 1  # the fleet agrees
    path = "/cli/bump?cacheable=1"
    for proxy in PROXIES:
        x_cache(fleet, proxy, path)
        assert x_cache(fleet, proxy, path) == "HIT"

    rc, out, err = edge(fleet, "version", "bump", HOST)
    assert rc == 0, out + err
    want = str(int(start[0]) + 1)
    assert f"{HOST}: edge version {want} set on 3 of 3 proxies, read back" in out, out
    for proxy in PROXIES:
        assert f"{HOST} {want}" in version_map(fleet, proxy).read_text()  # a reload keeps it
        assert running_value(fleet, proxy, version_map(fleet, proxy), HOST) == want
        assert x_cache(fleet, proxy, path) == "MISS", proxy  # the next request, every proxy
        assert x_cache(fleet, proxy, path) == "HIT", proxy


def test_bump_to_a_version_is_idempotent_and_a_dry_run_changes_nothing(
        fleet: DeployedFleet) -> None:
    rc, doc = edge_json(fleet, "version", "bump", HOST, "--to", "2026-12-03.1")
    assert rc == 0 and doc["not_confirmed"] == [], doc
    proxies = doc["proxies"]
    assert isinstance(proxies, dict)
    assert {h: (p["after"], p["changed"]) for h, p in proxies.items()} == {
        h: ("2026-12-03.1", True) for h in PROXIES}
    rc, doc = edge_json(fleet, "version", "bump", HOST, "--to", "2026-12-03.1")
    assert rc == 0 and doc["proxies"], doc
    assert all(not p["changed"] for p in doc["proxies"].values()), doc  # type: ignore[union-attr]

    files = {p: sha(version_map(fleet, p)) for p in PROXIES}
    rc, out, err = edge(fleet, "version", "bump", HOST, "--dry-run")
    assert rc == 0, out + err
    assert "2026-12-03.1 -> 2" in out and "would set on 3 of 3" in out, out
    assert {p: sha(version_map(fleet, p)) for p in PROXIES} == files
    assert all(running_value(fleet, p, version_map(fleet, p), HOST) == "2026-12-03.1"
               for p in PROXIES)


def test_an_unreachable_proxy_is_named_and_the_others_are_set(fleet: DeployedFleet) -> None:
    inventory = fleet.with_unreachable_proxy("us-east-1")
    rc, doc = edge_json(fleet, "version", "bump", HOST, "--to", "41", inventory=inventory)
    assert rc == 1 and doc["not_confirmed"] == ["e9"], doc
    e9 = doc["proxies"]["e9"]  # type: ignore[index]
    assert e9["unreachable"] and e9["region"] == "us-east-1", e9
    assert doc["again"] == f"georelay-edge version bump {HOST} --to 41 -i {inventory}"
    assert all(running_value(fleet, p, version_map(fleet, p), HOST) == "41" for p in PROXIES)
    rc, out, _ = edge(fleet, "version", "show", HOST, inventory=inventory)
    assert rc == 1 and "e9 (us-east-1): no answer: unreachable" in out, out


def test_version_requests_are_refused_before_anything_is_touched(fleet: DeployedFleet) -> None:
    files = {p: sha(version_map(fleet, p)) for p in PROXIES}
    rc, _, err = edge(fleet, "version", "bump", HOST, "--to", "two words")
    assert rc == 64 and "--to" in err and "letters, digits" in err, err
    rc, _, err = edge(fleet, "version", "bump", "api.example.com")
    assert rc == 1 and "api.example.com has no edge cache" in err and "edge_cache" in err, err
    rc, _, err = edge(fleet, "version", "bump", "nope.example.com")
    assert rc == 1 and "not a service of the inventory" in err and HOST in err, err
    assert {p: sha(version_map(fleet, p)) for p in PROXIES} == files


# --- ip-ranges -----------------------------------------------------------------------------

def write(tmp_path: Path, name: str, doc: dict[str, object]) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def redirects(fleet: DeployedFleet, proxy: str, address: str) -> str | None:
    return running_value(fleet, proxy, ip_map(fleet, proxy), address)


def test_sync_loads_a_newer_map_into_every_proxy_and_refuses_an_older_one(
        fleet: DeployedFleet, tmp_path: Path) -> None:
    assert all(redirects(fleet, p, "52.94.1.1") == "eu-west-1" for p in PROXIES)
    newer = write(tmp_path, "newer.json", ranges(200, region_of_52="us-east-1"))
    rc, out, err = edge(fleet, "ip-ranges", "sync", "--file", str(newer), "--dry-run")
    assert rc == 0 and out.count("would load 100 -> 200") == 3, out + err
    assert all(redirects(fleet, p, "52.94.1.1") == "eu-west-1" for p in PROXIES)

    rc, doc = edge_json(fleet, "ip-ranges", "sync", "--file", str(newer))
    assert rc == 0 and doc["not_confirmed"] == [] and doc["sync_token"] == 200, doc
    assert "georelay_ip_ranges_file" in str(doc["note"])  # the inventory's file is older
    for proxy in PROXIES:
        assert redirects(fleet, proxy, "52.94.1.1") == "us-east-1"  # the running map
        assert "# syncToken: 200" in ip_map(fleet, proxy).read_text()  # what a reload reads
    rc, out, _ = edge(fleet, "ip-ranges", "sync", "--file", str(newer))
    assert rc == 0 and out.count("200 already in force") == 3, out

    older = write(tmp_path, "older.json", ranges(150))
    files = {p: sha(ip_map(fleet, p)) for p in PROXIES}
    rc, out, _ = edge(fleet, "ip-ranges", "sync", "--file", str(older))
    assert rc == 1 and out.count("older than the 200 in force") == 3, out
    assert "--force loads an older file" in out
    assert {p: sha(ip_map(fleet, p)) for p in PROXIES} == files
    rc, out, _ = edge(fleet, "ip-ranges", "sync", "--file", str(older), "--force")
    assert rc == 0 and all(redirects(fleet, p, "52.94.1.1") == "eu-west-1" for p in PROXIES)


def test_a_truncated_or_damaged_file_is_refused_and_changes_nothing(
        fleet: DeployedFleet, tmp_path: Path) -> None:
    files = {p: sha(ip_map(fleet, p)) for p in PROXIES}
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(ranges(300))[:150])
    rc, _, err = edge(fleet, "ip-ranges", "sync", "--file", str(cut))
    assert rc == 1 and "truncated" in err and "nothing was changed" in err, err
    bad = write(tmp_path, "bad.json", {**ranges(300), "prefixes": [
        {"ip_prefix": "3.5.0.0/33", "region": "us-east-1", "service": "S3"}]})
    rc, _, err = edge(fleet, "ip-ranges", "sync", "--file", str(bad))
    assert rc == 1 and "prefixes[0].ip_prefix" in err, err
    rc, _, err = edge(fleet, "ip-ranges", "sync")
    assert rc == 64 and "--file" in err and "--url" in err, err
    assert {p: sha(ip_map(fleet, p)) for p in PROXIES} == files


class _Published(http.server.BaseHTTPRequestHandler):
    """ip-ranges.json as AWS's CloudFront serves it: the body with its md5 as the ETag."""

    body = b""
    etag = ""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("ETag", f'"{self.etag}"')
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_args: object) -> None:
        pass


def test_sync_fetches_a_url_and_checks_its_md5(fleet: DeployedFleet) -> None:
    body = json.dumps(ranges(400, region_of_52="us-east-1")).encode()
    _Published.body, _Published.etag = body, hashlib.md5(body).hexdigest()
    server = http.server.HTTPServer(("127.0.0.1", 0), _Published)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/ip-ranges.json"
    try:
        files = {p: sha(ip_map(fleet, p)) for p in PROXIES}
        rc, _, err = edge(fleet, "ip-ranges", "sync", "--url", url, "--md5", "0" * 32)
        assert rc == 1 and "is not the expected" in err and "nothing was changed" in err, err
        _Published.etag = "f" * 32  # a damaged body: its md5 is not the ETag
        rc, _, err = edge(fleet, "ip-ranges", "sync", "--url", url)
        assert rc == 1 and "the ETag" in err, err
        assert {p: sha(ip_map(fleet, p)) for p in PROXIES} == files
        _Published.etag = hashlib.md5(body).hexdigest()
        rc, out, err = edge(fleet, "ip-ranges", "sync", "--url", url)
        assert rc == 0, out + err
    finally:
        server.shutdown()
    assert all(redirects(fleet, p, "52.94.1.1") == "us-east-1" for p in PROXIES)


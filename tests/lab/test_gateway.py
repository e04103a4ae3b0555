"""The stand-in gateway is as strict as API Gateway, or the relay tests would prove nothing;
it serves the one-box domains under the same rule, and answers the faults it is told to,
counted exactly, switched at runtime."""

from __future__ import annotations

import dataclasses
import http.client
import shlex
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from georelay_lab import certs, client
from georelay_lab.stand_ins import FaultError, StandIns
from georelay_testing.fleet import DeployedFleet, running_fleet


@pytest.fixture(scope="module")
def fleet() -> Iterator[DeployedFleet]:
    with running_fleet(deploy=False, regions={"eu-west-1": ["p1"]}) as fleet:
        yield fleet


def gw(fleet: DeployedFleet, sni: str, path: str = "/x", **kw: object) -> client.Reply:
    ip, port = fleet.gateway("eu-west-1")
    return client.fetch(ip, port, sni, path, ca_file=fleet.ca_file, **kw)  # type: ignore[arg-type]


def test_handshake_fails_for_a_name_it_does_not_serve(fleet: DeployedFleet) -> None:
    with pytest.raises(ssl.SSLError):
        gw(fleet, "us-east-1-fast.example.com")


def test_host_other_than_the_sni_is_forbidden(fleet: DeployedFleet) -> None:
    reply = gw(fleet, "eu-west-1-fast.example.com", headers={"Host": "fast.example.com"})
    assert reply.status == 403
    assert reply.headers["x-amzn-errortype"] == "ForbiddenException"


def test_matching_sni_and_host_are_echoed(fleet: DeployedFleet) -> None:
    reply = gw(fleet, "eu-west-1-fast.example.com", "/p?q=1")
    echo = reply.json()
    assert reply.status == 200
    assert (echo["region"], echo["host"], echo["sni"], echo["path"]) == \
        ("eu-west-1", "eu-west-1-fast.example.com", "eu-west-1-fast.example.com", "/p?q=1")
    assert reply.headers["x-lab-sni"] == "eu-west-1-fast.example.com"


def test_fault_knobs(fleet: DeployedFleet) -> None:
    assert gw(fleet, "eu-west-1-fast.example.com", "/x?status=502").status == 502
    assert len(gw(fleet, "eu-west-1-fast.example.com", "/x?bytes=5000").body) == 5000
    assert gw(fleet, "eu-west-1-fast.example.com", "/ping").json()["ping"] == "pong"
    # reset=1: half a body, then a TCP reset
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        gw(fleet, "eu-west-1-fast.example.com", "/x?reset=1")


# ---- one-box domains and runtime faults --------------------------------------------------

ONEBOX_SERVICE = {"hostname": "fast.example.com", "apigw_domain": "{region}-fast.example.com",
                  "health_path": "/ping", "onebox_domain": "{region}-onebox-fast.example.com"}
REGULAR = "us-east-1-fast.example.com"
ONEBOX = "us-east-1-onebox-fast.example.com"


@pytest.fixture(scope="module")
def onebox_fleet() -> Iterator[DeployedFleet]:
    """us-east-1 with a one-box; eu-west-1 switched it off (georelay_onebox_enabled)."""
    with running_fleet(deploy=False, regions={"us-east-1": ["p1"], "eu-west-1": ["p2"]},
                       services=[ONEBOX_SERVICE],
                       host_vars={"p2": {"georelay_onebox_enabled": False}}) as fleet:
        yield fleet


@pytest.fixture
def lab(onebox_fleet: DeployedFleet) -> Iterator[StandIns]:
    lab = onebox_fleet.lab()
    yield lab
    lab.clear_fault()


def use1(fleet: DeployedFleet, sni: str, path: str = "/x", **kw: object) -> client.Reply:
    ip, port = fleet.gateway("us-east-1")
    return client.fetch(ip, port, sni, path, ca_file=fleet.ca_file, **kw)  # type: ignore[arg-type]


def statuses(fleet: DeployedFleet, sni: str, n: int, path: str = "/x") -> list[int]:
    return [use1(fleet, sni, path).status for _ in range(n)]


def test_the_onebox_domain_is_served_as_strictly(onebox_fleet: DeployedFleet) -> None:
    echo = use1(onebox_fleet, ONEBOX, "/p").json()
    assert (echo["region"], echo["host"], echo["sni"]) == ("us-east-1", ONEBOX, ONEBOX)
    # Host of the regular domain on the one-box's connection (and the other way round): 403
    assert use1(onebox_fleet, ONEBOX, headers={"Host": REGULAR}).status == 403
    assert use1(onebox_fleet, REGULAR, headers={"Host": ONEBOX}).status == 403
    with pytest.raises(ssl.SSLError):  # another region's one-box name: no handshake
        use1(onebox_fleet, "eu-west-1-onebox-fast.example.com")
    lab = onebox_fleet.lab()
    assert lab.domains("us-east-1") == [REGULAR, ONEBOX]
    assert lab.domains("eu-west-1") == ["eu-west-1-fast.example.com"]  # switched off there
    assert certs.names_of(lab.gateway_pem("us-east-1")) == [REGULAR, ONEBOX]


def test_the_gateway_certificate_is_issued_again_when_its_names_change(tmp_path: Path,
                                                                     lab: StandIns) -> None:
    plain = dataclasses.replace(lab.fleet, services=tuple(
        dataclasses.replace(s, onebox_domain_pattern=None) for s in lab.fleet.services))
    before = StandIns(plain, tmp_path)
    before.ensure_certs()
    assert certs.names_of(before.gateway_pem("us-east-1")) == [REGULAR]
    after = StandIns(lab.fleet, tmp_path)
    done, regions = after.ensure_certs()
    assert regions == {"us-east-1"}, done
    assert certs.names_of(after.gateway_pem("us-east-1")) == [REGULAR, ONEBOX]
    assert after.ensure_certs()[1] == set()  # then kept


def test_a_fault_for_every_request_and_cleared_without_a_restart(onebox_fleet: DeployedFleet,
                                                                 lab: StandIns) -> None:
    pid_file = lab.gateway_files("us-east-1")[0]
    pid = pid_file.read_text().strip()
    lines = lab.set_fault(ONEBOX, 503, 1.0)
    assert "undo: georelay-lab gateway-fault" in lines[0] and len(lines) == 1, lines
    faulted = use1(onebox_fleet, ONEBOX)
    assert faulted.status == 503
    assert faulted.headers["x-lab-fault"] == "503 share=1 request=1"
    assert statuses(onebox_fleet, ONEBOX, 9) == [503] * 9
    assert statuses(onebox_fleet, REGULAR, 5) == [200] * 5  # only the one domain
    assert use1(onebox_fleet, ONEBOX, "/ping").status == 200  # health checks spared
    assert use1(onebox_fleet, ONEBOX, headers={"Host": REGULAR}).status == 403  # still strict
    assert lab.clear_fault(ONEBOX)[0].startswith(f"fault cleared: {ONEBOX}")
    assert statuses(onebox_fleet, ONEBOX, 10) == [200] * 10
    assert pid_file.read_text().strip() == pid


def test_a_share_is_counted_exactly(onebox_fleet: DeployedFleet, lab: StandIns) -> None:
    lab.set_fault(ONEBOX, 503, 0.3)
    got = statuses(onebox_fleet, ONEBOX, 20)
    assert [i + 1 for i, s in enumerate(got) if s == 503] == [1, 4, 7, 11, 14, 17], got
    assert set(got) == {200, 503}
    lab.set_fault(ONEBOX, 502, 0.5, health_checks=True)  # set again: the count restarts
    assert statuses(onebox_fleet, ONEBOX, 4, "/ping") == [502, 200, 502, 200]
    lab.set_fault(ONEBOX, 503, 0.0)
    assert statuses(onebox_fleet, ONEBOX, 10) == [200] * 10


def test_gateway_fault_prints_an_undo_that_works(onebox_fleet: DeployedFleet) -> None:
    base = ["-i", str(onebox_fleet.inventory), "--lab-dir", str(onebox_fleet.lab_dir)]
    got = lab_cli("gateway-fault", *base, "--domain", ONEBOX, "--status", "503",
                  "--share", "0.5")
    assert got.returncode == 0, got.stderr
    assert statuses(onebox_fleet, ONEBOX, 4) == [503, 200, 503, 200]
    undo = shlex.split(got.stdout.split("undo: ", 1)[1].strip())
    assert undo[:2] == ["georelay-lab", "gateway-fault"] and undo[-1] == "--clear", undo
    cleared = lab_cli(*undo[1:])
    assert cleared.returncode == 0 and "set it again: georelay-lab" in cleared.stdout, \
        cleared.stdout + cleared.stderr
    assert statuses(onebox_fleet, ONEBOX, 4) == [200] * 4


@pytest.mark.parametrize("argv, says", [
    (["--domain", "us-west-2-onebox-fast.example.com", "--status", "503"],
     "Invalid value for --domain: no stand-in gateway of this lab serves "
     "'us-west-2-onebox-fast.example.com': give one of eu-west-1-fast.example.com, "
     f"{REGULAR}, {ONEBOX}"),
    (["--domain", ONEBOX, "--status", "503", "--share", "1.5"], "'--share'"),
    (["--domain", ONEBOX, "--status", "99"], "'--status'"),
    (["--domain", ONEBOX], "give --status CODE"),
    (["--status", "503"], "--status needs --domain"),
])
def test_gateway_fault_refuses_bad_input_and_writes_nothing(
        onebox_fleet: DeployedFleet, argv: list[str], says: str) -> None:
    faults = onebox_fleet.lab().faults_file
    before = faults.read_bytes() if faults.exists() else None
    got = lab_cli("gateway-fault", "-i", str(onebox_fleet.inventory), "--lab-dir",
                  str(onebox_fleet.lab_dir), *argv)
    assert got.returncode == 64, got.stdout + got.stderr
    assert says in " ".join(got.stderr.split()), got.stderr
    assert (faults.read_bytes() if faults.exists() else None) == before


def test_the_nginx_gateway_serves_the_onebox_strictly_and_refuses_faults() -> None:
    with running_fleet(deploy=False, regions={"us-east-1": ["n1"]}, services=[ONEBOX_SERVICE],
                       gateway_kind="nginx") as fleet:
        reply = use1(fleet, ONEBOX, "/p")
        assert (reply.status, reply.json()["sni"], reply.json()["host"]) == (200, ONEBOX, ONEBOX)
        assert use1(fleet, ONEBOX, headers={"Host": REGULAR}).status == 403
        with pytest.raises(ssl.SSLError):
            use1(fleet, "eu-west-1-onebox-fast.example.com")
        lab = fleet.lab()
        with pytest.raises(FaultError, match="nginx gateway, which has no fault injection") as e:
            lab.set_fault(ONEBOX, 503)
        assert e.value.field == "domain" and not lab.faults_file.exists()


def lab_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "georelay-lab"), *argv],
                          capture_output=True, text=True, timeout=120, check=False)

"""The collection from a user's side: built, installed, used by FQCN from a directory of theirs.

What the README tells a user to do, run as they would: `ansible-galaxy collection build` in
the checkout, `ansible-galaxy collection install` of the tarball into a collections path of
their own, then, in a directory outside the checkout with their own inventory (the demo
fleet's shape: 2 regions x 2 proxies, against the lab's stand-in gateways) and a playbook of
a few lines that uses georelay.relay.haproxy and georelay.relay.georelay_agent, ansible-playbook
without the checkout's ansible.cfg: nothing can resolve from the checkout. The relay checks
pass (each proxy rewrites Host and SNI to its own region's gateway, the agent answers
/healthz), the collection's own playbook georelay.relay.proxies finds nothing to change,
and ansible-doc shows every module.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from georelay_testing.fleet import BIN, REPO, SERVICES, DeployedFleet, recap, short_dir

pytestmark = pytest.mark.slow

MODULES = ("fleet", "haproxy_master", "agent_process", "agent_wheel", "route53_fleet", "onebox",
           "edge_version", "edge_ip_ranges")
PLAYBOOK = """\
- name: Deploy the georelay relays
  hosts: all
  gather_facts: false
  roles: [georelay.relay.haproxy, georelay.relay.georelay_agent]
"""


def user_env(collections: Path) -> dict[str, str]:
    """A user's environment: no ANSIBLE_* of this checkout (ANSIBLE_CONFIG unset), only the
    collections path they installed into, the virtualenv's ansible and georelay on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**env, "PATH": f"{BIN}:{env.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_COLLECTIONS_PATH": str(collections),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false"}


def sh(cmd: list[str], cwd: Path, env: dict[str, str] | None = None,
       timeout: float = 600) -> subprocess.CompletedProcess[str]:
    print("$", " ".join(cmd), f"  (in {cwd})")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, (f"{' '.join(cmd)} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def user_side() -> Iterator[tuple[DeployedFleet, Path, dict[str, str], dict[str, float]]]:
    """The collection installed into a temporary collections path, the demo fleet's shape
    deployed from a user's directory by a playbook of theirs; timings of each step."""
    timings: dict[str, float] = {}
    with short_dir() as base:
        project = base / "project"  # the user's own repository, outside the checkout
        fleet = DeployedFleet(project, regions={"us-east-1": ["e1", "e2"],
                                           "us-west-2": ["w1", "w2"]},
                         services=[dict(s) for s in SERVICES], https_port=443, http_port=80)
        try:
            t = time.monotonic()
            sh([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path",
                str(base / "dist")], cwd=REPO)
            (tarball,) = (base / "dist").glob("georelay-relay-*.tar.gz")
            env = user_env(base / "collections")
            sh([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p",
                str(base / "collections")], cwd=base, env=env)
            timings["build_install_s"] = time.monotonic() - t

            fleet.up()  # the user's inventory, the lab's certificates and stand-in gateways
            (project / "deploy.yml").write_text(PLAYBOOK)
            t = time.monotonic()
            played = sh([str(BIN / "ansible-playbook"), "-i", "inventory", "deploy.yml"],
                        cwd=project, env=env)
            timings["deploy_s"] = time.monotonic() - t
            assert recap(played.stdout), played.stdout[-3000:]
            for proxy in fleet.proxy_names():
                fleet.wait_healthy(proxy, timeout=30)
            yield fleet, base, env, timings
        finally:
            fleet.down()


def test_the_collection_resolves_from_the_user_collections_path_only(user_side) -> None:
    fleet, base, env, _ = user_side
    listed = sh([str(BIN / "ansible-galaxy"), "collection", "list", "georelay.relay",
                 "--format", "json"], cwd=fleet.base, env=env)
    paths = json.loads(listed.stdout)
    assert list(paths) == [str(base / "collections/ansible_collections")], paths
    installed = base / "collections/ansible_collections/georelay/relay"
    assert paths[str(base / "collections/ansible_collections")]["georelay.relay"][
        "version"] == "0.2.0"
    assert (installed / "roles/haproxy/templates/haproxy.cfg.j2").is_file()
    assert not (installed / "tests").exists() and not (installed / "lab").exists()
    assert not installed.is_symlink()


def test_every_proxy_relays_with_host_and_sni_rewritten(user_side) -> None:
    fleet, *_ = user_side
    for proxy in fleet.proxy_names():
        region = fleet.region_of(proxy)
        for service in fleet.services:
            domain = service["apigw_domain"].replace("{region}", region)
            reply = fleet.fetch(proxy, service["hostname"], "/anything")
            assert reply.status == 200, reply.body
            echo = reply.json()
            assert (echo["region"], echo["host"], echo["sni"]) == (region, domain, domain)
            assert echo["x_forwarded_host"] == service["hostname"]


def test_every_agent_answers_healthz_through_its_proxy(user_side) -> None:
    fleet, *_ = user_side
    for proxy in fleet.proxy_names():
        deadline = time.monotonic() + 20  # rise: two good observations
        while True:
            reply = fleet.fetch(proxy, "fast.example.com", "/healthz")
            if reply.status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert (reply.status, reply.body.decode().strip()) == (200, "georelay-healthy"), \
            reply.body


def test_collection_playbooks_run_by_fqcn(user_side) -> None:
    """georelay.relay.proxies from the user's directory: the fleet is as deployed, nothing
    changes; georelay.relay.site (which imports proxies and dns by FQCN) parses."""
    fleet, _, env, timings = user_side
    t = time.monotonic()
    played = sh([str(BIN / "ansible-playbook"), "-i", "inventory", "georelay.relay.proxies"],
                cwd=fleet.base, env=env)
    timings["proxies_rerun_s"] = time.monotonic() - t
    changed = {host: counts["changed"] for host, counts in recap(played.stdout).items()}
    assert set(changed) >= set(fleet.proxy_names()), played.stdout[-3000:]
    assert not any(changed.values()), played.stdout[-6000:]
    sh([str(BIN / "ansible-playbook"), "-i", "inventory", "georelay.relay.site",
        "--syntax-check"], cwd=fleet.base, env=env)


def test_ansible_doc_shows_every_module(user_side) -> None:
    fleet, base, env, timings = user_side
    for name in MODULES:
        doc = sh([str(BIN / "ansible-doc"), "-t", "module", f"georelay.relay.{name}"],
                 cwd=fleet.base, env=env).stdout
        assert str(base / "collections") in doc, doc[:500]
        for section in ("EXAMPLES", "RETURN"):
            assert section in doc, f"georelay.relay.{name}: no {section}:\n{doc}"
    print("FIGURES " + json.dumps({k: round(v, 1) for k, v in timings.items()}))

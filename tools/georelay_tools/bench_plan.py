"""Measure georelay-dns plan/apply cost against a local moto_server (docs/BENCHMARKS-dns.md).

    .venv/bin/georelay-tools bench-plan [--sizes 60,150,300] [--regions 15] [--services 3]

For each size it writes an inventory (N proxies spread over the regions, every service),
starts from an empty zone and measures: plan (empty zone), apply, plan again (in sync).
Route53 calls are counted per operation with a botocore event hook; wall time includes
reading the inventory through ansible-inventory. Only loopback is used.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import click
import yaml

from georelay_dns.apply import apply_plan
from georelay_dns.cli_support import cli_command
from georelay_dns.inputs import load_inputs
from georelay_dns.plan import make_plan
from georelay_dns.route53 import find_zone, make_client, read_live
from georelay_dns.tree import build_tree
from georelay_model import load_inventory
from georelay_model.regions import SITES

REGIONS = [r for r in SITES if not r.startswith("us-gov")]


def write_inventory(path: Path, proxies: int, regions: int, services: int) -> Path:
    names = REGIONS[:regions]
    groups: dict[str, Any] = {r.replace("-", "_"): {"vars": {"aws_region": r}, "hosts": {}}
                              for r in names}
    for i in range(proxies):
        r = names[i % regions]
        groups[r.replace("-", "_")]["hosts"][f"{r}-p{i // regions}"] = {
            "public_ip": f"198.{18 + i // 65025}.{i // 255 % 255}.{i % 255 + 1}"}
    (path / "group_vars").mkdir(parents=True, exist_ok=True)
    (path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": groups}}))
    (path / "group_vars" / "all.yml").write_text(yaml.safe_dump({
        "georelay_zone": "example.com",
        "georelay_services": [{"hostname": f"svc{s}.example.com",
                               "apigw_domain": f"{{region}}-svc{s}.example.com"}
                              for s in range(services)]}))
    return path


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H",
                             "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start")


def measure(inv: Path, url: str) -> dict[str, Any]:
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"))
    client = make_client()
    calls: Counter[str] = Counter()
    client.meta.events.register("before-call.route53.*",
                                lambda model, **_: calls.update([model.name]))
    client.create_hosted_zone(Name="example.com", CallerReference=str(time.time_ns()))
    out: dict[str, Any] = {}

    def plan() -> Any:
        inputs = load_inputs(load_inventory(inv))
        zone_id = find_zone(client, inputs.fleet.zone, inputs.settings.zone_id)
        return make_plan(build_tree(inputs, zone_id), read_live(client, zone_id), "georelay")

    for step in ("plan_empty", "apply", "plan_in_sync"):
        calls.clear()
        t0 = time.perf_counter()
        p = plan()
        if step == "apply":
            apply_plan(client, p)
        out[step] = {"seconds": round(time.perf_counter() - t0, 2), "calls": dict(calls),
                     "counts": p.counts()}
    return out


def _sizes(text: str) -> list[int]:
    sizes = [s.strip() for s in text.split(",")]
    if not all(s.isdigit() and int(s) > 0 for s in sizes):
        raise click.BadParameter(f"{text!r}: write proxy counts separated by commas, e.g. "
                                 "60,150,300", param_hint="--sizes")
    return [int(s) for s in sizes]


@cli_command("georelay-tools bench-plan", distribution="georelay-tools")
@click.option("--sizes", default="60,150,300", show_default=True,
              help="proxy counts, comma-separated")
@click.option("--regions", type=click.IntRange(1, len(REGIONS)), default=15, show_default=True)
@click.option("--services", type=click.IntRange(min=1), default=3, show_default=True)
def command(sizes: str, regions: int, services: int) -> None:
    """georelay-dns plan/apply cost against a local moto_server (docs/BENCHMARKS-dns.md)."""
    counts = _sizes(sizes)
    proc, url = start_moto()
    os.environ.update({"AWS_ENDPOINT_URL_ROUTE_53": url, "AWS_ACCESS_KEY_ID": "bench",
                       "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"})
    try:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            probe = write_inventory(Path(tmp) / "probe", regions, regions, 1)
            load_inventory(probe)
        print(f"ansible-inventory alone: {time.perf_counter() - t0:.2f}s")
        for size in counts:
            with tempfile.TemporaryDirectory() as tmp:
                inv = write_inventory(Path(tmp) / "inv", size, regions, services)
                res = measure(inv, url)
            print(f"\n== {size} proxies / {regions} regions / {services} services")
            for step, r in res.items():
                total = sum(r["calls"].values())
                ops = ", ".join(f"{k} {v}" for k, v in sorted(r["calls"].items()))
                print(f"{step:<13} {r['seconds']:>6.2f}s  {total:>5} calls: {ops}")
                print(f"{'':<13} plan: {r['counts']}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    command(prog_name="python -m georelay_tools.bench_plan")

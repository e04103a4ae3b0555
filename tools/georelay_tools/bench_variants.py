"""`georelay-tools bench --variant ...`: the role's tunables (or a service's keys) compared.

Each variant is redeployed by the role on make bench's proxy and measured with wrk right
beside the nginx relay (the ratio cancels the machine's drift between runs); with
--instructions, the deployed config also runs once under callgrind (make bench-rules'
method: instructions per request, a count the machine's load does not move).
"""

from __future__ import annotations

import re
import statistics
import subprocess
from typing import TYPE_CHECKING

import click
import yaml

from georelay_lab import client
from georelay_tools import bench_configs as cfg
from georelay_tools.callgrind import HAPROXY, Count, count_instructions

if TYPE_CHECKING:
    from georelay_tools.bench import Bench

COUNT_ADDRESS = "127.0.20.40"  # --instructions: the deployed config under callgrind


def variants_of(specs: tuple[str, ...]) -> dict[str, dict[str, object]]:
    """--variant NAME:VAR=VALUE,... (values read as YAML) -> name -> tunables."""
    variants: dict[str, dict[str, object]] = {}
    for spec in specs:
        name, colon, pairs = spec.partition(":")
        parts = [p for p in re.split(r",(?=\w+=)", pairs) if p]
        if not colon or not name or any("=" not in p for p in parts):
            raise click.BadParameter(f"{spec!r}: write NAME:VAR=VALUE,... (e.g. "
                                     "tuned:haproxy_nbthread=2), or NAME: for the defaults",
                                     param_hint="--variant")
        variants[name] = {k: yaml.safe_load(v) for k, v in (p.split("=", 1) for p in parts)}
    return variants


def instructions(bench: Bench, name: str, requests: int, path: str, close: bool) -> Count:
    """callgrind's instructions per request of the config deployed now, run as a process of
    its own on COUNT_ADDRESS."""
    run_dir = bench.work / "instructions" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    rendered = (bench.work / "relay/etc/haproxy/haproxy.cfg").read_text()
    config = run_dir / "callgrind.cfg"
    config.write_text(cfg.runnable(rendered, bench.a.relay, COUNT_ADDRESS, run_dir,
                                   callgrind=True))
    subprocess.run([HAPROXY, "-c", "-q", "-f", str(config)], check=True)
    count = count_instructions(config, COUNT_ADDRESS, 443, bench.certs / "lab-ca.pem",
                               run_dir, requests=requests, connections=4, warmup=200,
                               path=path, close=close, cpus=bench.relay_cpus)
    if not count.ok:
        raise SystemExit(f"{name}: callgrind's requests were answered {count.statuses}, "
                         "not all 200")
    return count


def _show_cache_header(bench: Bench, name: str, tunables: dict[str, object],
                       path: str) -> None:
    """An edge_cache variant with a header: what two requests say (MISS, then HIT)."""
    cache = tunables.get("edge_cache")
    if not isinstance(cache, dict) or not cache.get("header"):
        return
    header = str(cache["header"])
    seen = [client.fetch(bench.a.relay, 443, cfg.PUBLIC, path,
                         ca_file=str(bench.certs / "lab-ca.pem")).headers.get(header.lower())
            for _ in range(2)]
    print(f"  {name}: {header} of two requests: {', '.join(map(str, seen))}")


def compare(bench: Bench, variants: dict[str, dict[str, object]], rounds: int,
            path: str = "/small", close: bool = False,
            requests: int = 0) -> tuple[dict[str, list[float]], dict[str, Count]]:
    """georelay/nginx req/s ratio per variant (kept-alive clients unless close), each
    variant redeployed by the role and measured right beside nginx, with its p99 and CPU
    per request printed; requests > 0: also callgrind's count over that many requests, once
    per variant."""
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    counts: dict[str, Count] = {}
    for _ in range(rounds):
        for name, tunables in variants.items():
            bench._deploy_georelay(**tunables)
            bench.pin_all()
            _show_cache_header(bench, name, tunables, path)
            ours = bench.measure("georelay", bench.a.relay, cfg.PUBLIC, path, close)
            nginx = bench.measure("nginx relay", bench.a.nginx, cfg.PUBLIC, path, close)
            ratios[name].append(ours[0] / nginx[0])
            if requests and name not in counts:
                c = counts[name] = instructions(bench, name, requests, path, close)
                print(f"  {name:24} {c.per_request:,.0f} instructions/request "
                      f"(callgrind, {c.requests} requests)", flush=True)
            print(f"  {name:24} georelay {ours[0]:8.0f} p99 {ours[2]:5.2f} ms "
                  f"{ours[4]:5.1f} us/req {ours[3]} errors | nginx {nginx[0]:8.0f} p99 "
                  f"{nginx[2]:5.2f} ms {nginx[4]:5.1f} us/req {nginx[3]} errors | "
                  f"ratio {ours[0] / nginx[0]:.2f}", flush=True)
    return ratios, counts


def summary(ratios: dict[str, list[float]], counts: dict[str, Count]) -> list[str]:
    """One line per variant: the median ratio, the rounds, and the count against the first
    variant's."""
    first_name = next(iter(counts), None)
    lines = []
    for name, values in ratios.items():
        c = counts.get(name)
        line = (f"{name}: georelay/nginx median {statistics.median(values):.2f} ("
                + ", ".join(f"{v:.2f}" for v in values) + ")")
        if c is not None and first_name is not None:
            first = counts[first_name].per_request
            line += (f"; {c.per_request:,.0f} instructions/request "
                     f"({c.per_request / first - 1:+.1%} against {first_name})")
        lines.append(line)
    return lines

"""How haproxy.cfg, haproxy -c, start, reload and memory grow with services and regions.

For each size S services x R regions (2 proxies per region) it builds the hostvars an
inventory of that shape gives, validates them with the fleet model exactly as the role's
georelay_fleet action does (``fleet_from_hostvars(..., rendered=True)`` then
``proxy_facts``), renders ``roles/haproxy/templates/haproxy.cfg.j2`` with the role defaults of
``roles/haproxy/defaults/main.yml`` for one proxy, runs ``haproxy -c`` on it, then starts it
as a master-worker (``-W -S``) on loopback and measures reloads through the master socket
and the resident memory of master and worker.

A proxy renders only its own region's backends: the services count sets the size of
haproxy.cfg; the regions count sets the size of the fleet model the role validates on every
host (and the Route53 tree, measured in docs/BENCHMARKS-dns.md).

    .venv/bin/georelay-tools scale --sizes 10x5,50x10,200x20 --reloads 5

Gateways are addresses where nothing listens (health checks fail, which is work HAProxy
really does at that size); nothing leaves loopback. Everything started is stopped.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import jinja2
import yaml

from georelay_agent.haproxy_runtime import master_command, send, show_proc
from georelay_dns.cli_support import cli_command
from georelay_lab import certs, pid_files
from georelay_lab.checkout import in_checkout
from georelay_model import fleet_from_hostvars
from georelay_model.facts import proxy_facts

TEMPLATE = "roles/haproxy/templates/haproxy.cfg.j2"  # in the checkout
DEFAULTS = "roles/haproxy/defaults/main.yml"
HAPROXY = "/usr/sbin/haproxy"
REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "sa-east-1",
           "eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "eu-south-1",
           "me-south-1", "af-south-1", "ap-south-1", "ap-east-1", "ap-southeast-1",
           "ap-southeast-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
           "ap-southeast-3", "il-central-1", "ca-west-1", "eu-central-2", "eu-south-2",
           "me-central-1", "ap-south-2", "ap-southeast-4", "mx-central-1"]
PROXIES_PER_REGION = 2
SCRAPES = 5  # GET /metrics per size, for the median
T = TypeVar("T")


@dataclass
class Result:
    services: int
    regions: int
    proxies: int
    backends_rendered: int
    model_ms: float  # fleet_from_hostvars over the whole fleet (once per host in a play)
    render_ms: float  # proxy_facts + Jinja2 render of one proxy's haproxy.cfg
    config_bytes: int
    config_lines: int
    check_ms: float  # haproxy -c
    start_ms: float  # spawn to a worker listed by the master
    reload_ms: float  # median: master `reload` to a new worker listed (the role's proof)
    reload_max_ms: float
    rss_master_kib: int
    rss_worker_kib: int
    rss_worker_after_reloads_kib: int
    scrape_ms: float = 0.0  # median GET /metrics of HAProxy's exporter (management listener)
    scrape_bytes: int = 0
    scrape_samples: int = 0
    scrape_no_servers_bytes: int = 0  # ?scope=global&scope=frontend&scope=backend
    scrape_no_servers_samples: int = 0


def hostvars(services: int, regions: int, base: Path, tls_pem: Path,
             ca: Path) -> dict[str, dict[str, Any]]:
    """Merged host variables of an inventory with that many services and regions."""
    if regions > len(REGIONS):
        raise SystemExit(f"at most {len(REGIONS)} regions")
    svc = [{"hostname": f"svc{i}.example.com", "apigw_domain": f"{{region}}-svc{i}.example.com",
            "health_path": "/ping"} for i in range(services)]
    common = {"georelay_zone": "example.com", "georelay_services": svc,
              "georelay_tls_pem": str(tls_pem), "georelay_backend_ca": str(ca),
              "georelay_service_manager": "process", "haproxy_https_port": 18443,
              "haproxy_http_port": 18080}
    out: dict[str, dict[str, Any]] = {}
    for r, region in enumerate(REGIONS[:regions]):
        for p in range(PROXIES_PER_REGION):
            n = r * PROXIES_PER_REGION + p
            address = f"127.0.{200 + n // 250}.{1 + n % 250}"
            out[f"{region}-p{p}"] = {
                **common, "aws_region": region, "public_ip": address,
                "haproxy_bind_address": address, "georelay_agent_bind_address": address,
                "georelay_metrics_listen": f"127.0.{230 + n // 250}.{1 + n % 250}:8404",
                "georelay_apigw_address": f"127.0.199.{1 + r}:9443",
                "georelay_root": str(base / f"r{n}")}
    return out


def role_defaults() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(in_checkout(DEFAULTS).read_text())
    return values


def render(facts: dict[str, Any]) -> str:
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True)
    template = env.from_string(in_checkout(TEMPLATE).read_text())
    return template.render(**role_defaults(), georelay_proxy=facts,
                           ansible_managed="Ansible managed (georelay_tools.scale)")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait(predicate: Callable[[], T | None], timeout: float = 60.0) -> T:
    """predicate's first true value, polled every 5 ms; RuntimeError after timeout s."""
    value = pid_files.wait_for(predicate, timeout, interval=0.005)
    if not value:
        raise RuntimeError("timed out")
    return value


NO_SERVERS = "/metrics?scope=global&scope=frontend&scope=backend"  # the exporter's scopes


def scrape(address: str, port: int, times: int = SCRAPES,
           path: str = "/metrics") -> tuple[float, int, int]:
    """HAProxy's exporter as Prometheus scrapes it: the median time of `times` whole
    GET path (uncompressed), the body's size and its samples."""
    durations, body = [], b""
    for _ in range(times):
        conn = http.client.HTTPConnection(address, port, timeout=30)
        t = time.perf_counter()
        conn.request("GET", path)
        body = conn.getresponse().read()
        durations.append((time.perf_counter() - t) * 1000)
        conn.close()
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return round(statistics.median(durations), 1), len(body), samples


def measure(services: int, regions: int, reloads: int, keep: bool = False) -> Result:
    base = Path(tempfile.mkdtemp(prefix="georelay-scale-", dir="/tmp"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        ca = certs.new_authority("georelay scale CA")
        tls_pem, ca_file = base / "public.pem", base / "ca.pem"
        tls_pem.write_bytes(certs.issue(ca, ["*.example.com"]))
        ca_file.write_bytes(ca.pem)
        hv = hostvars(services, regions, base, tls_pem, ca_file)

        t = time.perf_counter()
        fleet = fleet_from_hostvars(hv, rendered=True)
        model_ms = (time.perf_counter() - t) * 1000
        host = next(iter(hv))
        t = time.perf_counter()
        facts = proxy_facts(fleet, host)
        text = render(facts)
        render_ms = (time.perf_counter() - t) * 1000

        paths = facts["paths"]
        for key in ("conf_dir", "certs_dir", "run_dir", "chroot", "log_dir"):
            Path(paths[key]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tls_pem, paths["tls_pem"])
        shutil.copy(ca_file, paths["backend_ca"])
        Path(paths["state_file"]).touch()
        config = Path(paths["config"])
        config.write_text(text)

        t = time.perf_counter()
        check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True,
                               text=True, check=False)
        check_ms = (time.perf_counter() - t) * 1000
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c failed:\n{check.stdout}{check.stderr}")

        master = paths["master_socket"]
        t = time.perf_counter()
        proc = pid_files.spawn(master_command(HAPROXY, str(config), master, paths["pid_file"]),
                               paths["log_file"])
        state = wait(lambda: (s := show_proc(master)) and s.workers and s)
        start_ms = (time.perf_counter() - t) * 1000
        time.sleep(1)
        rss_master = rss_kib(state.master_pid)
        rss_worker = sum(rss_kib(w) for w in state.worker_pids)
        scrape_ms, scrape_bytes, samples = scrape(facts["metrics"]["address"],
                                                  facts["metrics"]["port"])
        _, lean_bytes, lean_samples = scrape(facts["metrics"]["address"],
                                             facts["metrics"]["port"], 1, NO_SERVERS)

        times = []
        for _ in range(reloads):
            before = wait(lambda: show_proc(master))
            t = time.perf_counter()
            send(master, "reload")
            wait(lambda b=before: (s := show_proc(master)) and s.reloads > b.reloads
                 and s.workers and s.worker_pids != b.worker_pids)
            times.append((time.perf_counter() - t) * 1000)
            wait(lambda: (s := show_proc(master)) and not s.old_workers, timeout=40)
        time.sleep(1)
        state = wait(lambda: show_proc(master))
        rss_after = sum(rss_kib(w) for w in state.worker_pids)
        return Result(services=services, regions=regions, proxies=len(hv),
                      backends_rendered=len(facts["backends"]), model_ms=round(model_ms, 1),
                      render_ms=round(render_ms, 1), config_bytes=len(text.encode()),
                      config_lines=text.count("\n"), check_ms=round(check_ms, 1),
                      start_ms=round(start_ms, 1),
                      reload_ms=round(statistics.median(times), 1) if times else 0.0,
                      reload_max_ms=round(max(times), 1) if times else 0.0,
                      rss_master_kib=rss_master, rss_worker_kib=rss_worker,
                      rss_worker_after_reloads_kib=rss_after,
                      scrape_ms=scrape_ms, scrape_bytes=scrape_bytes, scrape_samples=samples,
                      scrape_no_servers_bytes=lean_bytes,
                      scrape_no_servers_samples=lean_samples)
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the master and its workers
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


COLUMNS = [("services x regions", lambda r: f"{r.services} x {r.regions}"),
           ("proxies", lambda r: r.proxies), ("backends in cfg", lambda r: r.backends_rendered),
           ("model (fleet)", lambda r: f"{r.model_ms} ms"),
           ("render (1 proxy)", lambda r: f"{r.render_ms} ms"),
           ("cfg size", lambda r: f"{r.config_bytes / 1024:.1f} KiB / {r.config_lines} lines"),
           ("haproxy -c", lambda r: f"{r.check_ms} ms"), ("start", lambda r: f"{r.start_ms} ms"),
           ("reload (median / max)", lambda r: f"{r.reload_ms} / {r.reload_max_ms} ms"),
           ("RSS master", lambda r: f"{r.rss_master_kib / 1024:.1f} MiB"),
           ("RSS worker", lambda r: f"{r.rss_worker_kib / 1024:.1f} MiB"),
           ("RSS worker after reloads",
            lambda r: f"{r.rss_worker_after_reloads_kib / 1024:.1f} MiB"),
           ("scrape /metrics (median)", lambda r: f"{r.scrape_ms} ms"),
           ("scrape size", lambda r: f"{r.scrape_bytes / 1024:.0f} KiB / "
                                     f"{r.scrape_samples} samples"),
           ("without servers", lambda r: f"{r.scrape_no_servers_bytes / 1024:.0f} KiB / "
                                         f"{r.scrape_no_servers_samples} samples")]


def table(results: list[Result]) -> str:
    lines = ["| " + " | ".join(name for name, _ in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(f(r)) for _, f in COLUMNS) + " |" for r in results]
    return "\n".join(lines)


def _size(text: str) -> tuple[int, int]:
    services, x, regions = text.strip().lower().partition("x")
    if not (x and services.isdigit() and regions.isdigit() and int(services) > 0
            and 0 < int(regions) <= len(REGIONS)):
        raise click.BadParameter(f"{text!r}: write SERVICESxREGIONS, e.g. 50x10 (at most "
                                 f"{len(REGIONS)} regions)", param_hint="--sizes")
    return int(services), int(regions)


@cli_command("georelay-tools scale", distribution="georelay-tools")
@click.option("--sizes", default="10x5,50x10,200x20", show_default=True,
              help="comma-separated SERVICESxREGIONS")
@click.option("--reloads", type=click.IntRange(min=0), default=5, show_default=True,
              help="reloads measured per size")
@click.option("--json", "as_json", is_flag=True, help="print JSON lines, not a table")
def command(sizes: str, reloads: int, as_json: bool) -> None:
    """How haproxy.cfg, haproxy -c, start, reload and memory grow with services and
    regions (docs/BENCHMARKS-scale.md)."""
    shapes = [_size(size) for size in sizes.split(",")]
    results = []
    for services, regions in shapes:
        result = measure(services, regions, reloads)
        results.append(result)
        if as_json:
            print(json.dumps(asdict(result)), flush=True)
    if not as_json:
        print(table(results))


if __name__ == "__main__":
    command(prog_name="python -m georelay_tools.scale")

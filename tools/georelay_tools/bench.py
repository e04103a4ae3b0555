"""`make bench`: georelay's generated HAProxy side by side with its alternatives, in one run.

Targets, all on loopback, all relaying `fast.example.com` to an SNI-strict nginx standing in
for the us-east-1 gateway (`us-east-1-fast.example.com`):

1. georelay: the config the role generates (real ansible-playbook run), one proxy;
2. nginx relay: the peer a user would pick (same job, same CPU: one worker);
3. seed: seed 001's configuration (`option httpclose`);
4. direct: wrk straight to the gateway (the limit).

wrk runs in a private mount namespace whose /etc/hosts points the public name at the target,
so SNI and Host are the real names without touching the machine's resolver.

Equal CPU: each relay runs one thread/worker. With ``--pin`` (the default where the machine
has at least 2 CPUs) every relay is bound to the last CPU and wrk and the gateway to the
others, so each relay has a whole core to itself and never competes with the load it is
measured under. Besides req/s and latency, the relay's own CPU time per request (user +
system of its process tree, read from /proc) is reported: what a request costs, independent
of how the scheduler shared the machine.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import yaml

from georelay_dns.cli_support import cli_command
from georelay_lab import certs, nginx_gateway, processes
from georelay_lab.checkout import checkout
from georelay_model import ip_ranges
from georelay_tools import bench_configs as cfg
from georelay_tools.bench_variants import compare, summary, variants_of
from georelay_tools.proc_stats import (
    established_to,
    tree_cpu_seconds,
    tree_pids,
    tree_rss_kib,
)
from georelay_tools.wrk import parse_wrk, wrk_requests

BIN = Path(sys.executable).parent
# Per-service keys of the edge rules a --variant may give (README "Edge rules").
EDGE_KEYS = ("deny_paths", "deny_status", "accept_classes", "accept_default", "edge_cache",
             "regional_redirects")


@dataclass
class Result:
    target: str
    body: str
    clients: str
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)  # relay CPU per request
    errors: int = 0

    @property
    def rps_median(self) -> float:
        return statistics.median(self.rps)

    def add(self, rps: float, p50: float, p99: float, errors: int, cpu: float) -> None:
        """One measurement (Bench.measure's tuple, in its order)."""
        self.rps.append(rps)
        self.p50_ms.append(p50)
        self.p99_ms.append(p99)
        self.cpu_us.append(cpu)
        self.errors += errors


class Bench:
    def __init__(self, work: Path, duration: int, connections: int, reps: int,
                 pin: bool = False,
                 gateway_keepalive_requests: int = nginx_gateway.KEEPALIVE_REQUESTS) -> None:
        self.work = work
        self.gateway_keepalive_requests = gateway_keepalive_requests
        self.duration = duration
        self.connections = connections
        self.headers: list[str] = []  # --variant-header: sent by wrk with every request
        self.reps = reps
        self.a = cfg.Addresses()
        self.certs = work / "certs"
        cpus = sorted(os.sched_getaffinity(0))
        # Pinned: relays on the last CPU, wrk and the gateway on the others.
        self.relay_cpus = {cpus[-1]} if pin and len(cpus) > 1 else set(cpus)
        self.load_cpus = set(cpus[:-1]) if pin and len(cpus) > 1 else set(cpus)

    # -- set-up -------------------------------------------------------------------------
    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        ca = certs.authority(self.certs)
        certs.ensure_server_pem(ca, self.certs / "public.pem", [cfg.PUBLIC])
        certs.ensure_server_pem(ca, self.certs / "gateway.pem", [cfg.DOMAIN])
        (self.work / "large.json").write_text('{"blob":"' + "y" * (cfg.LARGE_BYTES - 11) + '"}')
        self._nginx("gateway", cfg.nginx_gateway(self.work, self.a, self.certs / "gateway.pem",
                                                  self.gateway_keepalive_requests))
        self._nginx("nginx-relay", cfg.nginx_relay(self.work, self.a, self.certs / "public.pem",
                                                   self.certs / "lab-ca.pem"))
        seed = self.work / "seed.cfg"
        seed.write_text(cfg.seed_haproxy(self.work, self.a, self.certs / "public.pem",
                                         self.certs / "lab-ca.pem"))
        processes.stop(self.work / "seed.pid")
        subprocess.run(["/usr/sbin/haproxy", "-D", "-f", str(seed)], check=True)
        self._deploy_georelay()
        for ip, port in ((self.a.gateway, self.a.gateway_port), (self.a.relay, 443),
                         (self.a.nginx, 443), (self.a.seed, 443)):
            assert processes.wait_port(ip, port), f"nothing listens on {ip}:{port}"
        self.pin_all()

    def pid_files(self) -> dict[str, Path]:
        return {"georelay": self.work / "relay/run/haproxy.pid",
                "nginx relay": self.work / "nginx-relay.pid",
                "seed 001": self.work / "seed.pid",
                "direct": self.work / "gateway.pid"}

    def pid(self, target: str) -> int:
        return int(self.pid_files()[target].read_text().split()[0])

    def pin_all(self) -> None:
        """Bind every relay (and the processes it forks later: HAProxy's master forks the
        workers of each reload) to the relay CPU, the gateway to the load CPUs."""
        for target in self.pid_files():
            cpus = self.load_cpus if target == "direct" else self.relay_cpus
            for pid in tree_pids(self.pid(target)):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    os.sched_setaffinity(int(tid), cpus)

    def _nginx(self, name: str, conf: str) -> None:
        path = self.work / f"{name}.conf"
        path.write_text(conf)
        processes.stop(self.work / f"{name}.pid")
        subprocess.run(["/usr/sbin/nginx", "-c", str(path), "-t", "-q"], check=True)
        subprocess.run(["/usr/sbin/nginx", "-c", str(path)], check=True)

    def inventory(self, **tunables: object) -> Path:
        """One georelay proxy, shaped like inventories/demo, pointed at the nginx gateway.

        The service keys of the edge rules (EDGE_KEYS: ``--variant
        deny:deny_paths=['^/\\.git','\\.php$']``, ``cache:edge_cache={header: X-Cache}``, ...)
        go to the service; regional_redirects brings an AWS-sized ip-ranges.json. The
        service keys onebox_percent (and onebox_domain, default
        '{region}-onebox-fast.example.com') given as tunables give the service a one-box
        (``--variant onebox:onebox_percent=0`` against ``--variant plain:``). The bench's
        gateway serves only the regular domain, so the one-box backend is down: 0 measures
        what the split costs a regular user, wrk's cookie-less requests being its worst
        case (bucket hash, Set-Cookie and Vary on every response); above 0, the fallback."""
        service: dict[str, object] = {"hostname": cfg.PUBLIC,
                                      "apigw_domain": "{region}-fast.example.com",
                                      "health_path": "/ping"}
        for key in ("onebox_percent", "onebox_domain", *EDGE_KEYS):
            if key in tunables:
                service[key] = tunables.pop(key)
        if "onebox_percent" in service:
            service.setdefault("onebox_domain", "{region}-onebox-fast.example.com")
        if "regional_redirects" in service and "georelay_ip_ranges_file" not in tunables:
            ranges = self.work / "ip-ranges.json"  # AWS-sized: ~9,000 IPv4, ~4,400 IPv6
            if not ranges.exists():
                ranges.write_text(json.dumps(ip_ranges.realistic()))
            tunables["georelay_ip_ranges_file"] = str(ranges)
        inv = self.work / "inventory"
        (inv / "group_vars").mkdir(parents=True, exist_ok=True)
        hosts = {"all": {"children": {"us_east_1": {
            "vars": {"aws_region": "us-east-1",
                     "georelay_apigw_address": f"{self.a.gateway}:{self.a.gateway_port}"},
            "hosts": {"bench-relay": {"public_ip": self.a.relay}}}}}}
        (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
        (inv / "group_vars/all.yml").write_text(yaml.safe_dump({
            "georelay_zone": "example.com",
            "georelay_services": [service],
            "georelay_tls_pem": str(self.certs / "public.pem"),
            "georelay_backend_ca": str(self.certs / "lab-ca.pem"),
            "ansible_connection": "local", "ansible_become": False,
            "ansible_python_interpreter": "{{ ansible_playbook_python }}",
            "georelay_service_manager": "process",
            "georelay_root": str(self.work / "relay"),
            "haproxy_bind_address": self.a.relay,
            "georelay_agent_bind_address": self.a.relay,
            "georelay_metrics_listen": f"{self.a.management}:8404",
            # The agent's end-to-end probe through the relay trusts the lab CA, as in the
            # lab fleets (one request per observation: nothing beside the load).
            "georelay_agent_probe_ca_file": str(self.certs / "lab-ca.pem"),
            "haproxy_nbthread": 1,  # equal CPU with the nginx relay's single worker
            **tunables,
        }))
        return inv

    def _deploy_georelay(self, **tunables: object) -> None:
        repo = checkout()
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.inventory(**tunables)),
             "playbooks/proxies.yml"], cwd=repo, capture_output=True, text=True, check=False,
            env={**os.environ, "ANSIBLE_CONFIG": str(repo / "ansible.cfg")})
        if proc.returncode != 0:
            raise SystemExit(f"deploying the georelay relay failed:\n{proc.stdout[-4000:]}")

    def stop(self) -> None:
        for pid in sorted(self.work.glob("**/*.pid")):
            processes.stop(pid)

    # -- measuring ----------------------------------------------------------------------
    def wrk(self, ip: str, host: str, path: str, close: bool) -> str:
        hosts = self.work / f"hosts-{ip}"
        hosts.write_text(f"127.0.0.1 localhost\n{ip} {host}\n")
        port = self.a.gateway_port if host == cfg.DOMAIN else 443
        args = ["wrk", "-t1", f"-c{self.connections}", f"-d{self.duration}s", "--latency",
                *(["-H", "Connection: close"] if close else []),
                *[a for h in self.headers for a in ("-H", h)], f"https://{host}:{port}{path}"]
        script = f'mount --bind {hosts} /etc/hosts && exec "$@"'
        cpus = ",".join(str(c) for c in sorted(self.load_cpus))
        proc = subprocess.run(["taskset", "-c", cpus, "unshare", "-m", "sh", "-c", script,
                               "wrk", *args],
                              capture_output=True, text=True, timeout=self.duration + 60,
                              check=True)
        return proc.stdout

    def measure(self, target: str, ip: str, host: str, path: str,
                close: bool) -> tuple[float, float, float, int, float]:
        """wrk against one target: req/s, p50, p99, errors, and the CPU microseconds the
        target's process tree spent per request (for direct: the gateway's)."""
        pid = self.pid(target)
        before = tree_cpu_seconds(pid)
        out = self.wrk(ip, host, path, close)
        spent = tree_cpu_seconds(pid) - before
        rps, p50, p99, errors = parse_wrk(out)
        return rps, p50, p99, errors, spent * 1e6 / max(1, wrk_requests(out))

    def targets(self) -> list[tuple[str, str, str]]:
        return [("georelay", self.a.relay, cfg.PUBLIC), ("nginx relay", self.a.nginx, cfg.PUBLIC),
                ("seed 001", self.a.seed, cfg.PUBLIC), ("direct", self.a.gateway, cfg.DOMAIN)]

    def run(self) -> list[Result]:
        results = []
        for clients, close in (("keep-alive", False), ("new conn/request", True)):
            for body, path in (("small", "/small"), ("64 KiB", "/large")):
                row = {name: Result(name, body, clients) for name, _, _ in self.targets()}
                for _ in range(self.reps):  # interleaved: drift hits every target alike
                    for name, ip, host in self.targets():
                        rps, p50, p99, errors, cpu = self.measure(name, ip, host, path, close)
                        row[name].add(rps, p50, p99, errors, cpu)
                        print(f"  {clients:17} {body:7} {name:12} {rps:9.0f} req/s "
                              f"p50 {p50:6.2f} ms p99 {p99:6.2f} ms cpu {cpu:6.1f} us/req "
                              f"errors {errors}", flush=True)
                results.extend(row.values())
        return results

    def idle_memory(self, count: int, **tunables: object) -> dict[str, float]:
        """KiB per idle TLS client connection for both relays: the RSS their process trees
        gained with `count` handshaken, idle client connections open, divided by the
        connections the kernel shows established to the relay at that moment.

        georelay's product timeouts close a connection that sends nothing within
        `timeout http-request` (10 s): opening 8,000 takes longer, so the earliest would be
        gone when RSS is read (and HAProxy's pools keep the memory they had). For this
        measurement alone georelay is redeployed with client timeouts of 300 s (timeouts
        allocate nothing per connection); nginx's defaults (60 s) hold the connections as
        they are. The relay is redeployed with the bench's tunables afterwards."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 1000), hard))
        self._deploy_georelay(**{**tunables, **IDLE_TIMEOUTS})
        self.pin_all()
        out = {}
        ctx = ssl.create_default_context(cafile=str(self.certs / "lab-ca.pem"))
        try:
            for name, ip in (("georelay", self.a.relay), ("nginx relay", self.a.nginx)):
                pid = self.pid(name)
                before = tree_rss_kib(pid)
                conns = []
                for _ in range(count):
                    raw = socket.create_connection((ip, 443), timeout=10)
                    conns.append(ctx.wrap_socket(raw, server_hostname=cfg.PUBLIC))
                time.sleep(1)
                after = tree_rss_kib(pid)
                open_now = established_to(ip, 443)
                for c in conns:
                    c.close()
                if open_now < count * 0.99:
                    raise SystemExit(f"idle memory: only {open_now} of {count} client "
                                     f"connections to {name} were still open")
                out[name] = (after - before) / open_now
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            self._deploy_georelay()
            self.pin_all()
        return out


# Client-side timeouts for the idle-memory measurement only (Bench.idle_memory).
IDLE_TIMEOUTS = {"haproxy_timeout_http_request": "300s", "haproxy_timeout_client": "300s",
                 "haproxy_timeout_http_keep_alive": "300s"}


def spread(values: list[float]) -> str:
    return f"{min(values):.0f}-{max(values):.0f}"


def markdown(results: list[Result], memory: dict[str, float], idle: int, duration: int,
             connections: int, reps: int, pinned: bool) -> str:
    by = {(r.target, r.body, r.clients): r for r in results}
    placement = ("each relay pinned to a CPU of its own, wrk and the gateway on the other(s)"
                 if pinned else "not pinned: relays, wrk and the gateway share every CPU")
    lines = [f"wrk -t1 -c{connections} -d{duration}s, {reps} interleaved repetitions per cell "
             "(median, min-max); relays with one thread/worker each; gateway: nginx, 1 worker; "
             f"{placement}. CPU: the target's own user+system time per request (for direct: "
             "the gateway's).",
             "",
             "| clients | body | target | req/s (median) | spread | p50 ms | p99 ms "
             "| CPU us/req | errors | vs nginx | vs seed | vs direct |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        nginx = by[("nginx relay", r.body, r.clients)].rps_median
        seed = by[("seed 001", r.body, r.clients)].rps_median
        direct = by[("direct", r.body, r.clients)].rps_median
        lines.append(f"| {r.clients} | {r.body} | {r.target} | {r.rps_median:.0f} | "
                     f"{spread(r.rps)} | {statistics.median(r.p50_ms):.2f} | "
                     f"{statistics.median(r.p99_ms):.2f} | "
                     f"{statistics.median(r.cpu_us):.1f} | {r.errors} | "
                     f"{r.rps_median / nginx:.2f}x | {r.rps_median / seed:.1f}x | "
                     f"{r.rps_median / direct:.2f}x |")
    lines += ["", f"Memory per 10k idle TLS client connections (measured with {idle}, scaled): "
              + ", ".join(f"{k} {v * 10000 / 1024:.0f} MiB" for k, v in memory.items()), ""]
    return "\n".join(lines)


@cli_command("georelay-tools bench", distribution="georelay-tools")
@click.option("--duration", type=click.IntRange(min=1), default=5, show_default=True,
              help="seconds of each wrk run")
@click.option("--connections", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--reps", type=click.IntRange(min=1), default=3, show_default=True,
              help="runs of each target (the median is reported)")
@click.option("--idle", type=click.IntRange(min=1), default=8000, show_default=True,
              help="idle TLS client connections for the memory measurement")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "georelay-bench", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also write raw results here")
@click.option("--variant", "variant_specs", multiple=True, metavar="NAME:VAR=VALUE,...",
              help="compare role tunables instead (repeat; 'default:' for none; "
                   "onebox_percent=N gives the service a one-box)")
@click.option("--variant-path", default="/small", show_default=True,
              type=click.Choice(["/small", "/large", "/dl/small.iso"]),
              help="path for --variant runs (/dl/small.iso: /small's answer under a name "
                   "regional_redirects may list)")
@click.option("--variant-header", "variant_headers", multiple=True, metavar="'NAME: VALUE'",
              help="--variant runs send this header with every request (repeat), e.g. "
                   "'Cookie: georelay_partition=50' for a returning one-box user")
@click.option("--instructions", type=click.IntRange(min=0), default=0, show_default=True,
              help="--variant runs: also count callgrind's instructions per request over "
                   "this many requests, once per variant (0: no count)")
@click.option("--variant-new-conn", is_flag=True,
              help="--variant runs with a new connection per request")
@click.option("--gateway-keepalive-requests", type=click.IntRange(min=1),
              default=nginx_gateway.KEEPALIVE_REQUESTS, show_default=True,
              help="the gateway closes a connection after this many requests")
@click.option("--memory-only", is_flag=True,
              help="only the idle-connection memory measurement (with --variant: per variant)")
@click.option("--pin/--no-pin", default=len(os.sched_getaffinity(0)) > 1,
              help="relays on a CPU of their own, wrk and the gateway on the others "
                   "(default where there are 2 CPUs or more)")
def command(duration: int, connections: int, reps: int, idle: int, work: Path,
            json_path: Path | None, variant_specs: tuple[str, ...], variant_path: str,
            variant_headers: tuple[str, ...], instructions: int, variant_new_conn: bool,
            gateway_keepalive_requests: int, memory_only: bool, pin: bool) -> None:
    """georelay's generated HAProxy side by side with an nginx relay, the seed config and
    direct (make bench); root, on a quiet machine."""
    variants = variants_of(variant_specs)
    bench = Bench(work, duration, connections, reps, pin=pin,
                  gateway_keepalive_requests=gateway_keepalive_requests)
    if memory_only:
        try:
            bench.prepare()
            for name, tunables in (variants or {"default": {}}).items():
                memory = bench.idle_memory(idle, **tunables)
                print(f"{name}: per 10k idle TLS client connections (measured with {idle}): "
                      + ", ".join(f"{k} {v * 10000 / 1024:.0f} MiB" for k, v in memory.items()),
                      flush=True)
        finally:
            bench.stop()
        return
    for h in variant_headers:
        if ":" not in h or not h.split(":", 1)[0].strip():
            raise click.BadParameter(f"{h!r}: write 'NAME: VALUE', e.g. "
                                     "'Cookie: georelay_partition=50'",
                                     param_hint="--variant-header")
    if variants:
        bench.headers = list(variant_headers)
        try:
            bench.prepare()
            ratios, counts = compare(bench, variants, reps, variant_path, variant_new_conn,
                                     instructions)
        finally:
            bench.stop()
        print("\n".join(summary(ratios, counts)))
        return
    try:
        print("setting up gateway, georelay relay (ansible-playbook), nginx relay, seed ...")
        bench.prepare()
        results = bench.run()
        memory = bench.idle_memory(idle)
    finally:
        bench.stop()
    print(markdown(results, memory, idle, duration, connections, reps, pin))
    if json_path:
        json_path.write_text(json.dumps([r.__dict__ for r in results], indent=1))


if __name__ == "__main__":
    command(prog_name="python -m georelay_tools.bench")

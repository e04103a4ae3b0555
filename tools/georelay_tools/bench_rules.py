"""`make bench-rules`: what each rule of georelay's generated haproxy.cfg costs per request.

The config the role renders (make bench's set-up, on 127.0.21.x and a work directory of its
own) runs as it is and with single features switched off, each variant its own HAProxy
process on its own address, in one run with a minimal HAProxy relay and the nginx relay: req/s
and CPU per request under wrk (interleaved rounds, medians), and the instructions per request
callgrind counts over a fixed number of requests (no hardware counters needed; a count does
not depend on what else runs). A variant is a named edit of the rendered text; every edit
must match, so a template that moved raises RuleError instead of measuring the unchanged
config under a feature's name.
"""

from __future__ import annotations

import json
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from georelay_dns.cli_support import cli_command
from georelay_lab import processes
from georelay_tools import bench_configs as cfg
from georelay_tools.bench import Bench, Result
from georelay_tools.bench_configs import Edit, RuleError, runnable
from georelay_tools.callgrind import HAPROXY, Count, count_instructions

ADDRESSES = cfg.Addresses(relay="127.0.21.1", nginx="127.0.21.2", seed="127.0.21.3",
                          gateway="127.0.21.10")
VARIANT_NET, FIRST_VARIANT = "127.0.21.", 30
ROUTING_KEY = "req.hdr(host),field(1,:),lower"  # what the template stores in txn.public_host
MINIMAL = "minimal-haproxy"
NGINX = "nginx relay"
TIMEOUTS = ("connect", "client", "server", "http-request", "http-keep-alive")


def drop(what: str, line_start: str) -> Edit:
    """Delete every line that starts (after its indentation) with line_start."""
    return Edit(what, rf"^[ \t]*{re.escape(line_start)}.*\n?")


def server_option(option: str, value: bool, required: bool = True) -> Edit:
    """Remove a server-line option (and its value) from every server line."""
    arg = r"[ \t]+\S+" if value else ""
    return Edit(f"server option {option}",
                rf"^([ \t]*server [^\n]*?)[ \t]+{re.escape(option)}{arg}(?=[ \t]|$)", r"\1",
                required)


@dataclass(frozen=True)
class Variant:
    name: str
    about: str
    edits: tuple[Edit, ...] = ()
    optional: bool = False  # its lines exist in some configs only (backups: several regions)

    def applies(self, text: str) -> bool:
        return not self.optional or any(re.search(e.pattern, text, re.M) for e in self.edits)

    def apply(self, text: str) -> str:
        out = text
        for edit in self.edits:
            out = edit.apply(out)
        if self.edits and out == text:
            raise RuleError(f"{self.name}: changes nothing")
        return out


L7 = (Edit("retry-on: connection failures only",
           r"^([ \t]*retry-on )(?!conn-failure[ \t]*$)\S.*$", r"\1conn-failure"),)
H2 = (Edit("HTTP/2 to the gateway (checks stay HTTP/1.1)",
           r"^([ \t]*server [^\n]*?)[ \t]+alpn http/1\.1(?=[ \t]|$)", r"\1 alpn h2,http/1.1"),)
VARIANTS = (
    Variant("generated", "the config as the role renders it"),
    Variant("no-l7-retries", "retry-on conn-failure (no L7 retries)", L7),
    Variant("no-forwarding-headers", "no X-Forwarded-* deletion, additions, option forwardfor",
            (drop("X-Forwarded-* deletion", "http-request del-header X-Forwarded-"),
             drop("X-Forwarded-Host", "http-request add-header X-Forwarded-Host "),
             drop("X-Forwarded-Proto", "http-request add-header X-Forwarded-Proto "),
             Edit("option forwardfor", r"^[ \t]*option forwardfor\b.*\n?"))),
    Variant("no-routing-variable", f"no set-var: use_backend on {ROUTING_KEY} itself",
            (drop("the routing variable", f"http-request set-var(txn.public_host) {ROUTING_KEY}"),
             Edit("use_backend on the variable",
                  r"^([ \t]*use_backend \S+ if \{ )var\(txn\.public_host\)",
                  rf"\g<1>{ROUTING_KEY}"))),
    Variant("no-hsts", "no Strict-Transport-Security response header",
            (drop("HSTS", "http-response set-header Strict-Transport-Security "),)),
    Variant("no-agent-route", "no /healthz route to the health agent",
            (drop("the agent's route", "use_backend georelay_agent "),)),
    Variant("no-health-checks", "no HTTP checks of the gateway, no check server options",
            (drop("option httpchk", "option httpchk"), drop("http-check", "http-check "),
             server_option("check", False), server_option("check-sni", True),
             server_option("check-alpn", True), server_option("observe", True, False),
             server_option("error-limit", True, False), server_option("on-error", True, False))),
    Variant("no-name-header", "no http-send-name-header Host, no set-uri (backups only)",
            (drop("http-send-name-header", "http-send-name-header "),
             drop("set-uri", "http-request set-uri %[pathq] ")), optional=True),
    Variant("h2-backend", "alpn h2,http/1.1 to the gateway", H2),
    Variant("h2-backend-no-l7-retries", "h2-backend and no-l7-retries", H2 + L7),
)
BY_NAME = {v.name: v for v in VARIANTS}
ALL_NAMES = (*BY_NAME, MINIMAL)
ABOUT = {**{v.name: v.about for v in VARIANTS}, MINIMAL: "TLS in, Host set, verified TLS out "
         "(sni, verifyhost), http-reuse always, nbthread 1, georelay's timeouts"}


def timeouts_of(text: str) -> dict[str, str]:
    return dict(re.findall(rf"^[ \t]*timeout ({'|'.join(TIMEOUTS)})[ \t]+(\S+)", text, re.M))


# -- the bench ----------------------------------------------------------------------------
class RulesBench(Bench):
    """make bench's set-up (gateway, nginx relay, georelay by the role) on addresses of its
    own, plus one HAProxy process per variant."""

    def __init__(self, work: Path, duration: int, connections: int, reps: int, pin: bool,
                 names: tuple[str, ...]) -> None:
        super().__init__(work, duration, connections, reps, pin=pin)
        self.a = ADDRESSES
        self.names = names
        self.address = {n: f"{VARIANT_NET}{FIRST_VARIANT + i}" for i, n in enumerate(names)}
        self.started: list[str] = []
        self.skipped: dict[str, str] = {}

    def pid_files(self) -> dict[str, Path]:
        return {**super().pid_files(), **{n: self.run_dir(n) / "haproxy.pid" for n in self.started}}

    def run_dir(self, name: str) -> Path:
        return self.work / "rules" / name

    def rendered(self) -> str:
        return (self.work / "relay/etc/haproxy/haproxy.cfg").read_text()

    def config(self, name: str, callgrind: bool = False) -> Path:
        """The variant's runnable config, written below its run dir and checked (haproxy -c)."""
        run_dir = self.run_dir(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        rendered = self.rendered()
        text = (cfg.minimal_haproxy(self.address[name], self.certs / "public.pem",
                                    self.certs / "lab-ca.pem",
                                    f"{self.a.gateway}:{self.a.gateway_port}",
                                    timeouts_of(rendered)) if name == MINIMAL
                else runnable(BY_NAME[name].apply(rendered), self.a.relay, self.address[name],
                              run_dir, callgrind))
        path = run_dir / ("callgrind.cfg" if callgrind else "haproxy.cfg")
        path.write_text(text)
        subprocess.run([HAPROXY, "-c", "-q", "-f", str(path)], check=True)
        return path

    def start_variants(self) -> None:
        rendered = self.rendered()
        for name in self.names:
            if name in BY_NAME and not BY_NAME[name].applies(rendered):
                self.skipped[name] = "its lines are not in this config"
                continue
            pid_file = self.run_dir(name) / "haproxy.pid"
            processes.stop(pid_file)
            subprocess.run([HAPROXY, "-D", "-q", "-f", str(self.config(name)), "-p", str(pid_file)],
                           check=True)
            assert processes.wait_port(self.address[name], 443), f"{name} does not listen"
            self.started.append(name)
        self.pin_all()

    def stop_variants(self) -> None:
        for name in self.started:
            processes.stop(self.run_dir(name) / "haproxy.pid")

    def measure_all(self, path: str, close: bool) -> dict[str, Result]:
        targets = [*self.started, NGINX]
        clients = "new conn/request" if close else "keep-alive"
        results = {n: Result(n, path, clients) for n in targets}
        for _ in range(self.reps):  # interleaved: drift hits every variant alike
            for name in targets:
                ip = self.a.nginx if name == NGINX else self.address[name]
                rps, p50, p99, errors, cpu = self.measure(name, ip, cfg.PUBLIC, path, close)
                results[name].add(rps, p50, p99, errors, cpu)
                print(f"  {name:26} {rps:9.0f} req/s p99 {p99:6.2f} ms cpu {cpu:6.1f} us/req "
                      f"errors {errors}", flush=True)
        return results

    def count_all(self, requests: int, connections: int, warmup: int, path: str,
                  close: bool) -> dict[str, Count]:
        counts = {}
        for name in self.started:
            c = counts[name] = count_instructions(
                self.config(name, callgrind=True), self.address[name], 443,
                self.certs / "lab-ca.pem", self.run_dir(name), requests=requests,
                connections=connections, warmup=warmup, path=path, close=close,
                cpus=self.relay_cpus, top=10)
            print(f"  {name:26} {c.per_request:10.0f} instructions/request "
                  f"statuses {c.statuses}", flush=True)
        return counts


# -- report -------------------------------------------------------------------------------
def _delta(value: float, base: float, fmt: str) -> str:
    return f"{value - base:+{fmt}} ({(value - base) / base:+.1%})" if base else "-"


def markdown(command: str, settings: str, results: dict[str, Result],
             counts: dict[str, Count], skipped: dict[str, str]) -> str:
    nginx = results[NGINX].rps_median
    base_cpu = statistics.median(results["generated"].cpu_us) if "generated" in results else 0
    base = counts.get("generated")
    base_ir = base.per_request if base and base.ok else 0.0
    lines = [command, "", settings, "",
             "| variant | req/s | CPU µs/req | Δ CPU vs generated | instructions/req "
             "| Δ instructions vs generated | p99 ms | errors | vs nginx |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        cpu = statistics.median(r.cpu_us)
        c = counts.get(name)
        ir = ("-" if c is None else f"{c.per_request:,.0f}" if c.ok
              else f"invalid: statuses {c.statuses}")
        d_ir = _delta(c.per_request, base_ir, ",.0f") if c and c.ok and name != "generated" else "-"
        d_cpu = _delta(cpu, base_cpu, ".1f") if name not in ("generated", NGINX) else "-"
        lines.append(f"| {name} | {r.rps_median:.0f} | {cpu:.1f} | {d_cpu} | {ir} | {d_ir} | "
                     f"{statistics.median(r.p99_ms):.2f} | {r.errors} | "
                     f"{r.rps_median / nginx:.2f}x |")
    lines += ["", "Variants:", *(f"- {n}: {ABOUT[n]}" for n in results if n in ABOUT),
              *(f"- {n}: not measured, {why}" for n, why in skipped.items())]
    valid = {n: c for n, c in counts.items() if c.ok and c.top}
    fastest = min(valid, key=lambda n: valid[n].per_request, default="generated")
    for name in dict.fromkeys(n for n in ("generated", fastest) if n in valid):
        c = valid[name]
        lines += ["", f"Top {len(c.top)} functions by self instructions, {name} "
                  f"({c.instructions:,} over {c.requests} requests):"]
        lines += [f"- {ir / c.requests:,.0f}/req {fn}" for fn, ir in c.top]
    return "\n".join(lines) + "\n"


@cli_command("georelay-tools bench-rules", distribution="georelay-tools")
@click.option("--duration", type=click.IntRange(min=1), default=5, show_default=True,
              help="seconds of each wrk run")
@click.option("--connections", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--reps", type=click.IntRange(min=1), default=3, show_default=True,
              help="interleaved rounds over every variant and nginx (medians are reported)")
@click.option("--path", "url_path", type=click.Choice(["/small", "/large"]), default="/small",
              show_default=True, help="the body requested")
@click.option("--new-conn", is_flag=True, help="a new connection per request")
@click.option("--variant", "names", multiple=True, type=click.Choice(ALL_NAMES),
              help="measure only these (repeat) [default: all]")
@click.option("--callgrind/--no-callgrind", default=True, show_default=True,
              help="also count instructions per request under valgrind's callgrind")
@click.option("--requests", type=click.IntRange(min=1), default=2000, show_default=True,
              help="requests counted under callgrind")
@click.option("--callgrind-connections", type=click.IntRange(min=1), default=10,
              show_default=True, help="connections the callgrind client sends them over")
@click.option("--warmup", type=click.IntRange(min=0), default=200, show_default=True,
              help="requests before callgrind's counters are zeroed")
@click.option("--work", type=click.Path(file_okay=False, path_type=Path),
              default=Path(tempfile.gettempdir()) / "georelay-bench-rules", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="also write raw results here")
@click.option("--pin/--no-pin", default=True, show_default=True,
              help="relays on the last CPU, wrk and the gateway on the others (2+ CPUs)")
def command(duration: int, connections: int, reps: int, url_path: str, new_conn: bool,
            names: tuple[str, ...], callgrind: bool, requests: int, callgrind_connections: int,
            warmup: int, work: Path, json_path: Path | None, pin: bool) -> None:
    """georelay's generated HAProxy config with single rules switched off, a minimal HAProxy
    relay and the nginx relay, side by side: req/s, CPU and instructions per request
    (make bench-rules); root, on a quiet machine."""
    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    line = f"{Path(sys.argv[0]).name} {argv}".strip()
    bench = RulesBench(work, duration, connections, reps, pin, names or ALL_NAMES)
    counts: dict[str, Count] = {}
    try:
        print("setting up gateway, georelay relay (ansible-playbook), nginx relay ...")
        bench.prepare()
        bench.start_variants()
        results = bench.measure_all(url_path, new_conn)
        bench.stop_variants()
        if callgrind:
            print(f"callgrind: {requests} requests over {callgrind_connections} connections "
                  "per variant ...", flush=True)
            counts = bench.count_all(requests, callgrind_connections, warmup, url_path, new_conn)
    finally:
        bench.stop()
    clients = "a new connection per request" if new_conn else "kept-alive connections"
    settings = (f"wrk -t1 -c{connections} -d{duration}s {url_path}, {clients}, {reps} "
                "interleaved rounds (medians); each variant its own HAProxy process, nbthread 1"
                + (", on the relay CPU, wrk and the gateway on the other(s)" if pin else "")
                + ". CPU: the relay's user+system time per request (/proc).")
    if callgrind:
        settings += (f" Instructions: callgrind's Ir over {requests} requests ({clients}, "
                     f"{callgrind_connections} client threads) after {warmup} warm-up "
                     "requests, every answer checked 200; under callgrind the gateway checks "
                     "run at start only (inter 1h); HAProxy timeouts unchanged.")
    print(markdown(line, settings, results, counts, bench.skipped))
    if json_path:
        json_path.write_text(json.dumps({
            "command": line, "results": {n: asdict(r) for n, r in results.items()},
            "callgrind": {n: {**asdict(c), "per_request": c.per_request}
                          for n, c in counts.items()},
            "skipped": bench.skipped}, indent=1))


if __name__ == "__main__":
    command(prog_name="python -m georelay_tools.bench_rules")

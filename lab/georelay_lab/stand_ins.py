"""The lab of one inventory: its certificates, its stand-in gateways, requests through it.

A region's stand-in gateway is of one of two kinds: ``python`` (gateway.py, HTTP/1.1, with
fault knobs) or ``nginx`` (nginx_gateway.py, ALPN ``h2,http/1.1``). Both keep the same pid
file and log, so starting and stopping one does not depend on its kind; the kind a region's
gateway was last started with is kept beside its pid file and used again when none is
asked for.

A gateway serves its region's custom domain of every service and, for a service with a
one-box (canary) domain there, that one too (:meth:`StandIns.domains`), each under the same
strict Host/SNI rule; its certificate carries them all, and is issued again (and the gateway
restarted by ``up``) when the set of names changes.

Faults are switched at runtime, per domain, without restarting a gateway
(:meth:`StandIns.set_fault`, :meth:`StandIns.clear_fault`, ``georelay-lab gateway-fault``):
``<lab dir>/gateways/faults.json``, which the Python gateways re-read when it changes
(gateway.py says how the share is counted). The nginx gateways have no fault injection; a
fault for a domain of one is refused.
"""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from georelay_lab import certs, client, gateway, nginx_gateway, processes
from georelay_model import Fleet, InventoryError, Region, fleet_from_hostvars, load_inventory
from georelay_model.fleet import Service

GATEWAY_KINDS = ("python", nginx_gateway.KIND)


class FaultError(ValueError):
    """A fault that cannot be set; ``field`` names the argument (domain, status, share)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass
class StandIns:
    fleet: Fleet
    lab_dir: Path
    gateway_kind: str | None = None  # None: as the region's gateway last ran, else python
    # nginx gateways only: requests per connection before the gateway closes it, and
    # seconds a connection may stay idle before the gateway closes it
    gateway_keepalive_requests: int = nginx_gateway.KEEPALIVE_REQUESTS
    gateway_keepalive_timeout: float = nginx_gateway.KEEPALIVE_TIMEOUT_S
    inventory: str | None = None  # where the fleet was read from, for the commands it prints

    def __post_init__(self) -> None:
        if self.gateway_kind is not None and self.gateway_kind not in GATEWAY_KINDS:
            raise SystemExit(f"georelay-lab: gateway kind {self.gateway_kind!r} is not one of "
                             f"{', '.join(GATEWAY_KINDS)}")

    @classmethod
    def from_inventory(cls, inventory: str, lab_dir: Path,
                       gateway_kind: str | None = None,
                       gateway_keepalive_requests: int = nginx_gateway.KEEPALIVE_REQUESTS,
                       gateway_keepalive_timeout: float = nginx_gateway.KEEPALIVE_TIMEOUT_S
                       ) -> StandIns:
        try:
            fleet = fleet_from_hostvars(load_inventory(inventory))
        except InventoryError as exc:
            raise SystemExit(f"georelay-lab: {exc}") from exc
        return cls(fleet, lab_dir.resolve(), gateway_kind, gateway_keepalive_requests,
                   gateway_keepalive_timeout, inventory)

    @property
    def certs_dir(self) -> Path:
        return self.lab_dir / "certs"

    @property
    def ca_file(self) -> Path:
        return self.certs_dir / "lab-ca.pem"

    def gateway_pem(self, region: str) -> Path:
        return self.certs_dir / f"gateway-{region}.pem"

    def gateway_files(self, region: str) -> tuple[Path, Path]:
        run = self.lab_dir / "gateways"
        return run / f"{region}.pid", run / f"{region}.log"

    @property
    def faults_file(self) -> Path:
        return self.lab_dir / "gateways" / gateway.FAULTS_FILE

    def gateway_kind_of(self, region: str) -> str:
        """The kind of stand-in to start for region: the lab's, else the last one, else python."""
        if self.gateway_kind is not None:
            return self.gateway_kind
        recorded = self.gateway_files(region)[0].with_suffix(".kind")
        kind = recorded.read_text().strip() if recorded.exists() else ""
        return kind if kind in GATEWAY_KINDS else "python"

    def onebox_domain(self, service: Service, region: str) -> str | None:
        """The service's one-box domain in region, None where it has none (the fleet's
        per-region switch applied)."""
        return self.fleet.onebox_domain(service, region)

    def domains(self, region: str) -> list[str]:
        """The custom domains region's gateway serves: every service's regular domain,
        then the one-box domains of the services that have one there."""
        regular = [s.apigw_domain(region) for s in self.fleet.services]
        onebox = [d for s in self.fleet.services if (d := self.onebox_domain(s, region))]
        return list(dict.fromkeys(regular + onebox))

    def ensure_certs(self) -> tuple[list[str], set[str]]:
        """The lab CA and every certificate, issued where missing, stale or made before the
        lab's certificates carried what strict validators require: what was done, and the
        regions whose gateway certificate is new."""
        ca = certs.authority(self.certs_dir)
        done, regions = [], set()
        public = self.certs_dir / "public.pem"
        if certs.ensure_server_pem(ca, public, [s.hostname for s in self.fleet.services]):
            done.append(f"issued {public}")
        for region in self.fleet.regions:
            pem = self.gateway_pem(region.name)
            if certs.ensure_server_pem(ca, pem, self.domains(region.name)):
                done.append(f"issued {pem}")
                regions.add(region.name)
        return done, regions

    def start_gateway(self, region: Region) -> str:
        if region.apigw_address is None or not region.apigw_address.is_ip:
            raise SystemExit(f"georelay-lab: region {region.name} needs georelay_apigw_address "
                             "ip:port for its stand-in gateway")
        pid_file, log_file = self.gateway_files(region.name)
        if processes.running(pid_file):
            return f"gateway {region.name} already running (pid file {pid_file})"
        address = region.apigw_address
        kind = self.gateway_kind_of(region.name)
        if kind == nginx_gateway.KIND:
            pid = nginx_gateway.start(
                run_dir=pid_file.with_name(f"{region.name}-nginx"), listen=address.haproxy,
                region=region.name, domains=self.domains(region.name),
                pem=self.gateway_pem(region.name), pid_file=pid_file, log_file=log_file,
                keepalive_requests=self.gateway_keepalive_requests,
                keepalive_timeout=self.gateway_keepalive_timeout)
        else:
            cmd = [sys.executable, "-m", "georelay_lab", "gateway", "--region", region.name,
                   "--listen", address.haproxy, "--cert", str(self.gateway_pem(region.name)),
                   "--faults", str(self.faults_file)]
            for domain in self.domains(region.name):
                cmd += ["--domain", domain]
            pid = processes.start(cmd, pid_file, log_file)
        pid_file.with_suffix(".kind").write_text(f"{kind}\n")
        if not processes.wait_port(address.host, address.port):
            raise SystemExit(f"georelay-lab: gateway {region.name} did not start; see {log_file}")
        return f"gateway {region.name} ({kind}) on {address.haproxy} (pid {pid}) serves " + \
            ", ".join(self.domains(region.name))

    def stop_gateway(self, region: str) -> bool:
        return processes.stop(self.gateway_files(region)[0])

    # ---- faults: a status for a share of the requests to one domain, switched at runtime

    def region_of_domain(self, domain: str) -> str:
        """The region whose gateway serves domain; FaultError naming the domains there are."""
        for region in self.fleet.regions:
            if domain.lower() in (d.lower() for d in self.domains(region.name)):
                return region.name
        known = ", ".join(d for r in self.fleet.regions for d in self.domains(r.name))
        raise FaultError("domain", f"no stand-in gateway of this lab serves {domain!r}: "
                                   f"give one of {known}")

    def faults(self) -> dict[str, gateway.Fault]:
        """The faults set now, by domain."""
        try:
            return gateway.read_faults(self.faults_file)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SystemExit(f"georelay-lab: {self.faults_file} is not a fault file ({exc}); "
                             f"remove it to clear every fault") from exc

    def set_fault(self, domain: str, status: int, share: float = 1.0, *,
                  health_checks: bool = False) -> list[str]:
        """Answer status to share (0.0-1.0) of the requests to domain, from its next request
        on, until cleared; setting it again restarts the count. What was done, and how to undo
        it. FaultError (nothing written) when the domain, status or share is wrong."""
        region = self.region_of_domain(domain)
        if self.gateway_kind_of(region) != "python":
            raise FaultError("domain", f"{domain} is served by region {region}'s "
                             f"{self.gateway_kind_of(region)} gateway, which has no fault "
                             "injection: start it as the python one (georelay-lab down, then "
                             "up --gateway python)")
        if not 0.0 <= share <= 1.0:
            raise FaultError("share", f"share {share:g} is outside 0.0-1.0: give the share of "
                                      "requests, e.g. 0.3 for 30%")
        try:
            fault = gateway.Fault(status, Fraction(str(float(share))), health_checks,
                                  dt.datetime.now(dt.UTC).isoformat())
        except ValueError as exc:
            raise FaultError("status", str(exc)) from exc
        faults = self.faults()
        faults[domain.lower()] = fault
        gateway.write_faults(self.faults_file, faults)
        spared = "health checks (/ping) included" if health_checks else "/ping spared"
        lines = [f"fault set: {domain} (gateway {region}) answers {status} to {share * 100:g}% of "
                 f"its requests from the next one on ({spared}); undo: {self._command()} "
                 f"--domain {domain} --clear"]
        return lines + self._started_without_faults(region)

    def clear_fault(self, domain: str | None = None) -> list[str]:
        """Remove the fault of domain (None: every fault). What was done."""
        faults = self.faults()
        if domain is not None and domain.lower() not in faults:
            self.region_of_domain(domain)  # a domain of the lab, or FaultError
        gone = {d: f for d, f in faults.items() if domain is None or d == domain.lower()}
        if not gone:
            return [f"no fault was set{f' for {domain}' if domain else ''}"]
        gateway.write_faults(self.faults_file, {d: f for d, f in faults.items() if d not in gone})
        return [f"fault cleared: {d} answers normally again (it answered {f.status} to "
                f"{float(f.share) * 100:g}%); set it again: {self._command()} --domain {d} "
                f"--status {f.status} --share {float(f.share):g}"
                f"{' --health-checks' if f.health_checks else ''}"
                for d, f in sorted(gone.items())]

    def _command(self) -> str:
        inventory = f" -i {shlex.quote(self.inventory)}" if self.inventory else ""
        return f"georelay-lab gateway-fault{inventory} --lab-dir {shlex.quote(str(self.lab_dir))}"

    def _started_without_faults(self, region: str) -> list[str]:
        """A note when region's running gateway does not read the fault file (it was
        started before the lab had one), or is not running."""
        pid = processes.running(self.gateway_files(region)[0])
        if pid is None:
            return [f"note: gateway {region} is not running; the fault holds once it starts"]
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return []
        if str(self.faults_file).encode() not in argv:
            return [f"note: gateway {region} (pid {pid}) was started without this fault file "
                    f"and ignores it: restart it (georelay-lab down, then up)"]
        return []

    def up(self) -> list[str]:
        lines, reissued = self.ensure_certs()
        for region in sorted(reissued):
            if self.stop_gateway(region):  # it serves the old certificate
                lines.append(f"stopped gateway {region}: its certificate was issued again")
        lines += [self.start_gateway(r) for r in self.fleet.regions]
        return lines

    def show(self, path: str) -> Iterator[tuple[str, bool]]:
        for proxy in self.fleet.proxies:
            for service in self.fleet.services:
                label = f"{proxy.name:8} {proxy.public_address}:{proxy.https_port} " \
                        f"https://{service.hostname}{path}"
                try:
                    reply = client.fetch(proxy.public_address, proxy.https_port,
                                         service.hostname, path, ca_file=str(self.ca_file))
                except OSError as exc:
                    yield f"{label} -> FAILED: {exc}", False
                    continue
                if reply.status != 200:
                    yield f"{label} -> HTTP {reply.status}", False
                    continue
                echo = reply.json()
                # A service with a one-box: this client (no cookie) was bucketed like a user.
                part = echo.get("x_req_partition") or []
                yield (f"{label} -> {reply.status} from {echo['region']}: gateway got "
                       f"Host={echo['host']} SNI={echo['sni']} "
                       f"X-Forwarded-Host={echo['x_forwarded_host']} "
                       f"X-Forwarded-For={echo['x_forwarded_for']}"
                       + (f" X-Req-Partition={','.join(part)}" if part else "")), True

    def health(self, check: Callable[[str, list[str]], subprocess.CompletedProcess[str]]
               | None = None) -> Iterator[tuple[str, bool]]:
        """/healthz through each proxy's public listener (as Route53 asks), and the agent's
        Nagios check: by default run here, on proxies of the lab in <lab dir>/proxies/<host>
        (the demo's georelay_root); `check(proxy, argv)` runs it elsewhere (over SSH)."""
        hostname = self.fleet.services[0].hostname
        for proxy in self.fleet.proxies:
            root = self.lab_dir / "proxies" / proxy.name
            try:
                reply = client.fetch(proxy.public_address, proxy.https_port, hostname,
                                     "/healthz", ca_file=str(self.ca_file))
                seen = f"{reply.status} {reply.body.decode(errors='replace').strip()}"
                ok = reply.status == 200
            except OSError as exc:
                seen, ok = f"FAILED: {exc}", False
            if check is None:
                result = subprocess.run(
                    [str(root / "opt/georelay-agent/venv/bin/georelay-agent"), "check",
                     "--config", str(root / "etc/georelay-agent/agent.json")],
                    capture_output=True, text=True, check=False)
            else:
                result = check(proxy.name, ["georelay-agent", "check"])
            yield (f"{proxy.name:8} https://{hostname}/healthz -> {seen}\n"
                   f"{'':8} check (exit {result.returncode}): {result.stdout.strip()}"), ok


def down(lab_dir: Path) -> list[str]:
    """Stop every process whose pid file lives under lab_dir."""
    lines = []
    for pid_file in sorted(lab_dir.glob("**/*.pid")):
        if processes.stop(pid_file):
            lines.append(f"stopped {pid_file.relative_to(lab_dir)}")
    return lines or ["nothing was running"]

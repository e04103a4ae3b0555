"""`make demo-rollout` (`georelay-tools rollout-demo`): a staged rollout on the running demo
whose one-box starts failing at step 2, and the controller aborting it.

Against the fleet `make demo` runs (or any lab fleet: -i INVENTORY --lab-dir DIR):

1. simulated users (lab/georelay_lab/users.py: each its own User-Agent and cookie jar) send
   requests to the service through every proxy for the whole demo;
2. ``georelay-rollout start`` runs with short steps and bakes (a state directory of its
   own below the lab directory), its output shown as it comes;
3. as soon as step 2 is applied and read back on every proxy, every region's one-box gateway
   is told to answer 503 to half of its requests (georelay-lab gateway-fault);
4. the controller must abort (0% everywhere, read back); every simulated user then sends one
   more request, and every one must be served by the regular gateway;
5. the fault is cleared and ``georelay-rollout release`` hands the proxies back to the
   inventory's onebox_percent. Everything is put back, also when interrupted.

Exit 0 when it went so, 1 when not, 69 when the lab is not up (make demo first).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click

from georelay_dns.cli_support import cli_command, inventory_option
from georelay_lab.stand_ins import StandIns
from georelay_lab.users import Target, Users

EX_UNAVAILABLE = 69
BOUND_S = 300.0  # the controller must be done by then


def _tool(name: str) -> str:
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else (shutil.which(name) or name)


class Demo:
    def __init__(self, lab: StandIns, inventory: str, service: str | None) -> None:
        self.lab, self.inventory = lab, inventory
        fleet = lab.fleet
        with_onebox = [s for s in fleet.services if s.onebox_domain_pattern]
        chosen = [s for s in with_onebox if service in (None, s.hostname)]
        if not chosen:
            raise click.UsageError(
                f"{service or 'no service'}: the demo needs a service with an onebox_domain "
                f"(with one: {', '.join(s.hostname for s in with_onebox) or 'none'})")
        self.service = chosen[0]
        self.state_dir = lab.lab_dir / "rollout-demo"
        self.release = time.strftime("demo-%Y%m%dT%H%M%S", time.gmtime())
        self.onebox = [d for r in fleet.regions
                       if (d := fleet.onebox_domain(self.service, r.name))]

    def say(self, text: str = "") -> None:
        click.echo(text)

    def rollout(self, *args: str) -> list[str]:
        return [_tool("georelay-rollout"), *args, "-i", self.inventory,
                "--state-dir", str(self.state_dir)]

    def state(self) -> dict[str, object]:
        path = self.state_dir / self.lab.fleet.dns.owner / f"{self.service.hostname}.json"
        try:
            doc: dict[str, object] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return doc

    def targets(self) -> list[Target]:
        return [Target(p.public_address, p.https_port, self.service.hostname,
                       frozenset(self.onebox), str(self.lab.ca_file))
                for p in self.lab.fleet.proxies
                if self.lab.fleet.onebox_domain(self.service, p.region)]

    def preflight(self) -> None:
        targets = self.targets()
        probe = Users(targets, count=len(targets))
        probe.everyone_once()
        if probe.errors:
            raise click.ClickException(
                f"the lab fleet does not answer for {self.service.hostname} ({probe.errors} "
                "failed requests): start it with make demo")

    def run(self) -> int:
        self.preflight()
        svc = self.service.hostname
        self.say(f"== A staged rollout of {svc} ({self.release}) with 200 simulated users; the "
                 "one-box starts failing at step 2 ==")
        ok = True
        proc: subprocess.Popen[str] | None = None
        with Users(self.targets(), count=200, rate=60.0) as users:
            try:
                proc = subprocess.Popen(
                    self.rollout("start", svc, "--release", self.release, "--steps", "10,30,60",
                                 "--bake", "8s", "--interval", "2s", "--min-requests", "40"),
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                    start_new_session=True)
                lines: list[str] = []
                reader = threading.Thread(target=self._echo, args=(proc, lines), daemon=True)
                reader.start()
                self._fault_at_step_2(proc)
                proc.wait(BOUND_S)
                reader.join(5)
            finally:
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                for line in self.lab.clear_fault():
                    self.say(f"   lab: {line}")
            st = self.state()
            aborted = st.get("status") == "aborted"
            ok &= self.expect(aborted, f"the controller aborted the rollout at step "
                                       f"{int(st.get('step', -1)) + 1}: {st.get('reason')}")
            seen = users.everyone_once()
            self.say(f"   after the abort, one more request of each user: {seen}")
            ok &= self.expect(seen == {"regular": len(users.users)},
                              "every user is back on regular")
            self.say(f"   requests during the demo: {dict(users.statuses)} HTTP statuses, "
                     f"{users.errors} failed connections")
        rel = subprocess.run(self.rollout("release", svc), capture_output=True, text=True,
                             timeout=120, check=False)
        self.say(f"   {rel.stdout.strip() or rel.stderr.strip()}")
        ok &= self.expect(rel.returncode == 0,
                          "the proxies are back on the inventory's onebox_percent")
        self.say("ROLLOUT DEMO PASSED" if ok else "ROLLOUT DEMO FAILED")
        return 0 if ok else 1

    def _echo(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            self.say(f"   rollout | {line.rstrip()}")

    def _fault_at_step_2(self, proc: subprocess.Popen[str]) -> None:
        end = time.monotonic() + BOUND_S
        while time.monotonic() < end and proc.poll() is None:
            st = self.state()
            if st.get("step") == 1 and st.get("applied"):
                for domain in self.onebox:
                    for line in self.lab.set_fault(domain, 503, 0.5):
                        self.say(f"   lab: {line}")
                return
            time.sleep(0.2)

    def expect(self, good: bool, what: str) -> bool:
        self.say(f"   [{'ok' if good else 'UNEXPECTED'}] {what}")
        return good


@cli_command("georelay-tools rollout-demo", distribution="georelay-tools")
@inventory_option(help_text="Inventory of the running lab fleet (make demo: inventories/demo)")
@click.option("--lab-dir", default=".lab", show_default=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="The lab directory georelay-lab up used")
@click.option("--service", default=None, help="The service to roll out [default: the first "
              "with a one-box]")
def command(inventory: str, lab_dir: Path, service: str | None) -> None:
    """A staged rollout on the running lab fleet (make demo) whose one-box starts failing at
    step 2: the controller aborts, every simulated user is back on regular."""
    from georelay_model import InventoryError

    try:
        lab = StandIns.from_inventory(inventory, lab_dir)
    except InventoryError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        code = Demo(lab, inventory, service).run()
    except click.ClickException as exc:
        click.echo(f"georelay-tools rollout-demo: {exc.format_message()}", err=True)
        sys.exit(EX_UNAVAILABLE)
    sys.exit(code)


if __name__ == "__main__":
    command()

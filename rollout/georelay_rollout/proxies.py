"""The rollout controller's reach into every proxy: playbook georelay.relay.onebox.

run() reads (or sets, then reads back) one service's one-box percentage and counters on
every proxy of an inventory, through ansible-playbook with the inventory's own connection
settings (SSH, become), and returns one Reading per proxy host (a host with aws_region):

- ok: the module georelay.relay.onebox answered; its values are in the Reading.
- off: the one-box is switched off in the proxy's region; the proxy was not touched (ok is
  False, error says so: a controller targets the regions with a one-box).
- unreachable / error: Ansible could not reach the host, or a task failed on it; the other
  proxies' Readings are unaffected.

A request that cannot run at all (ansible-playbook missing, a bad inventory, an inventory
georelay.relay.fleet refuses, no proxy in it) raises ProxiesError; a refused request (unknown
service, a percentage outside 0-100, a bad hold) raises RequestError, before anything is
touched.

Ansible's results come back through a small stdout callback written for each run into a
temporary directory (ansible-core ships no JSON callback; ansible.posix's may be missing):
it appends one JSON line per result that matters to a file, so a run cut by the timeout
still yields the proxies that had answered. The caller's environment (ANSIBLE_CONFIG,
ANSIBLE_COLLECTIONS_PATH, ...) is kept.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLAYBOOK = "georelay.relay.onebox"
CALLBACK = "georelay_onebox_events"
HOLDER = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")  # the module's rule for a hold
# Tasks of the playbook that refuse the request itself (the same on every proxy).
REFUSALS = ("Check the one-box request", "Check the percentage", "Check the hold",
            "Check that the service has a one-box")
FLEET_TASK = "Validate the inventory and compute this proxy's settings"

CALLBACK_SOURCE = '''\
"""georelay-rollout's view of a georelay.relay.onebox run: one JSON line per result."""
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase


def _of(result, name):
    value = getattr(result, name, None)  # ansible-core >= 2.19
    return value if value is not None else getattr(result, "_" + name)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "georelay_onebox_events"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._out = open(os.environ["GEORELAY_ONEBOX_EVENTS"], "a", encoding="utf-8")

    def _emit(self, task_result, event, **data):
        line = {"host": _of(task_result, "host").get_name(), "event": event,
                "task": _of(task_result, "task").get_name(), **data}
        self._out.write(json.dumps(line, default=str) + "\\n")
        self._out.flush()

    def v2_runner_on_ok(self, result, **kwargs):
        res = _of(result, "result")
        facts = res.get("ansible_facts") or {}
        if isinstance(facts.get("georelay_proxy"), dict):
            self._emit(result, "region", region=facts["georelay_proxy"].get("region"))
        if "onebox_off" in facts:
            self._emit(result, "off", off=facts["onebox_off"])
        if "onebox" in res and "process" in res:
            self._emit(result, "onebox", result={k: res.get(k) for k in
                       ("onebox", "before", "changed", "process", "msg")})

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        if not ignore_errors:
            res = _of(result, "result")
            self._emit(result, "failed", msg=res.get("msg"), problems=res.get("problems"))

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._emit(result, "unreachable", msg=_of(result, "result").get("msg"))
'''


class ProxiesError(Exception):
    """ansible-playbook could not run the request at all (missing program or playbook, a bad
    inventory, an inventory georelay.relay.fleet refuses, no proxy in it, a timeout before
    any proxy answered). The text says why and what to fix."""


class RequestError(ProxiesError, ValueError):
    """The request itself is refused (unknown service, percent outside 0-100, a bad hold);
    nothing was touched."""


@dataclass(frozen=True)
class Reading:
    """One proxy, now."""

    host: str
    region: str | None
    ok: bool  # the module answered
    unreachable: bool  # Ansible could not reach the host
    off: bool  # one-box switched off in this proxy's region
    error: str | None  # why not ok (unreachable/failed message)
    percent: int | None
    held_by: str | None
    usable_servers: int | None  # one-box backend's usable servers (None: no backend)
    onebox_requests: int = 0
    onebox_5xx: int = 0
    regular_requests: int = 0
    regular_5xx: int = 0
    fallback_requests: int = 0
    process: str | None = None  # "pid@start" identity of the worker, changes on reload
    changed: bool = False  # this run changed the percentage or hold here
    before: int | None = None  # the running percentage before this run


def extra_vars(service: str, percent: int | None, hold: str | None) -> dict[str, Any]:
    """The playbook's extra vars for a request; RequestError when it is malformed."""
    if not isinstance(service, str) or not service.strip():
        raise RequestError(f"service: {service!r} is not a public hostname; name the service, "
                           "e.g. fast.example.com")
    out: dict[str, Any] = {"onebox_service": service.strip()}
    if percent is not None:
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise RequestError(f"percent: {percent!r} is not a whole number from 0 to 100; give "
                               "the share of users for the one-box, or None to only read")
        out["onebox_percent"] = percent
    if hold is not None:
        if percent is None:
            raise RequestError("hold: needs percent (a hold keeps a value set with percent)")
        if not isinstance(hold, str) or not HOLDER.match(hold):
            raise RequestError(f"hold: {hold!r} is not 1-128 letters, digits or _.:@- (the "
                               "owner, e.g. a rollout id)")
        out["onebox_hold"] = hold
    return out


def ansible_playbook() -> str:
    """The ansible-playbook of this Python (the control node's virtualenv), else PATH's."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("ansible-playbook")
    if found is None:
        raise ProxiesError("ansible-playbook not found beside " f"{sys.executable} or on PATH: "
                           "install ansible-core with georelay (pip install georelay)")
    return found


def _environment(plugins: str, events: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CALLBACK_PLUGINS"] = os.pathsep.join(
        p for p in (plugins, env.get("ANSIBLE_CALLBACK_PLUGINS", "")) if p)
    env.update({"ANSIBLE_STDOUT_CALLBACK": CALLBACK, "GEORELAY_ONEBOX_EVENTS": events,
                "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "false"})
    return env


def _execute(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """(exit code or None on timeout, stderr). The whole process group ends on a timeout."""
    with subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            _out, err = proc.communicate(timeout=timeout)
            return proc.returncode, err
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _out, err = proc.communicate()
            return None, err


def _events(path: str) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _tail(text: str, lines: int = 12) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:]) or "(no output)"


def _failure(event: dict[str, Any]) -> str:
    msg = str(event.get("msg") or "failed").strip()
    problems = event.get("problems") or []
    if problems:
        msg += "\n" + "\n".join(f"- {p}" for p in problems)
    return msg


def _reading(host: str, region: str | None, result: dict[str, Any]) -> Reading:
    ob, proc = result.get("onebox") or {}, result.get("process") or {}
    return Reading(
        host=host, region=region, ok=True, unreachable=False, off=False, error=None,
        percent=ob.get("percent"), held_by=ob.get("held_by"),
        usable_servers=ob.get("onebox_usable_servers"),
        onebox_requests=int(ob.get("onebox_requests") or 0),
        onebox_5xx=int(ob.get("onebox_5xx") or 0),
        regular_requests=int(ob.get("regular_requests") or 0),
        regular_5xx=int(ob.get("regular_5xx") or 0),
        fallback_requests=int(ob.get("fallback_requests") or 0),
        process=f"{proc['pid']}@{proc.get('started')}" if proc.get("pid") else None,
        changed=bool(result.get("changed")), before=result.get("before"))


def _not_ok(host: str, region: str | None, error: str, *, unreachable: bool = False,
            off: bool = False) -> Reading:
    return Reading(host=host, region=region, ok=False, unreachable=unreachable, off=off,
                   error=error, percent=None, held_by=None, usable_servers=None)


def readings(events: list[dict[str, Any]], finished: bool, timeout: float) -> dict[str, Reading]:
    """One Reading per host that the events name; RequestError / ProxiesError when the
    playbook refused the request or the inventory."""
    regions: dict[str, str | None] = {}
    done: dict[str, Reading] = {}
    for e in events:
        host = e["host"]
        if e["event"] == "failed" and e.get("task") in REFUSALS:
            raise RequestError(_failure(e))
        if e["event"] == "failed" and e.get("task") == FLEET_TASK:
            raise ProxiesError(f"georelay.relay.fleet refused the inventory: {_failure(e)}")
        if e["event"] == "region":
            regions[host] = e.get("region")
        elif e["event"] == "off" and e.get("off") in (True, "True", "true"):
            region = regions.get(host)
            done[host] = _not_ok(host, region, f"the one-box is switched off in {region} "
                                 "(georelay_onebox_enabled: false): not touched", off=True)
        elif e["event"] == "onebox":
            done[host] = _reading(host, regions.get(host), e["result"])
        elif e["event"] == "unreachable" and host not in done:
            done[host] = _not_ok(host, regions.get(host), f"unreachable: {_failure(e)}",
                                 unreachable=True)
        elif e["event"] == "failed" and host not in done:
            done[host] = _not_ok(host, regions.get(host), f"{e.get('task')}: {_failure(e)}")
    for host, region in regions.items():
        if host not in done:
            why = (f"no answer: ansible-playbook did not finish within {timeout:g}s"
                   if not finished else "no answer from the one-box task")
            done[host] = _not_ok(host, region, why)
    return dict(sorted(done.items()))


def run(inventory: str, service: str, *, percent: int | None = None, hold: str | None = None,
        timeout: float = 120.0, limit: str | None = None,
        check: bool = False) -> dict[str, Reading]:
    """Read (percent None) or set percent, held by hold (None: released), then read back,
    service's one-box on every proxy host of inventory (limit: an Ansible host pattern, -l;
    check: --check, nothing changes). ansible-playbook may take timeout seconds."""
    extra = extra_vars(service, percent, hold)
    cmd = [ansible_playbook(), "-i", inventory, PLAYBOOK, "-e", json.dumps(extra)]
    if limit:
        cmd += ["-l", limit]
    if check:
        cmd.append("--check")
    with tempfile.TemporaryDirectory(prefix="georelay-rollout-") as tmp:
        (Path(tmp) / f"{CALLBACK}.py").write_text(CALLBACK_SOURCE, encoding="utf-8")
        events_file = str(Path(tmp) / "events.jsonl")
        try:
            rc, err = _execute(cmd, _environment(tmp, events_file), timeout)
        except OSError as exc:
            raise ProxiesError(f"cannot run {cmd[0]}: {exc}") from exc
        events = _events(events_file)
    found = readings(events, rc is not None, timeout)
    if not found:
        if rc is None:
            raise ProxiesError(f"ansible-playbook did not finish within {timeout:g}s and no "
                               f"proxy answered: {_tail(err)}")
        raise ProxiesError(f"no proxy answered: inventory {inventory} has no host with "
                           f"aws_region, or ansible-playbook could not run {PLAYBOOK} "
                           f"(exit {rc}):\n{_tail(err)}")
    return found

"""Run one of georelay's playbooks against an inventory and read back what every host said.

The control-node commands that act on every proxy at runtime (georelay-rollout through
georelay.relay.onebox, georelay-edge through georelay.relay.edge_version and
georelay.relay.edge_ip_ranges) share this one runner:

- program(name): ansible-playbook / ansible-inventory beside this Python (the control node's
  virtualenv), else on PATH.
- run_playbook(): ansible-playbook with the inventory's own connection settings (SSH,
  become) and the caller's environment (ANSIBLE_CONFIG, ANSIBLE_COLLECTIONS_PATH, ...),
  killed with its process group at the timeout.

Ansible's results come back through a small stdout callback written for each run into a
temporary directory (ansible-core ships no JSON callback; ansible.posix's may be missing). It
appends one JSON line per result that matters to a file, so a run cut by the timeout still
yields the hosts that had answered:

- {"event": "region", "region": ...}: georelay.relay.fleet computed this host's settings;
- {"event": "ok", "result": {...}, "facts": {...}}: a task's result keys (or facts) the
  caller asked for;
- {"event": "failed", "msg": ..., "problems": [...]} and {"event": "unreachable", "msg": ...}.

Each line also names the host and the task. answers() folds the events into one HostAnswer
per host georelay.relay.fleet computed settings for (a proxy: a host with aws_region), so an
unreachable or failing proxy never hides the others' answers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CALLBACK = "georelay_events"
FLEET_TASK = "Validate the inventory and compute this proxy's settings"  # every playbook's

CALLBACK_SOURCE = '''\
"""A georelay control-node command's view of a playbook run: one JSON line per result."""
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
    CALLBACK_NAME = "georelay_events"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._out = open(os.environ["GEORELAY_EVENTS"], "a", encoding="utf-8")
        self._keys = json.loads(os.environ.get("GEORELAY_EVENT_KEYS", "[]"))
        self._facts = json.loads(os.environ.get("GEORELAY_EVENT_FACTS", "[]"))

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
        kept = {k: res[k] for k in self._keys if k in res}
        kept_facts = {k: facts[k] for k in self._facts if k in facts}
        if kept or kept_facts:
            self._emit(result, "ok", result=kept, facts=kept_facts)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        if not ignore_errors:
            res = _of(result, "result")
            self._emit(result, "failed", msg=res.get("msg"), problems=res.get("problems"))

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._emit(result, "unreachable", msg=_of(result, "result").get("msg"))
'''


class PlaybookError(RuntimeError):
    """ansible-playbook could not be started at all; the text says why and what to fix."""


class RequestRefused(PlaybookError):
    """A task that checks the request failed: the request itself is refused (the same on
    every proxy) and nothing was touched."""


class InventoryRefused(PlaybookError):
    """georelay.relay.fleet refused the inventory; nothing was touched."""


@dataclass(frozen=True)
class HostAnswer:
    """One proxy's part of a run: the answering task's kept result keys (None: no answer,
    error says why), the kept facts it set, whether Ansible could not reach it."""

    host: str
    region: str | None
    result: dict[str, Any] | None
    facts: dict[str, Any]
    error: str | None = None
    unreachable: bool = False

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class PlaybookRun:
    """What one ansible-playbook run left: its exit code (None: killed at the timeout), the
    callback's events in order, and its stderr."""

    rc: int | None
    events: list[dict[str, Any]] = field(default_factory=list)
    stderr: str = ""

    @property
    def finished(self) -> bool:
        return self.rc is not None


def program(name: str) -> str:
    """The Ansible program name (ansible-playbook, ansible-inventory) of this Python's
    virtualenv, else PATH's; PlaybookError when neither has it."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise PlaybookError(f"{name} not found beside {sys.executable} or on PATH: install "
                            "ansible-core with georelay (pip install georelay)")
    return found


def _environment(plugins: str, events: str, keys: Sequence[str],
                 facts: Sequence[str]) -> dict[str, str]:
    env = dict(os.environ)
    env["ANSIBLE_CALLBACK_PLUGINS"] = os.pathsep.join(
        p for p in (plugins, env.get("ANSIBLE_CALLBACK_PLUGINS", "")) if p)
    env.update({"ANSIBLE_STDOUT_CALLBACK": CALLBACK, "GEORELAY_EVENTS": events,
                "GEORELAY_EVENT_KEYS": json.dumps(list(keys)),
                "GEORELAY_EVENT_FACTS": json.dumps(list(facts)),
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


def _read_events(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def run_playbook(playbook: str, inventory: str, extra: Mapping[str, Any], *,
                 keys: Sequence[str] = (), facts: Sequence[str] = (),
                 limit: str | None = None, check: bool = False,
                 timeout: float = 120.0) -> PlaybookRun:
    """Run playbook (a collection name such as georelay.relay.onebox) on inventory with extra
    vars; keys / facts: the task result keys and facts the events keep; limit: an Ansible
    host pattern (-l); check: --check. ansible-playbook may take timeout seconds."""
    cmd = [program("ansible-playbook"), "-i", inventory, playbook, "-e", json.dumps(dict(extra))]
    if limit:
        cmd += ["-l", limit]
    if check:
        cmd.append("--check")
    with tempfile.TemporaryDirectory(prefix="georelay-playbook-") as tmp:
        (Path(tmp) / f"{CALLBACK}.py").write_text(CALLBACK_SOURCE, encoding="utf-8")
        events_file = Path(tmp) / "events.jsonl"
        try:
            rc, err = _execute(cmd, _environment(tmp, str(events_file), keys, facts), timeout)
        except OSError as exc:
            raise PlaybookError(f"cannot run {cmd[0]}: {exc}") from exc
        return PlaybookRun(rc=rc, events=_read_events(events_file), stderr=err)


def failure(event: Mapping[str, Any]) -> str:
    """A failed or unreachable event's message, with the module's problems listed."""
    msg = str(event.get("msg") or "failed").strip()
    problems = event.get("problems") or []
    if problems:
        msg += "\n" + "\n".join(f"- {p}" for p in problems)
    return msg


def tail(text: str, lines: int = 12) -> str:
    """The last non-blank lines of a program's output, for an error message."""
    kept = [ln for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(kept[-lines:]) or "(no output)"


def answers(run: PlaybookRun, *, answered: Callable[[dict[str, Any]], bool],
            refusals: Sequence[str], timeout: float, task: str) -> dict[str, HostAnswer]:
    """One HostAnswer per proxy the run's events name, sorted by host. answered(result) tells
    the answering task's result from the others; a failed task named in refusals raises
    RequestRefused, a failed fleet task InventoryRefused. task names the answer in errors."""
    regions: dict[str, str | None] = {}
    facts: dict[str, dict[str, Any]] = {}
    done: dict[str, HostAnswer] = {}
    for e in run.events:
        host = e["host"]
        if e["event"] == "failed" and e.get("task") in refusals:
            raise RequestRefused(failure(e))
        if e["event"] == "failed" and e.get("task") == FLEET_TASK:
            raise InventoryRefused(f"georelay.relay.fleet refused the inventory: {failure(e)}")
        if e["event"] == "region":
            regions[host] = e.get("region")
        elif e["event"] == "ok":
            facts.setdefault(host, {}).update(e.get("facts") or {})
            result = e.get("result") or {}
            if answered(result):
                done[host] = HostAnswer(host, regions.get(host), result, facts[host])
        elif e["event"] in ("unreachable", "failed") and host not in done:
            why = (f"unreachable: {failure(e)}" if e["event"] == "unreachable"
                   else f"{e.get('task')}: {failure(e)}")
            done[host] = HostAnswer(host, regions.get(host), None, facts.get(host, {}), why,
                                    unreachable=e["event"] == "unreachable")
    for host, region in regions.items():
        if host not in done:
            why = (f"no answer: ansible-playbook did not finish within {timeout:g}s"
                   if not run.finished else f"no answer from the {task} task")
            done[host] = HostAnswer(host, region, None, facts.get(host, {}), why)
    return dict(sorted(done.items()))


def no_answer(run: PlaybookRun, inventory: str, playbook: str, timeout: float) -> str:
    """Why a run yielded no proxy at all, for the caller's error."""
    if not run.finished:
        return (f"ansible-playbook did not finish within {timeout:g}s and no proxy answered: "
                f"{tail(run.stderr)}")
    return (f"no proxy answered: inventory {inventory} has no host with aws_region, or "
            f"ansible-playbook could not run {playbook} (exit {run.rc}):\n{tail(run.stderr)}")

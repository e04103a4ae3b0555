"""The staged rollout loop: set a step everywhere, read it back, bake, judge, advance or abort.

The controller acts only through a Runner (proxies.run bound to the inventory, the service
and the targeted proxies): "set this absolute percentage, held by this rollout, and tell
me what you read back", or "just read". Every write is absolute, so repeating one is
harmless; the state (state.py) is saved before and after each step, so a controller killed
at any point is resumed by re-applying the step it was on and baking it again, never by
applying a step twice or skipping one.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from georelay_rollout.proxies import Reading
from georelay_rollout.rules import Sample, Verdict, evaluate
from georelay_rollout.state import Rollout, Store

Runner = Callable[[int | None, str | None], Mapping[str, Reading]]
APPLY_ATTEMPTS = 3
HOOK_TIMEOUT = 60.0


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


@dataclass(frozen=True)
class Commands:
    """The command lines an operator is told to run next (every message names its undo)."""

    service: str
    release: str
    inventory: str

    def line(self, *args: str) -> str:
        return shlex.join(["georelay-rollout", *args, self.service, "-i", self.inventory])

    @property
    def abort(self) -> str:
        return self.line("abort")

    @property
    def pause(self) -> str:
        return self.line("pause")

    @property
    def resume(self) -> str:
        return self.line("resume", "--release", self.release)

    @property
    def release_cmd(self) -> str:
        return self.line("release")


class Controller:
    def __init__(self, store: Store, rollout: Rollout, runner: Runner,
                 say: Callable[[str], None], *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.r, self.runner, self.say = store, rollout, runner, say
        self.sleep, self.clock = sleep, clock
        self.cmd = Commands(rollout.service, rollout.release, rollout.inventory)
        self.last: dict[str, Sample] = {}
        self.evaluations = 0  # of the current step, since it was applied

    def save(self) -> None:
        self.store.save(self.r)

    # -- setting a percentage everywhere -------------------------------------------------

    def _set(self, percent: int, hold: str | None) -> tuple[bool, Mapping[str, Reading], str]:
        """Set percent on every targeted proxy and read it back, up to APPLY_ATTEMPTS times;
        (all confirmed, the readings, what was missing)."""
        missing = ""
        readings: Mapping[str, Reading] = {}
        for attempt in range(APPLY_ATTEMPTS):
            if attempt:
                self.sleep(2.0)
            readings = self.runner(percent, hold)
            wrong = sorted(h for h, r in readings.items() if not r.ok or r.percent != percent)
            if not wrong:
                return True, readings, ""
            missing = "; ".join(f"{h}: " + (readings[h].error or f"reads {readings[h].percent}%")
                                for h in wrong)
        return False, readings, missing

    def apply_step(self) -> bool:
        """Set the current step on every targeted proxy; False: not confirmed (holding)."""
        r = self.r
        r.applied = False
        r.event("apply", step=r.step + 1, percent=r.percent)
        self.save()
        ok, readings, missing = self._set(r.percent, r.holder)
        if not ok:
            r.reason = f"step {r.step + 1} ({r.percent}%) not confirmed on: {missing}"
            r.event("hold", reason=r.reason)
            self.save()
            self.say(f"holding: {r.reason}; the controller tries again every "
                     f"{duration(r.interval_s)} (undo: {self.cmd.abort})")
            return False
        r.applied, r.baked_s, r.bad_evaluations, r.reason = True, 0.0, 0, None
        r.baseline = {h: Sample.of(x) for h, x in readings.items()}
        self.last = dict(r.baseline)
        self.evaluations = 0
        r.event("applied", step=r.step + 1, percent=r.percent, proxies=sorted(readings))
        self.save()
        self.say(f"step {r.step + 1}/{len(r.steps)}: {r.percent}% of users on the one-box, "
                 f"set and read back on {len(readings)} proxies ({', '.join(sorted(readings))}); "
                 f"baking {duration(r.bake_s)} (undo: {self.cmd.abort})")
        return True

    def abort(self, reason: str) -> bool:
        """0% on every targeted proxy, read back. The 0% stays held by the rollout, so a
        playbook run does not bring the inventory's onebox_percent back."""
        r = self.r
        if r.status in ("aborting", "aborted") and r.reason and reason not in r.reason:
            reason = f"{r.reason}; then {reason}"  # the first reason stays readable
        r.status, r.reason = "aborting", reason
        r.event("aborting", reason=reason)
        self.save()
        self.say(f"aborting: {reason}")
        ok, readings, missing = self._set(0, r.holder)
        if not ok:
            self.save()
            self.say(f"abort NOT confirmed: {missing}. Every user of the proxies that answered "
                     f"is on regular; run {self.cmd.abort} again once they answer")
            return False
        r.status = "aborted"
        r.event("aborted", reason=reason, proxies=sorted(readings))
        self.save()
        self.say(f"aborted: 0% on {len(readings)} proxies, read back; every user is on regular "
                 f"(reason: {reason}). The 0% is held, so playbook runs keep it; "
                 f"{self.cmd.release_cmd} hands the proxies back to the inventory's "
                 "onebox_percent")
        return True

    def promote(self, reason: str) -> bool:
        r = self.r
        if r.steps[-1] != 100:
            r.steps = [*r.steps, 100]
        r.step = len(r.steps) - 1
        ok, readings, missing = self._set(100, r.holder)
        if not ok:
            r.reason = f"promote not confirmed on: {missing}"
            self.save()
            self.say(f"{r.reason}; run it again (undo: {self.cmd.abort})")
            return False
        r.status, r.applied, r.reason = "completed", True, reason
        r.event("promoted", reason=reason, proxies=sorted(readings))
        self.save()
        self.say(f"promoted: 100% of users on the one-box on {len(readings)} proxies, read "
                 f"back (undo: {self.cmd.abort})")
        return True

    def pause(self, reason: str) -> None:
        r = self.r
        r.status, r.reason = "paused", reason
        r.event("paused", reason=reason, percent=r.percent)
        self.save()
        self.say(f"paused at step {r.step + 1} ({r.percent}%): {reason}. Nothing watches the "
                 f"one-box while paused (undo: {self.cmd.resume})")

    # -- the loop ------------------------------------------------------------------------

    def _request(self) -> bool:
        """Act on a pause/abort/promote request; True when the loop must end."""
        req = self.store.take_request(self.r.service)
        if req is None:
            return False
        why = f"{req['action']} by {req.get('by')}" + (f": {req['reason']}"
                                                        if req.get("reason") else "")
        if req["action"] == "abort":
            self.abort(why)
        elif req["action"] == "pause":
            self.pause(why)
        else:
            self.promote(why)
        return True

    def _wait(self, seconds: float) -> bool:
        """Sleep up to seconds, watching for requests; True when the loop must end."""
        end = self.clock() + seconds
        while True:
            if self._request():
                return True
            left = end - self.clock()
            if left <= 0:
                return False
            self.sleep(min(0.5, left))

    def _hook(self) -> str | None:
        """The hook's failure (None: passed or none)."""
        r = self.r
        if not r.hook:
            return None
        env = {**os.environ, "GEORELAY_ROLLOUT_SERVICE": r.service,
               "GEORELAY_ROLLOUT_RELEASE": r.release, "GEORELAY_ROLLOUT_PERCENT": str(r.percent),
               "GEORELAY_ROLLOUT_STEP": str(r.step + 1)}
        try:
            done = subprocess.run(["/bin/sh", "-c", r.hook], env=env, capture_output=True,
                                  text=True, timeout=HOOK_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return f"the hook did not finish within {HOOK_TIMEOUT:.0f}s: {r.hook}"
        if done.returncode == 0:
            return None
        out = (done.stdout + done.stderr).strip().splitlines()
        return (f"the hook failed (exit {done.returncode}): {r.hook}"
                + (f": {out[-1]}" if out else ""))

    def _evaluate(self, readings: Mapping[str, Reading]) -> Verdict:
        r = self.r
        drift = sorted(h for h, x in readings.items() if x.ok and x.percent != r.percent)
        if drift:
            self.say(f"{', '.join(f'{h} reads {readings[h].percent}%' for h in drift)}: "
                     f"setting {r.percent}% again")
            r.event("reapply", proxies=drift)
            _, fresh, _ = self._set(r.percent, r.holder)
            readings = {**readings, **fresh}
        v = evaluate(readings, r.percent, r.baseline, self.last, r.bad_evaluations,
                     r.thresholds)
        if v.rebaselined:
            self.say(f"counters reset on {', '.join(v.rebaselined)} (HAProxy reloaded): "
                     "baseline taken again")
            r.event("rebaseline", proxies=v.rebaselined)
        r.baseline, self.last, r.bad_evaluations = v.baseline, v.last, v.bad_evaluations
        if v.action != "abort" and (failure := self._hook()):
            v.action, v.reason = "abort", failure
        return v

    def run(self) -> str:
        """Drive the rollout until it completes, aborts or is paused; its final status."""
        r = self.r
        r.status = "running"
        self.save()
        tick = self.clock()
        while r.status == "running":
            if self._wait(0):
                break
            if not r.applied:
                if not self.apply_step():
                    if self._wait(r.interval_s):
                        break
                    continue
                tick = self.clock()
                if self._wait(r.interval_s):
                    break
            v = self._evaluate(self.runner(None, None))
            now = self.clock()
            if not v.unanswered:
                r.baked_s += now - tick
            tick = now
            self.evaluations += 1
            r.last = {**v.to_dict(), "at_step": r.step + 1, "n": self.evaluations}
            self.say(f"[{r.percent}% {duration(min(r.baked_s, r.bake_s))}/"
                     f"{duration(r.bake_s)}] {v.action}: {v.reason}")
            if v.action == "abort":
                self.abort(v.reason)
                break
            if v.action == "ok" and r.baked_s >= r.bake_s:
                if r.step + 1 == len(r.steps):
                    r.status, r.reason = "completed", "every step baked"
                    r.event("completed")
                    self.save()
                    self.say(f"completed: {r.percent}% of users on the one-box, every step "
                             f"baked. The {r.percent}% stays held; deploy {r.release} to the "
                             f"regular gateways, then {self.cmd.release_cmd} (undo: "
                             f"{self.cmd.abort})")
                    break
                r.step += 1
                r.applied = False
                self.save()
                continue
            self.save()
            if self._wait(r.interval_s):
                break
        return r.status

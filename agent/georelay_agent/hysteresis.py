"""Rise/fall hysteresis for named checks, as HAProxy does it for its servers.

A check that is up goes down after ``fall`` consecutive bad observations and comes back
after ``rise`` good ones. The first observation of a check sets its state directly, so a
restarted agent tells the truth at once instead of replaying a start-up transition.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CheckState:
    name: str
    up: bool
    reason: str | None  # why it is down (the last bad observation), None while up
    since: float  # wall clock of the last transition
    streak: int = 0  # consecutive observations disagreeing with `up`
    last_reason: str | None = None  # the last observation's reason (even while still up)
    transitions: int = 0


class Hysteresis:
    def __init__(self, rise: int, fall: int) -> None:
        self.rise = rise
        self.fall = fall
        self.checks: dict[str, CheckState] = {}

    def observe(self, name: str, ok: bool, reason: str | None, now: float) -> CheckState:
        state = self.checks.get(name)
        if state is None:
            state = CheckState(name, ok, None if ok else reason, now, last_reason=reason)
            self.checks[name] = state
            return state
        state.last_reason = None if ok else reason
        if ok == state.up:
            state.streak = 0
            if not ok:
                state.reason = reason  # keep the newest explanation while down
            return state
        state.streak += 1
        if state.streak >= (self.rise if ok else self.fall):
            state.up = ok
            state.reason = None if ok else reason
            state.since = now
            state.streak = 0
            state.transitions += 1
        return state

    def get(self, name: str) -> CheckState | None:
        return self.checks.get(name)

    def forget(self, keep: set[str]) -> None:
        for name in set(self.checks) - keep:
            del self.checks[name]

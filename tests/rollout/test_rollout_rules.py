"""The abort/hold/advance rules of a rollout step (rollout/georelay_rollout/rules.py): pure
functions of HAProxy's counters, so every rule and its edge is shown here without a fleet;
tests/rollout/test_rollout_fleet.py shows them acting on real proxies."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from georelay_rollout.rules import Sample, Thresholds, evaluate


@dataclass(frozen=True)
class R:  # one proxy's reading, the fields rules.Counted names
    host: str
    ok: bool = True
    error: str | None = None
    percent: int | None = 10
    usable_servers: int | None = 1
    process: str | None = "100@1"
    onebox_requests: int = 0
    onebox_5xx: int = 0
    regular_requests: int = 0
    regular_5xx: int = 0
    fallback_requests: int = 0


T = Thresholds()


def base(*readings: R) -> dict[str, Sample]:
    return {r.host: Sample.of(r) for r in readings}


def test_first_evaluation_takes_the_baseline_and_holds_on_low_traffic():
    a = R("a", onebox_requests=5000, regular_requests=40000)
    v = evaluate({"a": a}, 10, {}, {}, 0, T)
    assert v.action == "hold" and "too little traffic" in v.reason
    assert v.baseline["a"] == Sample.of(a) and v.window.onebox_requests == 0


def test_healthy_step_is_ok_and_counts_only_the_window():
    a0 = R("a", onebox_requests=1000, onebox_5xx=900, regular_requests=9000)  # before the step
    a1 = replace(a0, onebox_requests=1300, onebox_5xx=901, regular_requests=11700)
    v = evaluate({"a": a1}, 10, base(a0), {}, 0, T)
    assert v.action == "ok", v.reason
    assert (v.window.onebox_requests, v.window.onebox_5xx) == (300, 1)


def test_ratio_over_the_limit_aborts_only_after_consecutive_bad_evaluations():
    a0 = R("a")
    a1 = replace(a0, onebox_requests=300, onebox_5xx=9, regular_requests=2700, regular_5xx=0)
    # 3% against a limit of max(1%, 2 x 0% + 0.5) = 1%; the interval share 3% is no spike
    v1 = evaluate({"a": a1}, 10, base(a0), base(a0), 0, T)
    assert (v1.action, v1.bad_evaluations) == ("ok", 1) and "1 of 3" in v1.reason
    v2 = evaluate({"a": a1}, 10, v1.baseline, v1.last, v1.bad_evaluations, T)
    assert (v2.action, v2.bad_evaluations) == ("ok", 2)
    v3 = evaluate({"a": a1}, 10, v2.baseline, v2.last, v2.bad_evaluations, T)
    assert v3.action == "abort" and "3 evaluations in a row" in v3.reason


def test_a_good_evaluation_resets_the_bad_count():
    a0 = R("a")
    good = replace(a0, onebox_requests=300, onebox_5xx=1, regular_requests=2700)
    v = evaluate({"a": good}, 10, base(a0), base(a0), 2, T)
    assert (v.action, v.bad_evaluations) == ("ok", 0)


def test_the_limit_follows_the_regular_ratio():
    # regular at 2%: the limit is 2 x 2% + 0.5 = 4.5%, so 4% one-box errors are no worse
    a0 = R("a")
    a1 = replace(a0, onebox_requests=1000, onebox_5xx=40, regular_requests=9000, regular_5xx=180)
    assert T.limit(0.02) == pytest.approx(0.045)
    assert evaluate({"a": a1}, 10, base(a0), base(a0), 2, T).action == "ok"


def test_too_few_requests_hold_however_bad():
    a0 = R("a")
    a1 = replace(a0, onebox_requests=150, onebox_5xx=15, regular_requests=1350)  # 10%: no spike
    v = evaluate({"a": a1}, 10, base(a0), base(a0), 5, T)
    assert v.action == "hold" and "150 of 200" in v.reason


def test_a_spike_aborts_at_once():
    a0 = R("a", onebox_requests=10000, regular_requests=90000)
    a1 = replace(a0, onebox_requests=10030, onebox_5xx=10)  # 33% of the last 30 requests
    v = evaluate({"a": a1}, 10, base(a0), base(a0), 0, T)
    assert v.action == "abort" and "spike" in v.reason


def test_a_spike_needs_its_minimum_of_requests():
    a0 = R("a")
    a1 = replace(a0, onebox_requests=10, onebox_5xx=5)
    assert evaluate({"a": a1}, 10, base(a0), base(a0), 0, T).action == "hold"


def test_a_one_box_without_usable_server_aborts():
    a, b = R("a"), R("b", usable_servers=0)
    v = evaluate({"a": a, "b": b}, 10, base(a, b), {}, 0, T)
    assert v.action == "abort" and "no usable server on b" in v.reason


def test_fallback_requests_in_the_window_abort():
    a0 = R("a")
    a1 = replace(a0, fallback_requests=3, regular_requests=3)
    v = evaluate({"a": a1}, 10, base(a0), {}, 0, T)
    assert v.action == "abort" and "fell back" in v.reason


def test_a_share_far_from_the_percentage_aborts():
    a0 = R("a")
    a1 = replace(a0, onebox_requests=600, regular_requests=400)  # 60% while 10% is set
    v = evaluate({"a": a1}, 10, base(a0), base(a0), 0, T)
    assert v.action == "abort" and "60.0% of the requests while 10% is set" in v.reason
    near = replace(a0, onebox_requests=300, regular_requests=1700)  # 15%: within 10 points
    assert evaluate({"a": near}, 10, base(a0), base(a0), 0, T).action == "ok"


def test_an_unanswering_proxy_holds_and_keeps_the_baseline():
    a0, b0 = R("a"), R("b")
    b1 = R("b", ok=False, error="UNREACHABLE: ssh timed out")
    v = evaluate({"a": a0, "b": b1}, 10, base(a0, b0), {}, 1, T)
    assert v.action == "hold" and v.unanswered and "b: UNREACHABLE" in v.reason
    assert v.baseline == base(a0, b0) and v.bad_evaluations == 1


@pytest.mark.parametrize("after", [
    {"process": "200@9"},  # another worker: a reload
    {"onebox_requests": 3, "regular_requests": 10},  # totals went down
])
def test_a_counter_reset_takes_the_baseline_again(after):
    a0 = R("a", onebox_requests=5000, onebox_5xx=400, regular_requests=45000)
    a1 = replace(a0, **after)
    v = evaluate({"a": a1}, 10, base(a0), base(a0), 0, T)
    assert v.rebaselined == ["a"] and v.baseline["a"] == Sample.of(a1)
    assert v.window.onebox_requests == 0 and v.action == "hold"  # not a negative window


def test_proxies_add_up():
    a0, b0 = R("a"), R("b")
    a1 = replace(a0, onebox_requests=120, onebox_5xx=0, regular_requests=1080)
    b1 = replace(b0, onebox_requests=120, onebox_5xx=1, regular_requests=1080)
    v = evaluate({"a": a1, "b": b1}, 10, base(a0, b0), base(a0, b0), 0, T)
    assert v.action == "ok" and v.window.onebox_requests == 240  # neither alone had 200


def test_samples_round_trip_the_state_file():
    s = Sample.of(R("a", onebox_requests=7, regular_5xx=2))
    assert Sample.from_list(s.to_list()) == s
    assert Thresholds.from_dict(T.to_dict()) == T

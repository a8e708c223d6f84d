"""The deviation policy, case by case (pure: no services, no clock)."""

import pytest

from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.logic.deviation import Bounds, DeviationConfig, decide, escalate_after_oom, initial_state

MIB = 2**20
GIB = 2**30
CFG = DeviationConfig()
NO_BOUNDS = Bounds()


def feed(series, allocation, *, config=CFG, bounds=NO_BOUNDS, profile=None, urgent_at=(), interval=1.0):
    """Run the policy over per-sample usage dicts; returns [(sample index, decision)]."""
    state = initial_state(allocation, profile)
    out = []
    for i, values in enumerate(series):
        urgent = frozenset({"memory"}) if i in urgent_at else frozenset()
        state, decisions = decide(state, UsageSample(time=i * interval, values=values, step=i), config, bounds, urgent=urgent)
        out += [(i, d) for d in decisions]
    return out, state


def mem(*mib):
    return [{"memory": m * MIB} for m in mib]


def cpu(*cores):
    return [{"cpu": c} for c in cores]


@pytest.mark.parametrize(
    "name, series, allocation, expect",
    [
        # (first sample index with a decision, action) or None for no decision at all
        ("steady well inside the limit", mem(*[400] * 10), {"memory": 1024 * MIB}, None),
        ("one spike at the limit", mem(400, 400, 1020, 400, 400, 400), {"memory": 1024 * MIB}, None),
        ("two isolated spikes", mem(400, 1000, 400, 1000, 400, 400), {"memory": 1024 * MIB}, None),
        ("sustained at 95% resizes within 3 samples", mem(973, 973, 973, 973), {"memory": 1024 * MIB}, (1, "increase")),
        ("growth projected past the limit", mem(200, 400, 600, 800), {"memory": 1024 * MIB}, (3, "increase")),
        ("slow growth far from the limit", mem(200, 210, 220, 230, 240), {"memory": 1024 * MIB}, None),
        ("cpu throttled at its quota", cpu(1.0, 0.99, 1.0, 1.0), {"cpu": 1.0}, (1, "increase")),
        ("cpu one busy sample", cpu(0.2, 1.0, 0.2, 0.2), {"cpu": 1.0}, None),
        ("cpu low for long enough", cpu(*[0.1] * 40), {"cpu": 2.0}, (29, "decrease")),
        ("memory low but not yet for long", mem(*[100] * 20), {"memory": 1024 * MIB}, None),
        ("memory low for long enough", mem(*[100] * 40), {"memory": 1024 * MIB}, (29, "decrease")),
        ("unlimited resource is never resized", mem(*[5000] * 5), {"memory": 0}, None),
        ("resource without allocation is observed only", cpu(*[3.0] * 5), {}, None),
    ],
)
def test_table(name, series, allocation, expect):
    decisions, _ = feed(series, allocation)
    if expect is None:
        assert decisions == [], name
    else:
        index, action = expect
        assert decisions, name
        assert (decisions[0][0], decisions[0][1].action) == (index, action), (name, decisions[0])


def test_every_resource_is_judged_on_its_own_in_the_same_sample():
    series = [{"memory": 980 * MIB, "cpu": 1.0}] * 3
    decisions, _ = feed(series, {"memory": 1024 * MIB, "cpu": 1.0})
    first = {d.resource: (i, d.action) for i, d in reversed(decisions)}
    assert first == {"memory": (1, "increase"), "cpu": (1, "increase")}


def test_increase_is_capped_by_step_and_bound_and_says_so():
    decisions, _ = feed(mem(*[1000] * 3), {"memory": 1024 * MIB}, bounds=Bounds(maximum={"memory": 1100 * MIB}))
    (_, d), = decisions
    assert d.new == 1100 * MIB and "capped at the bound" in d.reason
    decisions, _ = feed(mem(100, 3000, 3000), {"memory": 1024 * MIB})
    assert decisions[0][1].new == 2 * 1024 * MIB  # max_step_up = 2


def test_at_the_bound_holds_with_a_reason():
    decisions, _ = feed(mem(*[1000] * 3), {"memory": 1024 * MIB}, bounds=Bounds(maximum={"memory": 1024 * MIB}))
    assert decisions and all(d.action == "hold" and "at its bound" in d.reason for _, d in decisions)


def test_cooldown_spaces_increases():
    decisions, _ = feed(cpu(*[1.0] * 4 + [1.5] * 10), {"cpu": 1.0})
    times = [i for i, d in decisions if d.action == "increase"]
    assert times[0] == 1
    assert all(b - a >= CFG.up_cooldown_s for a, b in zip(times, times[1:]))


def test_hysteresis_skips_small_changes():
    # Oversized, but the decrease it would make (peak * 1.2 = 960 MiB of 1024) is under 10%.
    decisions, _ = feed(mem(*[800] + [300] * 40), {"memory": 1024 * MIB}, config=DeviationConfig(down_threshold=0.5))
    assert decisions == []


def test_memory_decrease_never_goes_below_peak_plus_margin_and_not_while_growing():
    decisions, _ = feed(mem(*[300] + [100] * 40), {"memory": 2048 * MIB})
    (_, d), = decisions
    assert d.action == "decrease" and d.new >= 300 * MIB * (1 + CFG.margin)
    assert d.new >= 2048 * MIB * CFG.max_step_down
    growing = [{"memory": (100 + i) * MIB} for i in range(45)]
    decisions, _ = feed(growing, {"memory": 2048 * MIB})
    assert decisions == []


def test_urgent_raises_at_once_without_sustain_or_cooldown():
    decisions, _ = feed(mem(500, 950, 990), {"memory": 1024 * MIB}, urgent_at=(1, 2))
    assert [(i, d.action) for i, d in decisions] == [(1, "increase"), (2, "increase")] or decisions[0][0] == 1
    assert decisions[0][1].new >= 1024 * MIB * CFG.urgent_step
    assert "kernel warned" in decisions[0][1].reason


def test_gpu_deviation_is_a_hold_because_gpus_cannot_change_in_place():
    profile = PredictedProfile(resources={"gpu_memory": ResourceEstimate(10 * GIB, 20 * GIB)}, coverage=0.99)
    decisions, _ = feed([{"gpu_memory": 30 * GIB}] * 2, {"gpu_memory": 40 * GIB}, profile=profile)
    assert {d.action for _, d in decisions} == {"hold"}
    assert "predicted upper 20.00 GiB" in decisions[0][1].reason


def test_reason_mentions_the_prediction():
    profile = PredictedProfile(resources={"memory": ResourceEstimate(300 * MIB, 600 * MIB)}, coverage=0.99)
    decisions, _ = feed(mem(990, 990), {"memory": 1024 * MIB}, profile=profile)
    assert "predicted median 300 MiB, upper 600 MiB" in decisions[0][1].reason


def test_with_allocation_records_a_refused_decrease():
    decisions, state = feed(mem(*[100] * 30), {"memory": 2048 * MIB})
    assert decisions and state.allocation["memory"] < 2048 * MIB
    state = state.with_allocation("memory", 2048 * MIB, 30.0)
    assert state.allocation["memory"] == 2048 * MIB


@pytest.mark.parametrize(
    "limit, peak, maximum, new, capped",
    [
        (1 * GIB, None, None, 2 * GIB, False),
        (1 * GIB, 1.9 * GIB, None, 1.9 * GIB * 1.2, False),
        (1 * GIB, None, 1.5 * GIB, 1.5 * GIB, True),
        (2 * GIB, None, 2 * GIB, 2 * GIB, True),
    ],
)
def test_escalation_after_oom(limit, peak, maximum, new, capped):
    esc = escalate_after_oom(limit, peak, CFG, maximum)
    assert esc.new_limit == pytest.approx(new)
    assert esc.capped is capped
    if maximum is not None and limit >= maximum:
        assert "cannot get more memory" in esc.reason


@pytest.mark.parametrize("field, value", [("smoothing", 0), ("up_threshold", 1.5), ("down_threshold", 0.95), ("max_step_up", 1.0), ("up_samples", 0)])
def test_nonsense_settings_are_refused_with_their_names(field, value):
    with pytest.raises(ValueError, match=field):
        DeviationConfig(**{field: value})


def test_escalation_refuses_a_zero_limit():
    with pytest.raises(ValueError, match="must be > 0"):
        escalate_after_oom(0, None, CFG)

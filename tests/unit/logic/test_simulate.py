"""The simulator's accounting on hand-made series whose reservation and kills are worked out by
hand, its causal history, and the comparison at equal kills."""

import numpy as np
import pytest

from airflow_adaptive.domain.series import SeriesLoadReport, SeriesSet, UsageSeries
from airflow_adaptive.logic.simulate import (
    History,
    SimulationConfig,
    at_kills,
    durations,
    histories,
    policy_run,
    simulate,
)

CFG = SimulationConfig()


def run(name, stage, times, values, resource="memory", start=None):
    return UsageSeries(name, stage, {resource: (np.asarray(times, float), np.asarray(values, float))}, start)


WARMUP = run("s-0", "s", [0, 10, 20], [100, 100, 100])
STEP = run("s-1", "s", [0, 10, 20, 30], [100, 100, 150, 100])  # used = 10 x (100 + 100 + 150 + 100) = 4500


def test_each_sample_holds_until_the_next_and_the_last_for_the_median_interval():
    assert list(durations(np.array([0.0, 10, 30, 40]))) == [10, 20, 10, 10]
    assert list(durations(np.array([5.0]))) == [1]


def test_static_history_is_killed_at_the_step_charged_until_then_and_retried_doubled():
    t = policy_run("static_history", 0.2, STEP, "memory", History((100.0,), ()), CFG)
    # try 1 at 120: killed at the 150 sample (t=20), charged 120 x 20 s; try 2 at 240 for all 40 s
    assert t.kills == 1 and t.killed_runs == 1
    assert t.reserved == pytest.approx(120 * 20 + 240 * 40)
    assert t.used == pytest.approx(4500) and t.reserved / t.used == pytest.approx(12000 / 4500)
    assert t.samples == 3 + 4 and t.over_request == 1  # the killing sample is the one above the request


def test_static_peak_sees_its_own_peak():
    t = policy_run("static_peak", 0.2, STEP, "memory", History((), ()), CFG)
    assert t.kills == 0 and t.reserved == pytest.approx(180 * 40)


def test_reactive_raises_after_two_short_samples_is_killed_by_a_step_and_its_retry_is_not_released():
    t = policy_run("reactive", 0.2, STEP, "memory", History((100.0,), ()), CFG)
    # start: upper 100 x 1.1 = 110, request the median 100. Samples 0 and 1 are 91% of 110 (short):
    # after the second it raises to max(110 x 1.1, 100 x 1.2) = 121. The 150 step kills at t=20.
    # Retry: max(121 x 2, 150 x 1.2) = 242, never released below that (the floor), for 40 s.
    assert t.kills == 1 and t.resizes == 1
    assert t.reserved == pytest.approx(110 * 10 + 121 * 10 + 242 * 40)
    assert t.requested == pytest.approx(100 * 20 + 100 * 40)


def test_cpu_above_its_limit_is_throttled_not_killed():
    cpu = run("c-1", "c", [0, 10, 20], [1.0, 3.0, 1.0], resource="cpu")
    t = policy_run("static_history", 0.0, cpu, "cpu", History((2.0,), ()), CFG)
    assert t.kills == 0 and t.over_limit == 1 and t.reserved == pytest.approx(2.0 * 30)
    assert t.summary("cpu")["throttled_fraction"] == pytest.approx(1 / 3)


def test_history_is_causal_by_rank_without_start_times_and_by_end_with_them():
    a0, a1, b0, b1 = (run("a-0", "a", [0, 1], [10, 10]), run("a-1", "a", [0, 1], [20, 20]),
                      run("b-0", "b", [0, 1], [30, 30]), run("b-1", "b", [0, 1], [40, 40]))
    ranked = histories(SeriesSet((a0, a1, b0, b1), SeriesLoadReport("x")), "memory")
    assert [h.empty for h in ranked] == [True, False, True, False]  # first runs are warm-up
    assert ranked[1].own == (10.0,) and ranked[3].own == (30.0,)
    # With start times: c's first run starts after a's first ended: sized from pooled peaks.
    c0 = run("c-0", "c", [0, 1], [5, 5], start=100.0)
    timed = [run("a-0", "a", [0, 50], [10, 10], start=0.0), run("a-1", "a", [0, 50], [20, 20], start=60.0), c0]
    hist = histories(SeriesSet(tuple(timed), SeriesLoadReport("x")), "memory")
    assert hist[0].empty and hist[1].own == (10.0,)
    assert hist[2].own == () and hist[2].pooled == (10.0,)  # a-1 ends at 110, after c-0 starts


def test_at_kills_interpolates_and_says_when_a_policy_cannot_get_there():
    sweep = [{"kills": 10, "reserved_over_used": 1.1}, {"kills": 4, "reserved_over_used": 1.3},
             {"kills": 0, "reserved_over_used": 2.0}]
    assert at_kills(sweep, 7) == {"kills": 7.0, "reserved_over_used": pytest.approx(1.2), "reached": True}
    assert at_kills(sweep, 4)["reserved_over_used"] == pytest.approx(1.3)
    assert at_kills(sweep, 20) == {"kills": 10, "reserved_over_used": 1.1, "reached": True}
    assert at_kills([{"kills": 5, "reserved_over_used": 1.0}], 2)["reached"] is False


def test_the_report_scores_all_but_warmup_runs_with_every_policy():
    report = simulate(SeriesSet((WARMUP, STEP), SeriesLoadReport("hand-made")), SimulationConfig(margins=(0.0, 0.2)))
    assert report["warmup_runs"] == {"memory": 1} and report["scored_runs"] == {"memory": 1}
    history = report["policies"]["static_history"]["memory"]
    assert history["kills"] == 1 and history["reserved_over_used"] == pytest.approx(12000 / 4500)
    assert [p["margin"] for p in history["sweep"]] == [0.0, 0.2]
    for policy in ("static_peak", "static_history", "reactive"):
        assert set(report["policies"][policy]["memory"]) >= {"reserved_over_used", "requested_over_used",
                                                             "over_request_fraction", "kills", "resizes", "at_kills"}


def test_the_profile_follows_the_phases_raises_before_the_step_and_kills_nothing():
    """Runs that load (30% of the peak) for a quarter, train at the peak, then evaluate at 60%:
    the profile starts at the loading phase, is raised one sample before training starts, and
    reserves less memory-time than the careful static user and than the reactive rules."""
    from airflow_adaptive.logic.simulate import stage_shape

    def phased(name, duration=1200.0, peak=4000.0):
        times = np.arange(0.0, duration + 60, 60.0)
        p = times / duration
        return run(name, "train", times, np.where(p < 0.25, 0.3, np.where(p < 0.7, 1.0, 0.6)) * peak)

    runs = tuple(phased(f"train-{k}") for k in range(5))
    series = SeriesSet(runs, SeriesLoadReport("phased"))
    history = histories(series, "memory")[4]
    shape = stage_shape(series, "memory", history)
    assert len(shape.phases) == 3 and shape.fallback is None
    target = runs[4]
    profile = policy_run("profile", 0.2, target, "memory", history, CFG, shape)
    static = policy_run("static_history", 0.2, target, "memory", history, CFG)
    reactive = policy_run("reactive", 0.2, target, "memory", history, CFG)
    assert profile.kills == 0 and static.kills == 0 and reactive.kills == 0
    assert profile.reserved < 0.75 * static.reserved and profile.reserved < 0.75 * reactive.reserved
    assert profile.resizes >= 2 and profile.raised_ahead == 1  # up for training (before it starts), down after


def test_the_profile_falls_back_to_the_reactive_rules_when_usage_leaves_its_band():
    from airflow_adaptive.logic.simulate import stage_shape

    flat = tuple(run(f"f-{k}", "f", np.arange(0.0, 600, 60.0), np.full(10, 1000.0)) for k in range(4))
    grows = run("f-4", "f", np.arange(0.0, 600, 60.0), np.array([1000, 1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800.0]))
    series = SeriesSet((*flat, grows), SeriesLoadReport("x"))
    history = histories(series, "memory")[4]
    t = policy_run("profile", 0.2, grows, "memory", history, CFG, stage_shape(series, "memory", history))
    assert t.kills == 0 and t.resizes >= 2  # it kept raising with the growth the profile did not predict

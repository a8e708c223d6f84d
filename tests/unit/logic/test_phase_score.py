"""The hold-out score over time: figures worked out by hand, and the hold-out predictions it is
fed (retraining through a real MLflow store: ``tests/integration/test_retraining_phase_score.py``)."""

import math

import numpy as np
import pytest

from airflow_adaptive.domain.profile import PhaseNeed, PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.series import UsageSeries
from airflow_adaptive.logic.phase_score import describe, score_all, score_phases, upper_at

from ...support.phase_history import stage_history

MiB = 2**20
T = np.arange(10.0)  # one sample a second for 10 s: each holds 1 s (the last one the median gap)
STEP = np.where(T < 5, 100.0, 300.0) * MiB  # 100 MiB for 5 s, then 300 MiB for 5 s: 2000 MiB.s used


def profile(upper, phases=None, resource="memory"):
    return PredictedProfile({resource: ResourceEstimate(upper * MiB * 0.8, upper * MiB)}, coverage=0.99,
                            phases={resource: tuple(PhaseNeed(s, e, u * MiB * 0.8, u * MiB) for s, e, u in phases)}
                            if phases else {})


def run(name, values, times=T, resource="memory", stage="ml.train"):
    return UsageSeries(name, stage, {resource: (np.asarray(times, float), np.asarray(values, float))})


def test_phases_that_match_the_step_reserve_exactly_what_is_used():
    exact = profile(300, [(0, 5, 100), (5, 10, 300)])
    s = score_phases({"a": exact}, [run("a", STEP)])
    assert s.phased_reserved_over_used == pytest.approx(1.0)  # 5 x 100 + 5 x 300 = 2000 reserved / 2000 used
    assert s.constant_reserved_over_used == pytest.approx(1.5)  # 10 s x 300 = 3000 / 2000
    assert s.over_upper_fraction == 0.0  # at the upper is not above it
    assert (s.runs, s.phased_runs, s.samples, s.series) == (1, 1, 10, ("a",))


def test_phases_with_headroom():
    roomy = profile(330, [(0, 5, 120), (5, 10, 330)])
    s = score_phases({"a": roomy}, [run("a", STEP)])
    assert s.phased_reserved_over_used == pytest.approx((5 * 120 + 5 * 330) / 2000)  # 1.125
    assert s.constant_reserved_over_used == pytest.approx(3300 / 2000)  # 1.65


def test_a_run_that_steps_early_counts_its_samples_above_the_phased_upper():
    early = np.where(T < 3, 100.0, 300.0) * MiB  # steps at 3 s: the samples at 3 s and 4 s are above 100 MiB
    exact = profile(300, [(0, 5, 100), (5, 10, 300)])
    s = score_phases({"a": exact, "b": exact}, [run("a", STEP), run("b", early)])
    assert s.over_upper_fraction == pytest.approx(2 / 20)
    # used 2000 + (3 x 100 + 7 x 300 = 2400); reserved by phase 2000 + 2000; constant 3000 + 3000
    assert s.phased_reserved_over_used == pytest.approx(4000 / 4400)
    assert s.constant_reserved_over_used == pytest.approx(6000 / 4400)
    assert s.runs == 2 and s.series == ("a", "b")


def test_a_stage_without_phases_is_scored_with_the_constant_upper_for_both_and_counted_apart():
    s = score_phases({"a": profile(300)}, [run("a", STEP)])
    assert s.phased_reserved_over_used == s.constant_reserved_over_used == pytest.approx(1.5)
    assert s.over_upper_fraction == 0.0 and (s.runs, s.phased_runs) == (1, 0)
    low = score_phases({"a": profile(200)}, [run("a", STEP)])
    assert low.over_upper_fraction == pytest.approx(0.5)  # the 300 MiB half is above a constant 200 MiB


def test_past_the_last_phase_the_last_phase_holds():
    long = np.append(STEP, [300.0 * MiB] * 4)  # the run lasts 14 s; the phases end at 10 s
    s = score_phases({"a": profile(300, [(0, 5, 100), (5, 10, 300)])}, [run("a", long, np.arange(14.0))])
    assert s.phased_reserved_over_used == pytest.approx(1.0) and s.over_upper_fraction == 0.0


def test_irregular_samples_hold_until_the_next_and_elapsed_time_counts_from_the_first():
    times = np.array([100.0, 102, 103, 107])  # holds 2, 1, 4 s and the median gap 2 s; elapsed 0, 2, 3, 7
    values = np.array([1.0, 1.0, 3.0, 3.0]) * MiB
    s = score_phases({"a": profile(4, [(0, 3, 2), (3, 9, 4)])}, [run("a", values, times)])
    used = 1 * 2 + 1 * 1 + 3 * 4 + 3 * 2
    assert s.phased_reserved_over_used == pytest.approx((2 * 2 + 2 * 1 + 4 * 4 + 4 * 2) / used)
    assert s.constant_reserved_over_used == pytest.approx(4 * 9 / used)


def test_runs_without_a_prediction_or_usage_of_the_resource_are_left_out():
    preds = {"a": profile(300, [(0, 5, 100), (5, 10, 300)]), "c": profile(2, resource="cpu")}
    runs = [run("a", STEP), run("b", STEP), run("c", np.full(10, float(MiB)), resource="cpu")]
    s = score_phases(preds, runs)
    assert s.runs == 1 and s.series == ("a",)
    nothing = score_phases({}, runs)
    assert nothing.runs == 0 and math.isnan(nothing.phased_reserved_over_used) and math.isnan(nothing.over_upper_fraction)
    both = score_all(preds, runs)
    assert set(both) == {"memory", "cpu"} and both["cpu"].constant_reserved_over_used == pytest.approx(2.0)
    assert "1 run(s), 1 with phases" in describe(s) and "0.0000 of 10 samples above" in describe(s)


def test_upper_at_places_elapsed_time_in_its_phase():
    phases = [PhaseNeed(0, 5, 1, 10), PhaseNeed(5, 8, 1, 20), PhaseNeed(8, 10, 1, 5)]
    assert list(upper_at(phases, np.array([0, 4.9, 5, 7.9, 8, 10, 99]))) == [10, 10, 20, 20, 5, 5, 5]


@pytest.mark.parametrize("call, match", [
    (lambda: score_phases({}, [], "disk"), "unknown resource 'disk'"),
    (lambda: score_phases({"a": profile(3)}, [run("a", np.ones(3), np.arange(4.0))]), "one length"),
    (lambda: score_phases({"a": profile(3)}, [run("a", np.ones(3), np.array([0.0, 2, 1]))]), "must not decrease"),
    (lambda: upper_at([PhaseNeed(5, 10, 1, 1), PhaseNeed(0, 5, 1, 1)], np.zeros(1)), "time order"),
    (lambda: upper_at([], np.zeros(1)), "no phases"),
])
def test_bad_input_is_refused_with_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------- through retraining
def test_holdout_predictions_carry_the_stage_phases():
    from airflow_adaptive.logic.promotion import split_holdout
    from airflow_adaptive.logic.scaling import ScalingProfiler
    from airflow_adaptive.retraining import holdout_predictions, training_shapes

    table, series = stage_history()
    train, holdout = split_holdout(table)
    profiler = ScalingProfiler().fit(train)
    profiler.shapes_ = training_shapes(series, train)
    preds = holdout_predictions(profiler, holdout)
    assert set(preds) == {f"run-{i}" for i in range(16, 20)}
    first, last = preds["run-19"].phases["memory"][0], preds["run-19"].phases["memory"][-1]
    assert first.upper == pytest.approx(0.3 * last.upper) and last.upper == pytest.approx(preds["run-19"].resources["memory"].upper)

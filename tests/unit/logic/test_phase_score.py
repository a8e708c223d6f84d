"""The hold-out score over time: figures worked out by hand, then wired through retraining."""

import math

import numpy as np
import pytest

from airflow_adaptive.domain.profile import PhaseNeed, PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.series import UsageSeries
from airflow_adaptive.logic.phase_score import describe, score_all, score_phases, upper_at

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
def stage_history(n_runs=20, step_at=0.5, holdout_step_at=None, scale=1.0):
    """``n_runs`` runs of one stage, one every 200 s, 100 s long, memory stepping from 30% of
    the peak to the peak at ``step_at`` of the run (``holdout_step_at`` for the last 20%)."""
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.series import SeriesLoadReport, SeriesSet
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES

    rows, runs = [], []
    times = np.arange(0.0, 101.0, 4.0)  # no sample on the 50 s boundary, where rounding would decide
    for i in range(n_runs):
        size = 50_000 * (1 + i % 5)
        peak = (100 + 0.002 * size) * MiB
        at = holdout_step_at if holdout_step_at is not None and i >= n_runs * 0.8 else step_at
        values = np.where(times / 100 < at, 0.3, 1.0) * peak
        features = {"dag_id": "ml", "task_id": "train", "algorithm": "rf", "framework": "sklearn",
                    "data_rows": float(size), "data_bytes": size * 256.0, "n_features": 32.0, "epochs": 1.0}
        rows.append({"job_id": f"run-{i}", "submit": 1e9 + 200 * i, "end": 1e9 + 200 * i + 100, "run_time": 100.0,
                     "features": features, "used": {"memory": peak * scale, "cpu": 1.0}, "requested": {}})
        runs.append(UsageSeries(f"run-{i}", "ml.train", {"memory": (times, values)}, 1e9 + 200 * i))
    return JobTable.from_rows(STAGE_FEATURES, rows).sorted_by_submit(), SeriesSet(tuple(runs), SeriesLoadReport("test"))


@pytest.fixture
def registry(monkeypatch):
    """The MLflow registry replaced by a dict: what was logged, and which champion is served."""
    from airflow_adaptive.adapters.mlflow import registry as real
    from airflow_adaptive.domain.errors import ModelNotFound

    state = {"champion": None, "logged": [], "aliases": []}

    def load_profiler(uri):
        if state["champion"] is None:
            raise ModelNotFound(f"no {uri}")
        return state["champion"], "1"

    def log_profiler(profiler, name, metrics, plot_path, register):
        state["logged"].append(dict(metrics))
        return "run-id", str(len(state["logged"]) + 1)

    monkeypatch.setattr(real, "load_profiler", load_profiler)
    monkeypatch.setattr(real, "log_profiler", log_profiler)
    monkeypatch.setattr(real, "set_alias", lambda name, alias, version: state["aliases"].append(version))
    return state


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


def test_retraining_logs_the_score_over_time_and_the_phase_rule_refuses_phases_that_promise_too_little(registry, monkeypatch):
    from airflow_adaptive.logic import promotion
    from airflow_adaptive.logic.scaling import ScalingProfiler
    from airflow_adaptive.retraining import retrain_and_promote

    # Training runs step at half time; the hold-out runs step at 20%: the learned phases are low
    # from 20% to 50% of every hold-out run: 8 of its 26 samples (20, 24 .. 48 s).
    table, series = stage_history(holdout_step_at=0.2)
    first = retrain_and_promote(table, "p", plot=False, series=series)
    metrics = registry["logged"][-1]
    assert metrics["holdout_phased_runs"] == 4 and metrics["holdout_phased_runs_with_phases"] == 4
    assert metrics["holdout_phased_over_upper_fraction"] == pytest.approx(8 / 26)
    assert metrics["holdout_phased_reserved_over_used"] < metrics["holdout_constant_reserved_over_used"]
    assert "holdout_phased_over_upper_fraction_cpu" not in metrics  # cpu has no series here
    assert first.phase_scores["challenger"]["runs"] == 4 and "hold-out over time" in first.reason
    assert "champion" not in first.phase_scores  # none yet: the phase rule is off
    aliases = list(registry["aliases"])

    # A champion whose peaks are twice too high (so the challenger wins on peaks) and which sizes
    # constantly: none of its samples is above its upper, so the challenger's phases lose.
    doubled, _ = stage_history(scale=2.0)
    registry["champion"] = ScalingProfiler().fit(doubled)
    seen = {}
    real_decide = promotion.decide

    def spy(*args, **kwargs):
        seen.update(kwargs, peak=real_decide(*args[:3]))
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(promotion, "decide", spy)
    second = retrain_and_promote(table, "p", plot=False, series=series)
    assert seen["peak"].promote, seen["peak"].reason  # the peaks alone would promote it
    assert seen["champion_phases"].over_upper_fraction == 0.0
    assert seen["challenger_phases"].series == seen["champion_phases"].series
    assert not second.promoted and "promise less than the usage needs" in second.reason
    assert second.phase_scores["champion"]["phased_runs"] == 0  # a champion without shapes: constant
    assert registry["aliases"] == aliases  # the alias did not move

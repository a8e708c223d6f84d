"""Phases over progress from earlier runs: segmentation, the envelope, and the constant fallback."""

import numpy as np
import pytest

from airflow_adaptive.logic.usage_profile import learn_shape, run_shape, segment

GiB = 2**30


def phased_run(duration, load=0.3, train=1.0, evaluate=0.6, peak=4 * GiB, step=10.0, jitter=0.0, rng=None):
    """Loads (30% of the peak) for the first quarter, trains at the peak to 70%, then evaluates."""
    times = np.arange(0.0, duration + step, step)
    p = times / duration
    frac = np.where(p < 0.25, load, np.where(p < 0.7, train, evaluate))
    if rng is not None:
        frac = frac * (1 + rng.uniform(-jitter, jitter, len(frac)))
    return times, frac * peak


def test_a_run_shape_is_the_highest_sample_per_progress_bin_over_the_peak():
    times, values = np.array([0.0, 10, 20, 30, 40]), np.array([1.0, 3.0, 2.0, 4.0, 4.0])
    shape = run_shape(times, values, bins=4, min_samples=2)
    assert list(shape) == pytest.approx([0.25, 0.75, 0.5, 1.0])
    assert run_shape(np.array([0.0]), np.array([1.0])) is None  # no duration: nothing to learn
    assert run_shape(times, values) is None  # 5 samples: too short to show phases


def test_segmentation_finds_the_steps_and_ignores_small_wiggles():
    curve = np.array([0.3] * 5 + [1.0] * 9 + [0.6] * 6) + np.tile([0.0, 0.02], 10)
    assert segment(curve) == [(0, 5), (5, 14), (14, 20)]
    assert segment(np.full(20, 0.5)) == [(0, 20)]


def test_three_phases_are_learned_from_runs_of_different_lengths():
    rng = np.random.default_rng(1)
    runs = [phased_run(d, jitter=0.03, rng=rng) for d in (600, 900, 750, 800)]
    shape = learn_shape("memory", runs)
    assert shape.fallback is None and shape.runs == 4 and len(shape.phases) == 3
    load, train, evaluate = shape.phases
    assert load.start == 0 and load.end == pytest.approx(0.25) and load.upper == pytest.approx(0.31, abs=0.03)
    assert train.upper == pytest.approx(1.0) and evaluate.upper == pytest.approx(0.62, abs=0.04)
    assert shape.duration_median == pytest.approx(775) and shape.duration_upper == pytest.approx(900)
    assert shape.upper_within(0.1, 0.3) == train.upper  # a rise within the lead time counts now
    assert shape.at(1.5) == evaluate  # past the predicted end: the last phase


def test_too_few_runs_fall_back_to_one_phase_at_the_peak_and_say_so():
    shape = learn_shape("memory", [phased_run(600), phased_run(700)])
    assert len(shape.phases) == 1 and shape.phases[0].upper == 1.0
    assert "2 earlier run(s)" in shape.fallback and "3 needed" in shape.fallback


def test_phases_scale_the_shape_by_the_predicted_peak_and_duration():
    from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
    from airflow_adaptive.logic.usage_profile import learn_stage_shapes, with_phases

    runs = [{"memory": phased_run(d)} for d in (600, 800, 1000)]
    shapes = learn_stage_shapes({"pipeline.train": runs})
    profile = PredictedProfile({"memory": ResourceEstimate(2 * GiB, 3 * GiB)}, coverage=0.99,
                               duration=ResourceEstimate(400, 900))
    phased = with_phases(profile, shapes, {"dag_id": "pipeline", "task_id": "train"})
    load, train, evaluate = phased.phases["memory"]
    assert (load.start_s, load.end_s) == pytest.approx((0, 100)) and load.upper == pytest.approx(0.3 * 3 * GiB)
    assert train.median == pytest.approx(2 * GiB) and evaluate.end_s == pytest.approx(400)
    assert PredictedProfile.from_dict(phased.to_dict()) == phased  # XCom, the monitor's env, the stage run

    other = with_phases(profile, shapes, {"dag_id": "pipeline", "task_id": "evaluate"})
    assert other.phases == {} and "no usage over time recorded" in other.notes[-1]
    old = with_phases(profile, None, {"dag_id": "pipeline", "task_id": "train"})
    assert old.phases == {} and "registered before time-varying profiles" in old.notes[-1]


def test_the_step_is_the_largest_jump_within_a_phase_not_the_rise_into_one():
    from airflow_adaptive.logic.usage_profile import run_steps

    # 10 samples: a phase at 1 GiB that jumps to 1.5 GiB inside it, then a rise to 4 GiB (the next phase).
    times = np.arange(10.0)
    values = np.array([1.0, 1.0, 1.5, 1.5, 1.4, 4.0, 4.0, 4.0, 4.0, 4.0]) * GiB
    steps = run_steps(times, values, [(0.0, 0.5), (0.5, 1.0)])
    assert list(steps) == pytest.approx([0.5 / 4, 0.0])  # the jump of 0.5 GiB over the 4 GiB peak; none after the rise
    assert list(run_steps(times, values, [(0.0, 1.0)])) == pytest.approx([2.5 / 4])  # one phase: the rise is a jump


def test_the_stage_learns_one_step_over_its_runs():
    # Three runs of a phased stage; the second trains at 0.8 of its peak, then jumps to it midway.
    runs = [phased_run(d) for d in (600, 800, 1000)]
    t, v = runs[1]
    v = v.copy()
    inside = (t / 800 >= 0.25) & (t / 800 < 0.7)
    v[inside] *= np.where(t[inside] / 800 > 0.5, 1.0, 0.8)  # 0.8 of the peak, then the peak: a jump of 0.2
    runs[1] = (t, v)
    shape = learn_shape("memory", runs)
    assert len(shape.phases) == 3
    assert [p.step for p in shape.phases] == pytest.approx([0.2] * 3)  # the stage's step, in every phase


def test_a_step_scales_with_the_predicted_upper_and_survives_the_json():
    from airflow_adaptive.domain.profile import PhaseNeed, PredictedProfile, ResourceEstimate
    from airflow_adaptive.logic.usage_profile import phases_for

    shape = learn_shape("memory", [phased_run(d) for d in (600, 800, 1000)])
    phases, _ = phases_for({"memory": shape}, {"memory": ResourceEstimate(2 * GiB, 3 * GiB)}, 400)
    assert all(p.step == pytest.approx(0.0) for p in phases["memory"])  # these runs never jump inside a phase
    stepped = PredictedProfile({"memory": ResourceEstimate(2 * GiB, 3 * GiB)}, coverage=0.99,
                               phases={"memory": (PhaseNeed(0, 10, GiB, 2 * GiB, 0.5 * GiB),)})
    assert PredictedProfile.from_dict(stepped.to_dict()) == stepped
    unstepped = PredictedProfile({"memory": ResourceEstimate(2 * GiB, 3 * GiB)}, coverage=0.99,
                                 phases={"memory": (PhaseNeed(0, 10, GiB, 2 * GiB),)})
    assert "step" not in unstepped.to_dict()["phases"]["memory"][0]  # what older monitors read, unchanged
    assert PredictedProfile.from_dict(unstepped.to_dict()) == unstepped

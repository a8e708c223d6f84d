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

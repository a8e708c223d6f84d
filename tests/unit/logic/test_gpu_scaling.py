"""The speed-up law from history, and the more-GPUs decision or recommendation, case by case."""

import math

import numpy as np
import pytest

from airflow_adaptive.domain.profile import GpuScaling, PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.domain.stage_run import stage_schema
from airflow_adaptive.logic.gpu_scaling import (
    NOT_ENOUGH,
    GpuScalingConfig,
    decide,
    fit_gpu_scaling,
    gpu_counts,
    learn_gpu_scaling,
)

H = 3600.0
#: 12 runs at 2, 4 and 8 GPUs of a job that halves its time per doubling (alpha = 1).
LINEAR = GpuScaling(a=8 * H, alpha=1.0, runs=12, counts=(2, 4, 8))
#: ... and one that barely speeds up (alpha = 0.05).
FLAT = GpuScaling(a=2 * H, alpha=0.05, runs=12, counts=(2, 4, 8))
SUBLINEAR = GpuScaling(a=8 * H, alpha=0.8, runs=9, counts=(1, 2, 4))


# --- the law ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, gpus, durations, alpha",
    [
        ("linear speed-up", [1, 1, 2, 2, 4, 4], [100, 100, 50, 50, 25, 25], 1.0),
        ("no speed-up", [1, 1, 4, 4], [100, 100, 100, 100], 0.0),
        ("sublinear", [2, 2, 8, 8], [100, 100, 100 * 4 ** -0.5, 100 * 4 ** -0.5], 0.5),
        ("slower with more GPUs is clipped to 0", [1, 1, 2, 2], [100, 100, 150, 150], 0.0),
        ("superlinear is clipped to 1", [1, 1, 2, 2], [100, 100, 20, 20], 1.0),
        ("the median per count resists one straggler", [1, 1, 1, 2, 2, 2], [100, 100, 900, 50, 50, 50], 1.0),
        ("unknown counts and run times are dropped", [1, 1, np.nan, 2, 2, 0], [100, 100, 5, 50, 50, 9], 1.0),
    ],
)
def test_fit(name, gpus, durations, alpha):
    law = fit_gpu_scaling(gpus, durations)
    assert law is not None, name
    assert law.alpha == pytest.approx(alpha, abs=1e-9), name
    if "clipped" not in name:  # a clipped law fits the runs' geometric mean, not each count
        assert law.duration(gpus[0]) == pytest.approx(100), name


@pytest.mark.parametrize(
    "name, gpus, durations",
    [
        ("one count only (a fixed world size)", [4, 4, 4, 4], [100, 90, 110, 100]),
        ("one run at the second count", [1, 1, 2], [100, 100, 50]),
        ("no runs", [], []),
        ("no known run time", [1, 1, 2, 2], [np.nan] * 4),
    ],
)
def test_not_enough_history(name, gpus, durations):
    assert fit_gpu_scaling(gpus, durations) is None, name


def _table(rows):
    """rows: (task_id, gpus, run_time[, world_size])."""
    schema = stage_schema()
    n = len(rows)
    features = {}
    for f in schema.features:
        features[f.name] = np.full(n, np.nan) if f.kind == "numeric" else np.array([""] * n, dtype=object)
    features["dag_id"] = np.array(["d"] * n, dtype=object)
    features["task_id"] = np.array([r[0] for r in rows], dtype=object)
    features["requested_gpu"] = np.array([r[1] for r in rows], dtype=float)
    features["world_size"] = np.array([r[3] if len(r) > 3 else np.nan for r in rows], dtype=float)
    run_time = np.array([r[2] for r in rows], dtype=float)
    return JobTable(schema=schema, job_id=np.array([f"j{i}" for i in range(n)], dtype=object), submit=np.arange(n, dtype=float),
                    end=np.arange(n, dtype=float) + run_time, run_time=run_time, features=features,
                    used={"gpu": np.ones(n)}, requested={"gpu": np.full(n, np.nan)})


def test_learned_per_stage_with_a_pooled_alpha_for_fixed_world_sizes():
    rows = []
    for task, alpha in (("a", 1.0), ("b", 0.5)):  # ran at 2 and 8 GPUs
        rows += [(task, g, 1000 * g ** -alpha) for g in (2, 2, 8, 8)]
    rows += [("fixed", 4, 500), ("fixed", 4, 520), ("fixed", 4, 480)]  # always 4 GPUs
    rows += [("once", 4, 500)]  # one run: nothing to learn
    laws = learn_gpu_scaling(_table(rows))
    key = lambda task: "d\x1f" + task  # noqa: E731 - level_strings of (dag_id, task_id)
    assert laws[key("a")].alpha == pytest.approx(1.0) and laws[key("a")].source == "stage"
    assert laws[key("b")].alpha == pytest.approx(0.5) and laws[key("b")].counts == (2, 8)
    fixed = laws[key("fixed")]
    assert fixed.source == "pooled" and fixed.alpha == pytest.approx(0.75) and fixed.counts == (4,)
    assert fixed.duration(4) == pytest.approx(500)
    assert key("once") not in laws
    assert key("fixed") not in learn_gpu_scaling(_table(rows), pooled=False)


def test_the_gpu_count_prefers_world_size_over_the_request():
    table = _table([("t", 1, 100, 4), ("t", 2, 100)])
    assert list(gpu_counts(table)) == [4, 2]


def test_an_empty_table_learns_nothing():
    assert learn_gpu_scaling(_table([])) == {}


def test_the_law_travels_with_the_profile():
    profile = PredictedProfile({"gpu": ResourceEstimate(3.8, 3.9)}, coverage=0.9, gpu_scaling=SUBLINEAR)
    back = PredictedProfile.from_dict(profile.to_dict())
    assert back.gpu_scaling == SUBLINEAR
    assert "gpu_scaling" not in PredictedProfile({}, coverage=0.9).to_dict()  # optional: older readers unaffected


# --- the decision ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, current, util, duration_h, law, elastic, kind, gpus, words",
    [
        ("elastic, saturated, long: more GPUs, just enough to get under 30 min",
         4, 3.9, 2.0, LINEAR, (1, 32), "decision", 16, ["elastic: 16 GPUs instead of 4", "[1, 32]", "x4.00"]),
        ("elastic, long beyond reach: the declared max", 4, 3.9, 8.0, LINEAR, (1, 8), "decision", 8, ["x2.00"]),
        ("elastic, sublinear", 2, 1.9, 2.0, SUBLINEAR, (1, 8), "decision", 8, ["gpus^-0.80", "9 runs at 1, 2, 4 GPUs"]),
        ("elastic at its max: a recommendation to raise it", 8, 7.9, 4.0, LINEAR, (1, 8), "recommendation", 16,
         ["at its declared maximum of 8", "raising elastic_gpus max to 16"]),
        ("fixed world size: a recommendation, the count is kept", 4, 3.95, 2.0, LINEAR, None, "recommendation", 8,
         ["recommendation for the next run", "8 GPUs would take about 1.0 h", "set nvidia.com/gpu to 8",
          "elastic_gpus={'min': 4, 'max': 8}"]),
        ("not saturated", 4, 2.0, 5.0, LINEAR, (1, 8), "none", 4, ["not GPU-saturated"]),
        ("just below the saturation threshold", 10, 8.9, 5.0, LINEAR, None, "none", 10, ["not GPU-saturated"]),
        ("short", 4, 3.9, 0.25, LINEAR, (1, 8), "none", 4, ["short"]),
        ("no utilisation predicted", 4, None, 5.0, LINEAR, (1, 8), "none", 4, ["not predicted"]),
        ("no duration predicted", 4, 3.9, None, LINEAR, (1, 8), "none", 4, ["duration is not predicted"]),
        ("no GPUs", 0, 0.0, 5.0, LINEAR, None, "none", 0, ["no GPUs"]),
        ("not enough history", 4, 3.9, 5.0, None, (1, 8), "hold", 4, [NOT_ENOUGH]),
        ("alpha ~ 0: no speed-up, no recommendation", 4, 3.9, 5.0, FLAT, None, "hold", 4, ["hardly shorten it"]),
        ("alpha ~ 0, elastic: no decision", 4, 3.9, 5.0, FLAT, (1, 16), "hold", 4, ["hardly shorten it"]),
        ("elastic at max with alpha ~ 0: nothing", 8, 8.0, 5.0, FLAT, (1, 8), "hold", 8, ["hardly shorten it"]),
        ("never extrapolates past twice the largest count seen", 8, 8.0, 10.0, GpuScaling(8 * H, 1.0, 4, (1, 2)),
         (1, 64), "hold", 8, ["hardly shorten it"]),
        ("pooled alpha says so", 4, 3.9, 2.0, GpuScaling(8 * H, 1.0, 3, (4,), "pooled"), None, "recommendation", 8,
         ["alpha pooled from similar stages"]),
    ],
)
def test_decide(name, current, util, duration_h, law, elastic, kind, gpus, words):
    advice = decide(current, util, duration_h * H if duration_h is not None else None, law, elastic)
    assert (advice.kind, advice.gpus, advice.current) == (kind, gpus, current), f"{name}: {advice.reason}"
    for w in words:
        assert w in advice.reason, f"{name}: {w!r} not in {advice.reason!r}"
    if kind in ("decision", "recommendation"):
        assert advice.expected_s < advice.predicted_s and advice.speedup >= 1.1
        assert advice.to_dict()["gpus"] == gpus


def test_the_expected_duration_is_anchored_on_the_count_the_prediction_was_made_for():
    # Predicted 2 h at the user's 4 GPUs; elastic sizing put it at 2 (utilisation 1.9): 4 h there.
    advice = decide(2, 1.9, 2 * H, LINEAR, (1, 8), predicted_at=4)
    assert advice.predicted_s == pytest.approx(4 * H)
    assert advice.kind == "decision" and advice.gpus == 8 and advice.expected_s == pytest.approx(1 * H)


def test_thresholds_are_parameters():
    config = GpuScalingConfig(long_s=10 * H)
    assert decide(4, 3.9, 2 * H, LINEAR, (1, 8), config=config).kind == "none"
    assert decide(4, 3.0, 2 * H, LINEAR, (1, 8), config=GpuScalingConfig(saturated=0.7)).kind == "decision"
    with pytest.raises(ValueError, match="saturated"):
        GpuScalingConfig(saturated=1.5)
    assert math.isclose(LINEAR.speedup(4, 8), 2.0)

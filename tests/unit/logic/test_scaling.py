"""The small-history profiler: scaling laws per workload, conformal offsets from few residuals."""

import math

import numpy as np
import pytest

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.domain.stage_run import STAGE_FEATURES
from airflow_adaptive.logic.profiler import JobProfiler
from airflow_adaptive.logic.promotion import score_on_window
from airflow_adaptive.logic.scaling import (
    TAIL_MARGIN, ScalingProfiler, conformal_offsets, fit_law, leave_one_out, profiler_for,
)
from airflow_adaptive.logic import conformal

STAGES = {"load": (120e6, 300.0), "train": (150e6, 1800.0), "evaluate": (110e6, 200.0)}


def features(task, rows):
    return {"dag_id": "ml", "task_id": task, "algorithm": "rf", "framework": "sklearn", "data_rows": float(rows),
            "data_bytes": rows * 256.0, "n_features": 32.0, "epochs": 1.0}


def history(sizes=(50_000, 100_000, 200_000, 400_000), noise=0.03, seed=0):
    rng = np.random.default_rng(seed)
    rows, t = [], 1e9
    for i, n in enumerate(sizes):
        for task, (a, b) in STAGES.items():
            mem = (a + b * n) * (1 + noise * rng.standard_normal())
            rows.append({"job_id": f"{task}-{i}", "submit": t, "end": t + 5, "run_time": 5.0, "features": features(task, n),
                         "used": {"cpu": 1.0, "memory": mem}, "requested": {}})
            t += 10
    return JobTable.from_rows(STAGE_FEATURES, rows).sorted_by_submit()


def test_fit_law_recovers_a_power_law_and_bounds_the_slope():
    x = np.log1p(np.array([1e4, 1e5, 1e6]))
    law = fit_law(x, 2.0 + 0.5 * x, "data_rows")
    assert law.slope == pytest.approx(0.5) and law.intercept == pytest.approx(2.0)
    falling = fit_law(x, 10 - x, "data_rows")
    assert falling.slope == 0.0  # usage never falls with input size: clipped to the mean's level


def test_one_size_only_is_the_mean():
    law = fit_law(np.array([3.0, 3.0]), np.array([1.0, 2.0]), "data_rows")
    assert law.slope == 0.0 and law.intercept == pytest.approx(1.5)


def test_leave_one_out_is_out_of_sample():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, 1.0, 2.0, 10.0])  # the last point is far off the others' line
    res = leave_one_out(x, y, "f")
    assert res[-1] == pytest.approx(7.0)  # predicted 3 from the first three, observed 10


@pytest.mark.parametrize("n,level,expected", [
    (9, 0.5, "order"),  # ceil(10 * 0.5) = 5th of 9
    (9, 0.99, "tail"),  # ceil(10 * 0.99) = 10 > 9: beyond the largest
])
def test_conformal_offsets_small_samples(n, level, expected):
    residuals = np.arange(1, n + 1) / 10.0
    offsets = conformal_offsets(residuals)
    got = offsets[list(conformal.QUANTILES).index(level)]
    if expected == "order":
        assert got == pytest.approx(0.5)
    else:
        assert got == pytest.approx(residuals.max() + TAIL_MARGIN)
    assert np.all(np.diff(offsets) >= 0)


def test_predictions_follow_data_size_and_cover_new_runs():
    profiler = ScalingProfiler().fit(history())
    for task, (a, b) in STAGES.items():
        small = profiler.predict_profile(features(task, 75_000)).resources["memory"]
        large = profiler.predict_profile(features(task, 300_000)).resources["memory"]
        assert large.median > small.median  # follows the input size
        truth = a + b * 300_000
        assert large.median == pytest.approx(truth, rel=0.10)
        assert large.upper >= truth  # covering
        assert large.upper < 2 * truth  # but not a blanket


def test_unknown_stage_is_cold_and_wider():
    profiler = ScalingProfiler().fit(history())
    known = profiler.predict_profile(features("train", 200_000))
    cold = profiler.predict_profile(features("never_seen", 200_000))
    assert not known.cold_start and cold.cold_start
    ratio = lambda p: p.resources["memory"].upper / p.resources["memory"].median  # noqa: E731
    assert ratio(cold) > ratio(known)


def test_too_little_history_is_a_clear_error():
    with pytest.raises(UserError, match="seed runs"):
        ScalingProfiler().fit(history(sizes=(50_000,)))


def test_champion_challenger_scores_it_like_the_job_profiler():
    table = history(sizes=(50_000, 400_000, 100_000, 200_000, 150_000))
    profiler = ScalingProfiler().fit(table)
    score = score_on_window(profiler, table, 0.01)
    assert math.isfinite(score.allocated_over_used) and score.allocated_over_used >= 1.0


def test_profiler_for_picks_by_history_size():
    assert isinstance(profiler_for(history()), ScalingProfiler)
    big = JobTable.from_rows(STAGE_FEATURES, [dict(r) for r in history(sizes=tuple(range(10_000, 10_000 + 1000 * 70, 1000))).rows()])
    assert isinstance(profiler_for(big), JobProfiler)


def test_a_resource_never_recorded_for_a_stage_leaves_only_that_resource_to_the_user():
    """An evaluation stage whose CPU was never recorded (0 in every run) keeps its memory
    prediction; before, one cold resource made the whole profile a cold start (the demo's
    evaluate_model then ran at the author's 2 GiB)."""
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES
    from airflow_adaptive.logic.scaling import ScalingProfiler

    rows = []
    for i, rows_ in enumerate([100, 200, 300, 400, 150, 250, 350, 120] * 2):
        task = "train" if i < 8 else "evaluate"
        rows.append({"job_id": str(i), "submit": 1e9 + i * 10, "end": 1e9 + i * 10 + 5, "run_time": 5.0,
                     "features": {"dag_id": "d", "task_id": task, "algorithm": "a", "framework": "f", "data_rows": float(rows_)},
                     "used": {"memory": (30 + rows_) * 2**20, "cpu": 1.0 if task == "train" else 0.0}, "requested": {}})
    profiler = ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, rows))
    job = {"dag_id": "d", "task_id": "evaluate", "algorithm": "a", "framework": "f", "data_rows": 200.0}
    profile = profiler.predict_profile({k: v for k, v in job.items() if k in profiler.schema_.names})
    assert not profile.cold_start and "memory" in profile.resources and "cpu" not in profile.resources
    assert profile.resources["memory"].median > 200 * 2**20
    assert "cold start for cpu" in profile.notes[0]


# ----------------------------------------------------------------------------- cold start from similar stages
GB = 2**30
#: Deep-learning stages of two families: memory = base + bytes per (parameter x sample).
FAMILIES = {"resnet": (0.4 * GB, 2.0), "transformer": (0.6 * GB, 6.0)}
ARCHS = {"resnet": {"resnet18": 11.7e6, "resnet34": 21.8e6, "resnet50": 25.6e6, "resnet101": 44.5e6},
         "transformer": {"bert_small": 29e6, "bert_base": 110e6, "gpt2_small": 124e6}}


def dl_memory(family, params, batch):
    base, per = FAMILIES[family]
    return base + per * params * batch / 16


def dl_features(family, arch, batch, dag="dl"):
    return {"dag_id": dag, "task_id": f"train_{arch}", "algorithm": arch, "framework": "pytorch", "model_family": family,
            "parameters": ARCHS[family][arch], "batch_size": float(batch), "precision": "fp32", "optimizer": "adam"}


def dl_history(leave_out=(), noise=0.03, seed=1):
    rng = np.random.default_rng(seed)
    rows, t = [], 1e9
    for family, archs in ARCHS.items():
        for arch in archs:
            if arch in leave_out:
                continue
            for batch in (16, 32, 64, 128):
                mem = dl_memory(family, ARCHS[family][arch], batch) * (1 + noise * rng.standard_normal())
                rows.append({"job_id": f"{arch}-{batch}", "submit": t, "end": t + 60, "run_time": 60.0,
                             "features": dl_features(family, arch, batch), "used": {"memory": mem, "cpu": 2.0}, "requested": {}})
                t += 100
    return JobTable.from_rows(STAGE_FEATURES, rows).sorted_by_submit()


@pytest.mark.parametrize("family, arch", [("resnet", "resnet101"), ("transformer", "bert_base"), ("resnet", "resnet18")])
def test_a_new_stage_is_predicted_from_its_family_and_covered(family, arch):
    """Leave one architecture out: its first run is a cold start, predicted from the stages of its
    model family by memory against parameters x batch size, covered by the wider offsets."""
    profiler = ScalingProfiler().fit(dl_history(leave_out=(arch,)))
    for batch in (16, 64):
        profile = profiler.predict_profile(dl_features(family, arch, batch))
        truth = dl_memory(family, ARCHS[family][arch], batch)
        memory = profile.resources["memory"]
        assert profile.cold_start
        assert memory.median == pytest.approx(truth, rel=0.35)
        assert memory.upper >= truth and memory.upper < 4 * truth
    note = " ".join(profile.notes)
    assert f"model_family={family}" in note or "algorithm=" not in note
    assert "parameters x batch_size" in note or "batch_size" in note


def test_the_cold_law_beats_the_pooled_law_of_all_stages():
    """Before, a new stage got one law over all stages; a transformer then borrowed resnets' memory."""
    table = dl_history(leave_out=("bert_base",))
    profiler = ScalingProfiler().fit(table)
    job = dl_features("transformer", "bert_base", 64)
    truth = dl_memory("transformer", ARCHS["transformer"]["bert_base"], 64)
    similar = profiler.predict_profile(job).resources["memory"].median
    pooled = float(np.exp(profiler.pooled_["memory"].predict(np.array([np.log1p(ARCHS["transformer"]["bert_base"]) + np.log1p(64)]))[0])) \
        if "*" in (profiler.pooled_["memory"].feature or "") else None
    assert abs(similar / truth - 1) < 0.35
    assert profiler.similar_to("memory", table.take(np.array([0])).project(profiler.schema_), 0).level  # a group, not all stages
    if pooled is not None:
        assert abs(similar / truth - 1) <= abs(pooled / truth - 1) + 1e-9


def test_the_cold_offsets_are_calibrated_leave_one_stage_out():
    profiler = ScalingProfiler().fit(dl_history())
    known = profiler.predict_profile(dl_features("resnet", "resnet50", 64)).resources["memory"]
    cold = profiler.predict_profile(dl_features("resnet", "resnet50", 64, dag="other")).resources["memory"]
    assert cold.upper / cold.median > known.upper / known.median  # wider
    # Every stage, predicted as a cold start from the others, is covered at the median of the
    # leave-one-stage-out residuals (what the offsets are made of).
    assert set(profiler.cold_offsets_["memory"]) == {"similar", "pooled"}
    assert np.all(np.diff(profiler.cold_offsets_["memory"]["similar"]) >= 0)


def test_a_stage_of_an_unknown_family_borrows_from_all_stages_and_says_so():
    profiler = ScalingProfiler().fit(dl_history())
    job = {**dl_features("resnet", "resnet50", 32), "model_family": "mamba", "algorithm": "mamba_small", "task_id": "train_mamba"}
    profile = profiler.predict_profile(job)
    assert profile.cold_start and any("all 7 stages" in n for n in profile.notes)


def test_a_feature_declared_after_the_fit_is_unknown_not_an_error():
    """Runs recorded before ``batch_size`` was declared have it unknown; it is not a group's size
    then (MIN_KNOWN_SHARE), and a job without it gets the group's mean."""
    table = dl_history()
    table.features["batch_size"][: len(table) // 2] = np.nan
    profiler = ScalingProfiler().fit(table)
    job = {k: v for k, v in dl_features("resnet", "resnet50", 32, dag="other").items() if k != "batch_size"}
    profile = profiler.predict_profile(job)
    assert profile.cold_start and math.isfinite(profile.resources["memory"].median)


def test_the_profile_carries_the_stage_s_learned_gpu_speed_up():
    """Duration against GPU count (logic/gpu_scaling.py), learned at fit and given with the profile."""
    rows, t = [], 1e9
    for i, gpus in enumerate([1, 1, 2, 2, 4, 4, 1, 2]):
        feats = {**dl_features("resnet", "resnet50", 64), "world_size": float(gpus)}
        rows.append({"job_id": str(i), "submit": t, "end": t + 3600 / gpus, "run_time": 3600.0 / gpus, "features": feats,
                     "used": {"memory": 4e9, "gpu": 0.95 * gpus}, "requested": {}})
        t += 4000
    profiler = ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, rows))
    scaling = profiler.predict_profile(dl_features("resnet", "resnet50", 64)).gpu_scaling
    assert scaling is not None and scaling.alpha == pytest.approx(1.0, abs=0.05) and scaling.counts == (1, 2, 4)
    assert profiler.predict_profile({**dl_features("resnet", "resnet50", 64), "task_id": "other"}).gpu_scaling is None


def test_disk_bandwidth_and_ephemeral_storage_are_learned_like_memory_and_unmeasured_network_is_not_guessed():
    """Stage runs whose samples carried disk bandwidth and storage (network unmeasured: the
    host's namespace): both follow the data size, so a larger run is predicted by its law; the
    network has no record and no prediction (the user's request stays in charge of it)."""
    rng = np.random.default_rng(1)
    rows, t = [], 1e9
    for i, n in enumerate((50_000, 100_000, 200_000, 400_000)):
        for task in STAGES:
            read = 40.0 * n * (1 + 0.03 * rng.standard_normal())  # bytes/s: reads its input faster when larger
            scratch = 300.0 * n if task == "load" else 4096.0  # load spills to its working directory
            rows.append({"job_id": f"{task}-{i}", "submit": t, "end": t + 5, "run_time": 5.0, "features": features(task, n),
                         "used": {"memory": 1e8 + 150.0 * n, "disk_read": read, "ephemeral_storage": scratch}, "requested": {}})
            t += 10
    profiler = ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, rows).sorted_by_submit())
    profile = profiler.predict_profile(features("load", 800_000))
    assert profile.resources["disk_read"].median == pytest.approx(40.0 * 800_000, rel=0.1)
    assert profile.resources["disk_read"].upper >= profile.resources["disk_read"].median
    assert profile.resources["ephemeral_storage"].median == pytest.approx(300.0 * 800_000, rel=0.05)
    assert "network_rx" not in profile.resources and "network_tx" not in profile.resources
    evaluate = profiler.predict_profile(features("evaluate", 800_000))
    assert evaluate.resources["ephemeral_storage"].median == pytest.approx(4096.0, rel=0.05)  # constant: no law in size

"""The registered profiler's pickle format: a champion registered before time-varying profiles
(format 1, ``tests/data/job-profiler-format1.pkl``, pickled by commit 1737a11's code) still loads
and predicts, now with a note that it has no phases; a format-2 champion (phases learned before
steps were, ``tests/data/job-profiler-format2.pkl``, pickled by commit 39ba51d's code) keeps its
phases without a step, so the runtime follows them as that code did; a format-2 stage champion
(scaling laws on the closed ``stage/1`` features, ``tests/data/stage-profiler-format2.pkl``,
pickled by commit a35aede's code) meets stages that declare new features and predicts them; a
newer format than this code reads is refused with what to do."""

from pathlib import Path
import shutil

import pytest

from airflow_adaptive.adapters.mlflow.profiler_pickle import PROFILER_FORMAT, dump_profiler, read_profiler
from airflow_adaptive.domain.errors import RegistryError
from airflow_adaptive.logic.usage_profile import with_phases

FORMAT_1 = Path(__file__).resolve().parents[2] / "data" / "job-profiler-format1.pkl"
FORMAT_2 = Path(__file__).resolve().parents[2] / "data" / "job-profiler-format2.pkl"
STAGE_FORMAT_2 = Path(__file__).resolve().parents[2] / "data" / "stage-profiler-format2.pkl"


def test_a_format_1_champion_still_loads_and_predicts(tmp_path):
    path = tmp_path / "profiler.pkl"
    shutil.copy(FORMAT_1, path)
    profiler = read_profiler(path)
    assert getattr(profiler, "format_version_", 1) == 1 and getattr(profiler, "shapes_", None) is None
    job = {"user": "u1", "executable": "e1", "procs": 32, "requested_memory": 2**30, "requested_time": 3600,
           "queue": "q", "partition": "p"}
    job = {k: v for k, v in job.items() if k in profiler.schema_.names}
    profile = with_phases(profiler.predict_profile(job), getattr(profiler, "shapes_", None), job)
    assert profile.resources["memory"].upper > 0 and profile.phases == {}
    assert "registered before time-varying profiles" in profile.notes[-1]


def test_a_profiler_is_stamped_with_its_format_and_a_newer_one_is_refused(tmp_path):
    profiler = read_profiler(shutil.copy(FORMAT_1, tmp_path / "old.pkl"))
    dump_profiler(profiler, tmp_path / "new.pkl")
    again = read_profiler(tmp_path / "new.pkl")
    assert again.format_version_ == PROFILER_FORMAT and again.shapes_ == {}
    again.format_version_ = PROFILER_FORMAT + 1
    import pickle

    (tmp_path / "future.pkl").write_bytes(pickle.dumps(again))
    with pytest.raises(RegistryError, match=f"format {PROFILER_FORMAT + 1}, newer than this airflow-adaptive reads"):
        read_profiler(tmp_path / "future.pkl")


def test_a_format_2_champion_keeps_its_phases_without_a_step(tmp_path):
    profiler = read_profiler(shutil.copy(FORMAT_2, tmp_path / "profiler.pkl"))
    assert profiler.format_version_ == 2
    job = {"user": "u1", "executable": "e1", "procs": 32, "requested_memory": 2**30, "requested_time": 3600,
           "queue": "q", "partition": "p"}
    job = {k: v for k, v in job.items() if k in profiler.schema_.names}
    profile = with_phases(profiler.predict_profile(job), profiler.shapes_, {**job, "dag_id": "pipeline", "task_id": "train"})
    phases = profile.phases["memory"]
    assert len(phases) == 3 and all(p.step is None for p in phases)  # the runtime holds each phase's upper, as before
    assert phases[1].upper == profile.resources["memory"].upper


def test_a_format_2_stage_champion_predicts_stages_that_declare_new_features(tmp_path):
    """The open schema: features the champion never saw are left out (with a note, by the hook's
    ``known_features``); a new stage is still predicted (from all stages: that code had no groups)."""
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES
    from airflow_adaptive.hooks.profiler import coerce_features, known_features

    profiler = read_profiler(shutil.copy(STAGE_FORMAT_2, tmp_path / "profiler.pkl"))
    assert profiler.format_version_ == 2 and profiler.schema_.id == "stage/1"
    declared = {"dag_id": "ml", "task_id": "train", "algorithm": "rf", "framework": "sklearn", "data_rows": "200000",
                "parameters": 11.7e6, "batch_size": 64, "lora_rank": 8, "precision": "bf16"}
    known, new = known_features(profiler.schema_, coerce_features(profiler.schema_, declared))
    assert new == ["batch_size", "lora_rank", "parameters", "precision"]
    warm = profiler.predict_profile(known)
    assert not warm.cold_start and warm.resources["memory"].median == pytest.approx(150e6 + 1800 * 200_000, rel=0.15)
    cold = profiler.predict_profile({**known, "task_id": "never_seen"})
    assert cold.cold_start and cold.resources["memory"].upper > 0
    # A table of today's open schema (more features) is projected onto the champion's for scoring.
    rows = [{"job_id": "j", "submit": 1e9, "end": 1e9 + 5, "run_time": 5.0, "features": {**known, "data_rows": 2e5, "parameters": 1e6},
             "used": {"memory": 5e8}, "requested": {}}]
    scored = profiler.predict(JobTable.from_rows(STAGE_FEATURES, rows))
    assert scored["memory"]["median"][0] == pytest.approx(warm.resources["memory"].median)

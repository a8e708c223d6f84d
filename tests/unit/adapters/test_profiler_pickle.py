"""The registered profiler's pickle format: a champion registered before time-varying profiles
(format 1, ``tests/data/job-profiler-format1.pkl``, pickled by commit 1737a11's code) still loads
and predicts, now with a note that it has no phases; a format-2 champion (phases learned before
steps were, ``tests/data/job-profiler-format2.pkl``, pickled by commit 39ba51d's code) keeps its
phases without a step, so the runtime follows them as that code did; a newer format than this
code reads is refused with what to do."""

from pathlib import Path
import shutil

import pytest

from airflow_adaptive.adapters.mlflow.profiler_pickle import PROFILER_FORMAT, dump_profiler, read_profiler
from airflow_adaptive.domain.errors import RegistryError
from airflow_adaptive.logic.usage_profile import with_phases

FORMAT_1 = Path(__file__).resolve().parents[2] / "data" / "job-profiler-format1.pkl"
FORMAT_2 = Path(__file__).resolve().parents[2] / "data" / "job-profiler-format2.pkl"


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

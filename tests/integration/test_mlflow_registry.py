"""Registering, promoting and loading profilers, and stage runs, against real MLflow backends.

Every test that takes ``tracking`` runs twice: against a real ``mlflow server`` process and
against a SQLite store, both chosen through ``MLFLOW_TRACKING_URI`` as a user would.
"""

import copy
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airflow_adaptive.adapters.mlflow import registry
from airflow_adaptive.adapters.mlflow.stage_runs import UNFINISHED, load_stage_runs, log_stage_run
from airflow_adaptive.domain.errors import FeatureSchemaMismatch, RegistryError
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.stage_run import OomEvent, ObservedSummary, StageIdentity
from airflow_adaptive.logic.promotion import decide, score_on_window, split_holdout

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def jobs(lanl_table):
    """Jobs the profiler did not train on."""
    return lanl_table.take(np.arange(3000, 3200))


def frame_of(table):
    return pd.DataFrame({name: table.features[name] for name in table.schema.names})


def test_register_promote_and_load(tracking, home, profiler, jobs):
    import mlflow

    run_id, v1 = registry.log_profiler(profiler, metrics={"allocated_over_used": 1.5})
    assert v1 == "1"
    run = mlflow.MlflowClient(tracking).get_run(run_id)
    assert run.data.tags["airflow_adaptive.feature_schema"] == "swf/1"
    assert run.data.params["max_iter"] == "20"
    assert run.data.metrics["allocated_over_used"] == 1.5

    # not promoted yet: the default URI has nothing to load
    with pytest.raises(RegistryError, match="has no alias 'champion'.*airflow-adaptive train"):
        registry.load_profiler()
    registry.set_alias("job-profiler", "champion", v1)

    loaded, version = registry.load_profiler("models:/job-profiler@champion")
    assert version == "1"
    want, got = profiler.predict(jobs), loaded.predict(jobs)
    assert set(got) == {"cpu", "memory", "duration"}
    for target in want:
        np.testing.assert_array_equal(got[target]["median"], want[target]["median"])
        np.testing.assert_array_equal(got[target]["upper"], want[target]["upper"])
    cached = registry.cache_path(tracking, "job-profiler", "1")
    assert cached.exists() and cached.is_relative_to(home)

    # the pyfunc MLflow serves gives the same numbers as the profiler itself
    pyfunc = mlflow.pyfunc.load_model("models:/job-profiler@champion")
    out = pyfunc.predict(frame_of(jobs.take(np.arange(20))))
    assert {"memory_median", "memory_upper", "cpu_upper", "duration_median", "duration_upper", "cold_start"} <= set(out)
    for i, job in enumerate(jobs.take(np.arange(20)).rows()):
        expected = profiler.predict_profile(job["features"])
        assert out["memory_median"].iloc[i] == pytest.approx(expected.resources["memory"].median, rel=1e-12)
        assert out["memory_upper"].iloc[i] == pytest.approx(expected.resources["memory"].upper, rel=1e-12)
        assert out["duration_upper"].iloc[i] == pytest.approx(expected.duration.upper, rel=1e-12)
        assert bool(out["cold_start"].iloc[i]) == expected.cold_start
    bad = frame_of(jobs.take(np.arange(2))).assign(user=[None, "7"])
    with pytest.raises(FeatureSchemaMismatch, match="row 0.*'user'"):
        pyfunc.unwrap_python_model().predict(None, bad)

    # a second version promoted to champion is what the very next load returns
    wider = copy.deepcopy(profiler).set_params(coverage=0.999)
    _, v2 = registry.log_profiler(wider)
    assert v2 == "2"
    assert registry.load_profiler()[1] == "1"  # registered, not promoted
    registry.set_alias("job-profiler", "champion", v2)
    loaded2, version2 = registry.load_profiler()
    assert version2 == "2" and loaded2.coverage == 0.999
    assert (loaded2.predict(jobs)["memory"]["upper"] >= want["memory"]["upper"]).all()
    assert registry.resolve_alias("job-profiler", "champion") == "2"

    # a fresh process resolves the alias and reads the pickle from the disk cache: a download
    # attempt would fail it
    script = (
        "import airflow_adaptive.adapters.mlflow.registry as r\n"
        "def no(*a, **k): raise SystemExit('cache miss: tried to download')\n"
        "r._download = no\n"
        "p, v = r.load_profiler('models:/job-profiler@champion')\n"
        "print('version', v, p.coverage)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "version 2 0.999" in done.stdout


def test_missing_model_or_alias_is_a_registry_error(tracking, home):
    with pytest.raises(RegistryError, match=r"model 'no-such-model' has no alias 'champion'.*--register no-such-model"):
        registry.load_profiler("models:/no-such-model@champion")
    with pytest.raises(RegistryError, match="no version 3"):
        registry.load_profiler("models:/no-such-model/3")
    with pytest.raises(RegistryError, match="not models:/"):
        registry.load_profiler("runs:/abc/model")


def test_registry_that_does_not_answer_fails_fast(home, monkeypatch, closed_port):
    uri = f"http://127.0.0.1:{closed_port}"  # nothing listens there
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    start = time.monotonic()
    with pytest.raises(RegistryError) as err:
        registry.load_profiler()
    assert time.monotonic() - start < 15
    assert f"registry at {uri} did not answer (Connection refused)" in str(err.value)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the fail-fast settings are scoped


def stage_features(rows):
    return {
        "dag_id": "train_dag", "task_id": "fit", "algorithm": "random_forest", "framework": "sklearn",
        "data_rows": rows, "data_bytes": rows * 100.0, "n_features": 20, "epochs": 1,
        "requested_cpu": 2, "requested_memory": 4e9, "requested_gpu": 0,
    }


def test_stage_runs_round_trip(tracking, home):
    experiment = f"stages-{uuid.uuid4().hex[:8]}"
    profile = PredictedProfile(
        resources={"memory": ResourceEstimate(1e9, 2e9), "cpu": ResourceEstimate(1.0, 2.0)},
        coverage=0.99, model_uri="models:/job-profiler@champion", model_version="1",
    )
    ids = []
    for i, (outcome, peak) in enumerate([("success", 1.5e9), ("oom_killed", 3e9)]):
        summary = ObservedSummary(
            start_time=1000.0 + 100 * i, end_time=1050.0 + 100 * i, outcome=outcome,
            peak={"memory": peak, "cpu": 1.5}, mean={"memory": peak / 2, "cpu": 1.0},
            oom_events=[OomEvent(1040.0 + 100 * i, "base", 2e9, i + 1)] if outcome == "oom_killed" else [],
        )
        ids.append(log_stage_run(
            experiment, StageIdentity("train_dag", "fit", "run-1", i + 1), stage_features(1000 * (i + 1)),
            profile, {"memory": 2e9, "cpu": 2.0}, {"memory": 4e9, "cpu": 2.0}, summary,
        ))
    log_stage_run(  # sized, not yet observed
        experiment, StageIdentity("train_dag", "fit", "run-2", 1), stage_features(5000),
        profile, {"memory": 2e9}, {"memory": 4e9}, None,
    )

    loaded = load_stage_runs(experiment)
    table, report = loaded.table, loaded.report
    # The OOM-killed try is counted, not learned from: its peak is where it was killed, not its need.
    assert list(table.job_id) == ids[:1]
    assert report.kept == 1 and report.lines == 3 and report.excluded[UNFINISHED] == 1
    assert sum(n for why, n in report.excluded.items() if why.startswith("OOM-killed")) == 1
    np.testing.assert_array_equal(table.used["memory"], [1.5e9])
    np.testing.assert_array_equal(table.used["cpu"], [1.5])
    assert np.isnan(table.used["gpu"]).all()
    np.testing.assert_array_equal(table.requested["memory"], [4e9])
    np.testing.assert_array_equal(table.features["data_rows"], [1000.0])
    np.testing.assert_array_equal(table.features["requested_memory"], [4e9])
    assert list(table.features["algorithm"]) == ["random_forest"]
    np.testing.assert_array_equal(table.submit, [1000.0])
    np.testing.assert_array_equal(table.run_time, [50.0])

    with pytest.raises(RegistryError, match="no MLflow experiment 'nope'"):
        load_stage_runs("nope")


def test_features_a_dag_author_declares_are_learned_from_the_stage_runs(tracking, home):
    """Open stage features on a real MLflow server: a run that declares ``lora_rank`` (a number)
    and ``tokenizer`` (a category) extends the loaded schema; a run that did not declare them has
    them unknown; a profiler fitted on the table predicts a new run that gives them."""
    from airflow_adaptive.logic.scaling import ScalingProfiler

    experiment = f"stages-{uuid.uuid4().hex[:8]}"
    profile = PredictedProfile(resources={"memory": ResourceEstimate(1e9, 2e9)}, coverage=0.99,
                               model_uri="models:/job-profiler@champion", model_version="1")
    for i in range(8):
        declared = {"lora_rank": 4 * (i + 1), "tokenizer": "bpe"} if i >= 2 else {}
        summary = ObservedSummary(start_time=1000.0 + 100 * i, end_time=1050.0 + 100 * i, outcome="success",
                                  peak={"memory": 1e9 + 1e8 * i}, mean={"memory": 5e8})
        log_stage_run(experiment, StageIdentity("train_dag", "fit", f"run-{i}", 1), {**stage_features(1000), **declared},
                      profile, {"memory": 2e9}, {"memory": 4e9}, summary)
    table = load_stage_runs(experiment).table
    assert table.schema.id == "stage/2" and table.schema.names[-2:] == ("lora_rank", "tokenizer")
    assert table.schema.feature("lora_rank").kind == "numeric" and table.schema.feature("tokenizer").kind == "categorical"
    np.testing.assert_array_equal(table.features["lora_rank"][2:], [4.0 * (i + 1) for i in range(2, 8)])
    assert np.isnan(table.features["lora_rank"][:2]).all()
    profiler = ScalingProfiler().fit(table)
    assert profiler.schema_.names == table.schema.names
    job = {**stage_features(1000), "lora_rank": 40, "tokenizer": "bpe"}
    assert profiler.predict_profile(job).resources["memory"].median > 1e9


def test_score_and_decide_on_a_holdout(lanl_table, profiler):
    """The promotion score of a real profiler: comparable with itself, honest about coverage."""
    window = lanl_table.take(np.arange(3000, 3600))
    s = score_on_window(profiler, window, target_under=0.01)
    assert s.reached and 1.0 < s.allocated_over_used < 100
    assert 0.0 <= s.under_provisioned_fraction <= 1.0 and "memory" in s.window
    assert not decide(s, s, 0.01).promote  # a tie keeps the champion
    train, hold = split_holdout(lanl_table.take(np.arange(3600)), 0.2)
    assert train.end.max() < hold.submit.min()

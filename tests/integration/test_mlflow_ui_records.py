"""What the MLflow UI shows of the product's records, against a real ``mlflow server`` (REST
backend) and a SQLite store (client backend): experiments in the classic-ML view, usage charted
over seconds with memory in MiB, and a retrained profiler version that says why it is (not)
champion."""

import numpy as np
import pytest

from airflow_adaptive.adapters.mlflow.stage_run_log import StageRunLog
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.stage_run import StageIdentity

pytestmark = [pytest.mark.integration]
MiB = 2**20


def test_usage_is_logged_at_its_times_with_memory_in_mib_in_a_classic_ml_experiment(tracking):
    from mlflow.tracking import MlflowClient

    log = StageRunLog(tracking, "ui-records-test")
    run = log.start(StageIdentity("dag", "train", "manual__1", 1), {"algorithm": "x"}, None, {"memory": 512 * MiB}, {},
                    sizing="predicted", reason="", model_uri="models:/job-profiler@champion", model_version="1",
                    schema_id="stage/1")
    t0 = 1_700_000_000.0
    samples = [UsageSample(time=t0 + 0.25 * i, values={"memory": (100 + i) * MiB, "cpu": 0.5}, step=i) for i in range(9)]
    log.log_usage(run, samples[:5])
    StageRunLog(tracking, "ui-records-test").log_usage(run, samples[5:])  # another writer's batch (a trigger)
    client = MlflowClient(tracking)
    assert client.get_experiment(log.experiment_id).tags.get("mlflow.experimentKind") == "custom_model_development"
    memory = sorted(client.get_metric_history(run, "usage.memory"), key=lambda m: m.timestamp)
    assert [m.step for m in memory] == list(range(9))  # each sample once, whoever wrote it
    assert [m.timestamp for m in memory] == [int((t0 + 0.25 * i) * 1000) for i in range(9)]  # the time axis
    mib = sorted(client.get_metric_history(run, "usage.memory_mib"), key=lambda m: m.timestamp)
    assert [m.value for m in mib] == [100.0 + i for i in range(9)]


def test_a_retrained_version_says_why_it_is_champion_and_has_its_plot(tracking):
    from mlflow.tracking import MlflowClient

    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES
    from airflow_adaptive.retraining import TAG_DECISION, TAG_REASON, retrain_and_promote

    rng = np.random.default_rng(1)
    rows = [{"job_id": str(i), "submit": 1e9 + i * 10, "end": 1e9 + i * 10 + 5, "run_time": 5.0,
             "features": {"dag_id": "d", "task_id": "stage", "algorithm": "grow", "framework": "numpy", "data_rows": float(mib)},
             "used": {"memory": (30 + 1.1 * mib) * MiB * (1 + 0.02 * rng.standard_normal()), "cpu": 1.0}, "requested": {}}
            for i, mib in enumerate(rng.integers(100, 400, 20))]
    result = retrain_and_promote(JobTable.from_rows(STAGE_FEATURES, rows), "ui-records-profiler", plot=True)
    client = MlflowClient(tracking)
    version = client.get_model_version("ui-records-profiler", result.version)
    assert result.reason in version.description
    assert ("**Champion**" in version.description) == result.promoted
    assert version.tags[TAG_DECISION] == ("champion" if result.promoted else "not promoted")
    assert version.tags[TAG_REASON] == result.reason
    assert "holdout.png" in [a.path for a in client.list_artifacts(version.run_id)]
    assert "champion" in client.get_registered_model("ui-records-profiler").description

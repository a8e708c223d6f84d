"""The DAGs in ``dags/``: they import, and they close the loop end to end with ``airflow dags
test`` against real Airflow (SQLite metadata database), a real ``mlflow server`` and real
cgroups: seed runs of the example pipeline -> the retraining DAG promotes a champion -> the next
pipeline run is sized by it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import migrated_airflow_home

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_every_dag_in_dags_imports(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    assert bag.import_errors == {}
    assert {"ml_training_pipeline", "ml_training_single_task", "retrain_profiler"} <= set(bag.dag_ids)
    assert bag.dags["ml_training_single_task"].tasks[0].cmds[-1] == "all"
    pipeline = bag.dags["ml_training_pipeline"]  # from the files: get_dag would ask the metadata database
    assert [t.task_id for t in pipeline.topological_sort()] == ["load_data", "train_model", "evaluate_model"]
    assert all(type(t).__name__ == "AdaptiveTrainingOperator" for t in pipeline.tasks)


@pytest.fixture
def airflow(tmp_path, private_mlflow_server, cgroups_available, migrated_airflow_db):
    home = migrated_airflow_home(migrated_airflow_db, tmp_path / "airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": private_mlflow_server,
           "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive"), "AIRFLOW_ADAPTIVE_RUNNER": "local"}

    def dags_test(dag_id: str, conf: dict) -> str:
        done = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=env, capture_output=True,
                              text=True, timeout=600, cwd=tmp_path)
        log = done.stdout + done.stderr
        assert done.returncode == 0 and "state=success" in log, log[-5000:]
        return log

    return dags_test


def test_pipeline_seeds_retraining_promotes_and_the_next_run_is_sized(airflow, private_mlflow_server):
    from mlflow.tracking import MlflowClient

    for rows in (20_000, 50_000, 35_000):
        log = airflow("ml_training_pipeline", {"data_rows": rows, "sizing_mode": "shadow"})
    assert "has no alias 'champion'" in log  # seeds: no model yet, the author's request is used

    log = airflow("retrain_profiler", {})
    assert "champion moved to version 1" in log, log[-4000:]

    log = airflow("ml_training_pipeline", {"data_rows": 40_000, "sizing_mode": "adaptive"})
    assert "sizing: predicted (adaptive)" in log
    client = MlflowClient(private_mlflow_server)
    exp = client.get_experiment_by_name("airflow-adaptive-stages")
    runs = client.search_runs([exp.experiment_id], "tags.`airflow_adaptive.sizing` = 'predicted'")
    assert {r.data.tags["airflow_adaptive.task_id"] for r in runs} == {"load_data", "train_model", "evaluate_model"}
    for run in runs:
        assert run.data.tags["airflow_adaptive.model_version"] == "1"
        assert run.data.tags["airflow_adaptive.outcome"] == "success"
        peak, upper = run.data.metrics["observed.memory.peak"], float(run.data.params["predicted.memory.upper"])
        assert run.data.metrics["oom_kills"] == 0
        assert 0.3 < peak / upper < 1.5  # the prediction is about the stage, not a blanket

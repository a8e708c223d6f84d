"""AdaptiveTrainingOperator on the embedded default, end to end: real Airflow (``airflow dags
test``, SQLite metadata database), a real ``mlflow server``, real cgroups under the local
Resource Manager. Nothing is mocked: each test writes a one-task DAG, runs it, and reads what
the product recorded back from MLflow and the task log."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
MiB = 2**20

DAG_TEMPLATE = '''
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"retries": {retries}, "retry_delay": timedelta(seconds=0)}}) as dag:
    AdaptiveTrainingOperator(
        task_id="stage",
        cmds=["python", "-m", "airflow_adaptive.examples.workloads", "grow"],
        arguments=["--to-mib", "{{{{ dag_run.conf.get('mib', 200) }}}}", "--rate-mib-s", "400", "--hold-s", "0.5",
                   "--scratch-mib", "{{{{ dag_run.conf.get('scratch_mib', 0) }}}}"],
        features={features},
        container_resources={resources},
        sizing_mode="{{{{ dag_run.conf.get('mode', 'adaptive') }}}}",
        monitor_interval=0.25,
        {extra}
    )
'''


@pytest.fixture
def run_dag(airflow_home, tmp_path, private_mlflow_server, cgroups_available):
    """Write a DAG and run it with ``airflow dags test``; returns (returncode, log text)."""
    dags = tmp_path / "dags"
    dags.mkdir()

    def run(dag_id: str, conf: dict, *, features="{'algorithm': 'grow', 'framework': 'numpy', 'data_rows': \"{{ dag_run.conf.get('mib', 200) }}\"}",
            resources="{'requests': {'cpu': '1', 'memory': '128Mi'}, 'limits': {'cpu': '1', 'memory': '1Gi'}}",
            retries=0, extra="", env=None):
        (dags / f"{dag_id}.py").write_text(DAG_TEMPLATE.format(dag_id=dag_id, retries=retries, features=features,
                                                               resources=resources, extra=extra))
        full_env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                    "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": private_mlflow_server,
                    "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home"), "AIRFLOW_ADAPTIVE_RUNNER": "local",
                    **(env or {})}
        done = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=full_env,
                              capture_output=True, text=True, timeout=400, cwd=tmp_path)
        return done.returncode, done.stdout + done.stderr

    return run


def stage_runs(tracking: str, dag_id: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("airflow-adaptive-stages")
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], f"tags.`airflow_adaptive.dag_id` = '{dag_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags["airflow_adaptive.try_number"]))


def dag_succeeded(log: str) -> bool:
    return "state=success" in log.replace("DagRunState.SUCCESS", "state=success")


def test_oom_kill_is_recorded_and_the_retry_gets_more_memory(run_dag, private_mlflow_server):
    """No model yet (fallback to the user's 160 MiB) and no in-place resize: the 300 MiB workload
    is OOM-killed, the kill goes to MLflow before the retry, and the retry (XCom cleared)
    escalates from that record."""
    code, log = run_dag("oom_retry", {"mib": 300, "mode": "adaptive"}, retries=1, extra="in_place_resize=False,",
                        resources="{'requests': {'cpu': '1', 'memory': '160Mi'}}")
    runs = stage_runs(private_mlflow_server, "oom_retry")
    assert [r.data.tags["airflow_adaptive.try_number"] for r in runs] == ["1", "2"], log[-3000:]
    first, second = runs
    assert first.data.tags["airflow_adaptive.outcome"] == "oom_killed"
    events = json.loads(first.data.tags["airflow_adaptive.oom_events"])
    assert events[0]["limit_bytes"] == 160 * MiB and events[0]["try_number"] == 1
    assert float(second.data.params["allocated.memory"]) == 320 * MiB
    assert second.data.tags["airflow_adaptive.outcome"] == "success"
    assert "try 1 was OOM-killed at 160 MiB" in log
    assert code == 0 and dag_succeeded(log)


def test_adaptive_stage_is_sized_by_the_champion_and_resized_in_place(run_dag, grow_profiler, private_mlflow_server, monkeypatch):
    version = grow_profiler(private_mlflow_server, "sized")
    code, log = run_dag("sized", {"mib": 300, "mode": "adaptive"},
                        resources="{'requests': {'cpu': '1', 'memory': '64Mi'}, 'limits': {'cpu': '1', 'memory': '2Gi'}}")
    assert code == 0 and dag_succeeded(log), log[-4000:]
    (run,) = stage_runs(private_mlflow_server, "sized")
    params, tags = run.data.params, run.data.tags
    assert tags["airflow_adaptive.sizing"] == "predicted"
    assert tags["airflow_adaptive.model_version"] == version
    upper = float(params["predicted.memory.upper"])
    assert float(params["allocated.memory"]) == pytest.approx(upper * 1.1, rel=1e-6)
    assert 300 * MiB < upper < 600 * MiB
    assert run.data.metrics["observed.memory.peak"] > 250 * MiB
    assert "predicted median" in log and "sizing: predicted (adaptive)" in log
    # The run's I/O totals reach the stage run: the workload's read system calls (python's start-up),
    # its working directory; the shared network namespace is left out (unmeasured, never 0).
    assert run.data.metrics["observed.disk_read_ops"] > 100, run.data.metrics
    assert "observed.ephemeral_storage_peak_bytes" in run.data.metrics
    assert "observed.network_rx_bytes" not in run.data.metrics


def test_adaptive_growth_beyond_the_prediction_is_resized_not_killed(run_dag, grow_profiler, private_mlflow_server, monkeypatch):
    """Features say 100 MiB, the workload grows to 400: the monitor raises the limit in place."""
    grow_profiler(private_mlflow_server, "outgrown")
    code, log = run_dag("outgrown", {"mib": 400, "mode": "adaptive"},
                        features="{'algorithm': 'grow', 'framework': 'numpy', 'data_rows': 100}",
                        resources="{'requests': {'cpu': '1', 'memory': '64Mi'}, 'limits': {'cpu': '1', 'memory': '2Gi'}}")
    assert code == 0 and dag_succeeded(log), log[-4000:]
    (run,) = stage_runs(private_mlflow_server, "outgrown")
    from mlflow.tracking import MlflowClient

    resizes = MlflowClient(private_mlflow_server).get_metric_history(run.info.run_id, "resize.memory")
    assert resizes and max(m.value for m in resizes) > float(run.data.params["allocated.memory"])
    assert "resize memory" in log


def test_wrong_feature_type_falls_back_to_the_users_request_with_a_warning(run_dag, grow_profiler, private_mlflow_server, monkeypatch):
    grow_profiler(private_mlflow_server, "badfeature")
    code, log = run_dag("badfeature", {"mib": 50},
                        features="{'algorithm': 'grow', 'framework': 'numpy', 'data_rows': 'lots'}")
    assert code == 0 and dag_succeeded(log), log[-4000:]
    assert "cannot size task 'stage' from the profiler, using the user's own request" in log
    assert "'data_rows' must be a number, got 'lots'" in log
    (run,) = stage_runs(private_mlflow_server, "badfeature")
    assert run.data.tags["airflow_adaptive.sizing"] == "fallback"
    assert float(run.data.params["allocated.memory"]) == 1 * 2**30  # the user's limit


def test_on_sizing_error_fail_fails_the_task_with_the_reason(run_dag, grow_profiler, private_mlflow_server, monkeypatch):
    grow_profiler(private_mlflow_server, "strict")
    code, log = run_dag("strict", {"mib": 50}, extra="on_sizing_error='fail',",
                        features="{'algorithm': 'grow', 'framework': 'numpy', 'data_rows': 'lots'}")
    assert code != 0 or not dag_succeeded(log)
    assert "cannot size the stage" in log and "'data_rows' must be a number, got 'lots'" in log


def test_a_feature_the_champion_never_saw_is_recorded_and_left_out_with_a_note(run_dag, grow_profiler, private_mlflow_server):
    """Open stage features: ``colour`` is new to the champion; the stage is still predicted (not a
    fallback), the task log says the feature was left out, and the stage run records it for the
    next retraining, with ``requested_memory`` filled from ``container_resources``."""
    grow_profiler(private_mlflow_server, "declared")
    code, log = run_dag("declared", {"mib": 50},
                        features="{'algorithm': 'grow', 'framework': 'numpy', 'data_rows': 100, 'colour': 'red'}")
    assert code == 0 and dag_succeeded(log), log[-4000:]
    assert "feature(s) colour not known to model version" in log
    (run,) = stage_runs(private_mlflow_server, "declared")
    assert run.data.tags["airflow_adaptive.sizing"] == "predicted"
    assert run.data.tags["airflow_adaptive.feature_schema"] == "stage/2"
    assert run.data.params["feature.colour"] == "red" and float(run.data.params["feature.requested_memory"]) > 0


def test_invalid_quantity_is_a_clear_task_failure(run_dag):
    code, log = run_dag("badquantity", {"mib": 50}, resources="{'requests': {'cpu': '1', 'memory': '12 GB'}}")
    assert not dag_succeeded(log)
    assert "container_resources.requests.memory" in log and "12 GB" in log


def test_mlflow_down_falls_back_and_the_stage_still_runs(run_dag, closed_port):
    code, log = run_dag("nomlflow", {"mib": 50}, env={"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port}"})
    assert code == 0 and dag_succeeded(log), log[-4000:]
    assert "did not answer" in log and "using the user's own request" in log
    assert "usage of this try is not recorded" in log


def test_a_try_runs_in_a_scratch_directory_whose_size_is_its_ephemeral_storage(run_dag, private_mlflow_server, tmp_path):
    """The stage spills 48 MiB to its TMPDIR: the try's scratch directory (its cwd too) holds it,
    the stage run records it as ``ephemeral_storage`` beside the disk write bandwidth, and the
    directory is gone after the try, as a pod's writable layer is."""
    worker_tmp = tmp_path / "worker-tmp"
    worker_tmp.mkdir()
    code, log = run_dag("scratch", {"mib": 64, "scratch_mib": 48}, env={"TMPDIR": str(worker_tmp)})
    assert code == 0 and dag_succeeded(log), log[-4000:]
    (run,) = stage_runs(private_mlflow_server, "scratch")
    metrics = run.data.metrics
    assert 48 * MiB <= metrics["observed.ephemeral_storage.peak"] <= 56 * MiB, metrics
    assert metrics["observed.ephemeral_storage_peak_bytes"] >= 48 * MiB
    assert metrics["observed.disk_write.peak"] > 0 and metrics["observed.disk_write_bytes"] >= 48 * MiB
    assert not [p for p in worker_tmp.iterdir() if p.name.startswith("airflow-adaptive-")], list(worker_tmp.iterdir())


def test_kill_switch_restores_plain_sizing(run_dag, private_mlflow_server):
    code, log = run_dag("switched_off", {"mib": 50}, env={"AIRFLOW_ADAPTIVE_ENABLED": "false"})
    assert code == 0 and dag_succeeded(log), log[-4000:]
    assert "airflow-adaptive is switched off" in log
    assert stage_runs(private_mlflow_server, "switched_off") == []

"""AdaptiveTrainingOperator against the real control plane, end to end: real ``airflow dags test``
(SQLite metadata database), a real ``mlflow server`` with a champion profiler, KPO creating the
sized pod through the real API server, the monitor's signals followed through ``pods/log`` and
applied through ``pods/resize``.

Emulated by kwok (not a kubelet): the pod running and ending (exit code and ``OOMKilled`` from its
annotations), the monitor's log (a file the test writes the signal into), the resize actuation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from kubernetes import client

from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal
from harness.local_cluster import COMPLETE_AFTER, EXIT_CODE, EXIT_REASON, cri_log_line

from ..support.stage_records import stage_pods, stage_runs

pytestmark = [pytest.mark.kubernetes]

AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
MiB = 2**20

DAG = '''
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"retries": 1, "retry_delay": timedelta(seconds=0)}}) as dag:
    AdaptiveTrainingOperator(
        task_id="stage", name="train", namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False,
        image="python:3.11-slim", cmds=["python", "-c", "print('training')"],
        features={{"algorithm": "grow", "framework": "numpy", "data_rows": "{{{{ dag_run.conf.get('mib', 200) }}}}"}},
        container_resources={{"requests": {{"cpu": "1", "memory": "128Mi"}}, "limits": {{"cpu": "2", "memory": "4Gi"}}}},
        annotations={{
            "{complete_after}": "8s",
            # The emulated kubelet ends the first try as the kernel's OOM killer would, when asked to.
            "{exit_code}": "{{{{ '137' if dag_run.conf.get('oom_first_try') and ti.try_number == 1 else '0' }}}}",
            "{exit_reason}": "{{{{ 'OOMKilled' if dag_run.conf.get('oom_first_try') and ti.try_number == 1 else 'Completed' }}}}",
        }},
        service_account_name="training", runner="kubernetes", get_logs=False, on_finish_action="keep_pod",
        startup_timeout_seconds=60, poll_interval=1, deferrable={deferrable},
    )
'''


@pytest.fixture
def run_stage(emulated_cluster, admin_api, namespace, airflow_home, mlflow_uri, tmp_path, grow_profiler):
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "training"}, "automountServiceAccountToken": False})
    monitor_log = tmp_path / "monitor.log"
    emulated_cluster.serve_namespace_logs(admin_api, namespace, "adaptive-monitor", monitor_log)
    dags = tmp_path / "dags"
    dags.mkdir()

    def run(dag_id: str, conf: dict, deferrable: bool = False) -> tuple[int, str]:
        grow_profiler(mlflow_uri, dag_id)
        (dags / f"{dag_id}.py").write_text(DAG.format(
            dag_id=dag_id, namespace=namespace, kubeconfig=emulated_cluster.kubeconfig, deferrable=deferrable,
            complete_after=COMPLETE_AFTER, exit_code=EXIT_CODE, exit_reason=EXIT_REASON))
        env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": mlflow_uri,
               "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
        done = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps(conf)], env=env,
                              capture_output=True, text=True, timeout=400, cwd=tmp_path)
        return done.returncode, done.stdout + done.stderr

    return core, monitor_log, run


def workload(pod):
    return next(c for c in pod.spec.containers if c.name == "base")


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_the_stage_pod_is_sized_by_the_champion_and_resized_in_place(run_stage, mlflow_uri, namespace, deferrable):
    """Sync: a follower thread in the worker applies the signal. Deferrable: AdaptivePodTrigger
    (kubernetes_asyncio, in the triggerer; ``airflow dags test`` runs it in-process) does."""
    core, monitor_log, run = run_stage
    dag_id = f"k8s_sized_{'deferrable' if deferrable else 'sync'}"
    # What the monitor will have said by the time KPO follows its log: memory is near the limit.
    signal = ResizeSignal(resource="memory", old=300 * MiB, new=600 * MiB, reason="rss at 92% of the limit",
                          time=time.time(), sequence=1, container="base")
    monitor_log.write_text(cri_log_line("sampling every 1 s") + cri_log_line(signal.to_line()))
    code, log = run(dag_id, {"mib": 200}, deferrable=deferrable)
    assert code == 0 and "success" in log.lower(), log[-4000:]

    (pod,) = stage_pods(core, namespace)
    run_ = stage_runs(mlflow_uri, dag_id)[0]
    median = float(run_.data.params["predicted.memory.median"])
    # Sized by the prediction (about 250 MiB for 200 rows), not by the user's 128Mi request.
    requested = ResourceVector.from_kubernetes(workload(pod).resources.requests).memory
    assert median * 0.99 <= requested <= median * 1.5, (requested, median)
    # The monitor rides along as a native sidecar, sharing the process namespace, in the stage's account.
    monitor = next(c for c in pod.spec.init_containers if c.name == "adaptive-monitor")
    assert monitor.restart_policy == "Always" and pod.spec.share_process_namespace
    assert pod.spec.service_account_name == "training"
    env = {e.name: e.value for e in monitor.env}
    assert env["AIRFLOW_ADAPTIVE_CONTAINER"] == "base" and env["AIRFLOW_ADAPTIVE_MEMORY"]
    # One writer: the monitor prints for the operator and has no MLflow address or run of its own.
    assert "MLFLOW_TRACKING_URI" not in env and "AIRFLOW_ADAPTIVE_RUN_ID" not in env
    # The signal was applied in place and actuated; the decision is in the task log and MLflow.
    assert workload(pod).resources.limits["memory"] == "600Mi"
    status = next(cs for cs in pod.status.container_statuses if cs.name == "base")
    assert status.resources.limits["memory"] == "600Mi"
    assert "resize memory" in log and "applied" in log
    assert run_.data.metrics.get("resize.memory") == 600 * MiB
    assert run_.data.tags.get("airflow_adaptive.outcome") == "success"


def test_an_oom_killed_try_is_recorded_and_the_retry_gets_more_memory(run_stage, mlflow_uri, namespace):
    core, _monitor_log, run = run_stage
    code, log = run("k8s_oom", {"mib": 200, "oom_first_try": True})
    assert code == 0, log[-4000:]
    first, second = stage_runs(mlflow_uri, "k8s_oom")
    assert first.data.tags.get("airflow_adaptive.outcome") == "oom_killed", (first.data.tags, log[-6000:])
    events = json.loads(first.data.tags["airflow_adaptive.oom_events"])
    killed_limit = events[0]["limit_bytes"]
    pods = stage_pods(core, namespace)
    assert len(pods) == 2
    assert ResourceVector.from_kubernetes(workload(pods[0]).resources.limits).memory == killed_limit
    retry_limit = ResourceVector.from_kubernetes(workload(pods[1]).resources.limits).memory
    assert retry_limit > killed_limit, (retry_limit, killed_limit)


SENSOR_DAG = '''
import pendulum
from airflow.sdk import DAG
from airflow_adaptive.operators import AdaptiveTrainingOperator
from airflow_adaptive.sensors.capacity import PredictedResourcesFitSensor

RESOURCES = {{"requests": {{"cpu": "{cpu}", "memory": "{memory}"}}, "limits": {{"cpu": "{cpu}", "memory": "{memory}"}}}}
FEATURES = {{"algorithm": "grow", "framework": "numpy", "data_rows": 200}}

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    fits = PredictedResourcesFitSensor(task_id="fits", namespace="{namespace}", features=FEATURES,
                                       container_resources=RESOURCES, stage_task_id="stage", poke_interval=1, timeout=30,
                                       sizing_preset="guaranteed", mlflow_conn_id=None)
    stage = AdaptiveTrainingOperator(
        task_id="stage", name="train", namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False,
        image="python:3.11-slim", cmds=["python", "-c", "print('training')"], features=FEATURES,
        container_resources=RESOURCES, sizing_mode="off", service_account_name="training", runner="kubernetes",
        get_logs=False, on_finish_action="keep_pod", startup_timeout_seconds=30, poll_interval=1, annotations={{"{complete_after}": "2s"}})
    fits >> stage
'''


@pytest.mark.parametrize("cpu, memory, fits", [("16", "64Gi", False), ("1", "1Gi", True)], ids=["too-big", "fits"])
def test_the_capacity_sensor_refuses_a_stage_that_cannot_fit_before_any_pod_exists(
        run_stage, emulated_cluster, namespace, tmp_path, airflow_home, cpu, memory, fits):
    """The sensor reads the real nodes (through the provider's KubernetesHook and an Airflow
    connection) before the stage's pod is created: 16 CPU/64 GiB fits no CPU node and the GPU node
    is tainted, so it fails fast and no pod is ever made; 1 CPU/1 GiB passes and the stage runs."""
    core, _log, _run = run_stage
    dag_id = f"k8s_fit_{'yes' if fits else 'no'}"
    dags = tmp_path / "sensor-dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(SENSOR_DAG.format(dag_id=dag_id, namespace=namespace, cpu=cpu, memory=memory,
                                                         kubeconfig=emulated_cluster.kubeconfig, complete_after=COMPLETE_AFTER))
    connection = json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(emulated_cluster.kubeconfig)}})
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW_CONN_KUBERNETES_DEFAULT": connection,
           "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)
    log = done.stdout + done.stderr
    if fits:
        assert "fits on node" in log, log[-4000:]
        assert len(stage_pods(core, namespace)) == 1
    else:
        assert "can never be scheduled" in log and "tainted nvidia.com/gpu" not in log.split("can never be scheduled")[0][-200:], log[-4000:]
        assert "no node is big enough" in log, log[-4000:]
        assert stage_pods(core, namespace) == []


NO_REQUEST_DAG = '''
import pendulum
from airflow.sdk import DAG
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    AdaptiveTrainingOperator(
        task_id="stage", name="train", namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False,
        image="python:3.11-slim", cmds=["python", "-c", "print('training')"], model_uri="models:/no-such-profiler@champion",
        features={{"algorithm": "grow"}}, service_account_name="training", runner="kubernetes", get_logs=False,
        on_finish_action="keep_pod", startup_timeout_seconds=60, poll_interval=1, annotations={{"{complete_after}": "2s"}},
    )
'''


@pytest.mark.parametrize("limit_range", [True, False], ids=["limitrange", "stated"])
def test_a_stage_with_no_request_and_no_prediction_gets_the_namespace_default(
        run_stage, emulated_cluster, namespace, tmp_path, airflow_home, mlflow_uri, limit_range):
    """KubernetesPodOperator tasks often give no ``container_resources``. With no profiler to
    predict it, the stage gets the namespace's LimitRange defaults (read by the operator, as the
    API server would apply them) or, with none, the stated default (1 CPU, 1Gi): never a
    BestEffort pod. The task log says which."""
    core, _monitor_log, _run = run_stage
    if limit_range:
        core.create_namespaced_limit_range(namespace, {"metadata": {"name": "defaults"}, "spec": {"limits": [{
            "type": "Container", "default": {"cpu": "1500m", "memory": "768Mi"}, "defaultRequest": {"cpu": "500m", "memory": "384Mi"}}]}})
    dag_id = f"k8s_no_request_{'lr' if limit_range else 'stated'}"
    dags = tmp_path / "dags"
    (dags / f"{dag_id}.py").write_text(NO_REQUEST_DAG.format(dag_id=dag_id, namespace=namespace, kubeconfig=emulated_cluster.kubeconfig,
                                                             complete_after=COMPLETE_AFTER))
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": mlflow_uri, "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "home")}
    done = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    (pod,) = stage_pods(core, namespace)
    resources = workload(pod).resources
    if limit_range:
        assert resources.requests == {"cpu": "500m", "memory": "384Mi"} and resources.limits == {"cpu": "1500m", "memory": "768Mi"}
        assert "LimitRange defaults" in log
    else:
        assert resources.requests == {"cpu": "1", "memory": "1Gi"} and not (resources.limits or {}).get("memory")
        assert "stated default request" in log

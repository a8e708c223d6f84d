"""The cluster policy against the real control plane: DAGs written with plain
``KubernetesPodOperator`` and ``@task.kubernetes`` (no airflow-adaptive in them) are sized after a
platform team installs ``airflow_local_settings.py`` in ``$AIRFLOW_HOME/config/``. Real
``airflow dags test`` (SQLite), a real ``mlflow server`` with a champion profiler, the real API
server admitting the pods; the executor's worker pod is built by the provider's own pod generator
(``PodGenerator.construct_pod``, called as the KubernetesExecutor's ``run_next`` calls it, mutation
hook included) and created on the API server.

Emulated by kwok (not a kubelet): the pod running and ending, the monitor's log, resize actuation.
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
from harness.local_cluster import COMPLETE_AFTER, cri_log_line

from ..support.stage_records import stage_pods, stage_runs

pytestmark = [pytest.mark.kubernetes]

AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
MiB = 2**20

LOCAL_SETTINGS = '''
from airflow_adaptive.policy import adaptive_policy

_adaptive = adaptive_policy(select={{"tags": ["ml"]}}, mode="{mode}", mlflow_conn_id=None, executor_pods=True,
                            executor_timeout_s=30)
task_policy = _adaptive.task_policy
pod_mutation_hook = _adaptive.pod_mutation_hook
__all__ = ["task_policy", "pod_mutation_hook"]
'''

# The DAG files as their authors wrote them: nothing of airflow-adaptive (the annotations are the
# emulated kubelet's: how long the pod runs).
COMMON = '''
import pendulum
from airflow.sdk import DAG, task
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

KW = dict(namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False, image="python:3.11-slim",
          container_resources={{"requests": {{"cpu": "1", "memory": "128Mi"}}, "limits": {{"cpu": "2", "memory": "4Gi"}}}},
          annotations={{"{complete_after}": "6s"}}, get_logs=False, on_finish_action="keep_pod",
          startup_timeout_seconds=60, poll_interval=1)
PARAMS = {{"algorithm": "grow", "framework": "numpy", "data_rows": 200}}
'''
KPO_DAG = COMMON + '''
with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["ml"], params=PARAMS):
    KubernetesPodOperator(task_id="stage", name="train", cmds=["python", "-c", "print('training')"], **KW)
'''
DECORATED_DAG = COMMON + '''
with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["ml"], params=PARAMS):
    @task.kubernetes(do_xcom_push=False, **KW)
    def stage():
        print("training")

    stage()
'''
MAPPED_DAG = COMMON + '''
with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["ml"], params=PARAMS):
    KubernetesPodOperator.partial(task_id="stage", name="train", cmds=["python", "-c"], **KW).expand(
        arguments=[["print('lr 0.1')"], ["print('lr 0.01')"]])
'''


@pytest.fixture
def run_dag(emulated_cluster, admin_api, namespace, airflow_home, mlflow_uri, tmp_path, grow_profiler):
    core = client.CoreV1Api(admin_api)
    monitor_log = tmp_path / "monitor.log"
    emulated_cluster.serve_namespace_logs(admin_api, namespace, "adaptive-monitor", monitor_log)
    dags = tmp_path / "dags"
    dags.mkdir()

    def run(dag_id: str, source: str, mode: str, extra_env: dict | None = None) -> tuple[int, str]:
        grow_profiler(mlflow_uri, dag_id)
        (airflow_home / "config").mkdir(exist_ok=True)
        (airflow_home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS.format(mode=mode))
        (dags / f"{dag_id}.py").write_text(source.format(dag_id=dag_id, namespace=namespace, kubeconfig=emulated_cluster.kubeconfig,
                                                         complete_after=COMPLETE_AFTER))
        env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": mlflow_uri,
               "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home"), **(extra_env or {})}
        done = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=400,
                              cwd=tmp_path)
        return done.returncode, done.stdout + done.stderr

    return core, monitor_log, run


def workload(pod):
    return next(c for c in pod.spec.containers if c.name == "base")


@pytest.mark.parametrize("kind", ["kpo", "decorated"])
def test_adaptive_mode_sizes_unchanged_dags_from_the_champion(run_dag, mlflow_uri, namespace, kind):
    core, monitor_log, run = run_dag
    dag_id = f"policy_{kind}_adaptive"
    signal = ResizeSignal(resource="memory", old=300 * MiB, new=600 * MiB, reason="rss at 92% of the limit",
                          time=time.time(), sequence=1, container="base")
    monitor_log.write_text(cri_log_line("sampling every 1 s") + cri_log_line(signal.to_line()))
    code, log = run(dag_id, KPO_DAG if kind == "kpo" else DECORATED_DAG, "adaptive")
    assert code == 0 and "success" in log.lower(), log[-4000:]
    (pod,) = stage_pods(core, namespace)
    (stage_run,) = stage_runs(mlflow_uri, dag_id)
    # Features the policy derived: the DAG's params, the operator, the image; the request.
    features = {k.split(".", 1)[1]: v for k, v in stage_run.data.params.items() if k.startswith("feature.")}
    assert float(features["data_rows"]) == 200 and features["algorithm"] == "grow", features
    assert features["operator"] == ("KubernetesPodOperator" if kind == "kpo" else "@task.kubernetes")
    assert features["image"] == "python:3.11-slim" and float(features["requested_memory"]) == 128 * MiB
    assert (features["dag_id"], features["task_id"]) == (dag_id, "stage")
    # Sized by the prediction (about 250 MiB for 200 rows), not the 128Mi the DAG asks for.
    median = float(stage_run.data.params["predicted.memory.median"])
    requested = ResourceVector.from_kubernetes(workload(pod).resources.requests).memory
    assert median * 0.99 <= requested <= median * 1.5 and requested > 128 * MiB, (requested, median)
    assert [c.name for c in pod.spec.init_containers or []] == ["adaptive-monitor"]
    # The monitor's signal was applied in place, as for AdaptiveTrainingOperator.
    assert workload(pod).resources.limits["memory"] == "600Mi", log[-3000:]
    assert stage_run.data.tags.get("airflow_adaptive.outcome") == "success"
    assert "AdaptiveKubernetes" in log  # the task type the policy gave the task


@pytest.mark.parametrize("kind", ["kpo", "decorated"])
def test_shadow_mode_runs_the_pod_as_written_and_records_the_prediction(run_dag, mlflow_uri, namespace, kind):
    core, _monitor_log, run = run_dag
    dag_id = f"policy_{kind}_shadow"
    code, log = run(dag_id, KPO_DAG if kind == "kpo" else DECORATED_DAG, "shadow")
    assert code == 0, log[-4000:]
    (pod,) = stage_pods(core, namespace)
    assert workload(pod).resources.requests == {"cpu": "1", "memory": "128Mi"}
    assert workload(pod).resources.limits == {"cpu": "2", "memory": "4Gi"}
    assert not pod.spec.init_containers and not any(k.startswith("airflow-adaptive/") for k in pod.metadata.annotations or {})
    (stage_run,) = stage_runs(mlflow_uri, dag_id)
    assert stage_run.data.tags.get("airflow_adaptive.sizing") == "shadow", stage_run.data.tags
    assert float(stage_run.data.params["predicted.memory.median"]) > 128 * MiB
    assert stage_run.data.tags.get("airflow_adaptive.outcome") == "success"
    assert "sizing: shadow (shadow)" in log


def test_the_kill_switch_leaves_every_task_as_written(run_dag, mlflow_uri, namespace):
    core, _monitor_log, run = run_dag
    code, log = run("policy_kill_switch", KPO_DAG, "adaptive", {"AIRFLOW_ADAPTIVE_ENABLED": "false"})
    assert code == 0, log[-4000:]
    (pod,) = stage_pods(core, namespace)
    assert workload(pod).resources.requests == {"cpu": "1", "memory": "128Mi"} and not pod.spec.init_containers
    assert stage_runs(mlflow_uri, "policy_kill_switch") == []
    assert "AdaptiveKubernetes" not in log


EXECUTOR_SCRIPT = '''
import json, sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes import kubernetes_executor_templates
from airflow.providers.cncf.kubernetes.executors.kubernetes_executor_utils import get_base_pod_from_template
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import create_unique_id
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from airflow.serialization.serialized_objects import DagSerialization
from kubernetes import client, config

dags, namespace, kubeconfig = sys.argv[1:4]
# The DAG processor parses (task_policy runs there) and serializes; the scheduler reads it back.
bag = DagBag(dag_folder=dags)
assert not bag.import_errors, bag.import_errors
dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags["policy_executor"]))
ti = dag.get_task("stage")
# KubernetesExecutor.execute_async, then AirflowKubernetesScheduler.run_next:
template = str(Path(kubernetes_executor_templates.__file__).parent / "basic_template.yaml")
pod = PodGenerator.construct_pod(
    namespace=namespace, scheduler_job_id="1", pod_id=create_unique_id("policy_executor", "stage"),
    dag_id="policy_executor", task_id="stage", kube_image="apache/airflow:3.3.2", try_number=1, map_index=-1,
    date=None, run_id="manual__1", args=["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{{}}"],
    pod_override_object=PodGenerator.from_obj(ti.executor_config), base_worker_pod=get_base_pod_from_template(template, None),
    with_mutation_hook=True)
api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
created = api.create_namespaced_pod(namespace, pod)
print("POD " + json.dumps(api.api_client.sanitize_for_serialization(created)))
'''

EXECUTOR_DAG = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.python import PythonOperator
from kubernetes.client import models as k8s

with DAG("policy_executor", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["ml"],
         params={"algorithm": "grow", "framework": "numpy", "data_rows": 200}):
    PythonOperator(task_id="stage", python_callable=print, executor_config={"pod_override": k8s.V1Pod(
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", resources=k8s.V1ResourceRequirements(
            requests={"cpu": "1", "memory": "128Mi"}, limits={"cpu": "2", "memory": "4Gi"}))]))})
'''


@pytest.mark.parametrize("mode", ["adaptive", "shadow"])
def test_the_executor_pod_is_sized_by_pod_mutation_hook_and_admitted(
        emulated_cluster, admin_api, namespace, airflow_home, mlflow_uri, tmp_path, grow_profiler, mode):
    core = client.CoreV1Api(admin_api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "airflow-worker"}})  # the template's
    grow_profiler(mlflow_uri, "policy_executor")
    (airflow_home / "config").mkdir(exist_ok=True)
    (airflow_home / "config" / "airflow_local_settings.py").write_text(LOCAL_SETTINGS.format(mode=mode))
    dags = tmp_path / "executor-dags"
    dags.mkdir()
    (dags / "policy_executor.py").write_text(EXECUTOR_DAG)
    script = tmp_path / "executor_pod.py"
    script.write_text(EXECUTOR_SCRIPT.replace("{{}}", "{}"))
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "MLFLOW_TRACKING_URI": mlflow_uri, "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
    done = subprocess.run([sys.executable, str(script), str(dags), namespace, str(emulated_cluster.kubeconfig)], env=env,
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    created = json.loads(next(line[4:] for line in done.stdout.splitlines() if line.startswith("POD ")))
    live = core.read_namespaced_pod(created["metadata"]["name"], namespace)
    base = workload(live)
    plan = json.loads(live.metadata.annotations["airflow-adaptive/plan"])
    assert plan["mode"] == mode and plan["model_version"], plan
    would = ResourceVector.from_kubernetes(plan["requests"]).memory
    assert 200 * MiB < would < 400 * MiB, plan  # about 250 MiB for 200 rows
    if mode == "adaptive":
        assert ResourceVector.from_kubernetes(base.resources.requests).memory == would
        assert ResourceVector.from_kubernetes(base.resources.limits).memory <= 4 * 2**30
    else:
        assert base.resources.requests == {"cpu": "1", "memory": "128Mi"}
    # What the executor itself put there is intact.
    assert live.metadata.labels["kubernetes_executor"] == "True" and live.metadata.annotations["task_id"] == "stage"
    assert base.image == "apache/airflow:3.3.2" and live.spec.service_account_name == "airflow-worker"


def test_each_instance_of_a_mapped_kpo_task_is_sized_and_recorded_on_its_own(run_dag, mlflow_uri, namespace):
    core, _monitor_log, run = run_dag
    code, log = run("policy_mapped", MAPPED_DAG, "adaptive")
    assert code == 0, log[-4000:]
    pods = stage_pods(core, namespace)
    assert len(pods) == 2, [p.metadata.name for p in pods]
    runs = stage_runs(mlflow_uri, "policy_mapped")
    assert sorted(r.data.tags.get("airflow_adaptive.map_index") for r in runs) == ["0", "1"]
    for pod, stage_run in zip(pods, runs):
        assert [c.name for c in pod.spec.init_containers or []] == ["adaptive-monitor"]
        assert ResourceVector.from_kubernetes(workload(pod).resources.requests).memory > 128 * MiB
        assert stage_run.data.tags.get("airflow_adaptive.outcome") == "success", stage_run.data.tags
    assert sorted(workload(p).args[0] for p in pods) == ["print('lr 0.01')", "print('lr 0.1')"]

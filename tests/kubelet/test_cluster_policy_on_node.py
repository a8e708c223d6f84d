"""The cluster policy on the real node: a DAG written with plain ``KubernetesPodOperator`` (nothing
of airflow-adaptive in it) is sized, monitored, resized in place and recorded once a platform team
installs ``airflow_local_settings.py``. Real ``airflow dags test`` (SQLite), a real ``mlflow
server`` with a champion, the real kubelet running the stage image and the monitor image built
here. Nothing is emulated."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kubernetes import client

from airflow_adaptive.domain.resources import ResourceVector
from harness.local_node import NODE_NAME, TAINT_KEY

from ..support.stage_records import stage_pods, stage_runs

pytestmark = [pytest.mark.kubelet]

AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
MiB = 2**20

LOCAL_SETTINGS = '''
from airflow_adaptive.policy import adaptive_policy

_adaptive = adaptive_policy(select={{"tags": ["ml"]}}, mode="adaptive", mlflow_conn_id=None, executor_pods=False,
                            monitor_image="{monitor_image}",
                            monitor_interval=0.5)
task_policy = _adaptive.task_policy
pod_mutation_hook = _adaptive.pod_mutation_hook
'''

DAG = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["ml"],
         params={{"algorithm": "grow", "framework": "numpy", "data_rows": 100}}):
    KubernetesPodOperator(
        task_id="stage", name="train", namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False,
        image="{image}", image_pull_policy="IfNotPresent", cmds={cmds},
        container_resources={{"requests": {{"cpu": "500m", "memory": "128Mi"}}, "limits": {{"cpu": "1", "memory": "1Gi"}}}},
        tolerations=[k8s.V1Toleration(key="{taint}", operator="Equal", value="true", effect="NoSchedule")],
        node_selector={{"kubernetes.io/hostname": "{node}"}}, get_logs=True, on_finish_action="keep_pod",
        startup_timeout_seconds=90, poll_interval=1)
'''


def test_an_unchanged_kpo_dag_is_sized_resized_by_the_kubelet_and_recorded(real_node, node_api, node_namespace, airflow_home,
                                                                           mlflow_uri, tmp_path, grow_profiler):
    core = client.CoreV1Api(node_api)
    dag_id = "policy_on_node"
    grow_profiler(mlflow_uri, dag_id)  # predicts about 30 + 1.1 x 100 MiB; the stage grows to 240
    (airflow_home / "config").mkdir(exist_ok=True)
    (airflow_home / "config" / "airflow_local_settings.py").write_text(
        LOCAL_SETTINGS.format(monitor_image=real_node.images["monitor"]["ref"]))
    dags = tmp_path / "dags"
    dags.mkdir()
    cmds = ["python3", "-m", "airflow_adaptive.examples.workloads", "grow", "--to-mib", "240", "--rate-mib-s", "10",
            "--hold-s", "1"]
    (dags / f"{dag_id}.py").write_text(DAG.format(
        dag_id=dag_id, namespace=node_namespace, kubeconfig=real_node.kubeconfig, image=real_node.images["stage"]["ref"],
        cmds=repr(cmds), taint=TAINT_KEY, node=NODE_NAME))
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": mlflow_uri,
           "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
    done = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
    log = done.stdout + done.stderr
    print(log[-30000:])  # shown by pytest when the test fails
    assert done.returncode == 0, "airflow dags test failed: its output is in the captured stdout"
    (pod,) = stage_pods(core, node_namespace)
    (run,) = stage_runs(mlflow_uri, dag_id)
    features = {k.split(".", 1)[1]: v for k, v in run.data.params.items() if k.startswith("feature.")}
    assert features["operator"] == "KubernetesPodOperator" and float(features["data_rows"]) == 100, features
    base = next(c for c in pod.spec.containers if c.name == "base")
    assert [c.name for c in pod.spec.init_containers or []] == ["adaptive-monitor"]
    status = next(s for s in pod.status.container_statuses if s.name == "base")
    assert status.state.terminated.exit_code == 0
    # Started from the champion's prediction, below what the stage grew to; the kubelet then held
    # the raised limit (the container status is what it actuated).
    started = json.loads(pod.metadata.annotations["airflow-adaptive/size"])
    assert 128 * MiB < ResourceVector.from_kubernetes(started["limits"], "size").memory < 240 * MiB, started
    assert ResourceVector.from_kubernetes(status.resources.limits, "status").memory > 240 * MiB
    assert run.data.tags.get("airflow_adaptive.outcome") == "success", run.data.tags
    assert run.data.metrics.get("resize.memory", 0) > 240 * MiB
    assert run.data.metrics["observed.memory.peak"] > 200 * MiB
    assert "AdaptiveKubernetesPodOperator" in log

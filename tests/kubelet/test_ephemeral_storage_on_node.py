"""Ephemeral storage on the real node: AdaptiveTrainingOperator sizes the stage's
``ephemeral-storage`` from a champion that predicts it, the stage writes past that limit into its
writable layer, the real kubelet's eviction manager evicts the pod (phase Failed, reason Evicted),
the operator records the eviction in the stage run like an OOM kill, and the retry starts with a
larger limit (x2) and succeeds. Nothing is emulated: ``airflow dags test``, a real ``mlflow
server``, containerd's snapshot usage and the kubelet's own eviction check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from kubernetes import client

from airflow_adaptive.domain.quantities import memory_bytes
from harness.local_node import NODE_NAME, TAINT_KEY

from ..support.stage_records import stage_pods, stage_runs

pytestmark = [pytest.mark.kubelet]

AIRFLOW = os.path.join(os.path.dirname(sys.executable), "airflow")
MiB = 2**20
WRITE_MIB = 100  # past the first try's 64Mi (the floor above the predicted ~23 MiB), below the retry's 128Mi

DAG = '''
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from kubernetes.client import models as k8s
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"retries": 1, "retry_delay": timedelta(seconds=0)}}) as dag:
    AdaptiveTrainingOperator(
        task_id="stage", name="scratch", namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False,
        image="{stage_image}", image_pull_policy="IfNotPresent", monitor_image="{monitor_image}", monitor_interval=0.5,
        cmds=["python3", "-c", {script!r}],
        features={{"algorithm": "scratch", "framework": "numpy", "data_rows": 100}},
        # The user's ephemeral-storage limit is the bound (not reached here).
        container_resources={{"requests": {{"cpu": "250m", "memory": "128Mi"}},
                              "limits": {{"cpu": "1", "memory": "512Mi", "ephemeral-storage": "1Gi"}}}},
        tolerations=[k8s.V1Toleration(key="{taint}", operator="Equal", value="true", effect="NoSchedule")],
        node_selector={{"kubernetes.io/hostname": "{node}"}},
        runner="kubernetes", get_logs=True, on_finish_action="keep_pod",
        startup_timeout_seconds=90, poll_interval=1,
    )
'''

# Writes WRITE_MIB into the container's writable layer (its /tmp), then waits long enough for the
# kubelet to look (containerd refreshes snapshot usage every 10 s, the eviction manager checks every
# 10 s): a try within its limit ends by itself after HOLD_S.
SCRIPT = f'''
import os, time
t0 = time.time()
with open("/tmp/scratch.bin", "wb") as f:
    block = os.urandom(1 << 20)
    for i in range({WRITE_MIB}):
        f.write(block)
    f.flush()
    os.fsync(f.fileno())
print("wrote {WRITE_MIB} MiB in %.1f s" % (time.time() - t0), flush=True)
time.sleep(45)
print("done", flush=True)
'''


def register_storage_profiler(tracking: str, dag_id: str) -> str:
    """A champion trained on synthetic runs whose ephemeral storage peaked at about 20 MiB."""
    from airflow_adaptive.adapters.mlflow.registry import log_profiler, set_alias
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES
    from airflow_adaptive.logic.scaling import ScalingProfiler

    assert "ephemeral_storage" in STAGE_FEATURES.resources
    rng = np.random.default_rng(0)
    rows = [{"job_id": str(i), "submit": 1e9 + i * 10, "end": 1e9 + i * 10 + 5, "run_time": 5.0,
             "features": {"dag_id": dag_id, "task_id": "stage", "algorithm": "scratch", "framework": "numpy",
                          "data_rows": float(rows_)},
             "used": {"memory": 60 * MiB * (1 + 0.02 * rng.standard_normal()), "cpu": 0.5,
                      "ephemeral_storage": 20 * MiB * (1 + 0.02 * rng.standard_normal())},
             "requested": {}}
            for i, rows_ in enumerate([100, 150, 200, 250, 300, 350, 120, 280])]
    os.environ["MLFLOW_TRACKING_URI"] = tracking
    _, version = log_profiler(ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, rows)), name="job-profiler")
    set_alias("job-profiler", "champion", version)
    return version


def storage(pod, where="limits") -> float:
    res = next(c for c in pod.spec.containers if c.name == "base").resources
    return float(memory_bytes(getattr(res, where)["ephemeral-storage"]))


def test_a_stage_writing_past_its_ephemeral_storage_is_evicted_and_retried_larger(
        real_node, node_api, node_namespace, airflow_home, mlflow_uri, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    core = client.CoreV1Api(node_api)
    dag_id = "node_ephemeral"
    register_storage_profiler(mlflow_uri, dag_id)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(DAG.format(
        dag_id=dag_id, namespace=node_namespace, kubeconfig=real_node.kubeconfig, script=SCRIPT,
        stage_image=real_node.images["stage"]["ref"], monitor_image=real_node.images["monitor"]["ref"],
        taint=TAINT_KEY, node=NODE_NAME))
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": mlflow_uri,
           "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
    done = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=500,
                          cwd=tmp_path)
    log = done.stdout + done.stderr
    (tmp_path / "dags-test.log").write_text(log)
    assert done.returncode == 0, f"{tmp_path / 'dags-test.log'}:\n{log[-8000:]}"

    evicted, retried = stage_pods(core, node_namespace)
    # The real kubelet evicted the first try for its ephemeral storage.
    assert (evicted.status.phase, evicted.status.reason) == ("Failed", "Evicted"), (evicted.status, log[-6000:])
    assert "ephemeral local storage" in evicted.status.message, evicted.status.message
    first_limit = storage(evicted)
    assert first_limit == 64 * MiB  # the floor above the predicted upper (+ margin)
    assert storage(evicted, "requests") <= first_limit
    # Recorded in the stage run like an OOM kill, read back by the retry.
    first, second = stage_runs(mlflow_uri, dag_id)
    assert first.data.tags.get("airflow_adaptive.outcome") == "oom_killed", first.data.tags
    (event,) = json.loads(first.data.tags["airflow_adaptive.oom_events"])
    assert event["kind"] == "ephemeral_storage" and event["limit_bytes"] == first_limit and event["try_number"] == 1
    # The retry started larger (x2, within the user's 1Gi) and finished.
    assert storage(retried) == 2 * first_limit
    assert retried.status.phase == "Succeeded", retried.status
    assert second.data.tags.get("airflow_adaptive.outcome") == "success"
    assert "evicted by the kubelet for ephemeral storage" in log
    assert "try 1 was evicted for ephemeral storage at 64Mi: retry with 128Mi (x2)" in log
    # the figures for the README
    started = evicted.status.start_time
    ended = max((c.last_transition_time for c in evicted.status.conditions or [] if c.type == "Ready"), default=None)
    print(json.dumps({"first_try": {"request": storage(evicted, "requests"), "limit": first_limit,
                                    "evicted_after_s": (ended - started).total_seconds() if ended and started else None,
                                    "message": evicted.status.message},
                      "retry": {"request": storage(retried, "requests"), "limit": storage(retried)}}))

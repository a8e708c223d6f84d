"""AdaptiveTrainingOperator on the real node, end to end through ``airflow dags test`` (SQLite
metadata database) with a real ``mlflow server`` holding a champion: the pod is sized by the
champion, the workload's memory grows past the prediction, the monitor sidecar (the image built
here) sees it in the workload's real cgroup, its signal comes through ``pods/log``, ``pods/resize``
is patched, the kubelet changes the cgroup, and the stage succeeds. Without in-place resizes the
kernel OOM-kills the try for real and the retry is larger. Nothing is emulated."""

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

DAG = '''
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from kubernetes.client import models as k8s
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"retries": 1, "retry_delay": timedelta(seconds=0)}}) as dag:
    AdaptiveTrainingOperator(
        task_id="stage", name="train", namespace="{namespace}", config_file="{kubeconfig}", in_cluster=False,
        image="{stage_image}", image_pull_policy="IfNotPresent", monitor_image="{monitor_image}", monitor_interval=0.5,
        cmds={cmds},
        # The champion predicts about 30 + 1.1 x data_rows MiB: the workload grows well past that.
        features={{"algorithm": "grow", "framework": "numpy", "data_rows": 100}},
        container_resources={{"requests": {{"cpu": "500m", "memory": "128Mi"}}, "limits": {{"cpu": "1", "memory": "1Gi"}}}},
        in_place_resize={in_place},
        tolerations=[k8s.V1Toleration(key="{taint}", operator="Equal", value="true", effect="NoSchedule")],
        node_selector={{"kubernetes.io/hostname": "{node}"}},
        runner="kubernetes", get_logs=True, on_finish_action="keep_pod",
        startup_timeout_seconds=90, poll_interval=1, deferrable={deferrable},
    )
'''


@pytest.fixture
def run_stage(real_node, node_api, node_namespace, airflow_home, mlflow_uri, tmp_path, grow_profiler):
    core = client.CoreV1Api(node_api)
    dags = tmp_path / "dags"
    dags.mkdir()

    def run(dag_id: str, *, deferrable: bool = False, in_place: bool = True, grow_mib: int = 240,
            cmds: list[str] | None = None) -> tuple[int, str]:
        grow_profiler(mlflow_uri, dag_id)
        cmds = cmds or ["python3", "-m", "airflow_adaptive.examples.workloads", "grow", "--to-mib", str(grow_mib),
                        "--rate-mib-s", "10", "--hold-s", "1"]
        (dags / f"{dag_id}.py").write_text(DAG.format(
            dag_id=dag_id, namespace=node_namespace, kubeconfig=real_node.kubeconfig, deferrable=deferrable,
            in_place=in_place, cmds=repr(cmds), stage_image=real_node.images["stage"]["ref"],
            monitor_image=real_node.images["monitor"]["ref"], taint=TAINT_KEY, node=NODE_NAME))
        env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": mlflow_uri,
               "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
        done = subprocess.run([AIRFLOW, "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=500,
                              cwd=tmp_path)
        return done.returncode, done.stdout + done.stderr

    return core, node_namespace, run


def metric_history(tracking: str, run_id: str, key: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking).get_metric_history(run_id, key)


def limits(pod, where="spec"):
    if where == "spec":
        res = next(c for c in pod.spec.containers if c.name == "base").resources
    else:
        res = next(s for s in pod.status.container_statuses if s.name == "base").resources
    return ResourceVector.from_kubernetes(res.limits, where)


@pytest.mark.parametrize("deferrable", [False, True], ids=["sync", "deferrable"])
def test_a_stage_growing_past_its_prediction_is_resized_in_place_by_the_real_kubelet(run_stage, mlflow_uri, deferrable):
    core, namespace, run = run_stage
    dag_id = f"node_grow_{'deferrable' if deferrable else 'sync'}"
    code, log = run(dag_id, deferrable=deferrable)
    assert code == 0, log[-6000:]
    (pod,) = stage_pods(core, namespace)
    (run_,) = stage_runs(mlflow_uri, dag_id)
    upper = float(run_.data.params["predicted.memory.upper"])
    started = json.loads(pod.metadata.annotations["airflow-adaptive/size"])
    start_limit = ResourceVector.from_kubernetes(started["limits"], "size").memory
    assert start_limit < 240 * MiB, (start_limit, upper)  # sized by the champion, below what the stage grows to
    final = limits(pod, "status")  # what the kubelet reports in force
    assert final.memory > 240 * MiB, final
    assert limits(pod, "spec").memory == final.memory
    assert "grew to 240 MiB" in log
    assert run_.data.tags.get("airflow_adaptive.outcome") == "success"
    assert run_.data.metrics.get("resize.memory", 0) > start_limit
    # One writer: the operator (the follower, or the trigger) wrote what the monitor printed.
    history = metric_history(mlflow_uri, run_.info.run_id, "usage.memory")
    steps = [m.step for m in history]
    assert len(steps) >= 20 and len(set(steps)) == len(steps) and steps == sorted(steps), steps  # each sample once
    assert max(m.value for m in history) > 200 * MiB
    assert run_.data.metrics["observed.memory.peak"] >= max(m.value for m in history) * 0.99
    assert run_.data.metrics["stage.end_time"] > run_.data.metrics["stage.start_time"]
    assert "airflow_adaptive.untrusted" not in run_.data.tags
    monitor = next(c for c in pod.spec.init_containers if c.name == "adaptive-monitor")
    env = {e.name: e.value for e in monitor.env}
    assert env["AIRFLOW_ADAPTIVE_CONTAINER"] == "base" and "MLFLOW_TRACKING_URI" not in env
    assert ResourceVector.from_kubernetes({"memory": env["AIRFLOW_ADAPTIVE_MEMORY"]}, "env").memory == start_limit


def test_without_in_place_resize_the_kernel_oom_kills_the_try_and_the_retry_is_larger(run_stage, mlflow_uri):
    core, namespace, run = run_stage
    code, log = run("node_oom", in_place=False, grow_mib=200)
    assert code == 0, log[-6000:]
    first, second = stage_runs(mlflow_uri, "node_oom")
    assert first.data.tags.get("airflow_adaptive.outcome") == "oom_killed", (first.data.tags, log[-6000:])
    assert second.data.tags.get("airflow_adaptive.outcome") == "success"
    killed, retried = stage_pods(core, namespace)
    status = next(s for s in killed.status.container_statuses if s.name == "base")
    assert (status.state.terminated.exit_code, status.state.terminated.reason) == (137, "OOMKilled")
    killed_limit = json.loads(first.data.tags["airflow_adaptive.oom_events"])[0]["limit_bytes"]
    assert killed_limit == limits(killed).memory
    assert limits(retried).memory > max(killed_limit, 200 * MiB)


FORGER = r"""
import json, os, time
# The workload shares the monitor's UID and PID namespace: it finds the monitor and writes into its stdout.
me = os.getpid()
pid = next(p for p in os.listdir("/proc") if p.isdigit() and int(p) != me
           and b"monitor" in open(f"/proc/{p}/cmdline", "rb").read() and b"airflow-adaptive" in open(f"/proc/{p}/cmdline", "rb").read())
out = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY)
def forge(obj):
    os.write(out, (obj if isinstance(obj, str) else json.dumps(obj)).encode() + b"\n")
time.sleep(3)
for i in range(40):  # resizes far past the user's maximum, in and out of sequence
    forge({"kind": "airflow-adaptive/resize", "v": 1, "resource": "memory", "old": 1.0, "new": 64 * 2**30,
           "reason": "forged", "time": time.time(), "sequence": i, "container": "base"})
forge('{"kind": "airflow-adaptive/usage", "seq": ')          # garbage
forge({"kind": "airflow-adaptive/usage", "v": 99, "seq": 0})  # a protocol from the future
for i in range(400):  # a flood of usage samples
    forge({"kind": "airflow-adaptive/usage", "v": 1, "seq": 10**6 + i, "time": time.time(), "values": {"memory": 1.0}})
print("forged", flush=True)
time.sleep(4)
"""


def test_a_workload_forging_the_monitors_lines_never_passes_the_maximum_and_taints_the_run(run_stage, mlflow_uri):
    """Threat model in the README: the workload writes into the monitor's stdout. Every forged line
    is refused or bounded: the pod never gets past the user's 1 GiB, the run is tagged untrusted
    with the counts, and retraining would leave it out."""
    core, namespace, run = run_stage
    code, log = run("node_forger", cmds=["python3", "-c", FORGER])
    assert code == 0, log[-6000:]
    (pod,) = stage_pods(core, namespace)
    (run_,) = stage_runs(mlflow_uri, "node_forger")
    assert "forged" in log
    assert limits(pod, "spec").memory <= 1024 * MiB and limits(pod, "status").memory <= 1024 * MiB
    assert run_.data.tags.get("airflow_adaptive.untrusted") == "true", run_.data.tags
    rejected = json.loads(run_.data.tags["airflow_adaptive.rejected_monitor_lines"])
    assert rejected.get("above_maximum", 0) >= 1 and rejected.get("malformed", 0) >= 1
    assert rejected.get("unknown_version") == 1 and rejected.get("rate_limited", 0) >= 1
    assert "refused" in log and "untrusted" in log
    assert len(metric_history(mlflow_uri, run_.info.run_id, "usage.memory")) <= 240 + 60  # the flood was bounded

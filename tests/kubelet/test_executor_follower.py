"""The KubernetesExecutor's worker pod on the real node, followed by ``airflow-adaptive
follow-executor-pods``: the cluster policy marks an unchanged PythonOperator DAG (parsed as the DAG
processor parses it), the provider's own pod generator builds the worker pod with
``pod_mutation_hook`` as the scheduler's ``run_next`` does, the pod runs on the real kubelet, the
follower (the CLI, a process of its own) reads the monitor's log, resizes the pod in place (the
workload's real cgroup changes) and writes the stage run to a real ``mlflow server``.

Stand-ins, because no scheduler runs here: the script below plays the scheduler's ``run_next``
(the same calls, the same pod), and the worker pod's command is the example ``grow`` workload
instead of ``execute_workload`` (the stage image has no Airflow, and its entrypoint is ``python3``, so the args are
``-m airflow_adaptive.examples.workloads grow ...``; what the test is about is the memory the task
uses, which the workload produces for real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from kubernetes import client

from airflow_adaptive.domain.resources import ResourceVector
from harness.local_node import NODE_NAME, TAINT_KEY

from ..kubernetes.conftest import wait_for
from ..support.stage_records import stage_runs

pytestmark = [pytest.mark.kubelet]

MiB = 2**20
AIRFLOW_ADAPTIVE = os.path.join(os.path.dirname(sys.executable), "airflow-adaptive")

LOCAL_SETTINGS = '''
from airflow_adaptive.policy import adaptive_policy

_adaptive = adaptive_policy(select={{"tags": ["ml"]}}, mode="adaptive", mlflow_conn_id=None, executor_pods=True,
                            executor_timeout_s=30, executor_follower=True, monitor_image="{monitor_image}",
                            monitor_interval=0.5)
task_policy = _adaptive.task_policy
pod_mutation_hook = _adaptive.pod_mutation_hook
'''

# As its author wrote it: a plain PythonOperator with a pod_override (request, node placement).
DAG = '''
import pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.python import PythonOperator
from kubernetes.client import models as k8s

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=["ml"],
         params={{"algorithm": "grow", "framework": "numpy", "data_rows": 100}}):
    PythonOperator(task_id="stage", python_callable=print, executor_config={{"pod_override": k8s.V1Pod(
        spec=k8s.V1PodSpec(
            containers=[k8s.V1Container(name="base", image_pull_policy="IfNotPresent", resources=k8s.V1ResourceRequirements(
                requests={{"cpu": "500m", "memory": "128Mi"}}, limits={{"cpu": "1", "memory": "1Gi"}}))],
            tolerations=[k8s.V1Toleration(key="{taint}", operator="Equal", value="true", effect="NoSchedule")],
            node_selector={{"kubernetes.io/hostname": "{node}"}}, automount_service_account_token=False,
            termination_grace_period_seconds=1))}})
'''

# The scheduler's side: the DAG processor parses (task_policy runs) and serializes; run_next
# builds the pod with the mutation hook and creates it.
RUN_NEXT = '''
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.providers.cncf.kubernetes.kubernetes_helper_functions import create_unique_id
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from airflow.serialization.serialized_objects import DagSerialization
from kubernetes import client, config
from kubernetes.client import models as k8s

dags, dag_id, namespace, kubeconfig, image, command = sys.argv[1:7]
bag = DagBag(dag_folder=dags)
assert not bag.import_errors, bag.import_errors
dag = DagSerialization.from_dict(DagSerialization.to_dict(bag.dags[dag_id]))
ti = dag.get_task("stage")
base = k8s.V1Pod(metadata=k8s.V1ObjectMeta(), spec=k8s.V1PodSpec(restart_policy="Never", containers=[k8s.V1Container(name="base")]))
pod = PodGenerator.construct_pod(
    namespace=namespace, scheduler_job_id="1", pod_id=create_unique_id(dag_id, "stage"), dag_id=dag_id, task_id="stage",
    kube_image=image, try_number=1, map_index=-1, date=None, run_id="manual__1", args=json.loads(command),
    pod_override_object=PodGenerator.from_obj(ti.executor_config), base_worker_pod=base, with_mutation_hook=True)
api = client.CoreV1Api(config.new_client_from_config(kubeconfig))
for c in pod.spec.init_containers or []:
    c.image_pull_policy = "IfNotPresent"
created = api.create_namespaced_pod(namespace, pod)
print("POD " + created.metadata.name)
'''


def pod_story(core, namespace: str) -> str:
    """Each pod's container states and log tails: what a failure message needs."""
    lines = []
    for pod in core.list_namespaced_pod(namespace).items:
        for status in list(pod.status.init_container_statuses or []) + list(pod.status.container_statuses or []):
            lines.append(f"--- {pod.metadata.name}[{status.name}]: {status.state}")
            try:
                lines.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, container=status.name, tail_lines=30))
            except Exception as exc:  # noqa: BLE001 - the log may be gone
                lines.append(f"(no log: {exc})")
    return "\n".join(lines)


def base_limits(pod, where: str) -> ResourceVector:
    if where == "spec":
        res = next(c for c in pod.spec.containers if c.name == "base").resources
    else:
        res = next(s for s in pod.status.container_statuses if s.name == "base").resources
    return ResourceVector.from_kubernetes(res.limits, where)


class ExecutorStage:
    """One unchanged DAG with the policy installed, and what the tests do with it: start a follower
    (the CLI, its own process) and have the scheduler's ``run_next`` create the worker pod."""

    def __init__(self, real_node, core, namespace: str, airflow_home, mlflow_uri: str, tmp_path, dag_id: str) -> None:
        self.real_node, self.core, self.namespace, self.tmp_path, self.dag_id = real_node, core, namespace, tmp_path, dag_id
        (airflow_home / "config").mkdir(exist_ok=True)
        (airflow_home / "config" / "airflow_local_settings.py").write_text(
            LOCAL_SETTINGS.format(monitor_image=real_node.images["monitor"]["ref"]))
        self.dags = tmp_path / "dags"
        self.dags.mkdir()
        (self.dags / f"{dag_id}.py").write_text(DAG.format(dag_id=dag_id, taint=TAINT_KEY, node=NODE_NAME))
        (tmp_path / "run_next.py").write_text(RUN_NEXT)
        self.env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "MLFLOW_TRACKING_URI": mlflow_uri, "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home")}
        self.follower_argv = [AIRFLOW_ADAPTIVE, "-v", "follow-executor-pods", "--namespace", namespace, "--kubeconfig",
                              str(real_node.kubeconfig), "--tracking-uri", mlflow_uri, "--resync-s", "5"]

    def follow(self) -> subprocess.Popen:
        return subprocess.Popen(self.follower_argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, cwd=self.tmp_path)

    def create_pod(self, command: list[str]) -> str:
        """The worker pod, as the scheduler builds and creates it; its name."""
        done = subprocess.run([sys.executable, str(self.tmp_path / "run_next.py"), str(self.dags), self.dag_id, self.namespace,
                               str(self.real_node.kubeconfig), self.real_node.images["stage"]["ref"], json.dumps(command)],
                              env=self.env, capture_output=True, text=True, timeout=300, cwd=self.tmp_path)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        return next(line[4:] for line in done.stdout.splitlines() if line.startswith("POD "))


@pytest.fixture
def executor_stage(real_node, node_api, node_namespace, airflow_home, mlflow_uri, tmp_path, grow_profiler):
    """``executor_stage(dag_id)``: the champion registered for it (about 30 + 1.1 x 100 MiB), the DAG ready."""

    def make(dag_id: str) -> ExecutorStage:
        grow_profiler(mlflow_uri, dag_id)
        return ExecutorStage(real_node, client.CoreV1Api(node_api), node_namespace, airflow_home, mlflow_uri, tmp_path, dag_id)

    return make


def test_an_executor_pod_is_resized_in_place_by_the_follower_and_its_stage_run_recorded(
        real_node, node_namespace, mlflow_uri, executor_stage):
    stage = executor_stage("executor_follow")  # the workload grows to 240 MiB, past the prediction
    core, dag_id = stage.core, stage.dag_id
    follower = stage.follow()
    try:
        command = ["-m", "airflow_adaptive.examples.workloads", "grow", "--to-mib", "240", "--rate-mib-s", "10",
                   "--hold-s", "6"]
        name = stage.create_pod(command)
        created = core.read_namespaced_pod(name, node_namespace)
        start_limit = base_limits(created, "spec").memory
        assert start_limit < 240 * MiB, start_limit  # sized by the champion, below what the task grows to
        # The kubelet actuates the follower's resize while the workload holds its memory: the
        # container's own cgroup changes.
        grown = wait_for(lambda: core.read_namespaced_pod(name, node_namespace),
                         lambda p: p.status.container_statuses and base_limits(p, "status").memory > 240 * MiB,
                         timeout_s=90, what="the kubelet to actuate a resize above 240 MiB")
        try:
            cgroup = real_node.container_cgroup(grown, "base", "memory")
            in_cgroup = int((cgroup / "memory.limit_in_bytes").read_text())
        except (OSError, StopIteration) as exc:  # the workload ended between the read and here
            pytest.fail(f"the workload's cgroup was gone before it could be read: {exc}")
        assert in_cgroup >= 240 * MiB, in_cgroup
        ended = wait_for(lambda: core.read_namespaced_pod(name, node_namespace),
                         lambda p: (p.metadata.annotations or {}).get("airflow-adaptive/recorded") == "true",
                         timeout_s=90, what="the follower to record the pod's outcome")
    finally:
        follower.terminate()
        try:
            out, _ = follower.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            follower.kill()
            out, _ = follower.communicate()
        print(f"--- the follower's output:\n{out[-6000:]}")  # shown by pytest when the test fails
        print(pod_story(core, node_namespace))
    assert follower.returncode == 0, out[-4000:]
    status = next(s for s in ended.status.container_statuses if s.name == "base")
    assert status.state.terminated.exit_code == 0, out[-4000:]
    (run,) = stage_runs(mlflow_uri, dag_id)
    assert run.info.run_id == ended.metadata.annotations["airflow-adaptive/stage-run"]
    assert run.data.tags.get("airflow_adaptive.outcome") == "success", (run.data.tags, out[-3000:])
    assert run.data.tags.get("airflow_adaptive.sizing") == "predicted"
    features = {k.split(".", 1)[1]: v for k, v in run.data.params.items() if k.startswith("feature.")}
    assert float(features["data_rows"]) == 100 and features["operator"] == "PythonOperator", features
    assert run.data.metrics.get("resize.memory", 0) > start_limit
    assert int(ended.metadata.annotations["airflow-adaptive/last-sequence"]) >= 1
    from mlflow.tracking import MlflowClient

    history = MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "usage.memory")
    assert len(history) >= 10 and max(m.value for m in history) > 200 * MiB, len(history)
    assert "airflow_adaptive.untrusted" not in run.data.tags
    assert "following its monitor" in out
    # The monitor also read the workload's I/O: its read system calls (python's own start-up), and
    # the pod's network namespace, which is the stage's own.
    assert run.data.metrics.get("observed.disk_read_ops", 0) > 100, run.data.metrics
    assert run.data.metrics.get("observed.network_rx_bytes", -1) >= 0 and "observed.ephemeral_storage_peak_bytes" not in run.data.metrics


def test_a_restarted_follower_resumes_a_pod_without_a_second_run_or_resize(node_namespace, mlflow_uri, executor_stage):
    """The follower is stopped while the pod runs (a rollout) and a new one takes over from the
    pod's annotations: one stage run, each signal applied once, the outcome recorded."""
    stage = executor_stage("executor_restart")
    core, dag_id, follow = stage.core, stage.dag_id, stage.follow
    outputs = []

    def stop(process):
        process.terminate()
        out, _ = process.communicate(timeout=30)
        outputs.append(out)
        print(f"--- follower {len(outputs)}'s output:\n{out[-6000:]}")  # shown by pytest when the test fails
        assert process.returncode == 0, out[-3000:]

    first = follow()
    # Slower growth than the other test: the next raise must come after the new follower has started
    # (a Python process with Airflow's imports, about 4 s here). A pod that needs a raise inside that
    # gap is OOM-killed and its retry escalated (seen here at 10 MiB/s): a restart is not free.
    command = ["-m", "airflow_adaptive.examples.workloads", "grow", "--to-mib", "240", "--rate-mib-s", "4",
               "--hold-s", "4"]
    name = stage.create_pod(command)
    second = None
    try:
        wait_for(lambda: core.read_namespaced_pod(name, node_namespace),
                 lambda p: "airflow-adaptive/last-sequence" in (p.metadata.annotations or {}),
                 timeout_s=90, what="the first follower to apply a resize")
        stop(first)
        second = follow()
        ended = wait_for(lambda: core.read_namespaced_pod(name, node_namespace),
                         lambda p: (p.metadata.annotations or {}).get("airflow-adaptive/recorded") == "true",
                         timeout_s=150, what="the second follower to record the pod's outcome")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                stop(process)
    (run,) = stage_runs(mlflow_uri, dag_id)  # one run: the second follower wrote into the first's
    assert run.info.run_id == ended.metadata.annotations["airflow-adaptive/stage-run"]
    assert run.data.tags.get("airflow_adaptive.outcome") == "success", (run.data.tags, outputs[-1][-3000:])
    assert "following its monitor" in outputs[0] and "following its monitor" in outputs[-1]
    # The signal the first follower applied is not applied again by the second.
    resized = [line for out in outputs for line in out.splitlines() if line.startswith("INFO") and " resize memory " in line]
    sequences = [line for line in resized if "applied" in line]
    assert len(sequences) == len(set(sequences)), resized
    assert base_limits(ended, "spec").memory > 240 * MiB

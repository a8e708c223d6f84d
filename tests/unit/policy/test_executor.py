"""The executor pod path: the model cache that never makes the scheduler wait, and
``pod_mutation_hook`` on the pod the KubernetesExecutor's own pod generator builds.

No MLflow here: the cache's loader is a function (a real profiler fitted in-process, or a slow or
failing loader); loading through MLflow is covered in tests/kubernetes/test_cluster_policy.py."""

import json
import threading
import time

import numpy as np
import pytest
from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import policy_from
from airflow_adaptive.policy.executor import (MARK_ANNOTATION, PLAN_ANNOTATION, ExecutorMark, ExecutorPodSizer,
                                              ProfilerCache)

MiB = 2**20


@pytest.fixture(scope="module")
def profiler():
    """memory = 30 MiB + 1.1 x data_rows MiB, for DAG train/fit (the example ``grow`` stage)."""
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES
    from airflow_adaptive.logic.scaling import ScalingProfiler

    rng = np.random.default_rng(0)
    rows = [{"job_id": str(i), "submit": 1e9 + i * 10, "end": 1e9 + i * 10 + 5, "run_time": 5.0,
             "features": {"dag_id": "train", "task_id": "fit", "algorithm": "grow", "data_rows": float(mib)},
             "used": {"memory": (30 + 1.1 * mib) * MiB * (1 + 0.02 * rng.standard_normal()), "cpu": 1.0}, "requested": {}}
            for i, mib in enumerate([100, 150, 200, 250, 300, 350, 120, 280])]
    return ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, rows))


def executor_pod(mark: ExecutorMark | None, resources=None, dag_id="train", task_id="fit", try_number=1):
    """The pod as the KubernetesExecutor builds it (``run_next``'s call, without the hook)."""
    override = k8s.V1Pod(metadata=k8s.V1ObjectMeta(annotations={MARK_ANNOTATION: mark.to_annotation()} if mark else None),
                         spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", resources=resources)]))
    base = k8s.V1Pod(metadata=k8s.V1ObjectMeta(), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]))
    return PodGenerator.construct_pod(
        namespace="airflow", scheduler_job_id="1", pod_id=f"{dag_id}-{task_id}-x", dag_id=dag_id, task_id=task_id,
        kube_image="apache/airflow:3.3.2", try_number=try_number, map_index=-1, date=None, run_id="manual__1",
        args=["python", "-m", "airflow.sdk.execution_time.execute_workload", "--json-string", "{}"],
        pod_override_object=override, base_worker_pod=base)


RESOURCES = k8s.V1ResourceRequirements(requests={"cpu": "1", "memory": "128Mi"}, limits={"cpu": "2", "memory": "4Gi"})


def sizer(loader, **kw):
    return ExecutorPodSizer(ProfilerCache(loader, **kw), "models:/job-profiler@champion",
                            policy_from("burstable", 0.10, None, None, (), "test"))


def serialized(pod):
    return ApiClient().sanitize_for_serialization(pod)


def base(pod):
    return next(c for c in pod.spec.containers if c.name == "base")


def test_adaptive_sizes_the_executor_pod_from_the_prediction(profiler):
    pod = executor_pod(ExecutorMark("adaptive", {"algorithm": "grow", "data_rows": 200}), RESOURCES)
    sizer(lambda: (profiler, "3"))(pod)
    requests = ResourceVector.from_kubernetes(base(pod).resources.requests)
    limits = ResourceVector.from_kubernetes(base(pod).resources.limits)
    # about 250 MiB for 200 rows, not the 128Mi asked; within the user's 4Gi limit
    assert 200 * MiB < requests.memory < 400 * MiB, requests
    assert requests.memory <= limits.memory <= 4 * 2**30
    plan = json.loads(pod.metadata.annotations[PLAN_ANNOTATION])
    assert plan["mode"] == "adaptive" and plan["sizing"] == "predicted" and plan["model_version"] == "3"
    # what the executor needs is still there: its labels, annotations, command, image
    assert pod.metadata.labels["kubernetes_executor"] == "True" and pod.metadata.annotations["dag_id"] == "train"
    assert base(pod).image == "apache/airflow:3.3.2" and base(pod).args[0] == "python"


def test_shadow_leaves_the_spec_as_built_and_records_the_plan(profiler):
    pod = executor_pod(ExecutorMark("shadow", {"algorithm": "grow", "data_rows": 200}), RESOURCES)
    before = serialized(pod)
    sizer(lambda: (profiler, "3"))(pod)
    after = serialized(pod)
    assert after["spec"] == before["spec"]
    plan = json.loads(after["metadata"]["annotations"].pop(PLAN_ANNOTATION))
    assert after == before
    assert plan["mode"] == "shadow" and 200 * MiB < ResourceVector.from_kubernetes(plan["requests"]).memory < 400 * MiB


@pytest.mark.parametrize("case", ["kpo-pod", "unmarked", "off", "kill-switch", "bad-mark"])
def test_pods_the_hook_leaves_alone(profiler, monkeypatch, caplog, case):
    mark = ExecutorMark("off" if case == "off" else "adaptive", {"data_rows": 200})
    pod = executor_pod(None if case == "unmarked" else mark, RESOURCES)
    if case == "kpo-pod":  # KPO's own pods go through the task policy, not here
        del pod.metadata.labels["kubernetes_executor"]
    if case == "kill-switch":
        monkeypatch.setenv("AIRFLOW_ADAPTIVE_ENABLED", "false")
    if case == "bad-mark":
        pod.metadata.annotations[MARK_ANNOTATION] = '{"mode": "fast"}'
    before = serialized(pod)
    calls = []
    sizer(lambda: calls.append(1) or (profiler, "3"))(pod)
    assert serialized(pod) == before
    if case in ("kill-switch", "bad-mark"):
        assert ("switched off" if case == "kill-switch" else "must be {'mode'") in caplog.text
    assert calls == []  # no model is even loaded for a pod the hook leaves alone


def test_a_slow_model_never_holds_the_pod_back(profiler, caplog):
    """The first pod waits at most timeout_s and keeps the user's request; the load goes on and
    the next pod is sized."""
    release = threading.Event()

    def slow():
        release.wait(5)
        return profiler, "3"

    size = sizer(slow, timeout_s=0.05)
    first = executor_pod(ExecutorMark("adaptive", {"data_rows": 200}), RESOURCES)
    started = time.monotonic()
    size(first)
    waited = time.monotonic() - started
    assert waited < 0.5, waited
    assert base(first).resources.requests == {"cpu": "1", "memory": "128Mi"}
    assert "did not answer within 0.05 s" in caplog.text and "the user's request is kept" in caplog.text
    release.set()
    deadline = time.monotonic() + 5
    second = executor_pod(ExecutorMark("adaptive", {"data_rows": 200}), RESOURCES)
    while time.monotonic() < deadline:
        size(second)
        if base(second).resources.requests["memory"] != "128Mi":
            break
        second = executor_pod(ExecutorMark("adaptive", {"data_rows": 200}), RESOURCES)
        time.sleep(0.02)
    assert json.loads(second.metadata.annotations[PLAN_ANNOTATION])["sizing"] == "predicted"


def test_a_failed_load_is_not_retried_until_retry_s():
    now = [0.0]
    calls = []

    def failing():
        calls.append(now[0])
        raise ConnectionError("mlflow is down")

    cache = ProfilerCache(failing, timeout_s=1.0, retry_s=30, clock=lambda: now[0])
    value, why = cache.get()
    assert value is None and "ConnectionError: mlflow is down" in why
    now[0] = 10.0
    started = time.monotonic()
    value, why = cache.get()
    assert value is None and "could not be loaded 10 s ago" in why and time.monotonic() - started < 0.05
    assert len(calls) == 1
    now[0] = 31.0
    cache.get()
    assert len(calls) == 2


def test_a_stale_model_answers_at_once_while_it_is_refreshed():
    now, versions = [0.0], iter(["1", "2"])
    gate = threading.Event()

    def load():
        version = next(versions)
        if version == "2":
            gate.wait(5)
        return object(), version

    cache = ProfilerCache(load, ttl_s=300, clock=lambda: now[0])
    assert cache.get()[0][1] == "1"
    now[0] = 301.0
    assert cache.get()[0][1] == "1"  # stale, served while version 2 loads behind
    gate.set()
    deadline = time.monotonic() + 5
    while cache.get()[0][1] != "2" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get()[0][1] == "2"


@pytest.mark.parametrize("text, message", [
    ("x" * 20000, "more than 16384"),
    ("{not json", "is not JSON"),
    ('{"mode": "adaptive", "features": [1]}', "must be {'mode'"),
])
def test_a_bad_mark_is_refused(text, message):
    from airflow_adaptive.domain.errors import UserError

    with pytest.raises(UserError, match=message.replace("{", r"\{").replace("(", r"\(")):
        ExecutorMark.from_annotation(text, "pod p")


def test_a_mark_keeps_only_scalar_features_with_identifier_names():
    mark = ExecutorMark.from_annotation(json.dumps({"mode": "shadow", "features": {
        "data_rows": 200, "algorithm": "grow", "bad name": 1, "nested": {"a": 1}, "flag": True}}), "pod p")
    assert mark == ExecutorMark("shadow", {"data_rows": 200, "algorithm": "grow"})


def follower_sizer(loader, **kw):
    from airflow_adaptive.policy.executor import EarlierTries

    return ExecutorPodSizer(ProfilerCache(loader), "models:/job-profiler@champion",
                            policy_from("burstable", 0.10, None, None, (), "test"), follower=True,
                            monitor_image="registry.local/monitor:1", experiment="stages", **kw)


def test_with_a_follower_the_pod_gets_the_monitor_and_the_follow_label(profiler):
    from airflow_adaptive.policy.executor import FOLLOW_LABEL
    from airflow_adaptive.policy.follower import SELECTOR, FollowPlan

    pod = executor_pod(ExecutorMark("adaptive", {"algorithm": "grow", "data_rows": 200}), RESOURCES)
    follower_sizer(lambda: (profiler, "3"))(pod)
    assert pod.metadata.labels[FOLLOW_LABEL] == "true" and SELECTOR.startswith("kubernetes_executor=True")
    (monitor,) = pod.spec.init_containers
    assert monitor.image == "registry.local/monitor:1" and monitor.restart_policy == "Always"
    env = {e.name: e.value for e in monitor.env}
    assert env["AIRFLOW_ADAPTIVE_CONTAINER"] == "base" and "MLFLOW_TRACKING_URI" not in env
    assert ResourceVector.from_kubernetes({"memory": env["AIRFLOW_ADAPTIVE_MAX_MEMORY"]}).memory == 4 * 2**30
    # What the follower reads back: the identity from the executor's annotations, the plan from the hook's.
    plan = FollowPlan.from_pod(pod)
    assert (plan.identity.dag_id, plan.identity.task_id, plan.identity.try_number) == ("train", "fit", 1)
    assert plan.resizable and plan.experiment == "stages" and plan.model_version == "3"
    assert plan.features["data_rows"] == 200 and plan.features["requested_memory"] == 128 * MiB
    assert plan.maximum["memory"] == 4 * 2**30 and plan.profile is not None
    assert plan.start_limits["memory"] == pytest.approx(ResourceVector.from_kubernetes(base(pod).resources.limits).memory, abs=1)


def test_without_a_prediction_a_followed_pod_keeps_the_request_and_is_still_monitored():
    def fail():
        raise ConnectionError("refused")

    pod = executor_pod(ExecutorMark("adaptive", {"data_rows": 200}), RESOURCES)
    follower_sizer(fail)(pod)
    assert base(pod).resources.requests == {"cpu": "1", "memory": "128Mi"}
    assert [c.name for c in pod.spec.init_containers] == ["adaptive-monitor"]
    assert json.loads(pod.metadata.annotations[PLAN_ANNOTATION])["sizing"] == "fallback"


def test_a_retry_after_an_oom_kill_is_escalated_from_the_earlier_try(profiler):
    from airflow_adaptive.domain.stage_run import OomEvent
    from airflow_adaptive.policy.executor import EarlierTries

    first = executor_pod(ExecutorMark("adaptive", {"algorithm": "grow", "data_rows": 200}), RESOURCES)
    follower_sizer(lambda: (profiler, "3"))(first)
    killed_at = ResourceVector.from_kubernetes(base(first).resources.limits).memory
    asked = []
    earlier = EarlierTries(lambda identity: asked.append(identity) or ([OomEvent(1.0, "base", killed_at, 1, "kernel")], {}))
    retry = executor_pod(ExecutorMark("adaptive", {"algorithm": "grow", "data_rows": 200}), RESOURCES, try_number=2)
    follower_sizer(lambda: (profiler, "3"), earlier=earlier)(retry)
    assert [(i.dag_id, i.task_id, i.run_id, i.try_number) for i in asked] == [("train", "fit", "manual__1", 2)]
    assert ResourceVector.from_kubernetes(base(retry).resources.limits).memory > killed_at


@pytest.mark.parametrize("answer", ["hang", "fail"])
def test_a_retry_never_waits_on_mlflow_past_the_timeout(profiler, caplog, answer):
    from airflow_adaptive.policy.executor import EarlierTries

    release = threading.Event()

    def read(identity):
        if answer == "hang":
            release.wait(10)
        raise ConnectionError("refused")

    retry = executor_pod(ExecutorMark("adaptive", {"algorithm": "grow", "data_rows": 200}), RESOURCES, try_number=2)
    started = time.monotonic()
    follower_sizer(lambda: (profiler, "3"), earlier=EarlierTries(read, timeout_s=0.2))(retry)
    took = time.monotonic() - started
    release.set()
    assert took < 5  # bounded by the timeout, not by MLflow (loose: a loaded machine)
    assert "is not escalated" in caplog.text and ("0.2 s" in caplog.text if answer == "hang" else "refused" in caplog.text)
    assert 200 * MiB < ResourceVector.from_kubernetes(base(retry).resources.requests).memory  # still sized


@pytest.mark.parametrize("plan, message", [
    (None, "is missing"),
    ("{", "not a plan the policy wrote"),
    ('{"mode": "adaptive"}', "not a plan the policy wrote"),
    ('{"mode": "adaptive", "sizing": "predicted", "predicted": {"resources": 3}}', "not a plan the policy wrote"),
    ("x" * 200_000, "over"),
])
def test_the_follower_refuses_a_plan_it_did_not_write(plan, message):
    from airflow_adaptive.domain.errors import UserError
    from airflow_adaptive.policy.follower import FollowPlan

    pod = executor_pod(None, RESOURCES)
    pod.metadata.namespace = "airflow"
    if plan is not None:
        pod.metadata.annotations[PLAN_ANNOTATION] = plan
    with pytest.raises(UserError, match=message):
        FollowPlan.from_pod(pod)

"""What a try leaves for the next one, on the Kubernetes path (``KubernetesTry``): the OOM record
written before KPO deletes the pod, and the state a deferred try resumes with (``TryState``).

No Kubernetes API server runs here yet (the Kubernetes issue adds one), so the pod is a real
``V1Pod`` model and the API client is a stub that only serves the log tail; the MLflow side is a
stub that records what it is asked to write."""

import logging
from types import SimpleNamespace

import pytest
from kubernetes.client import models as k8s

from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import SizingPolicy
from airflow_adaptive.logic.stage_plan import plan_stage
from airflow_adaptive.operators import AdaptiveTrainingOperator
from airflow_adaptive.operators.kubernetes import AdaptivePodCallbacks, KubernetesTry
from airflow_adaptive.operators.training import XCOM_STATE
from airflow_adaptive.operators.try_state import StageRunRef, TryState

MiB, GiB = 2**20, 2**30


class RecordingRunLog:
    tracking_uri, experiment_name = "http://mlflow:5000", "airflow-adaptive-stages"

    def __init__(self):
        self.ooms, self.resizes, self.outcomes, self.deferred = [], [], [], []

    def record_outcome(self, run_id, outcome):
        self.outcomes.append((run_id, outcome))

    def record_deferred_sizes(self, run_id, sizes):
        self.deferred.append((run_id, dict(sizes)))

    def record_oom(self, run_id, events, peak_memory=None):
        self.ooms.append((run_id, list(events)))

    def log_resizes(self, run_id, resizes):
        self.resizes.append((run_id, list(resizes)))


class LogTail:
    def __init__(self, text):
        self.text = text

    def read_namespaced_pod_log(self, name, namespace, container, tail_lines):
        return self.text


def finished_pod(reason="Completed", exit_code=0):
    terminated = k8s.V1ContainerStateTerminated(exit_code=exit_code, reason=reason)
    status = k8s.V1ContainerStatus(name="base", image="x", image_id="", ready=False, restart_count=0,
                                   state=k8s.V1ContainerState(terminated=terminated))
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="ml"), status=k8s.V1PodStatus(container_statuses=[status]))


STATE = TryState(try_number=2, limits={"memory": 300 * MiB, "gpu_memory": 16 * 2**30}, resizable=True,
                 maximum={"memory": 2**30}, stage_run=StageRunRef("run-1", "http://mlflow:5000", "airflow-adaptive-stages"))


@pytest.fixture
def op():
    return KubernetesTry(STATE, RecordingRunLog(), logging.getLogger("test"), "base", "train")


def test_kernel_oom_is_recorded_at_the_limit_in_force_after_resizes(op):
    op.resizes[:] = [{"resource": "memory", "status": "applied", "new": 450 * MiB},
                   {"resource": "memory", "status": "deferred", "new": 900 * MiB}]
    op.record_outcome(finished_pod("OOMKilled", 137), LogTail(""))
    (run_id, events), = op.run_log.ooms
    assert run_id == "run-1" and events[0].kind == "kernel" and events[0].try_number == 2
    assert events[0].limit_bytes == 450 * MiB  # the applied resize, not the deferred one nor the start
    assert op.run_log.outcomes == [("run-1", "oom_killed")]


def test_cuda_out_of_memory_in_the_log_tail_is_a_gpu_oom(op):
    tail = "epoch 3\nRuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
    op.record_outcome(finished_pod("Error", 1), LogTail(tail))
    (_, events), = op.run_log.ooms
    assert events[0].kind == "gpu" and events[0].limit_bytes == 16 * 2**30


def test_an_ordinary_failure_records_no_oom(op):
    op.record_outcome(finished_pod("Error", 1), LogTail("ValueError: bad input\n"))
    assert op.run_log.ooms == []
    assert op.run_log.outcomes == [("run-1", "failed")]


def test_a_clean_exit_is_a_success(op):
    op.record_outcome(finished_pod("Completed", 0), LogTail(""))
    assert op.run_log.outcomes == [("run-1", "success")] and op.run_log.ooms == []


def test_killed_at_falls_back_to_the_starting_size(op):
    assert op.killed_at() == 300 * MiB


def test_no_follower_thread_in_deferrable_mode(op):
    operator = AdaptiveTrainingOperator(task_id="train", namespace="ml", cmds=["python", "t.py"], deferrable=True)
    operator.adaptive_try = op
    AdaptivePodCallbacks.on_pod_creation(pod=finished_pod(), client=object(), mode="sync", operator=operator)
    assert op.monitor is None  # the trigger follows in deferrable mode; the sync callback started nothing


def test_callbacks_do_nothing_when_sizing_is_off():
    operator = AdaptiveTrainingOperator(task_id="train", namespace="ml", cmds=["python", "t.py"])
    assert operator.adaptive_try is None
    AdaptivePodCallbacks.on_pod_creation(pod=finished_pod(), client=object(), mode="sync", operator=operator)
    AdaptivePodCallbacks.on_pod_completion(pod=finished_pod(), client=object(), mode="sync", operator=operator)


def test_a_resumed_try_restores_its_state_from_xcom():
    """Airflow resumes a deferred task on a freshly parsed operator: the state comes from XCom."""
    plan = plan_stage(ResourceVector(memory=256 * MiB), ResourceVector(memory=GiB), None, SizingPolicy())
    first = TryState.for_plan(plan, 3, StageRunRef("run-9", "http://mlflow:5000", "stages")).handled(4)
    saved = first.to_xcom()

    resumed = AdaptiveTrainingOperator(task_id="train", namespace="ml", cmds=["python", "t.py"])
    ti = SimpleNamespace(xcom_pull=lambda task_ids, key: saved if key == XCOM_STATE else None)
    resumed._resume({"ti": ti})
    current = resumed.adaptive_try
    assert current.state == first and current.state.stage_run.run_id == "run-9" and current.state.try_number == 3
    assert current.state.resizable and current.state.last_resize_sequence == 4 and dict(current.state.maximum) == {"memory": GiB}
    assert current.run_log.tracking_uri == "http://mlflow:5000"
    assert current.killed_at() == GiB  # the limit the plan started it at


def test_a_reentry_carries_the_triggers_resizes_and_last_sequence(op):
    op.reentered({"resizes": [{"resource": "memory", "status": "applied", "new": 500 * MiB}], "last_resize_sequence": 9,
                  "monitor_statuses": [{"event": "unavailable", "reason": "EACCES", "time": 1.0}]})
    assert op.state.last_resize_sequence == 9 and op.killed_at() == 500 * MiB
    assert [s.event for s in op.statuses] == ["unavailable"]
    op.reentered({"last_resize_sequence": 3})  # an older sequence never moves the state back
    assert op.state.last_resize_sequence == 9


def test_a_state_that_is_not_one_is_a_clear_error():
    from airflow_adaptive.domain.errors import UserError

    with pytest.raises(UserError, match="no state of this try"):
        TryState.from_xcom("garbage")
    with pytest.raises(UserError, match="malformed"):
        TryState.from_xcom({"try_number": "three"})
    assert TryState.from_xcom(STATE.to_xcom()) == STATE
    with pytest.raises(TypeError):
        STATE.limits["memory"] = 1  # frozen all the way down


def test_per_task_off_never_asks_the_profiler(monkeypatch):
    """sizing_mode='off' must not need MLflow: with on_sizing_error='fail' and no MLflow it still plans."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    op = AdaptiveTrainingOperator(task_id="t", namespace="ml", cmds=["python", "t.py"], sizing_mode="off",
                                  on_sizing_error="fail", container_resources={"requests": {"memory": "1Gi"}})
    ti = SimpleNamespace(dag_id="d", task_id="t", run_id="r", try_number=1)
    plan = op.plan({"ti": ti})
    assert plan.sizing == "off" and plan.profile is None and plan.size.requests.memory == 2**30


def test_every_decision_is_logged_and_a_refused_increase_is_kept_for_the_next_try(op):
    op.resizes[:] = [{"resource": "memory", "status": "applied", "old": 300 * MiB, "new": 450 * MiB},
                   {"resource": "memory", "status": "deferred", "old": 450 * MiB, "new": 900 * MiB},
                   {"resource": "memory", "status": "deferred", "old": 900 * MiB, "new": 200 * MiB},
                   {"resource": "gpu", "status": "deferred", "old": 1, "new": 2}]
    op.record_outcome(finished_pod("Completed", 0), LogTail(""))
    (_, logged), = op.run_log.resizes
    assert logged == op.resizes  # deferred and refused decisions too, with their reasons
    assert op.run_log.deferred == [("run-1", {"memory": 900 * MiB})]  # increases of cpu/memory only


# --- an ephemeral-storage eviction is recorded like an OOM kill ------------------------------


def evicted_pod(message, limit="64Mi"):
    terminated = k8s.V1ContainerStateTerminated(exit_code=137, reason="ContainerStatusUnknown")
    status = k8s.V1ContainerStatus(name="base", image="x", image_id="", ready=False, restart_count=0,
                                   state=k8s.V1ContainerState(terminated=terminated))
    resources = k8s.V1ResourceRequirements(limits={"ephemeral-storage": limit}) if limit else None
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="ml"),
                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", resources=resources)]),
                     status=k8s.V1PodStatus(phase="Failed", reason="Evicted", message=message, container_statuses=[status]))


POD_LIMIT = "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi. "


class NoLog:
    def read_namespaced_pod_log(self, *a, **kw):
        raise AssertionError("an eviction's record needs no log tail")


@pytest.mark.parametrize("message,spec_limit,limit", [
    (POD_LIMIT, "64Mi", 64 * MiB),
    ('Container base exceeded its local ephemeral storage limit "64Mi". ', "64Mi", 64 * MiB),
    # the spec's limit (as the API server stored it) is the record, else the kubelet's figure
    (POD_LIMIT, None, 64 * MiB),
])
def test_an_ephemeral_storage_eviction_is_recorded_for_the_next_try(op, caplog, message, spec_limit, limit):
    with caplog.at_level(logging.WARNING):
        op.record_outcome(evicted_pod(message, spec_limit), NoLog())
    (run_id, events), = op.run_log.ooms
    assert run_id == "run-1" and len(events) == 1
    assert (events[0].kind, events[0].limit_bytes, events[0].try_number, events[0].container) == (
        "ephemeral_storage", limit, 2, "base")
    assert op.run_log.outcomes == [("run-1", "oom_killed")]
    assert "evicted by the kubelet for ephemeral storage" in caplog.text and message.strip() in caplog.text


def test_the_starting_size_is_the_fallback_record():
    state = TryState(try_number=1, limits={"ephemeral_storage": 100 * MiB},
                     stage_run=StageRunRef("run-1", "http://mlflow:5000", "airflow-adaptive-stages"))
    op = KubernetesTry(state, RecordingRunLog(), logging.getLogger("test"), "base", "train")
    op.record_outcome(evicted_pod("Pod ephemeral local storage usage exceeds the total limit of containers 1e9999. ", None), NoLog())
    (_, events), = op.run_log.ooms
    assert events[0].limit_bytes == 100 * MiB


@pytest.mark.parametrize("message", [
    'Usage of EmptyDir volume "scratch" exceeds the limit "1Gi". ',
    'Container other exceeded its local ephemeral storage limit "64Mi". ',  # another container's limit: not the workload's
    "The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 10Mi. ",
])
def test_other_evictions_are_said_but_not_escalated(op, caplog, message):
    with caplog.at_level(logging.WARNING):
        op.record_outcome(evicted_pod(message), NoLog())
    assert op.run_log.ooms == [] and op.run_log.outcomes == [("run-1", "failed")]
    assert "evicted by the kubelet" in caplog.text


def test_the_plans_storage_limit_is_in_the_try_state():
    from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
    from airflow_adaptive.logic.sizing import StorageSize

    profile = PredictedProfile({"memory": ResourceEstimate(MiB, 2 * MiB), "ephemeral_storage": ResourceEstimate(MiB, 2 * MiB)},
                               coverage=0.9)
    plan = plan_stage(ResourceVector(cpu=1, memory=GiB), ResourceVector(), profile, SizingPolicy(), storage=StorageSize())
    state = TryState.for_plan(plan, 1, None)
    assert state.limits["ephemeral_storage"] == 64 * MiB
    assert TryState.from_xcom(state.to_xcom()).limits["ephemeral_storage"] == 64 * MiB
    assert "ephemeral_storage" not in TryState.for_plan(plan_stage(ResourceVector(cpu=1), ResourceVector(), None, SizingPolicy()),
                                                        1, None).limits


def test_an_evicted_pods_vanished_log_still_reaches_the_completion_callbacks(monkeypatch):
    """Seen on the real node: KPO's log follower got 400 "container base in pod ... is terminated"
    from an evicted pod and raised before on_pod_completion; the eviction went unrecorded."""
    from kubernetes.client.exceptions import ApiException
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    def vanished(self, pod):
        raise ApiException(status=400, reason="Bad Request")

    monkeypatch.setattr(KubernetesPodOperator, "await_pod_completion", vanished)
    task = AdaptiveTrainingOperator(task_id="t", cmds=["true"])
    task.adaptive_try = KubernetesTry(STATE, RecordingRunLog(), logging.getLogger("test"), "base", "t")
    pod = evicted_pod(POD_LIMIT)
    task.__dict__["pod_manager"] = SimpleNamespace(read_pod=lambda p: pod)  # KPO's cached property, without a cluster
    assert task.await_pod_completion(pod) is None
    pod.status.reason, pod.status.phase = None, "Running"  # not evicted: the provider's error stands
    with pytest.raises(ApiException):
        task.await_pod_completion(pod)
    task.adaptive_try = None  # sizing off: plain KPO behaviour
    with pytest.raises(ApiException):
        task.await_pod_completion(evicted_pod(POD_LIMIT))

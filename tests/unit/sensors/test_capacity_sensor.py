"""PredictedResourcesFitSensor and CapacityTrigger: the decision path, from a predicted size to
done / poke again / fail fast, in both the sync sensor and the deferrable trigger.

There is no Kubernetes API server here yet: the cluster state comes in through the narrow seam
``_cluster_state()`` (overridden in a subclass), and the prediction through ``ProfilerHook.predict``
(patched, or pointed at a closed port for the fallback). Reading nodes, pods, quotas and limit
ranges from a real control plane is exercised in the Kubernetes issue's integration tests; the
JSON conversion the reads feed is tested in tests/unit/logic/test_capacity.py.
"""

import asyncio
import importlib

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.capacity import ClusterState, NamespaceQuota, NodeCapacity
from airflow_adaptive.sensors import capacity as capacity_module
from airflow_adaptive.sensors.capacity import PredictedResourcesFitSensor
from airflow_adaptive.triggers.capacity import CapacityTrigger

GiB = 2**30
GPU_KEY = "nvidia.com/gpu.product"
USER = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "4", "memory": "16Gi"}}
# The profiler says the stage needs 3 GiB (median) to 5 GiB (upper): burstable requests 3 GiB.
PROFILE = PredictedProfile({"cpu": ResourceEstimate(1.0, 2.0), "memory": ResourceEstimate(3 * GiB, 5 * GiB)}, coverage=0.99)


def node(name, mem_gib=8, used_gib=0, gpu=0, gpu_type=None, cpu=8):
    return NodeCapacity(name, ResourceVector(cpu, mem_gib * GiB, gpu), ResourceVector(0, used_gib * GiB),
                        {GPU_KEY: gpu_type} if gpu_type else {})


class StateSensor(PredictedResourcesFitSensor):
    """The sensor with the cluster given, not read (see the module docstring)."""

    states: list = []

    def _cluster_state(self):
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


class StateTrigger(CapacityTrigger):
    states: list = []
    reads = 0

    async def _cluster_state(self):
        type(self).reads += 1
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, Exception):
            raise state
        return state


@pytest.fixture
def predicted(monkeypatch):
    calls = []

    def predict(hook, features, where):
        calls.append(dict(features))
        return PROFILE, "7"

    monkeypatch.setattr(capacity_module.ProfilerHook, "predict", predict)
    return calls


def sensor(states, **kwargs):
    StateSensor.states = list(states)
    base = dict(task_id="room_for_train", features={"records": 1000}, container_resources=USER, namespace="ml",
                mlflow_conn_id=None, stage_task_id="train", poke_interval=1, timeout=30)
    base.update(kwargs)
    return StateSensor(**base)


def test_fits_pushes_the_predicted_size(predicted):
    result = sensor([ClusterState((node("a", used_gib=6), node("b", used_gib=2)))]).poke({})
    assert isinstance(result, PokeReturnValue) and result.is_done
    size = result.xcom_value
    assert size["requests"]["memory"] == "3Gi" and size["node"] == "b" and size["sizing"] == "predicted"
    assert "fits on node b" in size["message"]
    assert predicted == [{"records": 1000, "task_id": "train"}]


def test_per_node_room_makes_it_wait_even_where_the_cluster_sum_would_do(predicted):
    """Two nodes with 2 GiB free each: 4 GiB free in all, but no node holds the 3 GiB prediction
    (the user's own 1 GiB request would fit: the prediction, not the request, is checked)."""
    s = sensor([ClusterState((node("a", used_gib=6), node("b", used_gib=6)))])
    assert s.poke({}) is False


def test_wait_then_fits_on_a_later_poke(predicted):
    busy = ClusterState((node("a", used_gib=6),))
    free = ClusterState((node("a", used_gib=2),))
    s = sensor([busy, free])
    assert s.poke({}) is False
    assert s.poke({}).is_done
    assert len(predicted) == 1  # predicted once per try, reused by every poke


def test_never_fails_fast_with_the_reason(predicted):
    s = sensor([ClusterState((node("small", mem_gib=2),))])
    with pytest.raises(AirflowFailException, match=r"can never be scheduled: no node is big enough.*small.*short by"):
        s.poke({})


def test_a_quota_that_is_used_up_waits_and_one_too_small_fails(predicted):
    nodes = (node("a"),)
    full = NamespaceQuota("team", {"requests.memory": 8 * GiB}, {"requests.memory": 6 * GiB})
    assert sensor([ClusterState(nodes, (full,))]).poke({}) is False
    tiny = NamespaceQuota("team", {"requests.memory": 2 * GiB}, {})
    with pytest.raises(AirflowFailException, match="ResourceQuota team allows 2.0 GiB"):
        sensor([ClusterState(nodes, (tiny,))]).poke({})


def test_the_policy_gpu_type_selects_the_nodes(monkeypatch):
    profile = PredictedProfile({"gpu": ResourceEstimate(1, 1), "gpu_memory": ResourceEstimate(50 * GiB, 60 * GiB),
                                "memory": ResourceEstimate(GiB, 2 * GiB)}, coverage=0.99)
    monkeypatch.setattr(capacity_module.ProfilerHook, "predict", lambda hook, f, where: (profile, "3"))
    types = [{"label": "A100-40GB", "memory": "40Gi"}, {"label": "A100-80GB", "memory": "80Gi"}]
    state = ClusterState((node("small-gpu", gpu=1, gpu_type="A100-40GB"), node("big-gpu", gpu=1, gpu_type="A100-80GB")))
    result = sensor([state], gpu_types=types, container_resources={"limits": {"nvidia.com/gpu": "1", "memory": "8Gi"}}).poke({})
    assert result.xcom_value["gpu_type"] == "A100-80GB" and result.xcom_value["node"] == "big-gpu"


def test_a_prediction_error_checks_the_users_request_with_a_warning(monkeypatch, free_tcp_port, tmp_path, capfd):
    """No profiler reachable (MLflow on a port nothing listens on): the user's 1 GiB request is checked."""
    monkeypatch.setenv("AIRFLOW_ADAPTIVE_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_tcp_port}")
    s = sensor([ClusterState((node("a", used_gib=6),))])
    result = s.poke({})
    assert result.is_done and result.xcom_value["requests"]["memory"] == "1Gi"
    assert result.xcom_value["sizing"] == "fallback" and "did not answer" in result.xcom_value["fallback"]
    out, err = capfd.readouterr()  # Airflow's task logger writes through structlog
    assert "warning" in out + err and "cannot predict the stage's size" in out + err


def test_a_bad_request_fails_the_task(predicted):
    with pytest.raises(AirflowFailException, match="container_resources"):
        sensor([ClusterState((node("a"),))], container_resources={"requests": {"memory": "lots"}}).poke({})


def test_templated_fields():
    assert set(PredictedResourcesFitSensor.template_fields) == {
        "features", "container_resources", "namespace", "model_uri", "sizing_preset"}


# --- deferrable -------------------------------------------------------------------------------

def test_deferrable_defers_to_the_capacity_trigger_with_the_predicted_size(predicted):
    s = sensor([ClusterState()], deferrable=True, include_monitor=False)
    with pytest.raises(TaskDeferred) as deferred:
        s.execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, CapacityTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.requests["memory"] == 3 * GiB and trigger.namespace == "ml" and trigger.overhead["cpu"] == 0
    assert trigger.size["requests"]["memory"] == "3Gi" and trigger.deadline is not None
    classpath, kwargs = trigger.serialize()
    module, name = classpath.rsplit(".", 1)
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)


def test_execute_complete_returns_the_size_or_raises():
    s = sensor([ClusterState()])
    out = s.execute_complete({}, {"status": "success", "message": "fits on node b", "node": "b",
                                  "size": {"requests": {"memory": "3Gi"}}})
    assert out["node"] == "b" and out["requests"] == {"memory": "3Gi"}
    with pytest.raises(AirflowFailException, match="no node is big enough"):
        s.execute_complete({}, {"status": "error", "message": "no node is big enough"})


def trigger(states, **kwargs):
    StateTrigger.states, StateTrigger.reads = list(states), 0
    base = dict(requests=ResourceVector(1, 3 * GiB).as_dict(), limits=ResourceVector(2, 5 * GiB).as_dict(),
                gpu_type=None, namespace="ml", poll_interval=0.01, size={"requests": {"memory": "3Gi"}})
    base.update(kwargs)
    return StateTrigger(**base)


def first_event(t):
    async def go():
        async for event in t.run():
            return event.payload
    return asyncio.run(asyncio.wait_for(go(), 10))


def test_trigger_polls_until_it_fits():
    busy = ClusterState((node("a", used_gib=6), node("b", used_gib=6)))
    event = first_event(trigger([busy, busy, ClusterState((node("a", used_gib=6), node("b", used_gib=4)))]))
    assert event["status"] == "success" and event["node"] == "b" and event["size"] == {"requests": {"memory": "3Gi"}}
    assert StateTrigger.reads == 3


def test_trigger_fails_fast_when_it_can_never_fit():
    event = first_event(trigger([ClusterState((node("small", mem_gib=2),))]))
    assert event == {"status": "error", "message": event["message"]} and "no node is big enough" in event["message"]


def test_trigger_retries_a_failed_read_and_stops_on_forbidden():
    from airflow_adaptive.adapters.kubernetes.cluster_state import forbidden

    event = first_event(trigger([ConnectionError("API restarting"), ClusterState((node("a"),))]))
    assert event["status"] == "success" and StateTrigger.reads == 2
    event = first_event(trigger([forbidden("nodes", "ml")]))
    assert event["status"] == "error" and "list nodes (cluster scope)" in event["message"]


def test_trigger_gives_the_last_reason_at_its_deadline():
    import time

    busy = ClusterState((node("a", used_gib=6),))
    event = first_event(trigger([busy], deadline=time.time() + 0.05))
    assert event["status"] == "error" and event["message"].startswith("timed out waiting for room: no node has room")

"""The pod AdaptiveTrainingOperator actually builds: KPO's own ``build_pod_request_obj`` (dry run,
no cluster needed) narrowed by the plan, serialized as the API server would receive it."""

import json
from datetime import datetime, timezone

import pytest
from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
from kubernetes.client import ApiClient
from kubernetes.client import models as k8s

from airflow_adaptive.adapters.kubernetes.pod_spec import resources_from
from airflow_adaptive.domain.errors import QuantityError, UserError
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import SizingPolicy
from airflow_adaptive.logic.stage_plan import plan_stage
from airflow_adaptive.operators import AdaptiveTrainingOperator
from airflow_adaptive.operators.kubernetes import MONITOR_CONTAINER, AdaptivePodCallbacks
from airflow_adaptive.operators.training import adaptive_enabled, python_command
from airflow_adaptive.operators.try_state import TryState
from airflow_adaptive.triggers.pod import AdaptivePodTrigger

GiB, MiB = 2**30, 2**20
GPU_TYPES = [{"label": "NVIDIA-T4", "memory": "16Gi"}, {"label": "NVIDIA-A100-SXM4-40GB", "memory": "40Gi"}]


def operator(**kw):
    defaults = dict(task_id="train", namespace="ml", cmds=["python", "train.py"], service_account_name="adaptive-stage",
                    container_resources={"requests": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"},
                                         "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}},
                    gpu_types=GPU_TYPES, features={"algorithm": "resnet50", "framework": "pytorch"})
    return AdaptiveTrainingOperator(**{**defaults, **kw})


def built(op, profile, mode="adaptive"):
    requested, limited = resources_from(op.container_resources, "test")
    op._plan = plan_stage(requested, limited, profile, op.policy, mode)
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


PROFILE = PredictedProfile({"cpu": ResourceEstimate(1.5, 2.5), "memory": ResourceEstimate(3 * GiB, 5 * GiB),
                            "gpu": ResourceEstimate(1, 1), "gpu_memory": ResourceEstimate(20 * GiB, 30 * GiB)},
                           coverage=0.99, model_uri="models:/job-profiler@champion", model_version="7")


def test_adaptive_pod_has_predicted_resources_sidecar_env_service_account_and_gpu_affinity():
    pod = built(operator(), PROFILE)
    spec = pod["spec"]
    (base,) = spec["containers"]
    assert base["resources"]["requests"] == {"cpu": "1500m", "memory": "3Gi", "nvidia.com/gpu": "1"}
    assert base["resources"]["limits"] == {"cpu": "2750m", "memory": "5632Mi", "nvidia.com/gpu": "1"}
    assert {"name": "AIRFLOW_ADAPTIVE_WORKLOAD", "value": "base"} in base["env"]
    assert spec["serviceAccountName"] == "adaptive-stage"
    assert spec["shareProcessNamespace"] is True
    monitor = next(c for c in spec["initContainers"] if c["name"] == MONITOR_CONTAINER)
    assert monitor["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in monitor["env"]}
    # One writer: the monitor prints its samples for the operator and gets no MLflow address or run.
    assert "AIRFLOW_ADAPTIVE_RUN_ID" not in env and "MLFLOW_TRACKING_URI" not in env
    assert env["AIRFLOW_ADAPTIVE_MEMORY"] == "5632Mi"
    assert json.loads(env["AIRFLOW_ADAPTIVE_PROFILE"])["model_version"] == "7"
    assert monitor["image"].startswith("ghcr.io/airflow-adaptive/monitor")
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-40GB"]} in terms[0]["matchExpressions"]
    assert "gpu_memory" not in json.dumps(base["resources"])  # not a Kubernetes resource: it chose the GPU type


def test_shadow_pod_keeps_the_users_request_and_the_monitor_only_recommends():
    pod = built(operator(), PROFILE, mode="shadow")
    (base,) = pod["spec"]["containers"]
    assert base["resources"]["requests"] == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
    monitor = next(c for c in pod["spec"]["initContainers"] if c["name"] == MONITOR_CONTAINER)
    assert {"name": "AIRFLOW_ADAPTIVE_CHANNEL", "value": "recommend"} in monitor["env"]


def test_kill_switch_builds_the_plain_kpo_pod():
    op = operator()
    requested, limited = resources_from(op.container_resources, "test")
    op._plan = plan_stage(requested, limited, PROFILE, op.policy, "off")
    pod = ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))
    assert not pod["spec"].get("initContainers")
    assert pod["spec"]["containers"][0]["resources"]["requests"]["memory"] == "2Gi"


def test_resources_from_reads_both_forms_and_names_the_bad_field():
    req, lim = resources_from(k8s.V1ResourceRequirements(requests={"memory": "1Gi"}, limits={"cpu": "2"}), "x")
    assert req == ResourceVector(memory=GiB) and lim == ResourceVector(cpu=2)
    with pytest.raises(QuantityError, match=r"task 'a' container_resources.requests.memory"):
        resources_from({"requests": {"memory": "12 GB"}}, "task 'a' container_resources")
    with pytest.raises(UserError, match="unknown key"):
        resources_from({"request": {"memory": "1Gi"}}, "x")


def test_bad_static_arguments_fail_at_parse_time():
    with pytest.raises(QuantityError, match="max_resources"):
        operator(max_resources={"memory": "lots"})
    with pytest.raises(ValueError, match="on_sizing_error"):
        operator(on_sizing_error="ignore")
    with pytest.raises(ValueError, match="sizing_mode"):
        operator(sizing_mode="yolo")


def test_callbacks_keep_the_users_own_first():
    class Mine(AdaptivePodCallbacks.__mro__[1]):
        pass

    op = operator(callbacks=Mine)
    assert op.callbacks == [Mine, AdaptivePodCallbacks]


def test_deferral_uses_the_adaptive_trigger_with_the_providers_kwargs():
    from airflow.sdk.exceptions import TaskDeferred

    op = operator()
    requested, limited = resources_from(op.container_resources, "test")
    op._plan = plan_stage(requested, limited, PROFILE, op.policy)
    op.adaptive_try = op._kubernetes_try(TryState.for_plan(op._plan, 1, None))  # as execute makes it
    base = KubernetesPodTrigger(pod_name="p", pod_namespace="ml", trigger_start_time=datetime.now(timezone.utc),
                                base_container_name="base", poll_interval=3)
    with pytest.raises(TaskDeferred) as deferred:
        op.defer(trigger=base, method_name="trigger_reentry")
    trigger = deferred.value.trigger
    assert isinstance(trigger, AdaptivePodTrigger) and trigger.resize
    _, kwargs = trigger.serialize()
    assert kwargs["pod_name"] == "p" and kwargs["poll_interval"] == 3 and kwargs["monitor_container_name"] == MONITOR_CONTAINER
    assert kwargs["maximum"] == {"cpu": 4.0, "memory": 16 * GiB} and kwargs["stage_run"] is None


def test_without_a_try_to_follow_the_providers_trigger_is_kept():
    from airflow.sdk.exceptions import TaskDeferred

    base = KubernetesPodTrigger(pod_name="p", pod_namespace="ml", trigger_start_time=datetime.now(timezone.utc),
                                base_container_name="base", poll_interval=3)
    with pytest.raises(TaskDeferred) as deferred:
        operator().defer(trigger=base, method_name="trigger_reentry")  # sizing off: no adaptive_try
    assert type(deferred.value.trigger) is KubernetesPodTrigger


def test_python_command_uses_this_worker_and_refuses_unknown_programs(monkeypatch):
    import sys

    assert python_command(["python", "-m", "x"], ["--rows", 5]) == [sys.executable, "-m", "x", "--rows", "5"]
    with pytest.raises(UserError, match="not on this worker's PATH"):
        python_command(["no-such-program-here"], [])


@pytest.mark.parametrize("value,enabled", [(None, True), ("false", False), ("0", False), ("true", True), ("off", False)])
def test_kill_switch_from_the_environment(monkeypatch, value, enabled):
    if value is None:
        monkeypatch.delenv("AIRFLOW_ADAPTIVE_ENABLED", raising=False)
    else:
        monkeypatch.setenv("AIRFLOW_ADAPTIVE_ENABLED", value)
    assert adaptive_enabled() is enabled


# --- ephemeral storage and network bandwidth in the pod the operator builds -------------------


STORAGE_PROFILE = PredictedProfile({**PROFILE.resources, "ephemeral_storage": ResourceEstimate(200 * MiB, 400 * MiB),
                                    "network_rx": ResourceEstimate(5 * MiB, 10 * MiB),
                                    "network_tx": ResourceEstimate(MiB, 2 * MiB)}, coverage=0.99)
STORAGE_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "1Gi"},
                     "limits": {"cpu": "4", "memory": "16Gi", "ephemeral-storage": "2Gi"}}


def built_with_storage(op, profile, mode="adaptive"):
    from airflow_adaptive.adapters.kubernetes.pod_spec import storage_from

    requested, limited = resources_from(op.container_resources, "test")
    op._plan = plan_stage(requested, limited, profile, op.policy, mode, storage=storage_from(op.container_resources, "test"))
    op._bandwidth = op._bandwidth_annotations(op._plan)
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


@pytest.mark.parametrize("mode,profile,requests,limits", [
    ("adaptive", STORAGE_PROFILE, "200Mi", "440Mi"),  # from the prediction, within the user's 2Gi
    ("adaptive", PROFILE, "1Gi", "2Gi"),             # not predicted: the user's
    ("shadow", STORAGE_PROFILE, "1Gi", "2Gi"),       # shadow: the user's
    ("off", STORAGE_PROFILE, "1Gi", "2Gi"),
])
def test_the_pod_gets_the_predicted_ephemeral_storage(mode, profile, requests, limits):
    pod = built_with_storage(operator(container_resources=STORAGE_RESOURCES, gpu_types=()), profile, mode)
    (base,) = pod["spec"]["containers"]
    assert base["resources"]["requests"]["ephemeral-storage"] == requests
    assert base["resources"]["limits"]["ephemeral-storage"] == limits


def test_bandwidth_annotations_are_opt_in_and_in_bits_per_second():
    plain = built_with_storage(operator(container_resources=STORAGE_RESOURCES, gpu_types=()), STORAGE_PROFILE)
    assert not any(k.endswith("-bandwidth") for k in plain["metadata"].get("annotations", {}))
    op = operator(container_resources=STORAGE_RESOURCES, gpu_types=(), network_bandwidth=True,
                  annotations={"kubernetes.io/egress-bandwidth": "10M", "team": "ml"})
    annotations = built_with_storage(op, STORAGE_PROFILE)["metadata"]["annotations"]
    # 10 MiB/s x 8 x 1.1 = 92,274,688 bit/s; egress: the prediction (18.5 Mbit/s) is above the user's 10M bound
    assert annotations["kubernetes.io/ingress-bandwidth"] == "92275k"
    assert annotations["kubernetes.io/egress-bandwidth"] == "10M" and annotations["team"] == "ml"
    shadow = built_with_storage(op, STORAGE_PROFILE, "shadow")["metadata"]["annotations"]
    assert "kubernetes.io/ingress-bandwidth" not in shadow and shadow["kubernetes.io/egress-bandwidth"] == "10M"


def test_a_bandwidth_annotation_kubernetes_refuses_fails_with_what_to_do():
    op = operator(network_bandwidth=True, annotations={"kubernetes.io/ingress-bandwidth": "100"})
    requested, limited = resources_from(op.container_resources, "test")
    with pytest.raises(UserError, match=r"task 'train': annotation kubernetes.io/ingress-bandwidth='100' is below 1k"):
        op._bandwidth_annotations(plan_stage(requested, limited, PROFILE, op.policy))
    # not asked for: not checked (plain KubernetesPodOperator behaviour)
    assert operator(annotations={"kubernetes.io/ingress-bandwidth": "100"})._bandwidth_annotations(
        plan_stage(requested, limited, PROFILE, op.policy)) == {}


def test_network_bandwidth_is_keyword_only_and_a_flag():
    with pytest.raises(ValueError, match="network_bandwidth must be true or false"):
        operator(network_bandwidth="sometimes")

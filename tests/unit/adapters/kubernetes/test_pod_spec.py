"""The sized pod with its monitor sidecar, built from a real KubernetesPodOperator pod, and the
live pod read back as resize-plan inputs, all on real kubernetes model objects."""

import json

import pytest
from kubernetes import client as k8s

from airflow_adaptive.adapters.kubernetes.pod_spec import (
    ANNOTATION_REASONS,
    ANNOTATION_SIZE,
    MonitorSidecar,
    container_resources,
    container_storage_limit,
    container_terminated,
    qos_class,
    resize_patch_body,
    resize_state,
    shape_pod,
    storage_from,
)
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import ContainerSize, StorageSize

GI = 2**30
MI = 2**20
SIZE = ContainerSize(
    requests=ResourceVector(cpu=1.5, memory=3 * GI, gpu=1, gpu_memory=20 * GI),
    limits=ResourceVector(cpu=2, memory=4 * GI, gpu=1, gpu_memory=30 * GI),
    gpu_type="NVIDIA-A100-SXM4-40GB",
    reasons=("memory limit capped at 4Gi (the bound)",),
)
MONITOR = MonitorSidecar(image="registry.example/airflow-adaptive:1", interval_s=2, env={"AIRFLOW_ADAPTIVE_NVML": "0"})
PROFILE = '{"coverage": 0.99, "resources": {"memory": {"median": 1, "upper": 2}}}'
USER_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["training"]}]}]}}}


@pytest.fixture(scope="module")
def kpo_pod():
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    op = KubernetesPodOperator(task_id="train", name="train", namespace="ml", image="python:3.11", cmds=["python", "train.py"],
                               security_context={"runAsUser": 1000, "runAsGroup": 1000}, affinity=USER_AFFINITY,
                               container_resources=k8s.V1ResourceRequirements(
                                   requests={"cpu": "1", "ephemeral-storage": "1Gi"}, limits={"ephemeral-storage": "2Gi"}))
    return op.build_pod_request_obj(dry_run=True)


def serialized(pod):
    return k8s.ApiClient().sanitize_for_serialization(pod)


def shaped(pod, **overrides):
    kwargs = dict(container="base", size=SIZE, monitor=MONITOR, run_id="abc123", tracking_uri="http://mlflow:5000",
                  profile_json=PROFILE, service_account="adaptive-runner")
    kwargs.update(overrides)
    return serialized(shape_pod(pod, **kwargs))


def env_of(container):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_the_workload_gets_exact_requests_limits_and_a_resize_policy(kpo_pod):
    base = shaped(kpo_pod)["spec"]["containers"][0]
    assert base["name"] == "base"
    assert base["resources"] == {
        "requests": {"cpu": "1500m", "memory": "3Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "1Gi"},
        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1", "ephemeral-storage": "2Gi"},
    }
    assert base["resizePolicy"] == [{"resourceName": "cpu", "restartPolicy": "NotRequired"},
                                    {"resourceName": "memory", "restartPolicy": "NotRequired"}]
    assert env_of(base)["AIRFLOW_ADAPTIVE_WORKLOAD"] == "base"
    assert "gpu_memory" not in json.dumps(base["resources"])


def test_the_quantities_read_back_as_the_same_amounts(kpo_pod):
    resources = shaped(kpo_pod)["spec"]["containers"][0]["resources"]
    assert ResourceVector.from_kubernetes(resources["requests"]) == ResourceVector(cpu=1.5, memory=3 * GI, gpu=1)
    assert ResourceVector.from_kubernetes(resources["limits"]) == ResourceVector(cpu=2, memory=4 * GI, gpu=1)


def test_the_monitor_is_a_native_sidecar_with_its_allocation_and_run(kpo_pod):
    spec = shaped(kpo_pod, maximum=ResourceVector(cpu=8, memory=32 * GI))["spec"]
    (monitor,) = spec["initContainers"]
    assert monitor["name"] == "adaptive-monitor" and monitor["restartPolicy"] == "Always"
    assert monitor["image"] == "registry.example/airflow-adaptive:1"
    assert monitor["command"] == ["airflow-adaptive", "-v", "monitor", "--channel", "stdout"]
    assert monitor["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "50m", "memory": "64Mi"}}
    env = env_of(monitor)
    assert {k: env[k] for k in ("AIRFLOW_ADAPTIVE_CPU", "AIRFLOW_ADAPTIVE_MEMORY", "AIRFLOW_ADAPTIVE_MAX_CPU",
                                "AIRFLOW_ADAPTIVE_MAX_MEMORY", "AIRFLOW_ADAPTIVE_RUN_ID", "MLFLOW_TRACKING_URI",
                                "AIRFLOW_ADAPTIVE_INTERVAL", "AIRFLOW_ADAPTIVE_CONTAINER", "AIRFLOW_ADAPTIVE_NVML")} == {
        "AIRFLOW_ADAPTIVE_CPU": "2", "AIRFLOW_ADAPTIVE_MEMORY": "4Gi", "AIRFLOW_ADAPTIVE_MAX_CPU": "8",
        "AIRFLOW_ADAPTIVE_MAX_MEMORY": "32Gi", "AIRFLOW_ADAPTIVE_RUN_ID": "abc123",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000", "AIRFLOW_ADAPTIVE_INTERVAL": "2",
        "AIRFLOW_ADAPTIVE_CONTAINER": "base", "AIRFLOW_ADAPTIVE_NVML": "0"}
    assert json.loads(env["AIRFLOW_ADAPTIVE_PROFILE"]) == json.loads(PROFILE)
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["AIRFLOW_ADAPTIVE_SPOOL"].startswith("/tmp/")
    assert monitor["volumeMounts"] == [{"mountPath": "/tmp", "name": "adaptive-monitor-tmp"}]
    assert {"name": "adaptive-monitor-tmp", "emptyDir": {"sizeLimit": "64Mi"}} in spec["volumes"]


def test_without_maximum_the_monitor_keeps_its_own_bound(kpo_pod):
    env = env_of(shaped(kpo_pod)["spec"]["initContainers"][0])
    assert "AIRFLOW_ADAPTIVE_MAX_CPU" not in env and "AIRFLOW_ADAPTIVE_MAX_MEMORY" not in env
    assert "AIRFLOW_ADAPTIVE_MIN_MEMORY" not in env


def test_a_retry_tells_the_monitor_its_memory_floor(kpo_pod):
    env = env_of(shaped(kpo_pod, minimum=ResourceVector(memory=3 * GI))["spec"]["initContainers"][0])
    assert env["AIRFLOW_ADAPTIVE_MIN_MEMORY"] == "3Gi"


def test_the_monitor_runs_as_the_workload_user_and_hardened(kpo_pod):
    ctx = shaped(kpo_pod)["spec"]["initContainers"][0]["securityContext"]
    assert ctx == {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                   "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
                   "seccompProfile": {"type": "RuntimeDefault"}}


def _identity(pod_ctx=None, ctr_ctx=None):
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(
        security_context=k8s.V1PodSecurityContext(**(pod_ctx or {})),
        containers=[k8s.V1Container(name="base", image="x", security_context=k8s.V1SecurityContext(**(ctr_ctx or {})))]))
    return shaped(pod)["spec"]["initContainers"][0]["securityContext"]


@pytest.mark.parametrize("pod_ctx, ctr_ctx, user, group, non_root, caps", [
    ({"run_as_user": 1000}, {"run_as_user": 2000}, 2000, None, True, {"drop": ["ALL"]}),       # the container's wins
    ({"run_as_user": 1000, "run_as_group": 3000}, {}, 1000, 3000, True, {"drop": ["ALL"]}),
    ({"run_as_user": 1000}, {"run_as_user": 0}, 0, 0, False, None),                            # root reads root
    ({}, {"run_as_user": 0, "capabilities": k8s.V1Capabilities(drop=["ALL"])}, 0, 0, False, {"drop": ["ALL"]}),
    ({"run_as_non_root": True}, {}, None, None, True, {"drop": ["ALL"]}),                    # the image's UID
    ({}, {}, 0, 0, False, None),                                                               # unstated: as the image, root
])
def test_the_monitor_takes_the_workloads_identity_never_more(pod_ctx, ctr_ctx, user, group, non_root, caps):
    ctx = _identity(pod_ctx, ctr_ctx)
    assert (ctx.get("runAsUser"), ctx.get("runAsGroup"), ctx["runAsNonRoot"], ctx.get("capabilities")) == (user, group, non_root, caps)
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"} and "add" not in (ctx.get("capabilities") or {})


def test_the_workloads_own_identity_is_never_changed():
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(
        containers=[k8s.V1Container(name="base", image="x")]))
    data = shaped(pod)["spec"]
    assert "securityContext" not in data["containers"][0] and not data.get("securityContext")


def test_pod_level_settings(kpo_pod):
    data = shaped(kpo_pod)
    assert data["spec"]["shareProcessNamespace"] is True
    assert data["spec"]["serviceAccountName"] == "adaptive-runner"
    assert data["spec"]["restartPolicy"] == "Never"
    assert data["metadata"]["namespace"] == "ml"
    annotations = data["metadata"]["annotations"]
    assert json.loads(annotations[ANNOTATION_SIZE]) == {
        "requests": {"cpu": "1500m", "memory": "3Gi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}, "gpu_type": "NVIDIA-A100-SXM4-40GB"}
    assert json.loads(annotations[ANNOTATION_REASONS]) == list(SIZE.reasons)


def test_the_gpu_type_is_required_alongside_the_users_affinity(kpo_pod):
    terms = shaped(kpo_pod)["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [
        {"key": "pool", "operator": "In", "values": ["training"]},
        {"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-A100-SXM4-40GB"]}]}]


def test_every_ored_term_gets_the_gpu_requirement_and_a_custom_label_key():
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(
        containers=[k8s.V1Container(name="base", image="x")],
        affinity=k8s.V1Affinity(node_affinity=k8s.V1NodeAffinity(
            required_during_scheduling_ignored_during_execution=k8s.V1NodeSelector(node_selector_terms=[
                k8s.V1NodeSelectorTerm(match_expressions=[k8s.V1NodeSelectorRequirement(key="zone", operator="In", values=["a"])]),
                k8s.V1NodeSelectorTerm(match_fields=[k8s.V1NodeSelectorRequirement(key="metadata.name", operator="In", values=["n1"])]),
            ])))))
    terms = shaped(pod, gpu_label_key="gpu.example/type")["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    want = {"key": "gpu.example/type", "operator": "In", "values": ["NVIDIA-A100-SXM4-40GB"]}
    assert len(terms) == 2 and all(want in t["matchExpressions"] for t in terms)
    assert terms[1]["matchFields"][0]["key"] == "metadata.name"


def test_the_input_pod_is_not_changed(kpo_pod):
    before = json.dumps(serialized(kpo_pod), sort_keys=True)
    shape_pod(kpo_pod, container="base", size=SIZE, monitor=MONITOR, run_id=None, tracking_uri=None, profile_json=None)
    assert json.dumps(serialized(kpo_pod), sort_keys=True) == before


def test_shaping_twice_is_the_same_as_once(kpo_pod):
    once = shape_pod(kpo_pod, container="base", size=SIZE, monitor=MONITOR, run_id="r", tracking_uri=None, profile_json=None)
    twice = shape_pod(once, container="base", size=SIZE, monitor=MONITOR, run_id="r", tracking_uri=None, profile_json=None)
    assert serialized(twice) == serialized(once)


def test_no_monitor_and_no_gpu_type_leave_the_pod_alone_there():
    size = ContainerSize(ResourceVector(cpu=0.25, memory=512 * MI), ResourceVector(cpu=0.5, memory=GI), None, ())
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="work", image="x")]))
    spec = shaped(pod, container="work", size=size, monitor=None, service_account=None)["spec"]
    assert spec["containers"][0]["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                                  "limits": {"cpu": "500m", "memory": "1Gi"}}
    assert "initContainers" not in spec and "shareProcessNamespace" not in spec
    assert "affinity" not in spec and "serviceAccountName" not in spec


MIG_SIZE = ContainerSize(ResourceVector(cpu=1, memory=GI, gpu=1, gpu_memory=5 * GI), ResourceVector(cpu=1, memory=GI, gpu=1, gpu_memory=6 * GI),
                         None, ("MIG profile 1g.10gb",), gpu_resource="nvidia.com/mig-1g.10gb")


def gpu_pod(requests, limits):
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(
        name="base", image="x", resources=k8s.V1ResourceRequirements(requests=requests, limits=limits))]))


def test_a_mig_profile_replaces_the_users_gpu_and_needs_no_affinity():
    pod = gpu_pod({"nvidia.com/gpu": "1", "ephemeral-storage": "1Gi"}, {"nvidia.com/gpu": "1"})
    data = shaped(pod, size=MIG_SIZE, monitor=None, service_account=None)
    resources = data["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": "1Gi", "nvidia.com/mig-1g.10gb": "1", "ephemeral-storage": "1Gi"},
                         "limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/mig-1g.10gb": "1"}}
    assert "affinity" not in data["spec"]
    record = json.loads(data["metadata"]["annotations"][ANNOTATION_SIZE])
    assert record["limits"] == {"cpu": "1", "memory": "1Gi", "nvidia.com/mig-1g.10gb": "1"} and "gpu_type" not in record


@pytest.mark.parametrize("name, size, user, want", [
    ("a retry moving from a MIG slice to a full GPU drops the slice", SIZE, {"nvidia.com/mig-1g.10gb": "1"},
     {"nvidia.com/gpu": "1"}),
    ("a retry moving to a bigger slice replaces the old one", ContainerSize(
        MIG_SIZE.requests, MIG_SIZE.limits, None, (), gpu_resource="nvidia.com/mig-2g.20gb"),
     {"nvidia.com/mig-1g.10gb": "1"}, {"nvidia.com/mig-2g.20gb": "1"}),
    ("a size without GPUs keeps the MIG slice the user asked for", ContainerSize(
        ResourceVector(cpu=1, memory=GI), ResourceVector(cpu=1, memory=GI), None, ()),
     {"nvidia.com/mig-1g.10gb": "1"}, {"nvidia.com/mig-1g.10gb": "1"}),
])
def test_one_gpu_resource_per_container(name, size, user, want):
    resources = shaped(gpu_pod(dict(user), dict(user)), size=size, monitor=None)["spec"]["containers"][0]["resources"]
    gpu = {k: v for k, v in resources["limits"].items() if k.startswith("nvidia.com/")}
    assert gpu == want, name
    assert {k: v for k, v in resources["requests"].items() if k.startswith("nvidia.com/")} == want, name


def test_the_gpu_count_of_a_plan_is_written_as_is():
    """A world size of 4 stays 4 in the pod, whatever the GPU type."""
    size = ContainerSize(ResourceVector(cpu=1, memory=GI, gpu=4), ResourceVector(cpu=1, memory=GI, gpu=4), "T4", ())
    resources = shaped(gpu_pod({"nvidia.com/gpu": "4"}, {"nvidia.com/gpu": "4"}), size=size, monitor=None)[
        "spec"]["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == "4"


def test_a_missing_container_is_named():
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="x")]))
    with pytest.raises(ValueError, match=r"no container named 'trainer'.*\['base'\]"):
        shape_pod(pod, container="trainer", size=SIZE, monitor=None, run_id=None, tracking_uri=None, profile_json=None)


def test_a_request_above_its_limit_is_refused_before_the_api_does():
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p"), spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image="x")]))
    bad = ContainerSize(ResourceVector(cpu=4), ResourceVector(cpu=2), None, ())
    with pytest.raises(ValueError, match="cpu request 4 is above its limit 2"):
        shape_pod(pod, container="base", size=bad, monitor=None, run_id=None, tracking_uri=None, profile_json=None)


def test_monitor_settings_are_checked():
    with pytest.raises(ValueError, match="DNS label"):
        MonitorSidecar(image="x", name="Adaptive_Monitor")
    with pytest.raises(ValueError, match="interval_s"):
        MonitorSidecar(image="x", interval_s=0)
    with pytest.raises(ValueError, match="MonitorSidecar.memory"):
        MonitorSidecar(image="x", memory="lots")


def test_the_resize_body_is_a_strategic_merge_of_cpu_and_memory_only():
    body = resize_patch_body("base", ResourceVector(cpu=1.5, memory=3 * GI, gpu=1), ResourceVector(cpu=2, memory=6 * GI, gpu=1))
    assert body == {"spec": {"containers": [{"name": "base", "resources": {
        "requests": {"cpu": "1500m", "memory": "3Gi"}, "limits": {"cpu": "2", "memory": "6Gi"}}}]}}
    assert "nvidia.com/gpu" not in json.dumps(body)


# --- reading a live pod ------------------------------------------------------------------


def live_pod(name="train", uid="u1", node="n1", requests=None, limits=None, phase="Running", conditions=(), qos=None,
             sidecar=True):
    init = [k8s.V1Container(name="adaptive-monitor", image="m", restart_policy="Always", resources=k8s.V1ResourceRequirements(
        requests={"cpu": "50m", "memory": "64Mi"}, limits={"cpu": "50m", "memory": "64Mi"}))] if sidecar else []
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, uid=uid, namespace="ml"),
        spec=k8s.V1PodSpec(node_name=node, init_containers=init, containers=[k8s.V1Container(
            name="base", image="x", resources=k8s.V1ResourceRequirements(requests=requests, limits=limits))]),
        status=k8s.V1PodStatus(phase=phase, qos_class=qos, conditions=[
            k8s.V1PodCondition(type=t, status="True", reason=r, message=m) for t, r, m in conditions]))


def test_the_plan_inputs_come_from_the_spec_and_the_conditions():
    pod = live_pod(requests={"cpu": "500m", "memory": "1Gi"}, limits={"cpu": "1", "memory": "2Gi"}, qos="Burstable",
                   conditions=[("PodResizePending", "Deferred", "Node didn't have enough resource: memory"),
                               ("Ready", None, None)])
    state = resize_state(pod, "base", room=ResourceVector(cpu=3), last_sequence=7)
    assert (state.requests, state.limits) == (ResourceVector(0.5, GI), ResourceVector(1, 2 * GI))
    assert state.qos_class == "Burstable" and state.last_sequence == 7 and state.room == ResourceVector(cpu=3)
    assert [(c.type, c.reason) for c in state.conditions] == [("PodResizePending", "Deferred")]
    with pytest.raises(ValueError, match="no container named 'trainer'"):
        container_resources(pod, "trainer")


@pytest.mark.parametrize("requests, limits, sidecar, want", [
    ({"cpu": "1", "memory": "1Gi"}, {"cpu": "1000m", "memory": "1024Mi"}, True, "Guaranteed"),
    (None, {"cpu": "1", "memory": "1Gi"}, True, "Guaranteed"),  # requests default to limits
    ({"cpu": "500m", "memory": "1Gi"}, {"cpu": "1", "memory": "1Gi"}, True, "Burstable"),
    ({"cpu": "1"}, None, False, "Burstable"),
    (None, None, False, "BestEffort"),
])
def test_the_qos_class_is_computed_when_the_status_has_none(requests, limits, sidecar, want):
    assert qos_class(live_pod(requests=requests, limits=limits, sidecar=sidecar)) == want


def test_the_room_on_the_node_leaves_out_this_container_and_finished_pods():
    node = k8s.V1Node(metadata=k8s.V1ObjectMeta(name="n1"), status=k8s.V1NodeStatus(
        allocatable={"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"}))
    me = live_pod(requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "2", "memory": "4Gi"})
    other = live_pod(name="other", uid="u2", requests={"cpu": "1500m", "memory": "8Gi"}, sidecar=False)
    done = live_pod(name="done", uid="u3", requests={"cpu": "4", "memory": "16Gi"}, phase="Succeeded", sidecar=False)
    from kubernetes.client import ApiClient

    from airflow_adaptive.adapters.kubernetes.resize import room_from_json

    as_json = ApiClient().sanitize_for_serialization  # the resizer reads the node and its pods as JSON
    room = room_from_json(as_json(node), [as_json(p) for p in (me, other, done)], me, "base")
    # 8 - 1.5 (other) - 0.05 (my monitor) cores; 32Gi - 8Gi - 64Mi
    assert room.cpu == pytest.approx(6.45)
    assert room.memory == 24 * GI - 64 * MI


def test_a_native_sidecar_ends_with_its_pod_not_between_restarts():
    pod = live_pod(requests={"cpu": "1"})
    pod.status.init_container_statuses = [k8s.V1ContainerStatus(
        name="adaptive-monitor", image="m", image_id="", ready=False, restart_count=1,
        state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=1)))]
    assert not container_terminated(pod, "adaptive-monitor")
    pod.status.phase = "Succeeded"
    assert container_terminated(pod, "adaptive-monitor")
    pod.status.phase = "Running"
    pod.status.container_statuses = [k8s.V1ContainerStatus(
        name="base", image="x", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=0)))]
    assert container_terminated(pod, "base")


# --- ephemeral-storage: set at pod start from the size, never resized in place -------------


@pytest.mark.parametrize("storage,requests,limits", [
    # no storage in the size: the user's own ephemeral-storage stays as written
    (StorageSize(), "1Gi", "2Gi"),
    # a sized stage: both replaced
    (StorageSize(300 * MI, 600 * MI), "300Mi", "600Mi"),
])
def test_ephemeral_storage_is_the_sizes_else_the_users(kpo_pod, storage, requests, limits):
    from dataclasses import replace

    pod = shaped(kpo_pod, size=replace(SIZE, ephemeral=storage))
    (base,) = pod["spec"]["containers"]
    assert base["resources"]["requests"]["ephemeral-storage"] == requests
    assert base["resources"]["limits"]["ephemeral-storage"] == limits
    # set at pod start only: never resizable in place
    assert {p["resourceName"] for p in base["resizePolicy"]} == {"cpu", "memory"}
    record = json.loads(pod["metadata"]["annotations"][ANNOTATION_SIZE])
    assert ("ephemeral-storage" in record["limits"]) is storage.is_set


def test_an_ephemeral_request_above_its_limit_is_refused(kpo_pod):
    from dataclasses import replace

    with pytest.raises(ValueError, match="ephemeral-storage request 2Gi is above its limit 1Gi"):
        shaped(kpo_pod, size=replace(SIZE, ephemeral=StorageSize(2 * GI, GI)))


def test_the_resize_body_never_carries_ephemeral_storage():
    body = resize_patch_body("base", ResourceVector(cpu=1, memory=GI), ResourceVector(cpu=2, memory=2 * GI))
    assert "ephemeral" not in json.dumps(body)


@pytest.mark.parametrize("value,expected", [
    (None, StorageSize()),
    ({"requests": {"cpu": "1"}}, StorageSize()),
    ({"requests": {"ephemeral-storage": "1Gi"}}, StorageSize(GI, 0)),
    ({"requests": {"ephemeral-storage": "1Gi"}, "limits": {"ephemeral-storage": "2Gi", "memory": "1Gi"}}, StorageSize(GI, 2 * GI)),
    (k8s.V1ResourceRequirements(limits={"ephemeral-storage": "500M"}), StorageSize(0, 500e6)),
])
def test_storage_from_reads_the_users_ephemeral_storage(value, expected):
    assert storage_from(value, "task 't' container_resources") == expected


@pytest.mark.parametrize("value,says", [
    ({"requests": {"ephemeral-storage": "lots"}}, "container_resources.requests.ephemeral-storage"),
    ({"requests": {"ephemeral-storage": "2Gi"}, "limits": {"ephemeral-storage": "1Gi"}}, "above its limit"),
    ({"request": {}}, "unknown key"),
])
def test_storage_from_names_a_bad_field(value, says):
    from airflow_adaptive.domain.errors import UserError

    with pytest.raises(UserError, match=says):
        storage_from(value, "task 't' container_resources")


def test_the_storage_limit_is_read_back_from_the_spec():
    pod = k8s.V1Pod(spec=k8s.V1PodSpec(containers=[
        k8s.V1Container(name="base", resources=k8s.V1ResourceRequirements(limits={"ephemeral-storage": "64Mi"})),
        k8s.V1Container(name="other")]))
    assert container_storage_limit(pod, "base") == 64 * MI
    assert container_storage_limit(pod, "other") == 0 and container_storage_limit(pod, "missing") == 0

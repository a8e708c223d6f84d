"""The pod a sized stage runs in, and the pod read back as inputs for a resize decision.

``shape_pod`` turns the pod ``KubernetesPodOperator`` builds into one that runs at the predicted
size and carries the monitor as a native sidecar (an init container with ``restartPolicy:
Always``, Kubernetes >= 1.29): it starts before the workload, runs beside it, and is stopped by
the kubelet once the workload ends, so the pod still completes.

How the monitor reaches the workload (see ``runtime/sidecar.py``): ``shareProcessNamespace``,
the marker ``AIRFLOW_ADAPTIVE_WORKLOAD=<container>`` in the workload's environment, and the
same UID for both containers. The monitor has no API rights: it prints resize signals on its
log, which the operator (or its trigger) reads and applies through ``pods/resize``.

| setting | value | why |
|---|---|---|
| monitor requests = limits | 50m CPU, 64Mi | the monitor's budget is 60 MiB resident (``cli/runtime_commands.py``); requests == limits keeps a Guaranteed pod Guaranteed |
| ``resizePolicy`` cpu, memory | ``NotRequired`` | resize without restarting the workload; required anyway with the pod's ``restartPolicy: Never``; memory decreases are allowed since 1.35 (the kubelet checks use first, best-effort) |
| monitor ``/tmp`` | emptyDir, 64Mi | the root filesystem is read-only; the MLflow spool needs somewhere to wait |
| monitor ``AIRFLOW_ADAPTIVE_CPU`` / ``MEMORY`` | the limit, else the request | the allocation the monitor compares use with |
| monitor ``AIRFLOW_ADAPTIVE_MAX_*`` | ``maximum`` when given | else the monitor's default, the node's own size; the resize plan caps at the node's room anyway |
| monitor ``AIRFLOW_ADAPTIVE_MIN_MEMORY`` | ``minimum`` when given | a retry after an OOM kill: the monitor never releases memory below its escalated limit |
| GPUs | the size's count under its ``gpu_resource`` (requests = limits) | ``nvidia.com/gpu``, or ``nvidia.com/mig-<profile>`` (NVIDIA's mixed MIG strategy) replacing the user's ``nvidia.com/gpu`` |
| GPU-type node affinity | ``gpu_label_key In [gpu_type]`` for a full GPU type only | a MIG profile needs none: only nodes with that profile advertise its resource |
| ``ephemeral-storage`` | the size's request/limit when it sets them (``ContainerSize.ephemeral``), else the user's as written | set at pod start only: not in ``resizePolicy`` nor in a resize patch (Kubernetes cannot resize it in place) |
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from kubernetes import client as k8s

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.monitor_protocol import WORKLOAD_ENV
from airflow_adaptive.domain.quantities import format_cpu, format_memory, parse, parse_quantity
from airflow_adaptive.domain.resources import GPU_RESOURCE, ResourceVector
from airflow_adaptive.logic.resize_plan import RESIZABLE, ResizeCondition, ResizeState
from airflow_adaptive.logic.sizing import EPHEMERAL_STORAGE, ContainerSize, StorageSize

ANNOTATION_PREFIX = "airflow-adaptive/"
ANNOTATION_SIZE = ANNOTATION_PREFIX + "size"
ANNOTATION_REASONS = ANNOTATION_PREFIX + "reasons"
MONITOR_TMP_VOLUME = "adaptive-monitor-tmp"
MONITOR_TMP_LIMIT = "64Mi"
_SIZED = ("cpu", "memory", GPU_RESOURCE)
#: NVIDIA's mixed-strategy MIG resources (``nvidia.com/mig-1g.10gb``): replaced when a size sets GPUs.
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class MonitorSidecar:
    """The monitor container: its image and knobs.

    The image must have ``airflow-adaptive`` installed and a numeric non-root ``USER``: the
    sidecar runs with ``runAsNonRoot``, as the workload's UID when the pod or workload sets one.
    """

    image: str
    # -v: the sidecar says what it monitors and why it holds or resizes (its log is its record)
    command: tuple[str, ...] = ("airflow-adaptive", "-v", "monitor", "--channel", "stdout")
    interval_s: float = 1.0
    env: Mapping[str, str] = field(default_factory=dict)
    cpu: str = "50m"
    memory: str = "64Mi"
    name: str = "adaptive-monitor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "env", dict(self.env))
        if not self.image:
            raise ValueError("MonitorSidecar needs an image with airflow-adaptive installed")
        if not _DNS_LABEL.match(self.name):
            raise ValueError(f"MonitorSidecar name {self.name!r} is not a valid container name (DNS label)")
        if not (isinstance(self.interval_s, (int, float)) and self.interval_s > 0):
            raise ValueError(f"MonitorSidecar interval_s must be > 0, got {self.interval_s!r}")
        parse(self.cpu, "MonitorSidecar.cpu")
        parse(self.memory, "MonitorSidecar.memory")


# --- writing: the pod a stage runs in ---------------------------------------------------


def shape_pod(pod: k8s.V1Pod, *, container: str, size: ContainerSize, monitor: MonitorSidecar | None,
              run_id: str | None, tracking_uri: str | None, profile_json: str | None,
              gpu_label_key: str = "nvidia.com/gpu.product", service_account: str | None = None,
              maximum: ResourceVector | None = None, minimum: ResourceVector | None = None) -> k8s.V1Pod:
    """A new pod (``pod`` is not changed): ``container`` sized by ``size``, the monitor beside it."""
    shaped = copy_pod(pod)
    spec = shaped.spec
    workload = _container(spec, container)
    _size_container(workload, size, container)
    workload.resize_policy = [k8s.V1ContainerResizePolicy(resource_name=r, restart_policy="NotRequired") for r in RESIZABLE]
    workload.env = _set_env(workload.env, {WORKLOAD_ENV: container})
    if monitor is not None:
        env = _monitor_env(container, size, monitor, run_id, tracking_uri, profile_json, maximum, minimum)
        sidecar = _monitor_container(monitor, env, monitor_identity(spec, workload))
        spec.init_containers = [c for c in spec.init_containers or [] if c.name != monitor.name] + [sidecar]
        spec.volumes = [v for v in spec.volumes or [] if v.name != MONITOR_TMP_VOLUME] + [
            k8s.V1Volume(name=MONITOR_TMP_VOLUME, empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=MONITOR_TMP_LIMIT))]
        spec.share_process_namespace = True
    if service_account:
        spec.service_account_name = service_account
    if size.gpu_type and size.limits.gpu > 0 and size.gpu_resource == GPU_RESOURCE:
        spec.affinity = _require_node_label(spec.affinity, gpu_label_key, size.gpu_type)
    shaped.metadata = shaped.metadata or k8s.V1ObjectMeta()
    shaped.metadata.annotations = {**(shaped.metadata.annotations or {}), **size_annotations(size)}
    return shaped


def copy_pod(pod: k8s.V1Pod) -> k8s.V1Pod:
    """A deep copy as typed models: dict parts (KPO passes ``security_context={...}`` through) become models."""
    api = k8s.ApiClient()
    data = api.sanitize_for_serialization(pod)
    return api.deserialize(_Body(json.dumps(data)), "V1Pod")


class _Body:
    """What ``ApiClient.deserialize`` reads from a response: its ``data``."""

    def __init__(self, data: str) -> None:
        self.data = data


def size_annotations(size: ContainerSize) -> dict[str, str]:
    requests, limits = size.to_kubernetes()
    record: dict[str, Any] = {"requests": requests, "limits": limits}
    if size.gpu_type:
        record["gpu_type"] = size.gpu_type
    return {ANNOTATION_SIZE: json.dumps(record, sort_keys=True), ANNOTATION_REASONS: json.dumps(list(size.reasons))}


def _container(spec: k8s.V1PodSpec, name: str) -> k8s.V1Container:
    for c in spec.containers or []:
        if c.name == name:
            return c
    names = [c.name for c in spec.containers or []]
    raise ValueError(f"the pod has no container named {name!r} (its containers: {names}); "
                     "set the workload container's name (KubernetesPodOperator's base_container_name)")


def _size_container(c: k8s.V1Container, size: ContainerSize, name: str) -> None:
    gpus = max(size.requests.gpu, size.limits.gpu)
    gpu = _gpu(gpus, size.gpu_resource)
    storage_requests, storage_limits = size.ephemeral.to_kubernetes()
    requests = {**ResourceVector(size.requests.cpu, size.requests.memory).to_kubernetes(), **gpu, **storage_requests}
    limits = {**ResourceVector(size.limits.cpu, size.limits.memory).to_kubernetes(), **gpu, **storage_limits}
    for r in ("cpu", "memory"):
        lim = getattr(size.limits, r)
        if 0 < lim < getattr(size.requests, r):
            raise ValueError(f"container {name!r}: {r} request {requests[r]} is above its limit {limits[r]}")
    if 0 < size.ephemeral.limit < size.ephemeral.request:
        raise ValueError(f"container {name!r}: {EPHEMERAL_STORAGE} request {requests[EPHEMERAL_STORAGE]} is above its "
                         f"limit {limits[EPHEMERAL_STORAGE]}")
    old = c.resources or k8s.V1ResourceRequirements()
    # A size with GPUs sets the one GPU resource the container gets (a container cannot use
    # nvidia.com/gpu and a MIG slice together); without, a MIG request the user wrote is theirs.
    # A size that sets ephemeral-storage sets both its request and limit; else the user's stay.
    storage = size.ephemeral.is_set
    sized = lambda k: (k in _SIZED or (bool(gpu) and k.startswith(MIG_RESOURCE_PREFIX))  # noqa: E731
                       or (storage and k == EPHEMERAL_STORAGE))
    keep = lambda m: {k: v for k, v in (m or {}).items() if not sized(k)}  # noqa: E731 (ephemeral-storage etc.)
    c.resources = k8s.V1ResourceRequirements(requests={**keep(old.requests), **requests} or None,
                                             limits={**keep(old.limits), **limits} or None, claims=old.claims)


def _gpu(gpus: float, resource: str = GPU_RESOURCE) -> dict[str, str]:
    return {resource: ResourceVector(gpu=gpus).to_kubernetes()[GPU_RESOURCE]} if gpus > 0 else {}


def _set_env(env: list | None, values: Mapping[str, str]) -> list[k8s.V1EnvVar]:
    kept = [e for e in env or [] if e.name not in values]
    return kept + [k8s.V1EnvVar(name=k, value=v) for k, v in values.items()]


def _monitor_env(container: str, size: ContainerSize, monitor: MonitorSidecar, run_id: str | None,
                 tracking_uri: str | None, profile_json: str | None, maximum: ResourceVector | None,
                 minimum: ResourceVector | None = None) -> list[k8s.V1EnvVar]:
    cpu = size.limits.cpu or size.requests.cpu
    memory = size.limits.memory or size.requests.memory
    values = {
        "AIRFLOW_ADAPTIVE_CONTAINER": container,
        "AIRFLOW_ADAPTIVE_CPU": format_cpu(cpu) if cpu > 0 else None,
        "AIRFLOW_ADAPTIVE_MEMORY": format_memory(memory) if memory > 0 else None,
        "AIRFLOW_ADAPTIVE_MAX_CPU": format_cpu(maximum.cpu) if maximum and maximum.cpu > 0 else None,
        "AIRFLOW_ADAPTIVE_MAX_MEMORY": format_memory(maximum.memory) if maximum and maximum.memory > 0 else None,
        "AIRFLOW_ADAPTIVE_MIN_MEMORY": format_memory(minimum.memory) if minimum and minimum.memory > 0 else None,
        "AIRFLOW_ADAPTIVE_PROFILE": profile_json,
        "AIRFLOW_ADAPTIVE_RUN_ID": run_id,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "AIRFLOW_ADAPTIVE_INTERVAL": f"{monitor.interval_s:g}",
        "AIRFLOW_ADAPTIVE_SPOOL": "/tmp/airflow-adaptive-spool",
        **monitor.env,
    }
    env = [k8s.V1EnvVar(name=k, value=str(v)) for k, v in values.items() if v is not None]
    return env + [k8s.V1EnvVar(name=name, value_from=k8s.V1EnvVarSource(field_ref=k8s.V1ObjectFieldSelector(field_path=path)))
                  for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"))]


@dataclass(frozen=True)
class MonitorIdentity:
    """Who the monitor runs as: the workload's own identity, so it may read the workload's
    ``/proc/<pid>/environ`` and ``/proc/<pid>/root``. The kernel's ptrace access check wants the
    same UID and, for the reader, at least the target's capabilities; the monitor never gets more
    than the workload has, and never changes the workload's identity.

    | the workload (container, else pod) | monitor user | runAsNonRoot | capabilities | why |
    |---|---|---|---|---|
    | ``runAsUser: N`` (N > 0) | N (and its group) | true | drop ALL | a non-root process holds no capabilities: the same UID suffices |
    | ``runAsUser: 0`` | 0 | false | the workload's drops, nothing added | root reading root needs the workload's capability set |
    | unstated, ``runAsNonRoot: true`` | the image's (1000) | true | drop ALL | the UID is the image's; if it is not 1000 the monitor says it cannot read |
    | unstated | 0 | false | the workload's drops, nothing added | the image decides, and training images run as root; a non-root image makes the monitor say it cannot read, and the stage runs unresized |
    """

    user: int | None
    group: int | None
    non_root: bool
    drop: tuple[str, ...]

    def security_context(self) -> k8s.V1SecurityContext:
        return k8s.V1SecurityContext(
            run_as_user=self.user, run_as_group=self.group, run_as_non_root=self.non_root,
            read_only_root_filesystem=True, allow_privilege_escalation=False, privileged=False,
            capabilities=k8s.V1Capabilities(drop=list(self.drop)) if self.drop else None,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"))


def monitor_identity(spec: k8s.V1PodSpec, workload: k8s.V1Container) -> MonitorIdentity:
    user = group = non_root = None
    for ctx in (spec.security_context, workload.security_context):
        if ctx is not None:
            user = ctx.run_as_user if ctx.run_as_user is not None else user
            group = ctx.run_as_group if ctx.run_as_group is not None else group
            non_root = ctx.run_as_non_root if ctx.run_as_non_root is not None else non_root
    if user:
        return MonitorIdentity(user, group, True, ("ALL",))
    if user is None and non_root:
        return MonitorIdentity(None, group, True, ("ALL",))
    caps = workload.security_context.capabilities if workload.security_context else None
    drops = tuple(caps.drop or ()) if caps else ()
    return MonitorIdentity(0, group if group is not None else 0, False, drops)


def _monitor_container(monitor: MonitorSidecar, env: list[k8s.V1EnvVar], identity: MonitorIdentity) -> k8s.V1Container:
    amounts = {"cpu": monitor.cpu, "memory": monitor.memory}
    return k8s.V1Container(
        name=monitor.name,
        image=monitor.image,
        command=list(monitor.command),
        env=env,
        restart_policy="Always",  # a native sidecar
        resources=k8s.V1ResourceRequirements(requests=dict(amounts), limits=dict(amounts)),
        volume_mounts=[k8s.V1VolumeMount(name=MONITOR_TMP_VOLUME, mount_path="/tmp")],
        security_context=identity.security_context(),
    )


def _require_node_label(affinity: k8s.V1Affinity | None, key: str, value: str) -> k8s.V1Affinity:
    """Add ``key In [value]`` to every required node-selector term (terms are ORed, so each must carry it)."""
    affinity = affinity or k8s.V1Affinity()
    node = affinity.node_affinity = affinity.node_affinity or k8s.V1NodeAffinity()
    required = node.required_during_scheduling_ignored_during_execution
    if required is None or not required.node_selector_terms:
        required = node.required_during_scheduling_ignored_during_execution = k8s.V1NodeSelector(
            node_selector_terms=[k8s.V1NodeSelectorTerm()])
    want = k8s.V1NodeSelectorRequirement(key=key, operator="In", values=[value])
    for term in required.node_selector_terms:
        expressions = [e for e in term.match_expressions or [] if e != want]
        term.match_expressions = expressions + [want]
    return affinity


def resize_patch_body(container: str, requests: ResourceVector, limits: ResourceVector,
                      resource_version: str | None = None) -> dict[str, Any]:
    """The strategic-merge body for ``PATCH pods/<name>/resize``: cpu and memory only (never GPUs).

    With ``resource_version`` (the pod's, as read for the plan) the API server applies the patch
    only to that version and answers 409 if the pod changed since: a plan made on a stale pod
    (another resize, a new ``PodResizePending``) is re-made instead of overwriting.
    """
    resources = {}
    for what, vector in (("requests", requests), ("limits", limits)):
        mapping = {k: v for k, v in vector.to_kubernetes().items() if k in RESIZABLE}
        if mapping:
            resources[what] = mapping
    body: dict[str, Any] = {"spec": {"containers": [{"name": container, "resources": resources}]}}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    return body


# --- the user's request: an operator's or sensor's container_resources -------------------
def resources_from(value: Any, where: str) -> tuple[ResourceVector, ResourceVector]:
    """(requests, limits) from a ``V1ResourceRequirements`` or a ``{"requests", "limits"}`` dict."""
    if value is None:
        return ResourceVector(), ResourceVector()
    if isinstance(value, k8s.V1ResourceRequirements):
        requests, limits = value.requests or {}, value.limits or {}
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - {"requests", "limits"}, key=str)  # key: keys of mixed types do not sort
        if unknown:
            raise UserError(f"{where}: unknown key(s) {unknown}; expected 'requests' and 'limits'")
        requests, limits = value.get("requests") or {}, value.get("limits") or {}
    else:
        raise UserError(f"{where}: expected V1ResourceRequirements or a dict with 'requests'/'limits', got {type(value).__name__}")
    return (ResourceVector.from_kubernetes(requests, f"{where}.requests"),
            ResourceVector.from_kubernetes(limits, f"{where}.limits"))


def storage_from(value: Any, where: str) -> StorageSize:
    """The user's own ``ephemeral-storage`` request and limit (bytes; 0: unset) from the same
    ``container_resources`` as :func:`resources_from`; a bad quantity names the field."""
    from airflow_adaptive.domain.quantities import memory_bytes

    if value is None:
        return StorageSize()
    resources_from(value, where)  # the same shape checks and messages
    if isinstance(value, k8s.V1ResourceRequirements):
        requests, limits = value.requests or {}, value.limits or {}
    else:
        requests, limits = value.get("requests") or {}, value.get("limits") or {}
    amounts = []
    for what, mapping in (("requests", requests), ("limits", limits)):
        text = mapping.get(EPHEMERAL_STORAGE) if isinstance(mapping, Mapping) else None
        amounts.append(float(memory_bytes(text, f"{where}.{what}.{EPHEMERAL_STORAGE}")) if text is not None else 0.0)
    request, limit = amounts
    if 0 < limit < request:
        raise UserError(f"{where}: {EPHEMERAL_STORAGE} request {requests[EPHEMERAL_STORAGE]!r} is above its limit "
                        f"{limits[EPHEMERAL_STORAGE]!r}; Kubernetes refuses such a pod")
    return StorageSize(request, limit)


# --- reading: a live pod as the resize plan's inputs ------------------------------------
# Duck-typed on purpose: the sync client's and kubernetes_asyncio's models have the same fields.


def container_storage_limit(pod: Any, container: str) -> float:
    """The ``ephemeral-storage`` limit of ``container`` in the pod's spec, as the API server
    stored it (bytes; 0: none, or no such container)."""
    from airflow_adaptive.domain.quantities import memory_bytes

    for c in (pod.spec.containers or []) if pod.spec else []:
        if c.name == container:
            text = ((c.resources and c.resources.limits) or {}).get(EPHEMERAL_STORAGE)
            try:
                return float(memory_bytes(text, f"{container}.resources.limits.{EPHEMERAL_STORAGE}")) if text else 0.0
            except ValueError:
                return 0.0
    return 0.0


def container_resources(pod: Any, container: str) -> tuple[ResourceVector, ResourceVector]:
    """(requests, limits) of ``container`` in the pod's spec (the desired size)."""
    for c in pod.spec.containers or []:
        if c.name == container:
            res = c.resources
            where = f"{container}.resources"
            return (ResourceVector.from_kubernetes((res and res.requests) or {}, where + ".requests"),
                    ResourceVector.from_kubernetes((res and res.limits) or {}, where + ".limits"))
    raise ValueError(f"pod {pod.metadata.name!r} has no container named {container!r}")


def actuated_resources(pod: Any, container: str) -> tuple[ResourceVector, ResourceVector] | None:
    """(requests, limits) the kubelet reports as in force for ``container`` (its status), or None
    when it reports none (an older kubelet, or the container never ran)."""
    statuses = (pod.status and pod.status.container_statuses) or []
    status = next((s for s in statuses if s.name == container), None)
    res = status.resources if status is not None else None
    if res is None:
        return None
    where = f"status {container}.resources"
    return (ResourceVector.from_kubernetes(res.requests or {}, where + ".requests"),
            ResourceVector.from_kubernetes(res.limits or {}, where + ".limits"))


def resize_conditions(pod: Any) -> tuple[ResizeCondition, ...]:
    conditions = (pod.status and pod.status.conditions) or []
    return tuple(ResizeCondition(c.type, c.reason or "", c.message or "") for c in conditions
                 if c.type in ("PodResizePending", "PodResizeInProgress") and c.status == "True")


def qos_class(pod: Any) -> str:
    """The pod's QoS class from its status, else computed from its spec as the API server does."""
    if pod.status is not None and pod.status.qos_class:
        return pod.status.qos_class
    containers = list(pod.spec.containers or []) + list(pod.spec.init_containers or [])
    pairs = [((c.resources and c.resources.requests) or {}, (c.resources and c.resources.limits) or {}) for c in containers]
    if not any(m.get(r) for req, lim in pairs for m in (req, lim) for r in RESIZABLE):
        return "BestEffort"
    guaranteed = all(lim.get(r) and parse_quantity(req.get(r, lim[r])) == parse_quantity(lim[r])
                     for req, lim in pairs for r in RESIZABLE)
    return "Guaranteed" if guaranteed else "Burstable"


def pod_requests(pod: Any, skip_container: str | None = None) -> ResourceVector:
    """What the scheduler counts for a running pod: its containers and sidecars (restartable init
    containers) plus overhead. Finished init containers no longer hold anything."""
    total = ResourceVector()
    spec = pod.spec
    running = list(spec.containers or []) + [c for c in spec.init_containers or [] if c.restart_policy == "Always"]
    for c in running:
        if c.name != skip_container and c.resources and c.resources.requests:
            total = total + ResourceVector.from_kubernetes(c.resources.requests, f"{c.name}.resources.requests")
    if spec.overhead:
        total = total + ResourceVector.from_kubernetes(spec.overhead, "overhead")
    return total


def resize_state(pod: Any, container: str, *, room: ResourceVector | None = None,
                 last_sequence: int | None = None) -> ResizeState:
    """The pure plan's inputs from a live pod."""
    requests, limits = container_resources(pod, container)
    return ResizeState(container=container, requests=requests, limits=limits, qos_class=qos_class(pod), room=room,
                       conditions=resize_conditions(pod), last_sequence=last_sequence)


def container_terminated(pod: Any, container: str) -> bool:
    """Whether ``container`` has ended for good: the pod has, or a regular container terminated.

    A native sidecar (init container with ``restartPolicy: Always``) shows ``terminated`` only
    between restarts; it is over when the pod is.
    """
    status = pod.status
    if status is None:
        return False
    if status.phase in ("Succeeded", "Failed"):
        return True
    sidecars = {c.name for c in pod.spec.init_containers or [] if c.restart_policy == "Always"}
    if container in sidecars:
        return False
    for s in list(status.init_container_statuses or []) + list(status.container_statuses or []):
        if s.name == container and s.state is not None and s.state.terminated is not None:
            return True
    return False


#: Waiting reasons of a container whose image will not come (the kubelet keeps retrying the
#: ErrImagePull/ImagePullBackOff ones, but a missing image or refused registry does not heal).
IMAGE_PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


def sidecar_start_problem(pod: Any, sidecar: str) -> str | None:
    """Why ``sidecar`` (a native sidecar, so an init container) cannot start, when its image cannot
    be pulled; None while it may still start. KubernetesPodOperator checks only the workload's
    statuses, which say ``PodInitializing`` while the sidecar blocks: it would wait out its startup
    timeout and report a timeout."""
    statuses = (pod.status and pod.status.init_container_statuses) or []
    status = next((s for s in statuses if s.name == sidecar), None)
    waiting = status.state.waiting if status is not None and status.state is not None else None
    if waiting is None or waiting.reason not in IMAGE_PULL_FAILURES:
        return None
    return f"{waiting.reason}: {waiting.message or 'no message from the kubelet'}"


def sidecar_started(pod: Any, sidecar: str) -> bool:
    """Whether the sidecar runs (or the pod already left Pending, so there is nothing to wait for)."""
    if pod.status is None:
        return False
    if pod.status.phase not in (None, "Pending"):
        return True
    statuses = pod.status.init_container_statuses or []
    status = next((s for s in statuses if s.name == sidecar), None)
    return bool(status is not None and (status.started or (status.state is not None and status.state.running is not None)))

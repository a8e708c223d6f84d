"""Would a stage of this size be scheduled now, later, or never? Pure.

A pod lands on *one* node, so room is counted per node (allocatable minus the requests of the
pods already there), never summed over the cluster: two nodes with 2 GiB free each cannot host
3 GiB. Namespace admission is checked too, because a pod the API refuses never reaches the
scheduler: LimitRange bounds per container and ResourceQuota totals.

| status | when | what a caller does |
|---|---|---|
| ``fits`` | admission passes and some schedulable node has the room now | go on (start the stage) |
| ``wait`` | it could run, not now: every node that could hold it is busy or cordoned, or a quota is used up | look again later |
| ``never`` | no node is big enough (allocatable), a LimitRange bound or a quota's hard total is smaller than the stage alone | fail fast: waiting cannot help |

Known gaps (the scheduler still decides): taints and tolerations, node affinity other than the
GPU-type label, scoped quotas (``scopes`` / ``scopeSelector``), ``maxLimitRequestRatio``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping, Sequence

from airflow_adaptive.domain.resources import GPU_RESOURCE, ResourceVector

Status = Literal["fits", "wait", "never"]
#: The node label that names a GPU model (NVIDIA GPU feature discovery sets it).
GPU_LABEL_KEY = "nvidia.com/gpu.product"
#: Resources the scheduler counts for a pod (gpu_memory is no Kubernetes resource).
SCHEDULED = ("cpu", "memory", "gpu")
_K8S_NAME = {"cpu": "cpu", "memory": "memory", "gpu": GPU_RESOURCE}
#: Float noise allowance: 0.1 + 0.2 cores must fit in 0.3 allocatable.
_REL_EPS = 1e-9


@dataclass(frozen=True)
class NodeCapacity:
    """One node as the scheduler sees it. ``requested``: the requests of its non-terminated pods."""

    name: str
    allocatable: ResourceVector
    requested: ResourceVector = field(default_factory=ResourceVector)
    labels: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False  # cordoned (spec.unschedulable)
    allocatable_pods: int | None = None  # status.allocatable.pods; None: not counted
    pod_count: int = 0
    #: Keys of NoSchedule/NoExecute taints: the scheduler keeps pods off unless they tolerate them.
    taints: tuple[str, ...] = ()
    #: MIG slices (``nvidia.com/mig-<profile>``: NVIDIA's mixed strategy): (allocatable, requested).
    mig: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def free(self) -> ResourceVector:
        return ResourceVector(*(max(0.0, a - r) for a, r in zip(self.allocatable.as_dict().values(),
                                                                 self.requested.as_dict().values())))


@dataclass(frozen=True)
class NamespaceQuota:
    """One ResourceQuota's ``status.hard`` / ``status.used``, keyed as Kubernetes keys them
    (``requests.cpu``, ``limits.memory``, ``requests.nvidia.com/gpu``, ``pods``...), in base
    units (cores, bytes, devices, count)."""

    name: str
    hard: Mapping[str, float]
    used: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitRangeBounds:
    """The ``type: Container`` item of a LimitRange (``Pod`` items: ``pod_max`` / ``pod_min``)."""

    name: str
    max: ResourceVector | None = None
    min: ResourceVector | None = None
    default: ResourceVector | None = None  # default limits
    default_request: ResourceVector | None = None
    pod_max: ResourceVector | None = None


@dataclass(frozen=True)
class ClusterState:
    """Everything ``fit`` looks at, read at one moment."""

    nodes: tuple[NodeCapacity, ...] = ()
    quotas: tuple[NamespaceQuota, ...] = ()
    limit_ranges: tuple[LimitRangeBounds, ...] = ()


@dataclass(frozen=True)
class FitResult:
    status: Status
    message: str
    node: str | None = None  # fits: a node with the room; wait: the closest one
    per_node: Mapping[str, str] = field(default_factory=dict)  # node -> "fits" or why not

    def to_dict(self) -> dict:
        return {"status": self.status, "message": self.message, "node": self.node, "per_node": dict(self.per_node)}


# --- readable amounts -----------------------------------------------------------------------

def readable(resource: str, amount: float) -> str:
    """3221225472 bytes -> "3.0 GiB", 0.5 cores -> "500m CPU", 1 GPU -> "1 GPU"."""
    if resource in ("memory", "gpu_memory"):
        if amount >= 2**30:
            return f"{amount / 2**30:.1f} GiB"
        return f"{amount / 2**20:.0f} MiB"
    if resource == "cpu":
        return f"{amount * 1000:.0f}m CPU" if amount < 1 else f"{amount:g} CPU"
    if resource in ("gpu", "pods"):
        return f"{amount:g} {'GPU' if resource == 'gpu' else 'pod'}{'' if amount == 1 else 's'}"
    return f"{amount:g}"


def _named(resource: str, amount: float) -> str:
    """Readable with the resource named once: "3.0 GiB memory", "2 CPU", "1 GPU"."""
    return readable(resource, amount) + (" memory" if resource == "memory" else "")


def _over(need: float, have: float) -> bool:
    return need > have + _REL_EPS * max(1.0, abs(need))


# --- admission: LimitRange and ResourceQuota ------------------------------------------------

def with_defaults(requests: ResourceVector, limits: ResourceVector,
                  limit_ranges: Sequence[LimitRangeBounds]) -> tuple[ResourceVector, ResourceVector]:
    """The container as admitted: LimitRange defaults fill unset limits/requests, and an unset
    request takes the limit (the API server's own defaulting)."""
    req, lim = requests.as_dict(), limits.as_dict()
    for lr in limit_ranges:
        for r in SCHEDULED:
            if lim[r] <= 0 and lr.default is not None and getattr(lr.default, r) > 0:
                lim[r] = getattr(lr.default, r)
            if req[r] <= 0 and lr.default_request is not None and getattr(lr.default_request, r) > 0:
                req[r] = getattr(lr.default_request, r)
    for r in SCHEDULED:
        if req[r] <= 0 < lim[r]:
            req[r] = lim[r]
    return ResourceVector.from_dict(req), ResourceVector.from_dict(lim)


def _limit_range_violations(requests: ResourceVector, limits: ResourceVector, pod: ResourceVector,
                            limit_ranges: Sequence[LimitRangeBounds]) -> list[str]:
    out = []
    for lr in limit_ranges:
        for r in SCHEDULED:
            need_req, need_lim = getattr(requests, r), getattr(limits, r)
            if lr.max is not None and getattr(lr.max, r) > 0:
                top = getattr(lr.max, r)
                for what, need in (("request", need_req), ("limit", need_lim)):
                    if _over(need, top):
                        out.append(f"LimitRange {lr.name} allows a container at most {_named(r, top)}; "
                                   f"the stage's {r} {what} is {readable(r, need)}")
                        break
            if lr.min is not None and getattr(lr.min, r) > 0 and _over(getattr(lr.min, r), need_req):
                out.append(f"LimitRange {lr.name} needs a container to request at least "
                           f"{_named(r, getattr(lr.min, r))}; the stage requests {readable(r, need_req)}")
            if lr.pod_max is not None and getattr(lr.pod_max, r) > 0 and _over(getattr(pod, r), getattr(lr.pod_max, r)):
                out.append(f"LimitRange {lr.name} allows a pod at most {_named(r, getattr(lr.pod_max, r))}; "
                           f"the stage's pod needs {readable(r, getattr(pod, r))}")
    return out


def quota_demand(key: str, requests: ResourceVector, limits: ResourceVector) -> tuple[str, float] | None:
    """(resource, amount) the pod adds to quota key ``key``; None for keys we do not track."""
    for prefix, vec in (("requests.", requests), ("limits.", limits), ("", requests)):
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is None:
            continue
        for r, k8s_name in _K8S_NAME.items():
            # A bare GPU key ("nvidia.com/gpu") is not a valid quota key; only requests./limits.
            if name == k8s_name and not (prefix == "" and r == "gpu"):
                return r, getattr(vec, r)
    if key in ("pods", "count/pods"):
        return "pods", 1.0
    return None


def _quota_check(requests: ResourceVector, limits: ResourceVector,
                 quotas: Sequence[NamespaceQuota]) -> tuple[list[str], list[str]]:
    """(never, wait) reasons from the namespace's quotas."""
    never, wait = [], []
    for q in quotas:
        for key, hard in sorted(q.hard.items()):
            demand = quota_demand(key, requests, limits)
            if demand is None:
                continue
            r, need = demand
            used = float(q.used.get(key, 0.0))
            if need <= 0:
                if r in ("cpu", "memory"):  # the quota admission refuses containers that leave it unset
                    never.append(f"ResourceQuota {q.name} tracks {key}, so the stage must set it (it is unset)")
                continue
            if _over(need, hard):
                never.append(f"ResourceQuota {q.name} allows {readable(r, hard)} of {key} in all; "
                             f"the stage alone needs {readable(r, need)}")
            elif _over(used + need, hard):
                wait.append(f"ResourceQuota {q.name}: {key} has {readable(r, max(0.0, hard - used))} left "
                            f"({readable(r, used)} of {readable(r, hard)} used); the stage needs {readable(r, need)}, "
                            f"short by {readable(r, used + need - hard)}")
    return never, wait


# --- nodes ------------------------------------------------------------------------------------

def _shortfall(need: ResourceVector, have: ResourceVector) -> dict[str, float]:
    return {r: getattr(need, r) - getattr(have, r) for r in SCHEDULED
            if getattr(need, r) > 0 and _over(getattr(need, r), getattr(have, r))}


def _describe(short: Mapping[str, float], need: ResourceVector, have: ResourceVector, what: str) -> str:
    return ", ".join(f"{r} {what} {readable(r, getattr(have, r))} < {readable(r, getattr(need, r))} needed "
                     f"(short by {readable(r, s)})" for r, s in short.items())


def _badness(short: Mapping[str, float], need: ResourceVector) -> float:
    """Shortfall relative to the need, summed over resources: ranks the closest busy node."""
    return sum(s / getattr(need, r) for r, s in short.items())


def fit(
    requests: ResourceVector,
    limits: ResourceVector,
    gpu_type: str | None,
    nodes: Sequence[NodeCapacity],
    quotas: Sequence[NamespaceQuota] = (),
    limit_ranges: Sequence[LimitRangeBounds] = (),
    gpu_label_key: str = GPU_LABEL_KEY,
    *,
    overhead: ResourceVector = ResourceVector(),
    gpu_resource: str = GPU_RESOURCE,
) -> FitResult:
    """Whether the stage's container (``requests``/``limits``) can be placed; see the module docstring.

    ``overhead``: what the rest of the pod adds (the monitor sidecar, pod overhead), counted on
    the node and in quotas but not against the container's LimitRange bounds. ``gpu_resource``:
    what the GPU count is requested as; a MIG slice (``nvidia.com/mig-<profile>``) is counted
    against the nodes' slices of that profile, not their ``nvidia.com/gpu``.
    """
    tolerated = tolerated_taints(requests)
    mig, slices = (gpu_resource, requests.gpu) if gpu_resource != GPU_RESOURCE and requests.gpu > 0 else (None, 0.0)
    if mig:
        requests, limits = ResourceVector(requests.cpu, requests.memory, 0.0, requests.gpu_memory), \
            ResourceVector(limits.cpu, limits.memory, 0.0, limits.gpu_memory)
    requests, limits = with_defaults(requests, limits, limit_ranges)
    pod_req, pod_lim = requests + overhead, limits + overhead
    never = _limit_range_violations(requests, limits, pod_req, limit_ranges)
    quota_never, quota_wait = _quota_check(pod_req, pod_lim, quotas)
    never += quota_never

    per_node: dict[str, str] = {}
    fitting: list[NodeCapacity] = []
    busy: list[tuple[float, NodeCapacity, str]] = []
    big_enough = 0
    for node in nodes:
        untolerated = [t for t in node.taints if t not in tolerated]
        if untolerated:
            per_node[node.name] = f"tainted {', '.join(untolerated)} (not tolerated)"
            continue
        if gpu_type and node.labels.get(gpu_label_key) != gpu_type:
            per_node[node.name] = f"not GPU type {gpu_type} ({gpu_label_key}={node.labels.get(gpu_label_key, 'unset')})"
            continue
        slices_allocatable, slices_requested = node.mig.get(mig, (0.0, 0.0)) if mig else (0.0, 0.0)
        if mig and slices_allocatable < slices:
            per_node[node.name] = f"has {slices_allocatable:g} {mig} (needs {slices:g})"
            continue
        too_small = _shortfall(pod_req, node.allocatable)
        if too_small:
            per_node[node.name] = "too small: " + _describe(too_small, pod_req, node.allocatable, "allocatable")
            continue
        big_enough += 1
        if node.unschedulable:
            per_node[node.name] = "cordoned (unschedulable)"
            busy.append((math.inf, node, per_node[node.name]))
            continue
        short = _shortfall(pod_req, node.free)
        if node.allocatable_pods is not None and node.pod_count >= node.allocatable_pods:
            per_node[node.name] = f"full: {node.pod_count} of {node.allocatable_pods} pods"
            busy.append((1.0 + _badness(short, pod_req), node, per_node[node.name]))
        elif mig and slices_allocatable - slices_requested < slices:
            per_node[node.name] = f"busy: {slices_allocatable - slices_requested:g} of {slices_allocatable:g} {mig} free"
            busy.append((1.0 + _badness(short, pod_req), node, per_node[node.name]))
        elif short:
            per_node[node.name] = "busy: " + _describe(short, pod_req, node.free, "free")
            busy.append((_badness(short, pod_req), node, per_node[node.name]))
        else:
            per_node[node.name] = "fits"
            fitting.append(node)

    need_text = ", ".join([_named(r, getattr(pod_req, r)) for r in SCHEDULED if getattr(pod_req, r) > 0]
                          + ([f"{slices:g} {mig}"] if mig else [])) or "nothing"
    where = f" of GPU type {gpu_type}" if gpu_type else ""
    if not big_enough:
        if not nodes:
            never.append("the cluster has no nodes")
        elif mig and all(n.mig.get(mig, (0.0, 0.0))[0] < slices for n in nodes):
            never.append(f"no node offers {slices:g} {mig} (MIG mixed strategy: the GPU operator's MIG profile on some node)")
        elif gpu_type and all(n.labels.get(gpu_label_key) != gpu_type for n in nodes):
            never.append(f"no node has the label {gpu_label_key}={gpu_type}")
        elif all(any(t not in tolerated for t in n.taints) for n in nodes):
            never.append("every node has a taint the stage does not tolerate")
        else:
            largest = _largest(nodes, pod_req, gpu_type, gpu_label_key)
            never.append(f"no node{where} is big enough for {need_text}: the closest, {largest}")
    if never:
        return FitResult("never", "; ".join(never), None, per_node)
    node_wait = None
    if fitting:
        # Most free memory after placement, then CPU: the node least likely to be taken first.
        best = max(fitting, key=lambda n: (n.free.memory - pod_req.memory, n.free.cpu - pod_req.cpu, n.name)).name
    else:
        _, closest, why = min(busy, key=lambda b: (b[0], b[1].name))
        best = closest.name
        node_wait = (f"no node{where} has room for {need_text} now ({big_enough} could hold it when free); "
                     f"the closest is {closest.name}: {why}")
    if quota_wait or node_wait:
        return FitResult("wait", "; ".join([*quota_wait, *([node_wait] if node_wait else [])]), best, per_node)
    return FitResult("fits", f"{need_text} fits on node {best} now", best, per_node)


def tolerated_taints(requests: ResourceVector) -> frozenset[str]:
    """The taint keys a stage pod tolerates: a GPU stage tolerates ``nvidia.com/gpu``, as the
    ExtendedResourceToleration admission plugin (and GPU operators' node setup) arrange."""
    return frozenset({GPU_RESOURCE}) if requests.gpu > 0 else frozenset()


def _largest(nodes: Sequence[NodeCapacity], need: ResourceVector, gpu_type: str | None, key: str) -> str:
    tolerated = tolerated_taints(need)
    candidates = [n for n in nodes if (not gpu_type or n.labels.get(key) == gpu_type)
                  and all(t in tolerated for t in n.taints)] or list(nodes)
    node = min(candidates, key=lambda n: (_badness(_shortfall(need, n.allocatable), need), n.name))
    return f"{node.name}, has " + _describe(_shortfall(need, node.allocatable), need, node.allocatable, "allocatable")


def fit_state(requests: ResourceVector, limits: ResourceVector, gpu_type: str | None, state: ClusterState,
              gpu_label_key: str = GPU_LABEL_KEY, *, overhead: ResourceVector = ResourceVector(),
              gpu_resource: str = GPU_RESOURCE) -> FitResult:
    """``fit`` over a :class:`ClusterState` (what the sensor and the trigger hold)."""
    return fit(requests, limits, gpu_type, state.nodes, state.quotas, state.limit_ranges, gpu_label_key,
               overhead=overhead, gpu_resource=gpu_resource)


__all__ = ["ClusterState", "FitResult", "GPU_LABEL_KEY", "LimitRangeBounds", "NamespaceQuota", "NodeCapacity",
           "fit", "fit_state", "quota_demand", "readable", "with_defaults"]

"""Read what the capacity check needs from the API server: nodes, the pods on them, the
namespace's ResourceQuotas and LimitRanges, as :mod:`airflow_adaptive.logic.capacity` data.

The conversion is pure functions over the API's JSON (camelCase dicts, exactly what
``kubectl get -o json`` prints); the sync client (``kubernetes``, the sensor) and the async one
(``kubernetes_asyncio``, the trigger) only fetch and hand the JSON over, so both paths count
alike. Model objects are turned into that JSON with the client's own
``sanitize_for_serialization``.

A pod's requests are counted as the scheduler counts them (``resourcehelper.PodRequests``):

| part | counted as |
|---|---|
| regular containers | summed |
| sidecars (init containers with ``restartPolicy: Always``) | added to the sum, and held during later init containers |
| other init containers | each one plus the sidecars started before it; the pod needs the max of these and the sum above |
| ``spec.overhead`` | added on top |
| a container being resized in place | the larger of its spec and ``status.containerStatuses[].allocatedResources`` |

Only pods bound to a node (``spec.nodeName``) and not ended (the field selector
``status.phase!=Succeeded,status.phase!=Failed``) hold room.

RBAC needed (a 403 raises :class:`CapacityForbidden` naming the missing rule): ``list nodes``
and ``list pods`` at cluster scope (a ClusterRole), ``list resourcequotas`` and
``list limitranges`` in the namespace.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Iterable, Mapping

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.quantities import parse_quantity
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.capacity import ClusterState, LimitRangeBounds, NamespaceQuota, NodeCapacity

#: Pods that still hold their requests on a node (the scheduler's own cache drops ended pods).
ACTIVE_PODS = "status.phase!=Succeeded,status.phase!=Failed"
#: Items per list call; the API pages with ``continue`` (kubectl's default chunk size is 500).
PAGE = 500


class CapacityForbidden(UserError):
    """The Airflow identity may not read what the capacity check needs."""


# --- pure conversion ------------------------------------------------------------------------

def _vector(mapping: Mapping[str, Any] | None, where: str) -> ResourceVector:
    return ResourceVector.from_kubernetes(mapping or {}, where)


def _requests(container: Mapping[str, Any]) -> ResourceVector:
    return _vector((container.get("resources") or {}).get("requests"), f"{container.get('name')}.resources.requests")


def pod_requests(pod: Mapping[str, Any]) -> ResourceVector:
    """What the scheduler holds for ``pod`` on its node (see the module docstring's table)."""
    spec = pod.get("spec") or {}
    allocated = {s.get("name"): _vector(s.get("allocatedResources"), f"{s.get('name')}.allocatedResources")
                 for s in (pod.get("status") or {}).get("containerStatuses") or [] if s.get("allocatedResources")}
    total = ResourceVector()
    for c in spec.get("containers") or []:
        req = _requests(c)
        total = total + (req.max(allocated[c.get("name")]) if c.get("name") in allocated else req)
    sidecars = ResourceVector()
    init_peak = ResourceVector()
    for c in spec.get("initContainers") or []:
        req = _requests(c)
        if c.get("restartPolicy") == "Always":
            total = total + req
            sidecars = sidecars + req
            init_peak = init_peak.max(sidecars)
        else:
            init_peak = init_peak.max(req + sidecars)
    total = total.max(init_peak)
    if spec.get("overhead"):
        total = total + _vector(spec["overhead"], "overhead")
    return total


MIG_PREFIX = "nvidia.com/mig-"


def pod_mig_requests(pod: Mapping[str, Any]) -> dict[str, float]:
    """The MIG slices a pod's containers request (``nvidia.com/mig-<profile>``), summed."""
    out: dict[str, float] = {}
    spec = pod.get("spec") or {}
    for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]:
        for key, text in ((c.get("resources") or {}).get("requests") or {}).items():
            if key.startswith(MIG_PREFIX):
                out[key] = out.get(key, 0.0) + _amount(key, text, f"{c.get('name')}.resources.requests")
    return out


def node_capacity(node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> NodeCapacity:
    """One node and the pods bound to it (ended pods are skipped here too)."""
    meta, status = node.get("metadata") or {}, node.get("status") or {}
    name = meta.get("name", "")
    allocatable = status.get("allocatable") or {}
    requested, count = ResourceVector(), 0
    slices_used: dict[str, float] = {}
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        requested = requested + pod_requests(pod)
        for key, amount in pod_mig_requests(pod).items():
            slices_used[key] = slices_used.get(key, 0.0) + amount
        count += 1
    mig = {k: (_amount(k, v, f"node {name} allocatable"), slices_used.get(k, 0.0))
           for k, v in allocatable.items() if k.startswith(MIG_PREFIX)}
    max_pods = allocatable.get("pods")
    return NodeCapacity(
        name=name,
        allocatable=_vector(allocatable, f"node {name} allocatable"),
        requested=requested,
        labels=dict(meta.get("labels") or {}),
        unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        allocatable_pods=int(parse_quantity(str(max_pods), f"node {name} allocatable.pods")) if max_pods is not None else None,
        pod_count=count,
        taints=tuple(t.get("key", "") for t in (node.get("spec") or {}).get("taints") or []
                     if t.get("effect") in ("NoSchedule", "NoExecute")),
        mig=mig,
    )


def _amount(key: str, text: Any, where: str) -> float:
    """A quota amount in base units: cores for cpu keys, bytes for memory, plain counts otherwise."""
    return float(parse_quantity(str(text), f"{where}.{key}"))


def namespace_quota(quota: Mapping[str, Any]) -> NamespaceQuota | None:
    """A ResourceQuota's status; None for a scoped quota (it may not apply to the stage's pod)."""
    meta, spec, status = quota.get("metadata") or {}, quota.get("spec") or {}, quota.get("status") or {}
    name = meta.get("name", "")
    if spec.get("scopes") or spec.get("scopeSelector"):
        return None
    hard = status.get("hard") or spec.get("hard") or {}
    used = status.get("used") or {}
    where = f"ResourceQuota {name}"
    return NamespaceQuota(name, {k: _amount(k, v, where + ".hard") for k, v in hard.items()},
                          {k: _amount(k, v, where + ".used") for k, v in used.items()})


def limit_range(lr: Mapping[str, Any]) -> LimitRangeBounds | None:
    """The Container (and Pod max) bounds of a LimitRange; None when it bounds neither."""
    name = (lr.get("metadata") or {}).get("name", "")
    fields: dict[str, Any] = {}
    for item in (lr.get("spec") or {}).get("limits") or []:
        kind = item.get("type")
        where = f"LimitRange {name} {kind}"
        if kind == "Container":
            for key, attr in (("max", "max"), ("min", "min"), ("default", "default"), ("defaultRequest", "default_request")):
                if item.get(key):
                    fields[attr] = _vector(item[key], f"{where}.{key}")
        elif kind == "Pod" and item.get("max"):
            fields["pod_max"] = _vector(item["max"], f"{where}.max")
    return LimitRangeBounds(name, **fields) if fields else None


def cluster_state(nodes: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
                  quotas: Iterable[Mapping[str, Any]] = (), limit_ranges: Iterable[Mapping[str, Any]] = ()) -> ClusterState:
    """The whole picture from the four lists' ``items`` (JSON dicts)."""
    by_node: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for pod in pods:
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            by_node[node_name].append(pod)
    return ClusterState(
        nodes=tuple(node_capacity(n, by_node.get((n.get("metadata") or {}).get("name", ""), [])) for n in nodes),
        quotas=tuple(q for q in map(namespace_quota, quotas) if q is not None),
        limit_ranges=tuple(lr for lr in map(limit_range, limit_ranges) if lr is not None),
    )


# --- errors ---------------------------------------------------------------------------------

#: What each read needs, as words and as the RBAC rule to add.
_PERMISSIONS = {
    "nodes": ("list nodes (cluster scope)", "ClusterRole"),
    "pods": ("list pods in all namespaces (cluster scope)", "ClusterRole"),
    "resourcequotas": ("list resourcequotas in namespace {ns}", "Role"),
    "limitranges": ("list limitranges in namespace {ns}", "Role"),
}


def forbidden(resource: str, namespace: str) -> CapacityForbidden:
    what, kind = _PERMISSIONS[resource]
    return CapacityForbidden(
        f"the identity Airflow uses may not {what.format(ns=namespace)}, which the capacity check needs; add a "
        f'{kind} rule {{apiGroups: [""], resources: ["{resource}"], verbs: ["list"]}} and bind it to the '
        "service account of the Airflow worker/triggerer")


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, int) or (isinstance(status, str) and status.isdigit()) else None


def _items(page: Any, api_client: Any) -> tuple[list[dict[str, Any]], str | None]:
    data = page if isinstance(page, dict) else api_client.sanitize_for_serialization(page)
    if isinstance(data, (bytes, str)):
        data = json.loads(data)
    return list(data.get("items") or []), (data.get("metadata") or {}).get("continue") or None


# --- reading: sync (the sensor) -------------------------------------------------------------

# ``where`` (the namespace named in a 403) is positional-only: the namespaced list calls take a
# ``namespace`` keyword of their own, passed through ``kwargs``.
def _list_all(call, resource: str, where: str, api_client: Any, /, **kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = None
    while True:
        try:
            page = call(limit=PAGE, _continue=token, **kwargs) if token else call(limit=PAGE, **kwargs)
        except Exception as exc:
            if _status(exc) == 403:
                raise forbidden(resource, where) from exc
            raise
        items, token = _items(page, api_client)
        out.extend(items)
        if not token:
            return out


def read_cluster_state(core_v1: Any, namespace: str) -> ClusterState:
    """Nodes, active pods, quotas and limit ranges through a ``kubernetes.client.CoreV1Api``."""
    api = core_v1.api_client
    nodes = _list_all(core_v1.list_node, "nodes", namespace, api)
    pods = _list_all(core_v1.list_pod_for_all_namespaces, "pods", namespace, api, field_selector=ACTIVE_PODS)
    quotas = _list_all(core_v1.list_namespaced_resource_quota, "resourcequotas", namespace, api, namespace=namespace)
    ranges = _list_all(core_v1.list_namespaced_limit_range, "limitranges", namespace, api, namespace=namespace)
    return cluster_state(nodes, pods, quotas, ranges)


def read_limit_range(core_v1: Any, namespace: str) -> LimitRangeBounds | None:
    """The namespace's LimitRange with container defaults (the first, by name), or None."""
    ranges = _list_all(core_v1.list_namespaced_limit_range, "limitranges", namespace, core_v1.api_client, namespace=namespace)
    bounds = sorted((b for b in map(limit_range, ranges) if b is not None and (b.default or b.default_request)),
                    key=lambda b: b.name)
    return bounds[0] if bounds else None


# --- reading: async (the trigger) -----------------------------------------------------------

async def _list_all_async(call, resource: str, where: str, api_client: Any, /, **kwargs: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = None
    while True:
        try:
            page = await (call(limit=PAGE, _continue=token, **kwargs) if token else call(limit=PAGE, **kwargs))
        except Exception as exc:
            if _status(exc) == 403:
                raise forbidden(resource, where) from exc
            raise
        items, token = _items(page, api_client)
        out.extend(items)
        if not token:
            return out


async def read_cluster_state_async(core_v1: Any, namespace: str) -> ClusterState:
    """The same through a ``kubernetes_asyncio.client.CoreV1Api``."""
    api = core_v1.api_client
    nodes = await _list_all_async(core_v1.list_node, "nodes", namespace, api)
    pods = await _list_all_async(core_v1.list_pod_for_all_namespaces, "pods", namespace, api, field_selector=ACTIVE_PODS)
    quotas = await _list_all_async(core_v1.list_namespaced_resource_quota, "resourcequotas", namespace, api, namespace=namespace)
    ranges = await _list_all_async(core_v1.list_namespaced_limit_range, "limitranges", namespace, api, namespace=namespace)
    return cluster_state(nodes, pods, quotas, ranges)


__all__ = ["ACTIVE_PODS", "CapacityForbidden", "cluster_state", "forbidden", "limit_range", "namespace_quota",
           "node_capacity", "pod_requests", "read_cluster_state", "read_cluster_state_async"]

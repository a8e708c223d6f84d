"""In-place resize against a real API server (``pods/resize``), actuated by kwok's emulation.

What is real: the API server's validation, admission (its node-capacity check included), RBAC,
resourceVersion conflicts and the pod's QoS class. What is emulated: the kubelet's actuation
(``status.containerStatuses[].resources`` following the spec) and ``PodResizePending``/
``Infeasible``, by the Stages in ``harness/emulation``.
"""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from airflow_adaptive.adapters.kubernetes.resize import PodResizer, ResizeForbidden
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.sizing import ContainerSize

from .conftest import wait_for

pytestmark = [pytest.mark.kubernetes]

GI = 2**30
MI = 2**20


def size(req_cpu, req_mem, lim_cpu, lim_mem) -> ContainerSize:
    return ContainerSize(ResourceVector(cpu=req_cpu, memory=req_mem), ResourceVector(cpu=lim_cpu, memory=lim_mem), None, ())


def signal(resource: str, old: float, new: float, sequence: int = 1) -> ResizeSignal:
    return ResizeSignal(resource=resource, old=old, new=new, reason="test", time=time.time(), sequence=sequence,
                        container="base")


def base_status(pod):
    return next(cs for cs in pod.status.container_statuses if cs.name == "base")


def actuated(core, namespace, name, memory_limit: str):
    """Wait until the emulated kubelet reports ``memory_limit`` applied."""
    return wait_for(lambda: core.read_namespaced_pod(name, namespace),
                    lambda p: (base_status(p).resources.limits or {}).get("memory") == memory_limit
                    and not any(c.type.startswith("PodResize") for c in p.status.conditions or []),
                    what=f"resize of {name} to {memory_limit} actuated")


def test_burstable_limit_grows_in_place_and_the_request_stays(emulated_cluster, admin_api, namespace, running_pod):
    core = client.CoreV1Api(admin_api)
    running_pod("train", size(1, 1 * GI, 2, 2 * GI))
    outcome = PodResizer(core).apply(namespace, "train", "base", signal("memory", 2 * GI, 3 * GI))
    assert outcome.status == "applied", outcome.message
    pod = actuated(core, namespace, "train", "3Gi")
    base = next(c for c in pod.spec.containers if c.name == "base")
    assert base.resources.requests["memory"] == "1Gi"
    assert base_status(pod).resources.requests["memory"] == "1Gi"
    assert pod.status.qos_class == "Burstable"


def test_guaranteed_pod_moves_request_and_limit_together(emulated_cluster, admin_api, namespace, running_pod):
    core = client.CoreV1Api(admin_api)
    running_pod("train", size(1, 2 * GI, 1, 2 * GI))
    outcome = PodResizer(core).apply(namespace, "train", "base", signal("memory", 2 * GI, 3 * GI))
    assert outcome.status == "applied", outcome.message
    pod = actuated(core, namespace, "train", "3Gi")
    base = next(c for c in pod.spec.containers if c.name == "base")
    assert base.resources.requests["memory"] == base.resources.limits["memory"] == "3Gi"
    assert pod.status.qos_class == "Guaranteed"


class _RacingCoreV1:
    """The real client, plus a real concurrent writer: right after the resizer reads the pod, the
    first time only, another client labels it, so the resizer's patch (made for the version it
    read) meets a real 409 Conflict from the API server."""

    def __init__(self, core):
        self._core = core
        self.raced = False

    def __getattr__(self, name):
        return getattr(self._core, name)

    def read_namespaced_pod(self, name, namespace):
        pod = self._core.read_namespaced_pod(name=name, namespace=namespace)
        if not self.raced:
            self.raced = True
            self._core.patch_namespaced_pod(name, namespace, {"metadata": {"labels": {"touched": "yes"}}})
        return pod


def test_a_conflict_is_retried_on_the_new_version(emulated_cluster, admin_api, namespace, running_pod):
    core = client.CoreV1Api(admin_api)
    running_pod("train", size(1, 1 * GI, 2, 2 * GI))
    racing = _RacingCoreV1(core)
    outcome = PodResizer(racing).apply(namespace, "train", "base", signal("memory", 2 * GI, 3 * GI))
    assert racing.raced
    assert outcome.status == "applied" and outcome.attempts == 2, outcome
    actuated(core, namespace, "train", "3Gi")


def test_a_size_beyond_the_node_is_capped_to_its_room(emulated_cluster, admin_api, namespace, running_pod):
    core = client.CoreV1Api(admin_api)
    pod = running_pod("train", size(1, 2 * GI, 1, 2 * GI))
    node = core.read_node(pod.spec.node_name)
    outcome = PodResizer(core).apply(namespace, "train", "base", signal("memory", 2 * GI, 500 * GI))
    assert outcome.status == "capped", outcome.message
    base = next(c for c in core.read_namespaced_pod("train", namespace).spec.containers if c.name == "base")
    granted = ResourceVector.from_kubernetes(base.resources.requests).memory
    allocatable = ResourceVector.from_kubernetes({"memory": node.status.allocatable["memory"]}).memory
    assert 2 * GI < granted <= allocatable - 64 * MI  # the monitor sidecar's request stays reserved


def test_without_node_read_the_api_servers_capacity_check_defers_it(emulated_cluster, admin_api, namespace, running_pod):
    """Kubernetes 1.35+ refuses, at admission, a resize beyond the node's allocatable (403 with
    cause NodeCapacity). That is not a permission problem: the size is left to the next try."""
    core = client.CoreV1Api(admin_api)
    running_pod("train", size(1, 2 * GI, 1, 2 * GI))
    outcome = PodResizer(core, read_node=False).apply(namespace, "train", "base", signal("memory", 2 * GI, 500 * GI))
    assert outcome.status == "deferred", outcome
    assert "next attempt" in outcome.message and "allocatable" in outcome.message
    base = next(c for c in core.read_namespaced_pod("train", namespace).spec.containers if c.name == "base")
    assert base.resources.limits["memory"] == "2Gi"


def test_infeasible_on_the_node_defers_further_increases(emulated_cluster, admin_api, namespace, running_pod):
    """The kubelet's view of the node can be smaller than the Node object's (kube-reserved raised,
    the object not yet updated): the API server admits the resize, the (emulated) kubelet marks it
    PodResizePending/Infeasible, and the resizer defers any further increase instead of asking more."""
    core = client.CoreV1Api(admin_api)
    pod = running_pod("train", size(1, 2 * GI, 1, 2 * GI))
    node = pod.spec.node_name
    real = core.read_node(node).status.allocatable
    stale = {**real, "memory": f"{2 * int(ResourceVector.from_kubernetes({'memory': real['memory']}).memory)}"}
    core.patch_node_status(node, {"status": {"allocatable": stale}})
    try:
        resizer = PodResizer(core, read_node=False)
        wanted = int(ResourceVector.from_kubernetes({"memory": real["memory"]}).memory) + GI
        first = resizer.apply(namespace, "train", "base", signal("memory", 2 * GI, wanted, sequence=1))
        assert first.status == "applied", first
        pending = wait_for(lambda: core.read_namespaced_pod("train", namespace),
                           lambda p: any(c.type == "PodResizePending" and c.reason == "Infeasible"
                                         for c in p.status.conditions or []),
                           what="PodResizePending/Infeasible")
        assert (base_status(pending).resources.limits or {})["memory"] == "2Gi"  # nothing actuated
        second = resizer.apply(namespace, "train", "base", signal("memory", wanted, wanted + GI, sequence=2))
        assert second.status == "deferred" and "Infeasible" in second.message, second
    finally:
        core.patch_node_status(node, {"status": {"allocatable": real}})


def test_a_rejected_resize_reports_the_api_servers_reason(emulated_cluster, admin_api, namespace, running_pod):
    """A Windows pod cannot be resized in place: the API server answers 422 and says why."""
    core = client.CoreV1Api(admin_api)
    from .conftest import stage_pod

    pod = stage_pod("win", size(1, 1 * GI, 2, 2 * GI), monitor=False)
    pod.spec.os = client.V1PodOS(name="windows")
    pod.spec.containers[0].security_context = None
    core.create_namespaced_pod(namespace, pod)
    wait_for(lambda: core.read_namespaced_pod("win", namespace), lambda p: p.status.phase == "Running", what="win Running")
    outcome = PodResizer(core).apply(namespace, "win", "base", signal("memory", 2 * GI, 3 * GI))
    assert outcome.status == "rejected", outcome
    assert "windows" in outcome.message.lower()


def test_a_missing_permission_is_named(emulated_cluster, admin_api, namespace, running_pod):
    """A real service account, bound to a Role that can read pods but not resize them."""
    core = client.CoreV1Api(admin_api)
    rbac = client.RbacAuthorizationV1Api(admin_api)
    running_pod("train", size(1, 1 * GI, 2, 2 * GI))
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "worker"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "read-pods"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "read-pods"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-pods"},
        "subjects": [{"kind": "ServiceAccount", "name": "worker", "namespace": namespace}]})
    token = core.create_namespaced_service_account_token("worker", namespace, {"spec": {"expirationSeconds": 600}}).status.token
    with emulated_cluster.api_client(token) as worker_api:
        resizer = PodResizer(client.CoreV1Api(worker_api))  # cannot read nodes either: resizes uncapped
        with pytest.raises(ResizeForbidden) as err:
            resizer.apply(namespace, "train", "base", signal("memory", 2 * GI, 3 * GI))
    assert f"may not patch pods/resize in namespace {namespace}" in str(err.value)
    assert 'resources: ["pods/resize"], verbs: ["patch"]' in str(err.value)

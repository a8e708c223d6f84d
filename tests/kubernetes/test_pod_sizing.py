"""Sized stage pods on the real API server and scheduler: quantities round-trip unchanged, GPU
stages land on the GPU type predicted, and a size that cannot fit is seen by the capacity check
before the pod exists (and, created anyway, stays Pending as the scheduler says)."""

from __future__ import annotations

import pytest
from kubernetes import client

from airflow_adaptive.adapters.kubernetes.cluster_state import read_cluster_state
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.capacity import fit_state
from airflow_adaptive.logic.sizing import ContainerSize

from .conftest import stage_pod, wait_for

pytestmark = [pytest.mark.kubernetes]

GI = 2**30


def sized(req: ResourceVector, lim: ResourceVector, gpu_type: str | None = None) -> ContainerSize:
    return ContainerSize(req, lim, gpu_type, ())


def test_the_resource_vector_round_trips_through_the_api_server(admin_api, namespace):
    """What the sizing formats (millicores, whole bytes, GPUs) is what the API server stores."""
    core = client.CoreV1Api(admin_api)
    size = sized(ResourceVector(cpu=1.265, memory=266554636.6), ResourceVector(cpu=2.5, memory=344884998.48))
    pod = stage_pod("rt", size, complete_after=None)
    sent = admin_api.sanitize_for_serialization(pod)
    core.create_namespaced_pod(namespace, pod)
    stored = admin_api.sanitize_for_serialization(core.read_namespaced_pod("rt", namespace))
    for kind in ("containers", "initContainers"):
        for mine, theirs in zip(sent["spec"][kind], stored["spec"][kind]):
            assert theirs["resources"] == mine["resources"], (kind, mine["name"])
    base = stored["spec"]["containers"][0]["resources"]
    assert ResourceVector.from_kubernetes(base["requests"]).cpu == 1.265
    assert ResourceVector.from_kubernetes(base["limits"]).memory >= 344884998.48


def test_a_gpu_stage_lands_on_the_gpu_type_predicted_and_cpu_stages_stay_off_it(emulated_cluster, admin_api, namespace):
    core = client.CoreV1Api(admin_api)
    gpu = stage_pod("gpu", sized(ResourceVector(cpu=4, memory=16 * GI, gpu=1), ResourceVector(cpu=8, memory=32 * GI, gpu=1),
                                 gpu_type="NVIDIA-A100-SXM4-40GB"))
    cpu = stage_pod("cpu", sized(ResourceVector(cpu=1, memory=GI), ResourceVector(cpu=2, memory=2 * GI)))
    core.create_namespaced_pod(namespace, gpu)
    core.create_namespaced_pod(namespace, cpu)
    running = lambda name: wait_for(lambda: core.read_namespaced_pod(name, namespace),  # noqa: E731
                                    lambda p: p.status.phase == "Running", what=f"{name} Running")
    assert running("gpu").spec.node_name == "gpu-node-0"
    assert running("cpu").spec.node_name != "gpu-node-0"


def test_a_size_that_cannot_fit_is_refused_before_the_pod_exists_and_stays_pending(emulated_cluster, admin_api, namespace):
    core = client.CoreV1Api(admin_api)
    too_big = ResourceVector(cpu=16, memory=64 * GI)  # more than any CPU node; GPU node is tainted
    verdict = fit_state(too_big, too_big, None, read_cluster_state(core, namespace))
    assert verdict.status == "never", verdict
    assert "cpu-node-0" in verdict.per_node and "memory" in verdict.message

    core.create_namespaced_pod(namespace, stage_pod("big", sized(too_big, too_big)))
    pending = wait_for(lambda: core.read_namespaced_pod("big", namespace),
                       lambda p: any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in p.status.conditions or []),
                       what="the scheduler to call it Unschedulable")
    assert pending.status.phase == "Pending"
    assert "Insufficient" in next(c.message for c in pending.status.conditions if c.type == "PodScheduled")


def test_an_invalid_quantity_never_reaches_the_api_server(emulated_cluster, admin_api, namespace):
    """A DAG's bad quantity is the user's error, named with its field, before any pod is made."""
    from airflow_adaptive.domain.errors import UserError
    from airflow_adaptive.adapters.kubernetes.pod_spec import resources_from

    with pytest.raises(UserError) as err:
        resources_from({"requests": {"memory": "12 GB"}}, "task stage: container_resources")
    assert "memory" in str(err.value) and "12 GB" in str(err.value) and "task stage" in str(err.value)
    assert client.CoreV1Api(admin_api).list_namespaced_pod(namespace).items == []

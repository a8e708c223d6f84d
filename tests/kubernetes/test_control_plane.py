"""The local control plane itself: real components answering, kwok nodes with the shapes asked for."""

import pytest
from kubernetes import client

from harness.local_cluster import DEFAULT_NODES, GPU_LABEL

pytestmark = [pytest.mark.kubernetes]


def test_api_server_is_a_release_with_in_place_resize(admin_api):
    version = client.VersionApi(admin_api).get_code()
    assert (int(version.major), int(version.minor.rstrip("+"))) >= (1, 35)
    resources = client.CoreV1Api(admin_api).get_api_resources().resources
    assert "pods/resize" in {r.name for r in resources}


def test_kwok_nodes_are_ready_with_capacity_and_gpu_labels(emulated_cluster, admin_api):
    nodes = {n.metadata.name: n for n in client.CoreV1Api(admin_api).list_node(label_selector="type=kwok").items}
    assert set(nodes) == {n.name for n in DEFAULT_NODES}
    for shape in DEFAULT_NODES:
        node = nodes[shape.name]
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
        assert node.status.allocatable["memory"] == shape.memory
        assert node.status.allocatable.get("nvidia.com/gpu", "0") == str(shape.gpus)
        assert node.metadata.labels.get(GPU_LABEL) == shape.gpu_type


def test_the_fixture_wrote_a_working_admin_kubeconfig(kube_cluster):
    from kubernetes import config

    with config.new_client_from_config(str(kube_cluster.kubeconfig)) as api:
        assert client.CoreV1Api(api).list_namespace().items

"""The Kubernetes tests' cluster: a real control plane on loopback (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, with kwok for the nodes), started once per session and
always torn down. Set ``AIRFLOW_ADAPTIVE_TEST_KUBECONFIG`` to run the same tests against another
cluster (kind, k3d, a real one); the tests of kwok's emulation are skipped there."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from airflow_adaptive.adapters.kubernetes.local_cluster import ControlPlaneError, LocalCluster, default_bin_dir


class ExternalCluster:
    """A cluster the user points at: same interface as :class:`LocalCluster`, no emulation."""

    emulated = False

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.bin_dir = default_bin_dir()

    def api_client(self, token: str | None = None):
        from kubernetes import client, config

        api = config.new_client_from_config(str(self.kubeconfig))
        if token:
            api.configuration.api_key = {"authorization": f"Bearer {token}"}
        return api


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory):
    external = os.environ.get("AIRFLOW_ADAPTIVE_TEST_KUBECONFIG")
    if external:
        yield ExternalCluster(external)
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("control-plane"))
    cluster.emulated = True
    try:
        cluster.start()
    except ControlPlaneError as exc:
        pytest.fail(f"the local control plane did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def emulated_cluster(kube_cluster):
    """The cluster, when its kubelets are kwok's emulation (pod completion, resize actuation, logs)."""
    if not kube_cluster.emulated:
        pytest.skip("needs kwok's emulated kubelets; the cluster in AIRFLOW_ADAPTIVE_TEST_KUBECONFIG has real ones")
    return kube_cluster


@pytest.fixture
def admin_api(kube_cluster):
    with kube_cluster.api_client() as api:
        yield api


@pytest.fixture
def namespace(kube_cluster):
    """A fresh namespace for one test, deleted afterwards."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:8]}"
    with kube_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        try:
            yield name
        finally:
            core.delete_namespace(name)

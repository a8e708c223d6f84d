"""The Kubernetes tests' cluster: a real control plane on loopback (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, with kwok for the nodes), started once per session and
always torn down. Set ``AIRFLOW_ADAPTIVE_TEST_KUBECONFIG`` to run the same tests against another
cluster (kind, k3d, a real one); the tests of kwok's emulation are skipped there."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest

from harness.local_cluster import ControlPlaneError, LocalCluster, default_bin_dir


class ExternalCluster:
    """A cluster the user points at: same interface as :class:`LocalCluster`, no emulation."""

    emulated = False

    def __init__(self, kubeconfig: str) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.bin_dir = default_bin_dir()

    def api_client(self, token: str | None = None):
        from kubernetes import config

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


@contextlib.contextmanager
def temporary_namespace(cluster, prefix: str = "t", **delete_options):
    """A fresh namespace of ``cluster``, deleted afterwards."""
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with cluster.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": name}})
        try:
            yield name
        finally:
            core.delete_namespace(name, **delete_options)


@pytest.fixture
def namespace(kube_cluster):
    """A fresh namespace for one test, deleted afterwards."""
    with temporary_namespace(kube_cluster) as name:
        yield name


def wait_for(read, check, *, timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition"):
    """Poll ``read()`` until ``check(value)``; the last value, or AssertionError naming ``what``."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {value!r:.2000}")
        time.sleep(interval_s)


def stage_pod(name: str, size, *, complete_after: str | None = "600s", exit_code: int = 0, reason: str | None = None,
              monitor: bool = True, service_account: str | None = None):
    """The pod the operator would create for one stage (``shape_pod`` on a KPO-like base pod),
    with the emulation's annotations for how long it runs and how it ends."""
    from kubernetes.client import models as k8s

    from harness.local_cluster import COMPLETE_AFTER, EXIT_CODE, EXIT_REASON
    from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod

    annotations = {}
    if complete_after:
        annotations[COMPLETE_AFTER] = complete_after
        annotations[EXIT_CODE] = str(exit_code)
        if reason:
            annotations[EXIT_REASON] = reason
    base = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, annotations=annotations, labels={"app": "adaptive-stage"}),
        spec=k8s.V1PodSpec(restart_policy="Never", containers=[
            k8s.V1Container(name="base", image="python:3.11-slim", command=["python", "-c", "print('train')"])]))
    sidecar = MonitorSidecar(image="ghcr.io/airflow-adaptive/monitor:0.1.0") if monitor else None
    return shape_pod(base, container="base", size=size, monitor=sidecar, run_id=None, tracking_uri=None,
                     profile_json=None, service_account=service_account)


@pytest.fixture
def running_pod(admin_api, namespace):
    """Create a stage pod and wait until the (emulated) kubelet runs it; returns the live pod."""
    from kubernetes import client

    core = client.CoreV1Api(admin_api)

    def create(name: str, size, **kwargs):
        core.create_namespaced_pod(namespace, stage_pod(name, size, **kwargs))
        return wait_for(lambda: core.read_namespaced_pod(name, namespace), lambda p: p.status.phase == "Running",
                        what=f"pod {name} Running")

    return create

"""The Helm chart on the real node: installed with the cluster's own helm, its training service
account runs a real stage pod (workload + the monitor image) with no API token mounted, and the
monitor reads the workload under it. The chart's optional MLflow server is not started here: its
image (``ghcr.io/mlflow/mlflow``) cannot be pulled, and building one is left out of the suite's
time budget (README)."""

from __future__ import annotations

import os
import subprocess

import pytest
from kubernetes import client

from ..kubernetes.conftest import wait_for
from .test_real_node import adaptive_pod, phase

pytestmark = [pytest.mark.kubelet]

CHART = os.path.join(os.path.dirname(__file__), "..", "..", "helm", "airflow-adaptive")
RELEASE = "adaptive"


@pytest.fixture
def chart(real_node, node_namespace, tmp_path):
    env = {**os.environ, **{v: str(tmp_path / v.lower()) for v in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}

    def helm(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(real_node.bin_dir / "helm"), *args, "--kubeconfig", str(real_node.kubeconfig),
                               "--namespace", node_namespace], capture_output=True, text=True, env=env, timeout=120)

    done = helm("install", RELEASE, CHART, "--wait", "--timeout", "60s")
    assert done.returncode == 0, done.stderr + done.stdout
    try:
        yield node_namespace
    finally:
        helm("uninstall", RELEASE)


def test_the_charts_training_account_runs_a_monitored_stage_without_a_token(real_node, node_api, chart):
    core = client.CoreV1Api(node_api)
    account = core.read_namespaced_service_account(f"{RELEASE}-training", chart)
    assert account.automount_service_account_token is False
    pod = adaptive_pod("charted", real_node.images, ["-c", "import time; time.sleep(12)"], memory_mib=128, user=1000)
    pod["spec"]["serviceAccountName"] = f"{RELEASE}-training"
    pod["spec"].pop("automountServiceAccountToken", None)  # the account's own setting decides
    core.create_namespaced_pod(chart, pod)
    wait_for(lambda: phase(core, chart, "charted"), lambda p: p in ("Succeeded", "Failed"), timeout_s=90,
             what="the stage to finish")
    done = core.read_namespaced_pod("charted", chart)
    assert done.status.phase == "Succeeded"
    mounts = [m.mount_path for c in done.spec.containers + done.spec.init_containers for m in c.volume_mounts or []]
    assert not any("serviceaccount" in m for m in mounts), mounts
    log = core.read_namespaced_pod_log("charted", chart, container="adaptive-monitor")
    assert "through cgroup-v1" in log or "through cgroup-v2" in log
    defaults = core.read_namespaced_config_map(f"{RELEASE}-defaults", chart).data
    assert defaults["AIRFLOW_ADAPTIVE_RUNNER"] == "kubernetes"

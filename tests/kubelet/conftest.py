"""The real node: a kubelet, containerd, runc and CNI beside the control plane, in a network
namespace of their own (``harness/local_node.py``), started once per session and always
torn down (every process stopped, every mount, cgroup, namespace and sysctl put back).

These tests carry the ``kubelet`` marker. As root they never skip: a node that cannot start is a
failure. Without root (no cgroups, namespaces or mounts to make) they skip, saying so."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.local_node import (
    NODE_NAME, TOLERATION, HostEgressGuard, NodeError, NodeSandbox, RealNode, host_snapshot, namespace_routes,
)

from ..kubernetes.conftest import temporary_namespace

REPO = Path(__file__).resolve().parents[2]


def node_images() -> dict:
    """The images tools/node/build.sh made (the README's test command runs it; so does this)."""
    path = os.environ.get("AIRFLOW_ADAPTIVE_NODE_IMAGES")
    if not path or not Path(path).is_file():
        done = subprocess.run(["bash", str(REPO / "tools" / "node" / "build.sh")], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"tools/node/build.sh failed:\n{done.stderr[-3000:]}")
        path = done.stdout.strip().splitlines()[-1]
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="session")
def real_node(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the real node needs root (network namespace, cgroups, mounts)")
    node = RealNode(tmp_path_factory.mktemp("real-node"), images=node_images())
    NodeSandbox().clean()  # a killed earlier run's leftovers are not this run's changes
    before = host_snapshot()
    with HostEgressGuard() as guard:  # the host's packets to the node's addresses: rejected, counted
        try:
            node.start()
        except NodeError as exc:
            pytest.fail(f"the real node did not start: {exc}")
        try:
            # While it runs: no address, link or route of the node's on the host (the tests reach it
            # through 127.0.0.1), and no way out of its namespace: its routes are its own address
            # and the pods' bridge, nothing else (no default route).
            running = host_snapshot()
            network = ("addresses", "links", "routes")
            assert {k: running[k] for k in network} == {k: before[k] for k in network}
            routes = namespace_routes()
            assert not [r for r in routes if r.startswith("default")], routes
            yield node
        finally:
            sent = guard.packets()
            node.stop()
    # Nothing on the host sent to the node's or the service addresses (GUARDED).
    assert sent and not any(sent.values()), sent
    # The host as it was: every process, mount, namespace, link, cgroup, sysctl, iptables rule and
    # file put back.
    after = host_snapshot()
    assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}


@pytest.fixture
def node_api(real_node):
    with real_node.api_client() as api:
        yield api


@pytest.fixture
def node_namespace(real_node):
    with temporary_namespace(real_node, "n", grace_period_seconds=0) as name:
        yield name


def on_real_node(pod: dict) -> dict:
    """``pod`` (a manifest dict) tolerating the real node's taint and pinned to it."""
    spec = pod.setdefault("spec", {})
    spec.setdefault("tolerations", []).append(dict(TOLERATION))
    spec["nodeSelector"] = {**spec.get("nodeSelector", {}), "kubernetes.io/hostname": NODE_NAME}
    spec.setdefault("automountServiceAccountToken", False)
    return pod

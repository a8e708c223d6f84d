"""The capacity fit: per node (never a cluster-wide sum), GPU-type labels, quotas (wait vs never),
LimitRange bounds, and messages a user can act on. Plus the adapter's pure JSON conversion
(the scheduler's way of counting a pod's requests), which needs no API server."""

import pytest

from airflow_adaptive.adapters.kubernetes.cluster_state import (
    cluster_state,
    forbidden,
    limit_range,
    namespace_quota,
    pod_requests,
)
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.capacity import (
    LimitRangeBounds,
    NamespaceQuota,
    NodeCapacity,
    fit,
    readable,
    with_defaults,
)

GiB = 2**30
MiB = 2**20
GPU_KEY = "nvidia.com/gpu.product"


def node(name, cpu=8, mem_gib=32, gpu=0, used_cpu=0, used_gib=0, used_gpu=0, gpu_type=None, **kw):
    labels = {GPU_KEY: gpu_type} if gpu_type else {}
    return NodeCapacity(name, ResourceVector(cpu, mem_gib * GiB, gpu), ResourceVector(used_cpu, used_gib * GiB, used_gpu),
                        labels, **kw)


def req(cpu=1, mem_gib=1, gpu=0):
    return ResourceVector(cpu, mem_gib * GiB, gpu)


# (case, requests, limits, gpu_type, nodes, quotas, limit_ranges, status, node, words in the message)
CASES = [
    ("two nodes with 2 GiB free each cannot host 3 GiB (no cluster-wide sum)",
     req(1, 3), req(1, 3), None, [node("a", mem_gib=8, used_gib=6), node("b", mem_gib=8, used_gib=6)], [], [],
     "wait", "a", ["memory free 2.0 GiB < 3.0 GiB", "short by 1.0 GiB", "closest is a"]),
    ("the one node with room is found",
     req(1, 3), req(1, 3), None, [node("a", mem_gib=8, used_gib=6), node("b", mem_gib=8, used_gib=4)], [], [],
     "fits", "b", ["fits on node b"]),
    ("bigger than every node's allocatable: never, naming the closest node",
     req(1, 40), req(1, 40), None, [node("a", mem_gib=32), node("b", mem_gib=16)], [], [],
     "never", None, ["no node is big enough", "a, has memory allocatable 32.0 GiB < 40.0 GiB", "short by 8.0 GiB"]),
    ("the closest busy node is the one with the smallest shortfall",
     req(4, 4), req(4, 4), None, [node("a", cpu=8, used_cpu=6), node("b", cpu=8, used_cpu=5)], [], [],
     "wait", "b", ["closest is b", "cpu free 3 CPU < 4 CPU"]),
    ("fits exactly (0.1 + 0.2 cores in 0.3 is no float accident)",
     ResourceVector(0.1 + 0.2, GiB), ResourceVector(0.3, GiB), None,
     [NodeCapacity("a", ResourceVector(0.3, GiB))], [], [], "fits", "a", []),
    ("GPU type: only labelled nodes count, the free one of another type does not",
     req(1, 1, 1), req(1, 1, 1), "A100", [node("h", gpu=1, gpu_type="H100"), node("a", gpu=1, used_gpu=1, gpu_type="A100")],
     [], [], "wait", "a", ["of GPU type A100", "gpu free 0 GPUs < 1 GPU"]),
    ("GPU type nobody has: never",
     req(1, 1, 1), req(1, 1, 1), "B200", [node("h", gpu=8, gpu_type="H100")], [], [],
     "never", None, ["no node has the label nvidia.com/gpu.product=B200"]),
    ("GPU type matches and has room",
     req(1, 1, 1), req(1, 1, 1), "A100", [node("h", gpu=1, gpu_type="H100"), node("a", gpu=2, used_gpu=1, gpu_type="A100")],
     [], [], "fits", "a", []),
    ("a GPU stage without a type needs a node with GPUs",
     req(1, 1, 2), req(1, 1, 2), None, [node("cpu-only"), node("g", gpu=1)], [], [],
     "never", None, ["gpu allocatable 1 GPU < 2 GPUs"]),
    ("only a cordoned node is big enough: wait (it may come back)",
     req(1, 20), req(1, 20), None, [node("small", mem_gib=8), node("big", mem_gib=64, unschedulable=True)], [], [],
     "wait", "big", ["cordoned"]),
    ("a node at its pod limit is full",
     req(), req(), None, [node("a", allocatable_pods=110, pod_count=110)], [], [],
     "wait", "a", ["full: 110 of 110 pods"]),
    ("quota used up: wait, even though a node has room",
     req(1, 4), req(1, 4), None, [node("a")],
     [NamespaceQuota("team", {"requests.memory": 16 * GiB}, {"requests.memory": 14 * GiB})], [],
     "wait", "a", ["ResourceQuota team", "requests.memory has 2.0 GiB left", "short by 2.0 GiB"]),
    ("quota hard below the stage alone: never",
     req(1, 4), req(1, 4), None, [node("a")],
     [NamespaceQuota("team", {"limits.memory": 2 * GiB}, {"limits.memory": 0})], [],
     "never", None, ["ResourceQuota team allows 2.0 GiB of limits.memory in all", "needs 4.0 GiB"]),
    ("quota on GPUs (requests.nvidia.com/gpu)",
     req(1, 1, 2), req(1, 1, 2), None, [node("g", gpu=4)],
     [NamespaceQuota("gpus", {"requests.nvidia.com/gpu": 4}, {"requests.nvidia.com/gpu": 3})], [],
     "wait", "g", ["requests.nvidia.com/gpu has 1 GPU left"]),
    ("quota on pod count",
     req(), req(), None, [node("a")], [NamespaceQuota("n", {"pods": 10}, {"pods": 10})], [],
     "wait", "a", ["pods has 0 pods left"]),
    ("quota that tracks limits.cpu refuses a pod without a cpu limit",
     req(1, 1), ResourceVector(0, GiB), None, [node("a")], [NamespaceQuota("q", {"limits.cpu": 10}, {})], [],
     "never", None, ["tracks limits.cpu, so the stage must set it"]),
    ("LimitRange container max below the limit: never",
     req(1, 4), req(1, 12), None, [node("a")], [], [LimitRangeBounds("lr", max=ResourceVector(memory=8 * GiB))],
     "never", None, ["LimitRange lr allows a container at most 8.0 GiB memory", "memory limit is 12.0 GiB"]),
    ("LimitRange container min above the request: never",
     ResourceVector(0.05, GiB), ResourceVector(1, GiB), None, [node("a")], [],
     [LimitRangeBounds("lr", min=ResourceVector(cpu=0.1))], "never", None, ["at least 100m CPU;", "requests 50m CPU"]),
    ("LimitRange pod max counts the pod (with its overhead)",
     req(2, 1), req(2, 1), None, [node("a")], [], [LimitRangeBounds("lr", pod_max=ResourceVector(cpu=2))],
     "never", None, ["allows a pod at most 2 CPU;", "pod needs 2.05 CPU"]),
    ("never wins over wait",
     req(1, 40), req(1, 40), None, [node("a", used_gib=30)],
     [NamespaceQuota("team", {"requests.memory": 100 * GiB}, {"requests.memory": 99 * GiB})], [],
     "never", None, ["no node is big enough"]),
    ("no nodes at all",
     req(), req(), None, [], [], [], "never", None, ["the cluster has no nodes"]),
]


@pytest.mark.parametrize("case, requests, limits, gpu_type, nodes, quotas, ranges, status, best, words", CASES,
                         ids=[c[0] for c in CASES])
def test_fit(case, requests, limits, gpu_type, nodes, quotas, ranges, status, best, words):
    overhead = ResourceVector(0.05, 64 * MiB) if "overhead" in case else ResourceVector()
    result = fit(requests, limits, gpu_type, nodes, quotas, ranges, overhead=overhead)
    assert (result.status, result.node) == (status, best), result.message
    for w in words:
        assert w in result.message, f"{w!r} not in {result.message!r}"
    assert set(result.per_node) == {n.name for n in nodes}


def test_overhead_counts_on_the_node():
    """A node with exactly the container's size free cannot also hold the monitor sidecar."""
    nodes = [node("a", cpu=2, mem_gib=2)]
    assert fit(req(2, 2), req(2, 2), None, nodes).status == "fits"
    result = fit(req(2, 2), req(2, 2), None, nodes, overhead=ResourceVector(0.05, 64 * MiB))
    assert result.status == "never" and "cpu allocatable 2 CPU < 2.05 CPU" in result.message


def test_per_node_reasons_explain_every_node():
    nodes = [node("h", gpu=1, gpu_type="H100"), node("small", mem_gib=1, gpu=1, gpu_type="A100"),
             node("busy", gpu=1, used_gpu=1, gpu_type="A100"), node("ok", gpu=1, gpu_type="A100")]
    result = fit(req(1, 2, 1), req(1, 2, 1), "A100", nodes)
    assert result.status == "fits" and result.node == "ok"
    assert result.per_node["h"].startswith("not GPU type A100")
    assert result.per_node["small"].startswith("too small: memory allocatable 1.0 GiB")
    assert result.per_node["busy"].startswith("busy: gpu free 0 GPUs")
    assert result.per_node["ok"] == "fits"


def test_limit_range_defaults_fill_unset_amounts_before_the_checks():
    lr = LimitRangeBounds("lr", default=ResourceVector(cpu=2, memory=4 * GiB), default_request=ResourceVector(cpu=0.5))
    requests, limits = with_defaults(ResourceVector(memory=GiB), ResourceVector(), [lr])
    assert requests == ResourceVector(0.5, GiB) and limits == ResourceVector(2, 4 * GiB)
    # No defaultRequest: the request takes the limit (the API server's own defaulting).
    requests, _ = with_defaults(ResourceVector(), ResourceVector(cpu=3), [])
    assert requests.cpu == 3
    # The defaulted request is what the node must hold.
    assert fit(ResourceVector(memory=GiB), ResourceVector(), None, [node("a", cpu=0.4)], limit_ranges=[lr]).status == "never"


@pytest.mark.parametrize("resource, amount, text", [
    ("memory", 3 * GiB, "3.0 GiB"), ("memory", 512 * MiB, "512 MiB"), ("cpu", 0.25, "250m CPU"),
    ("cpu", 4, "4 CPU"), ("gpu", 1, "1 GPU"), ("gpu", 2, "2 GPUs"),
])
def test_readable(resource, amount, text):
    assert readable(resource, amount) == text


# --- the adapter's JSON conversion (pure) -----------------------------------------------------

def container(name, cpu=None, memory=None, restart=None):
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    c = {"name": name, "resources": {"requests": requests}}
    if restart:
        c["restartPolicy"] = restart
    return c


POD_CASES = [
    ("containers are summed", {"containers": [container("a", "1", "1Gi"), container("b", "500m", "512Mi")]},
     ResourceVector(1.5, 1.5 * GiB)),
    ("a big init container sets the pod's request", {"containers": [container("a", "1", "1Gi")],
                                                     "initContainers": [container("init", "4", "256Mi")]},
     ResourceVector(4, GiB)),
    ("sidecars add to the sum and are held during later init containers",
     {"containers": [container("a", "1", "1Gi")],
      "initContainers": [container("side", "500m", "64Mi", restart="Always"), container("init", "3", "128Mi")]},
     ResourceVector(3.5, GiB + 64 * MiB)),
    ("overhead is added on top", {"containers": [container("a", "1", "1Gi")], "overhead": {"cpu": "250m", "memory": "120Mi"}},
     ResourceVector(1.25, GiB + 120 * MiB)),
]


@pytest.mark.parametrize("case, spec, expected", POD_CASES, ids=[c[0] for c in POD_CASES])
def test_pod_requests_as_the_scheduler_counts(case, spec, expected):
    assert pod_requests({"spec": spec}) == expected


def test_a_container_being_resized_counts_at_the_larger_of_spec_and_allocated():
    pod = {"spec": {"containers": [container("a", "1", "1Gi")]},
           "status": {"containerStatuses": [{"name": "a", "allocatedResources": {"cpu": "2", "memory": "512Mi"}}]}}
    assert pod_requests(pod) == ResourceVector(2, GiB)


def test_cluster_state_counts_pods_on_their_own_node_only():
    nodes = [{"metadata": {"name": "n1", "labels": {GPU_KEY: "A100"}},
              "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "2", "pods": "110"}}},
             {"metadata": {"name": "n2"}, "spec": {"unschedulable": True}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi"}}}]
    pods = [{"spec": {"nodeName": "n1", "containers": [container("a", "2", "4Gi")]}, "status": {"phase": "Running"}},
            {"spec": {"nodeName": "n1", "containers": [container("b", "8", "8Gi")]}, "status": {"phase": "Succeeded"}},
            {"spec": {"containers": [container("pending", "1", "1Gi")]}, "status": {"phase": "Pending"}}]
    quotas = [{"metadata": {"name": "q"}, "status": {"hard": {"requests.cpu": "10", "requests.memory": "20Gi", "pods": "5"},
                                                      "used": {"requests.cpu": "500m", "requests.memory": "1Gi", "pods": "1"}}},
              {"metadata": {"name": "scoped"}, "spec": {"scopes": ["BestEffort"]}, "status": {"hard": {"pods": "1"}}}]
    ranges = [{"metadata": {"name": "lr"}, "spec": {"limits": [
        {"type": "Container", "max": {"memory": "16Gi"}, "defaultRequest": {"cpu": "100m"}},
        {"type": "Pod", "max": {"cpu": "6"}}]}}]
    state = cluster_state(nodes, pods, quotas, ranges)
    n1, n2 = state.nodes
    assert n1.requested == ResourceVector(2, 4 * GiB) and n1.pod_count == 1 and n1.allocatable_pods == 110
    assert n1.allocatable.gpu == 2 and n1.labels[GPU_KEY] == "A100" and not n1.unschedulable
    assert n2.unschedulable and n2.requested == ResourceVector()
    (q,) = state.quotas  # the scoped quota is left out
    assert q.hard == {"requests.cpu": 10.0, "requests.memory": 20 * GiB, "pods": 5.0}
    assert q.used["requests.cpu"] == 0.5
    (lr,) = state.limit_ranges
    assert lr.max == ResourceVector(memory=16 * GiB) and lr.default_request == ResourceVector(cpu=0.1)
    assert lr.pod_max == ResourceVector(cpu=6)
    # And through fit: 7 cores exceed the LimitRange's pod max even though n1 has 6 free.
    assert fit(req(7, 1), req(7, 1), None, state.nodes, state.quotas, state.limit_ranges).status == "never"
    assert fit(req(5, 1), req(5, 1), "A100", state.nodes, state.quotas, state.limit_ranges).status == "fits"


def test_a_quota_or_limit_range_that_bounds_nothing_we_size_is_harmless():
    assert namespace_quota({"metadata": {"name": "s"}, "status": {"hard": {"requests.storage": "1Ti"}}}).hard == {"requests.storage": 2**40}
    assert limit_range({"metadata": {"name": "pvc"}, "spec": {"limits": [{"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}]}}) is None


def test_forbidden_names_the_missing_permission():
    text = str(forbidden("nodes", "ml"))
    assert "list nodes (cluster scope)" in text and 'resources: ["nodes"]' in text and "ClusterRole" in text
    assert "list resourcequotas in namespace ml" in str(forbidden("resourcequotas", "ml"))


def test_a_tainted_node_is_no_place_for_a_stage_that_does_not_tolerate_it():
    from airflow_adaptive.logic.capacity import NodeCapacity, fit

    gpu_node = NodeCapacity("gpu", ResourceVector(cpu=32, memory=128 * 2**30, gpu=4), taints=("nvidia.com/gpu",))
    cpu_node = NodeCapacity("cpu", ResourceVector(cpu=8, memory=32 * 2**30))
    big_cpu_stage = ResourceVector(cpu=16, memory=64 * 2**30)
    verdict = fit(big_cpu_stage, big_cpu_stage, None, [gpu_node, cpu_node])
    assert verdict.status == "never" and "tainted nvidia.com/gpu" in verdict.per_node["gpu"]
    gpu_stage = ResourceVector(cpu=16, memory=64 * 2**30, gpu=1)
    assert fit(gpu_stage, gpu_stage, None, [gpu_node, cpu_node]).node == "gpu"


MIG = "nvidia.com/mig-1g.10gb"


@pytest.mark.parametrize("case, nodes, status, words", [
    ("a node with a free slice fits, though it has no whole GPU",
     [node("mig", mig={MIG: (7.0, 3.0)})], "fits", "1 nvidia.com/mig-1g.10gb"),
    ("every slice taken: wait", [node("mig", mig={MIG: (7.0, 7.0)})], "wait", "0 of 7 nvidia.com/mig-1g.10gb free"),
    ("no node offers the profile: never (whole GPUs do not count)",
     [node("whole", gpu=8), node("other", mig={"nvidia.com/mig-3g.40gb": (2.0, 0.0)})], "never", "no node offers 1 nvidia.com/mig-1g.10gb"),
])
def test_a_mig_slice_is_counted_against_the_nodes_slices_of_its_profile(case, nodes, status, words):
    result = fit(req(1, 2, gpu=1), req(1, 2, gpu=1), None, nodes, gpu_resource=MIG)
    assert result.status == status, (case, result)
    assert words in result.message or any(words in why for why in result.per_node.values()), (case, result)


def test_cluster_state_reads_mig_slices_and_the_pods_that_hold_them():
    nodes = [{"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "8", "memory": "32Gi", MIG: "7"}}}]
    holder = container("a", "1", "1Gi")
    holder["resources"]["requests"][MIG] = "2"
    pods = [{"spec": {"nodeName": "n1", "containers": [holder]}, "status": {"phase": "Running"}}]
    (n1,) = cluster_state(nodes, pods, [], []).nodes
    assert n1.mig == {MIG: (7.0, 2.0)} and n1.allocatable.gpu == 0

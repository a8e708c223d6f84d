"""The sizing policy, case by case."""

from dataclasses import replace

import pytest

from airflow_adaptive.domain.profile import GpuScaling, PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import (
    ElasticGpus,
    GpuType,
    SizingPolicy,
    elastic_from,
    gpu_types_from,
    policy_from,
    size_container,
)

GIB = 2**30


def profile(cold=False, **est):
    return PredictedProfile(resources={r: ResourceEstimate(*v) for r, v in est.items()}, coverage=0.99, cold_start=cold)


USER_REQ = ResourceVector(cpu=2, memory=8 * GIB)
USER_LIM = ResourceVector(cpu=4, memory=16 * GIB)


@pytest.mark.parametrize(
    "name, prof, policy, requests, limits",
    [
        ("burstable: median requested, upper+10% limit", profile(cpu=(1, 2), memory=(2 * GIB, 4 * GIB)), SizingPolicy(),
         ResourceVector(1, 2 * GIB), ResourceVector(2.2, 4.4 * GIB)),
        ("guaranteed: requests == limits", profile(cpu=(1, 2), memory=(2 * GIB, 4 * GIB)), SizingPolicy(preset="guaranteed"),
         ResourceVector(2.2, 4.4 * GIB), ResourceVector(2.2, 4.4 * GIB)),
        ("a cold start is sized from its (similar stages') prediction", profile(True, cpu=(1, 2)), SizingPolicy(),
         ResourceVector(1, 8 * GIB), ResourceVector(2.2, 16 * GIB)),
        ("a cold start stays within the user's limit", profile(True, memory=(20 * GIB, 40 * GIB)), SizingPolicy(),
         ResourceVector(2, 16 * GIB), ResourceVector(4, 16 * GIB)),
        ("no prediction keeps the user's request", None, SizingPolicy(), USER_REQ, USER_LIM),
        ("capped by the user's limit", profile(cpu=(3, 9), memory=(10 * GIB, 30 * GIB)), SizingPolicy(),
         ResourceVector(3, 10 * GIB), ResourceVector(4, 16 * GIB)),
        ("floor from the policy", profile(cpu=(0.01, 0.02), memory=(1e6, 2e6)), SizingPolicy(minimum=ResourceVector(0.1, 64 * 2**20)),
         ResourceVector(0.1, 64 * 2**20), ResourceVector(0.1, 64 * 2**20)),
        ("an unpredicted resource keeps the user's value", profile(memory=(2 * GIB, 4 * GIB)), SizingPolicy(),
         ResourceVector(2, 2 * GIB), ResourceVector(4, 4.4 * GIB)),
    ],
)
def test_table(name, prof, policy, requests, limits):
    size = size_container(prof, USER_REQ, USER_LIM, policy)
    for got, want in ((size.requests, requests), (size.limits, limits)):
        assert got.cpu == pytest.approx(want.cpu), name
        assert got.memory == pytest.approx(want.memory), name
    assert size.requests.cpu <= size.limits.cpu and size.requests.memory <= size.limits.memory


def test_cold_start_is_explained():
    size = size_container(profile(True, cpu=(1, 2)), USER_REQ, USER_LIM)
    assert any("cold start" in r and "similar stages" in r for r in size.reasons)


def test_cap_is_explained():
    size = size_container(profile(memory=(10 * GIB, 30 * GIB)), USER_REQ, USER_LIM)
    assert any("memory limit capped" in r for r in size.reasons)


def gpu_profile(gpu=None, gpu_memory=None, duration=None, scaling=None, cold=False):
    res = {}
    if gpu:
        res["gpu"] = ResourceEstimate(*gpu)
    if gpu_memory:
        res["gpu_memory"] = ResourceEstimate(gpu_memory[0] * GIB, gpu_memory[1] * GIB)
    return PredictedProfile(resources=res or {"cpu": ResourceEstimate(1, 1)}, coverage=0.99, cold_start=cold,
                            duration=ResourceEstimate(*duration) if duration else None, gpu_scaling=scaling)


def gpus(n):
    return ResourceVector(1, GIB, n), ResourceVector(2, 2 * GIB, n)


#: 12 runs at 2, 4, 8 GPUs; linear speed-up.
LINEAR = GpuScaling(a=8 * 3600, alpha=1.0, runs=12, counts=(2, 4, 8))


@pytest.mark.parametrize(
    "name, prof, user, elastic, want, words",
    [
        ("the issue's case: utilisation (0.9, 1.0) with 4 GPUs keeps 4 (the world size)",
         gpu_profile((0.9, 1.0)), 4, None, 4, ["the user's count (the job's world size)"]),
        ("a fixed count is kept above the prediction too", gpu_profile((5.0, 7.9)), 4, None, 4, ["world size"]),
        ("a cold start keeps the count", gpu_profile((0.9, 1.0), cold=True), 2, None, 2, ["world size"]),
        ("no GPUs asked: none added whatever is predicted", gpu_profile((0.9, 1.0)), 0, None, 0, []),
        ("elastic: the utilisation upper rounded up", gpu_profile((1.5, 1.95)), 4, ElasticGpus(1, 8), 2,
         ["elastic GPUs [1, 8]: 2, from the predicted utilisation upper 1.95"]),
        ("elastic: never below min", gpu_profile((0.2, 0.5)), 4, ElasticGpus(2, 8), 2, ["(the declared min)"]),
        ("elastic: never above max", gpu_profile((6, 7.5)), 4, ElasticGpus(1, 4), 4, ["(capped at the declared max)"]),
        ("elastic without a utilisation prediction: the user's count within the bounds", gpu_profile(gpu_memory=(1, 2)), 16,
         ElasticGpus(1, 8), 8, ["GPU utilisation not predicted"]),
        ("elastic, nothing asked, nothing predicted: min", gpu_profile(gpu_memory=(1, 2)), 0, ElasticGpus(2, 8), 2, []),
        ("elastic, saturated, long, a learned speed-up: decided up", gpu_profile((3.6, 3.9), duration=(5400, 7200), scaling=LINEAR),
         4, ElasticGpus(1, 8), 8, ["elastic: 8 GPUs instead of 4 (within the declared [1, 8])", "x2.00 faster"]),
        ("fixed, saturated, long: kept, with a recommendation", gpu_profile((3.6, 3.9), duration=(5400, 7200), scaling=LINEAR),
         4, None, 4, ["recommendation for the next run", "set nvidia.com/gpu to 8"]),
        ("fixed, saturated, long, no history: says why", gpu_profile((3.6, 3.9), duration=(5400, 7200)), 4, None, 4,
         ["not enough history"]),
    ],
)
def test_gpu_count(name, prof, user, elastic, want, words):
    requested, limited = gpus(user)
    size = size_container(prof, requested, limited, SizingPolicy(elastic=elastic))
    assert size.requests.gpu == size.limits.gpu == want, f"{name}: {size.reasons}"
    for w in words:
        assert any(w in r for r in size.reasons), f"{name}: {w!r} not in {size.reasons}"


def test_a_recommendation_and_a_decision_are_kept_on_the_size():
    prof = gpu_profile((3.6, 3.9), duration=(5400, 7200), scaling=LINEAR)
    fixed = size_container(prof, *gpus(4), SizingPolicy())
    elastic = size_container(prof, *gpus(4), SizingPolicy(elastic=ElasticGpus(1, 8)))
    assert (fixed.gpu_advice.kind, fixed.gpu_advice.gpus) == ("recommendation", 8)
    assert (elastic.gpu_advice.kind, elastic.gpu_advice.gpus) == ("decision", 8)
    quiet = size_container(gpu_profile((0.5, 1.0)), *gpus(4), SizingPolicy())
    assert quiet.gpu_advice.kind == "none" and not any("saturated" in r for r in quiet.reasons)


A100_80 = GpuType("A100-80GB", 80 * GIB)
A100_40 = GpuType("A100-40GB", 40 * GIB)
T4 = GpuType("T4", 16 * GIB)
MIG_1G = GpuType("", 10 * GIB, mig="1g.10gb")
MIG_3G = GpuType("", 40 * GIB, mig="3g.40gb")
TYPES = (A100_80, A100_40, T4, MIG_1G, MIG_3G)


@pytest.mark.parametrize(
    "name, user, gpu, gpu_memory, types, gpu_type, resource, words",
    [
        ("per GPU: 100 GiB over 4 GPUs needs 27.5 GiB each", 4, None, (80, 100), TYPES, "A100-40GB", "nvidia.com/gpu",
         ["GPU type A100-40GB", "27.5 GiB per GPU"]),
        ("1 GPU, small memory: a MIG profile", 1, (0.05, 0.1), (4, 6), TYPES, None, "nvidia.com/mig-1g.10gb",
         ["MIG profile 1g.10gb (nvidia.com/mig-1g.10gb instead of nvidia.com/gpu, no GPU-type affinity; 1 GPU asked)"]),
        ("1 GPU, utilisation not predicted: MIG by memory alone", 1, None, (4, 6), TYPES, None, "nvidia.com/mig-1g.10gb", []),
        ("MIG is per device: 2 GPUs get whole ones", 2, None, (8, 12), TYPES, "T4", "nvidia.com/gpu", ["GPU type T4"]),
        ("a MIG slice with too little compute is skipped", 1, (0.4, 0.6), (4, 6), TYPES, "T4", "nvidia.com/gpu",
         ["MIG 1g.10gb, 3g.40gb skipped: less compute than the predicted 0.60 of a GPU busy"]),
        ("a tie goes to the full GPU", 1, None, (30, 35), (A100_40, MIG_3G), "A100-40GB", "nvidia.com/gpu", []),
        ("only MIG types and 2 GPUs: whole GPUs of any type", 2, None, (8, 12), (MIG_1G, MIG_3G), None, "nvidia.com/gpu",
         ["MIG profiles are per device"]),
        ("too big for every type: the largest", 1, None, (90, 100), TYPES, "A100-80GB", "nvidia.com/gpu", ["no GPU type has"]),
        ("no GPU memory predicted: no type", 1, (0.5, 1), None, TYPES, None, "nvidia.com/gpu", []),
    ],
)
def test_gpu_type_and_mig(name, user, gpu, gpu_memory, types, gpu_type, resource, words):
    size = size_container(gpu_profile(gpu, gpu_memory), *gpus(user), SizingPolicy(gpu_types=types))
    assert (size.gpu_type, size.gpu_resource) == (gpu_type, resource), f"{name}: {size.reasons}"
    for w in words:
        assert any(w in r for r in size.reasons), f"{name}: {w!r} not in {size.reasons}"
    requests, limits = size.to_kubernetes()
    assert requests[resource] == limits[resource] == str(user)
    assert (resource == "nvidia.com/gpu") == ("nvidia.com/gpu" in limits)


def test_max_resources_clamps_an_elastic_count_but_never_a_world_size():
    prof = gpu_profile((5, 7.5))
    policy = SizingPolicy(maximum=ResourceVector(gpu=4))
    assert size_container(prof, *gpus(8), policy).limits.gpu == 8
    elastic = size_container(prof, *gpus(8), replace(policy, elastic=ElasticGpus(1, 8)))
    assert elastic.limits.gpu == 4 and any("elastic GPUs [1, 4]" in r for r in elastic.reasons)


def test_gpu_memory_follows_an_elastic_count_per_device():
    # 20 GiB over the user's 4 GPUs is 5.5 GiB each (with the margin); elastic sizing to 2 keeps that per device.
    size = size_container(gpu_profile((1.5, 1.9), (16, 20)), *gpus(4), SizingPolicy(elastic=ElasticGpus(1, 8)))
    assert size.limits.gpu == 2 and size.limits.gpu_memory == pytest.approx(2 * 20 * 1.1 / 4 * GIB)


def test_gpu_types_as_dag_authors_write_them():
    types = gpu_types_from([{"label": "A100-40GB", "memory": "40Gi"}, {"mig": "1g.10gb", "memory": "10Gi"},
                            {"mig": "custom", "memory": 5 * GIB, "compute": 0.25}])
    assert types[0] == GpuType("A100-40GB", 40 * GIB)
    assert types[1].resource == "nvidia.com/mig-1g.10gb" and types[1].compute_share == pytest.approx(1 / 7)
    assert types[2].compute_share == 0.25 and types[2].name == "MIG custom"
    assert GpuType("", 20 * GIB, mig="1c.3g.20gb").compute_share == pytest.approx(3 / 7)


@pytest.mark.parametrize(
    "types, match",
    [
        ([{"label": "A100", "memory": "40Gi", "mig": "1g.10gb"}], r"train\.gpu_types\[0\].*no label"),
        ([{"label": "A100"}], r"train\.gpu_types\[0\]: unknown or missing keys \['memory'\]"),
        ([{"mig": "odd", "memory": "10Gi"}], r"train\.gpu_types\[0\]: MIG profile 'odd'.*compute"),
        ([{"mig": "1g.10gb", "memory": "10Gi", "compute": 2}], "compute share"),
        ([{"label": "", "memory": "10Gi"}], "needs a label"),
        (["A100"], r"train\.gpu_types\[0\]: expected a mapping"),
    ],
)
def test_bad_gpu_types_are_refused_naming_the_task(types, match):
    with pytest.raises(ValueError, match=match):
        policy_from("burstable", 0.1, None, None, types, "train")


@pytest.mark.parametrize("value, want", [
    (None, None), ({"min": 1, "max": 8}, ElasticGpus(1, 8)), ((2, 4), ElasticGpus(2, 4)), ([2, 2], ElasticGpus(2, 2)),
    ({"min": 1.0, "max": 8.0}, ElasticGpus(1, 8)), (ElasticGpus(1, 2), ElasticGpus(1, 2)),
])
def test_elastic_gpus_as_dag_authors_write_them(value, want):
    assert elastic_from(value, "train") == want
    assert policy_from("burstable", 0.1, None, None, (), "train", value).elastic == want


@pytest.mark.parametrize("value, match", [
    ({"min": 0, "max": 8}, "min must be a whole number"), ({"min": 4, "max": 2}, r"max \(2\) is below min \(4\)"),
    ({"min": 1}, "expected"), ({"min": 1, "max": 2, "step": 1}, "expected"), ((1, 2, 3), "expected"), (4, "expected"),
    ({"min": 1.5, "max": 2}, "whole number"), ((True, 2), "whole number"), ("1-8", "expected"),
])
def test_bad_elastic_gpus_are_refused_naming_the_task_and_field(value, match):
    with pytest.raises(ValueError, match=match) as err:
        elastic_from(value, "train")
    assert str(err.value).startswith("train.elastic_gpus: ")


@pytest.mark.parametrize("kwargs, match", [({"preset": "besteffort"}, "preset"), ({"margin": -1}, "margin")])
def test_bad_policy_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SizingPolicy(**kwargs)


# --- ephemeral storage: sized at pod start, beside the ResourceVector -----------------------

from airflow_adaptive.logic.sizing import EPHEMERAL_FLOOR, StorageSize, size_container as _size  # noqa: E402

_MiB, _GiB = 2**20, 2**30
_REQ, _LIM = ResourceVector(cpu=1, memory=_GiB), ResourceVector(cpu=2, memory=4 * _GiB)


def _with_storage(median, upper, **more):
    return PredictedProfile({"memory": ResourceEstimate(_GiB, 2 * _GiB), "ephemeral_storage": ResourceEstimate(median, upper),
                             **more}, coverage=0.99)


@pytest.mark.parametrize("median,upper,user,preset,req,limit,says", [
    # median / upper x 1.1, no user bound
    (300 * _MiB, 500 * _MiB, StorageSize(), "burstable", 300 * _MiB, 550 * _MiB, "predicted upper"),
    # the user's limit is the bound
    (300 * _MiB, 500 * _MiB, StorageSize(0, 400 * _MiB), "burstable", 300 * _MiB, 400 * _MiB, "capped at the user's"),
    # the user's request alone bounds, as for memory (limited.max(requested))
    (300 * _MiB, 500 * _MiB, StorageSize(350 * _MiB, 0), "burstable", 300 * _MiB, 350 * _MiB, "capped"),
    # a small prediction: the floor (logs count too)
    (1 * _MiB, 2 * _MiB, StorageSize(), "burstable", EPHEMERAL_FLOOR, EPHEMERAL_FLOOR, "the floor"),
    # the floor never passes the user's bound
    (1 * _MiB, 2 * _MiB, StorageSize(0, 32 * _MiB), "burstable", 32 * _MiB, 32 * _MiB, "capped"),
    # the prediction may go below the user's request: it is the prior, not a floor
    (100 * _MiB, 200 * _MiB, StorageSize(_GiB, 2 * _GiB), "burstable", 100 * _MiB, 220 * _MiB, "predicted median"),
    # guaranteed: request = limit
    (300 * _MiB, 500 * _MiB, StorageSize(), "guaranteed", 550 * _MiB, 550 * _MiB, "guaranteed"),
])
def test_ephemeral_storage_from_the_prediction_within_the_users_bound(median, upper, user, preset, req, limit, says):
    size = _size(_with_storage(median, upper), _REQ, _LIM, SizingPolicy(preset=preset), user)
    assert size.ephemeral.request == pytest.approx(req)
    assert size.ephemeral.limit == pytest.approx(limit)
    (reason,) = [r for r in size.reasons if r.startswith("ephemeral-storage")]
    assert says in reason and "pod start only" in reason
    # the container's vector is untouched by it
    assert set(size.requests.as_dict()) == {"cpu", "memory", "gpu", "gpu_memory"}


@pytest.mark.parametrize("profile,user", [
    (None, StorageSize(_GiB, 2 * _GiB)),  # no prediction at all
    (PredictedProfile({"memory": ResourceEstimate(_GiB, 2 * _GiB)}, coverage=0.99), StorageSize(_GiB, 2 * _GiB)),  # not of storage
    (PredictedProfile({"memory": ResourceEstimate(_GiB, 2 * _GiB)}, coverage=0.99), StorageSize()),
])
def test_without_a_storage_prediction_the_users_values_are_kept(profile, user):
    size = _size(profile, _REQ, _LIM, SizingPolicy(), user)
    assert size.ephemeral == user
    assert not [r for r in size.reasons if r.startswith("ephemeral-storage")]


def test_storage_not_known_is_not_sized():
    """A caller that did not read the user's ephemeral-storage (storage=None) must not override it."""
    size = _size(_with_storage(300 * _MiB, 500 * _MiB), _REQ, _LIM, SizingPolicy())
    assert size.ephemeral == StorageSize() and not size.ephemeral.is_set


def test_bandwidth_and_disk_predictions_do_not_enter_the_container_vector():
    est = ResourceEstimate(10 * _MiB, 20 * _MiB)
    profile = _with_storage(300 * _MiB, 500 * _MiB, disk_read=est, disk_write=est, network_rx=est, network_tx=est)
    size = _size(profile, _REQ, _LIM, SizingPolicy(), StorageSize())
    requests, limits = size.to_kubernetes()
    assert requests == {"cpu": "1", "memory": "1Gi", "ephemeral-storage": "300Mi"}
    assert limits == {"cpu": "2", "memory": "2362232013", "ephemeral-storage": "550Mi"}


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1Gi", True])
def test_storage_size_refuses_what_is_not_bytes(bad):
    with pytest.raises(ValueError, match="ephemeral-storage"):
        StorageSize(bad, 0)

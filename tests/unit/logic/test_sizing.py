"""The sizing policy, case by case."""

import pytest

from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import GpuType, SizingPolicy, size_container

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


def test_gpus_are_whole_and_gpu_memory_picks_the_smallest_type_that_fits():
    types = (GpuType("A100-80GB", 80 * GIB), GpuType("A100-40GB", 40 * GIB), GpuType("T4", 16 * GIB))
    size = size_container(profile(gpu=(0.6, 1.2), gpu_memory=(20 * GIB, 30 * GIB)), ResourceVector(1, GIB, 1), ResourceVector(2, 2 * GIB, 4),
                          SizingPolicy(gpu_types=types))
    assert size.requests.gpu == size.limits.gpu == 2
    assert size.gpu_type == "A100-40GB"
    too_big = size_container(profile(gpu=(1, 1), gpu_memory=(90 * GIB, 100 * GIB)), ResourceVector(1, GIB, 1), ResourceVector(2, 2 * GIB, 1),
                             SizingPolicy(gpu_types=types))
    assert too_big.gpu_type == "A100-80GB" and any("no GPU type" in r for r in too_big.reasons)


@pytest.mark.parametrize("kwargs, match", [({"preset": "besteffort"}, "preset"), ({"margin": -1}, "margin")])
def test_bad_policy_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SizingPolicy(**kwargs)

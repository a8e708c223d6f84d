"""ResourceVector: validation, the Kubernetes mapping both ways, and element-wise arithmetic."""

from __future__ import annotations

import math

import pytest

from airflow_adaptive.domain.errors import QuantityError
from airflow_adaptive.domain.resources import ResourceVector

GI = 2**30


def test_defaults_are_zero_and_values_become_floats():
    assert ResourceVector().as_dict() == {"cpu": 0.0, "memory": 0.0, "gpu": 0.0, "gpu_memory": 0.0}
    v = ResourceVector(cpu=2, memory=GI)
    assert isinstance(v.cpu, float) and isinstance(v.memory, float)


@pytest.mark.parametrize("field", ["cpu", "memory", "gpu", "gpu_memory"])
@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, math.inf, "1", None, True])
def test_invalid_amounts_are_refused_naming_the_field(field, bad):
    with pytest.raises(QuantityError, match=rf"^{field}: "):
        ResourceVector(**{field: bad})


def test_frozen():
    with pytest.raises(AttributeError):
        ResourceVector().cpu = 1.0  # type: ignore[misc]


def test_from_kubernetes_reads_cpu_memory_and_gpus_and_ignores_the_rest():
    v = ResourceVector.from_kubernetes(
        {"cpu": "500m", "memory": "1.5Gi", "nvidia.com/gpu": "2", "ephemeral-storage": "10Gi",
         "hugepages-2Mi": "whatever"},
        where="stage.requests",
    )
    assert v == ResourceVector(cpu=0.5, memory=1.5 * GI, gpu=2)


def test_from_kubernetes_memory_is_rounded_up_to_whole_bytes():
    assert ResourceVector.from_kubernetes({"memory": "1500m"}).memory == 2.0


@pytest.mark.parametrize(
    ("mapping", "pattern"),
    [
        ({"memory": "1Gb"}, r"^stage\.limits\.memory: '1Gb' is not a Kubernetes quantity"),
        ({"cpu": "-1"}, r"^stage\.limits\.cpu: '-1' is negative"),
        ({"nvidia.com/gpu": "0.5"}, r"^stage\.limits\.nvidia\.com/gpu: '0\.5' is not a whole number of GPUs"),
        ({"nvidia.com/gpu": "-1"}, r"^stage\.limits\.nvidia\.com/gpu: '-1'"),
        ({"cpu": "1e1001"}, r"^stage\.limits\.cpu: .*too large"),
    ],
)
def test_from_kubernetes_errors_name_where_and_key(mapping, pattern):
    with pytest.raises(QuantityError, match=pattern):
        ResourceVector.from_kubernetes(mapping, where="stage.limits")


def test_to_kubernetes_prints_canonical_quantities_and_whole_gpus():
    v = ResourceVector(cpu=1.5, memory=4 * GI, gpu=1, gpu_memory=20 * GI)
    assert v.to_kubernetes() == {"cpu": "1500m", "memory": "4Gi", "nvidia.com/gpu": "1"}


def test_to_kubernetes_rounds_up_and_leaves_out_zeros_and_gpu_memory():
    assert ResourceVector().to_kubernetes() == {}
    assert ResourceVector(gpu_memory=GI).to_kubernetes() == {}
    assert ResourceVector(cpu=0.0001, memory=1000.5, gpu=1.2).to_kubernetes() == {
        "cpu": "1m", "memory": "1001", "nvidia.com/gpu": "2"}
    assert ResourceVector(gpu=0.1 * 3 * 10).to_kubernetes() == {"nvidia.com/gpu": "3"}  # float noise


def test_kubernetes_round_trip():
    mapping = {"cpu": "250m", "memory": "512Mi", "nvidia.com/gpu": "4"}
    assert ResourceVector.from_kubernetes(mapping).to_kubernetes() == mapping


def test_elementwise_max_min_add():
    a = ResourceVector(cpu=1, memory=4 * GI, gpu=0, gpu_memory=8)
    b = ResourceVector(cpu=2, memory=1 * GI, gpu=1, gpu_memory=4)
    assert a.max(b) == ResourceVector(cpu=2, memory=4 * GI, gpu=1, gpu_memory=8)
    assert a.min(b) == ResourceVector(cpu=1, memory=1 * GI, gpu=0, gpu_memory=4)
    assert a + b == ResourceVector(cpu=3, memory=5 * GI, gpu=1, gpu_memory=12)
    with pytest.raises(TypeError):
        a + 1  # noqa: B018
    with pytest.raises(TypeError):
        a.max({"cpu": 1})  # type: ignore[arg-type]


def test_scale():
    v = ResourceVector(cpu=2, memory=GI, gpu=1, gpu_memory=10)
    assert v.scale(1.5) == ResourceVector(cpu=3, memory=1.5 * GI, gpu=1.5, gpu_memory=15)
    assert v.scale(0) == ResourceVector()
    with pytest.raises(QuantityError, match="^factor: "):
        v.scale(-1)


def test_clamp():
    lo = ResourceVector(cpu=0.1, memory=128 * 2**20)
    hi = ResourceVector(cpu=8, memory=32 * GI, gpu=1, gpu_memory=40 * GI)
    v = ResourceVector(cpu=16, memory=1, gpu=2, gpu_memory=GI)
    assert v.clamp(lo, hi) == ResourceVector(cpu=8, memory=128 * 2**20, gpu=1, gpu_memory=GI)
    with pytest.raises(ValueError, match=r"lo\.cpu .* above hi\.cpu"):
        v.clamp(hi, lo)


def test_dict_round_trip_and_unknown_keys():
    v = ResourceVector(cpu=1.25, memory=3 * GI, gpu=1, gpu_memory=2 * GI)
    assert ResourceVector.from_dict(v.as_dict()) == v
    assert ResourceVector.from_dict({"cpu": 1}) == ResourceVector(cpu=1)
    with pytest.raises(QuantityError, match="unknown key.*'mem'"):
        ResourceVector.from_dict({"mem": 1})
    with pytest.raises(QuantityError, match="^memory: "):
        ResourceVector.from_dict({"memory": -5})

"""The monitor sidecar's GPU visibility in a GPU stage's pod (operators/kubernetes.monitor_gpu_env)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.operators.kubernetes import MONITOR_GPUS_SWITCH, monitor_gpu_env


def plan(gpus_requested: float, gpus_limited: float = 0.0):
    size = SimpleNamespace(requests=ResourceVector(cpu=1, gpu=gpus_requested), limits=ResourceVector(cpu=1, gpu=gpus_limited))
    return SimpleNamespace(size=size)


def test_a_gpu_stage_gives_the_monitor_nvml_on_the_node_gpus(monkeypatch):
    monkeypatch.delenv(MONITOR_GPUS_SWITCH, raising=False)
    want = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "utility"}
    assert monitor_gpu_env(plan(1)) == want
    assert monitor_gpu_env(plan(0, 2)) == want


@pytest.mark.parametrize("switch", [None, "off"])
def test_a_cpu_stage_or_the_switch_adds_nothing(monkeypatch, switch):
    if switch:
        monkeypatch.setenv(MONITOR_GPUS_SWITCH, switch)
        assert monitor_gpu_env(plan(1)) == {}
    else:
        monkeypatch.delenv(MONITOR_GPUS_SWITCH, raising=False)
    assert monitor_gpu_env(plan(0)) == {}

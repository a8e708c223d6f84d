"""NVML (NVIDIA Management Library): the workload's GPU utilisation and GPU memory."""

from airflow_adaptive.adapters.nvml.sampler import (
    GpuSelection,
    MalformedDevices,
    NvmlSampler,
    parse_visible_devices,
    visible_devices_of,
    workload_gpus,
)

__all__ = ["GpuSelection", "MalformedDevices", "NvmlSampler", "parse_visible_devices", "visible_devices_of", "workload_gpus"]

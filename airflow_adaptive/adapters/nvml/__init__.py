"""NVML (NVIDIA Management Library): the workload's GPU utilisation and GPU memory."""

from airflow_adaptive.adapters.nvml.sampler import NvmlSampler, visible_devices_of

__all__ = ["NvmlSampler", "visible_devices_of"]

"""The GPU reader each monitor gets: NVML for the workload's processes (local runner) or for the
workload container's GPUs (sidecar). Where NVML or the GPUs cannot be read, one log line says
why and no GPU usage is recorded at all (absent, never 0).

| path | reader | attributes to the workload | needs |
|---|---|---|---|
| local runner (``airflow-adaptive run``, the operator's local path) | ``local_gpu_reader()``: NVML PID mode | the memory and SM utilisation of the processes of the workload's cgroup (else its process tree) | libnvidia-ml on the worker; the runner in the host's PID namespace |
| Kubernetes sidecar (``airflow-adaptive monitor``) | ``workload_gpu_reader(pid)``: NVML device mode | everything on the workload container's GPUs (``adapters/nvml``: ``workload_gpus``) | the pod shape in ``operators/kubernetes.py`` (``monitor_gpu_env``) |

``AIRFLOW_ADAPTIVE_NVML=0`` turns GPU sampling off on both paths.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

NVML_SWITCH = "AIRFLOW_ADAPTIVE_NVML"


def nvml_enabled() -> bool:
    return os.environ.get(NVML_SWITCH, "1").strip() != "0"


def local_gpu_reader():
    """NVML in PID mode (an ``NvmlSampler``, callable with the workload's PIDs; ``close()`` it),
    or None: turned off, or NVML unavailable (no driver, no libnvidia-ml; logged once by ``open``)."""
    if not nvml_enabled():
        log.debug("GPU usage not sampled: %s=0", NVML_SWITCH)
        return None
    from airflow_adaptive.adapters.nvml.sampler import NvmlSampler

    return NvmlSampler.open()


def workload_gpu_reader(pid: int, proc: str = "/proc"):
    """NVML in device mode on the GPUs of the workload container whose process is ``pid``
    (read through ``proc``), or None with a log line: turned off, the workload has no GPU or its
    GPU list is malformed, or this monitor cannot see those GPUs."""
    if not nvml_enabled():
        log.debug("GPU usage not sampled: %s=0", NVML_SWITCH)
        return None
    from airflow_adaptive.adapters.nvml.sampler import NvmlSampler, workload_gpus

    selection = workload_gpus(pid, proc)
    if selection is None:
        return None
    log.info("workload pid %d has GPUs %s", pid, selection.describe())
    sampler = NvmlSampler.open(selection)
    if sampler is None:
        log.warning("the workload's GPU usage is not recorded: this monitor cannot read its GPUs through NVML "
                    "(the pod shape it needs: README 'GPU monitoring')")
    return sampler


def close_reader(reader) -> None:
    """Release a reader from this module (NVML's shutdown); never raises."""
    close = getattr(reader, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception as exc:  # noqa: BLE001 - the run is over; a failed shutdown changes nothing
        log.debug("closing the GPU reader failed: %s", exc)


__all__ = ["NVML_SWITCH", "close_reader", "local_gpu_reader", "nvml_enabled", "workload_gpu_reader"]

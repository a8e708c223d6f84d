"""Was a try killed for memory? Pure readings of a container status and a log tail.

A kernel OOM kill shows in the container's terminated state (reason ``OOMKilled``, or exit
code 137 with that reason). A GPU running out of memory is not a kernel event: the framework
raises and the process exits with an ordinary error, so the only trace is the message in the
workload's log. The patterns are the messages of the frameworks ML stages use:

| pattern | emitted by |
|---|---|
| ``CUDA out of memory`` | PyTorch (``torch.OutOfMemoryError``) |
| ``CUDA error: out of memory`` | PyTorch / CUDA runtime errors re-raised |
| ``CUDA_ERROR_OUT_OF_MEMORY`` | the CUDA driver API (TensorFlow, JAX, CuPy) |
| ``RESOURCE_EXHAUSTED: Out of memory`` | TensorFlow / XLA allocators |
| ``cudaErrorMemoryAllocation`` | the CUDA runtime API (CuPy, RAPIDS) |
"""

from __future__ import annotations

from typing import Any, Iterable

GPU_OOM_PATTERNS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUDA_ERROR_OUT_OF_MEMORY",
    "RESOURCE_EXHAUSTED: Out of memory",
    "cudaErrorMemoryAllocation",
)


def kernel_oom_killed(container_status: Any) -> bool:
    """True when the container's (last) terminated state says the kernel OOM-killed it."""
    for state in (getattr(container_status, "state", None), getattr(container_status, "last_state", None)):
        terminated = getattr(state, "terminated", None) if state is not None else None
        if terminated is not None and getattr(terminated, "reason", None) == "OOMKilled":
            return True
    return False


def gpu_out_of_memory(lines: Iterable[str]) -> bool:
    return any(p in line for line in lines for p in GPU_OOM_PATTERNS)


def try_outcome(container_status: Any, oom_events: Iterable[Any]) -> str:
    """A try's outcome from the workload container's final status: ``oom_killed`` (any OOM event),
    ``success`` (exit code 0) or ``failed`` (anything else, a container that never ran included)."""
    if any(True for _ in oom_events):
        return "oom_killed"
    state = getattr(container_status, "state", None)
    terminated = state is not None and state.terminated
    return "success" if terminated and terminated.exit_code == 0 else "failed"

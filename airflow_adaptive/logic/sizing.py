"""The sizing policy: from a predicted profile and the user's own request to requests and limits.

Pure. The user's request is the prior (what a stage gets with no prediction at all) and the
bounds (never more than the user's limit, never less than the policy's floor); the prediction
moves the size inside them. A *cold start* (a stage with no runs of its own) is predicted from
similar stages with wider, calibrated bounds (``logic/scaling.py``) and sized like any other
prediction, inside the same bounds; the reasons say so.

| preset | requests | limits | why |
|---|---|---|---|
| ``burstable`` | predicted median | predicted upper x (1 + margin) | packs nodes by the typical need, caps at the covering quantile |
| ``guaranteed`` | upper x (1 + margin) | the same | Kubernetes' Guaranteed QoS (requests == limits): last to be evicted |

GPUs are whole devices in Kubernetes (requests == limits, rounded up). GPU memory is not a
Kubernetes resource: it chooses a GPU type (or MIG profile) through node affinity: the smallest
type whose memory covers the predicted upper with the margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.resources import ResourceVector

Preset = Literal["burstable", "guaranteed"]
PRESETS = ("burstable", "guaranteed")
#: Headroom over the covering quantile for limits: the conformal upper is calibrated to be
#: exceeded by ``1 - coverage`` of runs; 10% more absorbs the drift between refits.
DEFAULT_MARGIN = 0.10


@dataclass(frozen=True)
class GpuType:
    """A node label value (e.g. ``nvidia.com/gpu.product``) and the memory of one device."""

    label: str
    memory_bytes: float


@dataclass(frozen=True)
class SizingPolicy:
    preset: Preset = "burstable"
    margin: float = DEFAULT_MARGIN
    minimum: ResourceVector = field(default_factory=ResourceVector)
    maximum: ResourceVector | None = None  # None: the user's limits bound the size
    gpu_types: tuple[GpuType, ...] = ()

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"sizing preset must be one of {PRESETS}, got {self.preset!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin <= 10):
            raise ValueError(f"sizing margin must be a number in [0, 10], got {self.margin!r}")


def gpu_types_from(types: Sequence[GpuType | Mapping[str, Any]]) -> tuple[GpuType, ...]:
    """GPU types as DAG authors write them: ``{"label": ..., "memory": "40Gi"}`` (or GpuType)."""
    from airflow_adaptive.domain.quantities import memory_bytes

    out = []
    for t in types:
        if isinstance(t, GpuType):
            out.append(t)
        else:
            memory = t["memory"]
            out.append(GpuType(str(t["label"]), float(memory_bytes(memory, "gpu_types.memory")) if isinstance(memory, str) else float(memory)))
    return tuple(out)


def policy_from(preset: str, margin: float, min_resources: Mapping[str, str] | None, max_resources: Mapping[str, str] | None,
                gpu_types: Sequence[GpuType | Mapping[str, Any]], where: str) -> SizingPolicy:
    """The policy from an operator's or sensor's arguments; a bad quantity names ``where``."""
    minimum = ResourceVector.from_kubernetes(min_resources or {}, f"{where}.min_resources")
    maximum = ResourceVector.from_kubernetes(max_resources, f"{where}.max_resources") if max_resources else None
    return SizingPolicy(str(preset).strip(), margin, minimum, maximum, gpu_types_from(gpu_types))  # type: ignore[arg-type]


@dataclass(frozen=True)
class ContainerSize:
    requests: ResourceVector
    limits: ResourceVector
    gpu_type: str | None
    reasons: tuple[str, ...]


def size_container(profile: PredictedProfile | None, requested: ResourceVector, limited: ResourceVector,
                   policy: SizingPolicy = SizingPolicy()) -> ContainerSize:
    """Requests and limits for one stage. ``requested``/``limited`` are the user's own (0 = unset)."""
    user_limit = limited.max(requested)
    # The policy's maximum, else the user's limit; an unset (0) bound is no bound.
    ceiling = {r: v if v > 0 else math.inf for r, v in (policy.maximum or user_limit).as_dict().items()}
    if profile is None or not profile.resources:
        return ContainerSize(requested, user_limit, None, ("no prediction; the user's request is used as is",))

    median = _vector(profile, "median", requested)
    upper = _vector(profile, "upper", user_limit, factor=1 + policy.margin)
    reasons = []
    if profile.cold_start:
        reasons.append("cold start: no runs of this stage yet; sized from similar stages (wider bounds), "
                       "within the user's limits")
    limits = _bounded(upper, policy.minimum, ceiling, reasons, "limit")
    requests = limits if policy.preset == "guaranteed" else _bounded(median, policy.minimum, limits.as_dict(), reasons, "request")
    gpus = float(math.ceil(limits.gpu - 1e-9)) if limits.gpu > 0 else 0.0
    requests = ResourceVector(requests.cpu, requests.memory, gpus, requests.gpu_memory)
    limits = ResourceVector(limits.cpu, limits.memory, gpus, limits.gpu_memory)
    gpu_type = _gpu_type(limits.gpu_memory, policy.gpu_types, reasons) if gpus else None
    return ContainerSize(requests, limits, gpu_type, tuple(reasons))


def _vector(profile: PredictedProfile, stat: str, fallback: ResourceVector, factor: float = 1.0) -> ResourceVector:
    """The profile's ``stat`` (times ``factor``) per resource; one it does not predict keeps the user's value."""
    values = fallback.as_dict()
    for r, est in profile.resources.items():
        values[r] = getattr(est, stat) * factor
    return ResourceVector.from_dict(values)


def _bounded(want: ResourceVector, floor: ResourceVector, ceiling: dict[str, float], reasons: list, what: str) -> ResourceVector:
    out = {}
    for r, v in want.as_dict().items():
        lo, hi = floor.as_dict()[r], ceiling[r]
        if v > hi and what == "limit":
            reasons.append(f"{r} {what} capped at {hi:g} (the bound) below the prediction {v:g}")
        out[r] = min(max(v, lo), hi)
    return ResourceVector.from_dict(out)


def _gpu_type(need_bytes: float, types: tuple[GpuType, ...], reasons: list) -> str | None:
    if not types or need_bytes <= 0:
        return None
    fitting = sorted((t for t in types if t.memory_bytes >= need_bytes), key=lambda t: t.memory_bytes)
    if fitting:
        return fitting[0].label
    largest = max(types, key=lambda t: t.memory_bytes)
    reasons.append(f"no GPU type has {need_bytes / 2**30:.1f} GiB; using the largest, {largest.label}")
    return largest.label

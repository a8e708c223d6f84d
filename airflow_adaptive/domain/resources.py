"""The resources one stage asks for or uses, as plain numbers in base units.

Sizing arithmetic (max of observations, a safety factor, clamping to a node) works on floats:
cores, bytes, GPUs. Kubernetes strings appear only at the edges, through ``from_kubernetes``
and ``to_kubernetes``, which use the exact quantity port in ``quantities``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, Callable, Mapping

from airflow_adaptive.domain.errors import QuantityError
from airflow_adaptive.domain.quantities import (
    cpu_cores,
    format_cpu,
    format_memory,
    memory_bytes,
    parse_quantity,
)

GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class ResourceVector:
    """cpu in cores, memory in bytes, gpu in devices, gpu_memory in bytes; all finite, >= 0.

    ``gpu_memory`` is what a stage needs on the device. It is not a Kubernetes resource (the
    scheduler only counts whole GPUs), so it never appears in ``to_kubernetes``.
    """

    cpu: float = 0.0
    memory: float = 0.0
    gpu: float = 0.0
    gpu_memory: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _amount(getattr(self, f.name), f.name))

    # --- Kubernetes -------------------------------------------------------------------

    @classmethod
    def from_kubernetes(cls, mapping: Mapping[str, Any], where: str = "resources") -> ResourceVector:
        """Read a requests/limits mapping ({"cpu": "500m", "memory": "2Gi", "nvidia.com/gpu": "1"}).

        Other resources (ephemeral-storage, hugepages, other devices) are ignored: we do not
        size them. A bad value raises QuantityError naming ``where.key``.
        """
        if not isinstance(mapping, Mapping):
            raise QuantityError(f"{where}: expected a mapping of resource name to quantity "
                                f"(e.g. {{\"cpu\": \"500m\", \"memory\": \"2Gi\"}}), got {type(mapping).__name__}")
        cpu = memory = gpu = 0.0
        for key, text in mapping.items():
            field = f"{where}.{key}"
            if key == "cpu":
                cpu = cpu_cores(text, field)
            elif key == "memory":
                memory = _float(memory_bytes(text, field), text, field)
            elif key == GPU_RESOURCE:
                amount = parse_quantity(text, field)
                if amount < 0 or amount.denominator != 1:  # the API server refuses these too
                    raise QuantityError(f"{field}: {text!r} is not a whole number of GPUs")
                gpu = _float(amount, text, field)
        return cls(cpu=cpu, memory=memory, gpu=gpu)

    def to_kubernetes(self) -> dict[str, str]:
        """The requests/limits mapping: cpu rounded up to millicores, memory up to bytes,
        GPUs up to whole devices. Zero amounts are left out (no request, rather than "0")."""
        out: dict[str, str] = {}
        if self.cpu > 0:
            out["cpu"] = format_cpu(self.cpu)
        if self.memory > 0:
            out["memory"] = format_memory(self.memory)
        if self.gpu > 0:
            out[GPU_RESOURCE] = str(_whole_devices(self.gpu))
        return out

    # --- arithmetic -------------------------------------------------------------------

    def max(self, other: ResourceVector) -> ResourceVector:
        """Element-wise maximum: enough for both."""
        return self._zip(other, max)

    def min(self, other: ResourceVector) -> ResourceVector:
        """Element-wise minimum."""
        return self._zip(other, min)

    def __add__(self, other: object) -> ResourceVector:
        if not isinstance(other, ResourceVector):
            return NotImplemented
        return self._zip(other, lambda a, b: a + b)

    def scale(self, factor: float) -> ResourceVector:
        """Every amount times ``factor`` (a headroom of 1.2, say)."""
        factor = _amount(factor, "factor")
        return ResourceVector(*(value * factor for value in self._values()))

    def clamp(self, lo: ResourceVector, hi: ResourceVector) -> ResourceVector:
        """Each amount brought within [lo, hi], e.g. a namespace minimum and a node's size."""
        for f in fields(self):
            if getattr(lo, f.name) > getattr(hi, f.name):
                raise ValueError(
                    f"clamp: lo.{f.name} ({getattr(lo, f.name)}) is above hi.{f.name} ({getattr(hi, f.name)})"
                )
        return self.max(lo).min(hi)

    # --- plain data -------------------------------------------------------------------

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ResourceVector:
        """The inverse of ``as_dict``; missing keys are 0, unknown keys are an error (a typo
        such as "mem" would otherwise silently mean zero memory)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise QuantityError(
                f"resources: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"expected {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def _values(self) -> tuple[float, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def _zip(self, other: ResourceVector, op: Callable[[float, float], float]) -> ResourceVector:
        if not isinstance(other, ResourceVector):
            raise TypeError(f"expected a ResourceVector, got {type(other).__name__}")
        return ResourceVector(*(op(a, b) for a, b in zip(self._values(), other._values())))


def _amount(value: Any, name: str) -> float:
    """A finite, non-negative float, or a QuantityError that names the field."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal)):
        raise QuantityError(f"{name}: {value!r} is not a number")
    number = _float(value, value, name)
    if not math.isfinite(number) or number < 0:
        raise QuantityError(f"{name}: {value!r} is not a valid amount (must be a finite number >= 0)")
    return number


def _float(amount: Any, text: Any, field: str) -> float:
    try:
        return float(amount)
    except OverflowError:
        raise QuantityError(f"{field}: {text!r} is too large to be a resource amount") from None


def _whole_devices(gpu: float) -> int:
    """GPUs rounded up to whole devices, forgiving float noise (3.0000000000000004 is 3)."""
    nearest = round(gpu)
    if math.isclose(gpu, nearest, rel_tol=1e-12, abs_tol=1e-9):
        return int(nearest)
    return math.ceil(gpu)

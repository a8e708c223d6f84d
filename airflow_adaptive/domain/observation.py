"""What the monitor observes: one usage sample of the workload, in resource units.

Units follow ``RESOURCES``: ``cpu`` in cores in use, ``memory`` in bytes (the cgroup's usage
as the OOM killer counts it, page cache and tmpfs included), ``gpu`` in GPUs busy (the sum of
utilisation / 100 over the devices the workload uses), ``gpu_memory`` in bytes used by the
workload's processes. A resource that no sampler could read this time is absent, never 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow_adaptive.domain.features import RESOURCES


@dataclass(frozen=True)
class UsageSample:
    time: float  # Unix seconds of the reading
    values: Mapping[str, float]
    step: int = 0  # sample number within the stage try (MLflow metric step)
    source: str = ""  # which sampler read it: "cgroup-v1", "cgroup-v2", "procfs", "nvml", ...

    def __post_init__(self) -> None:
        unknown = [r for r in self.values if r not in RESOURCES]
        if unknown:
            raise ValueError(f"unknown resources {unknown}; known: {RESOURCES}")
        for r, v in self.values.items():
            if not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
                raise ValueError(f"usage of {r} must be a non-negative number, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "step": self.step, "source": self.source, "values": dict(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "UsageSample":
        return cls(
            time=float(data["time"]),
            values={str(k): float(v) for k, v in data["values"].items()},
            step=int(data.get("step", 0)),
            source=str(data.get("source", "")),
        )


@dataclass
class UsageAccumulator:
    """Running peak and time-weighted mean per resource: the stage-run summary, in O(1) memory."""

    peak: dict[str, float] = field(default_factory=dict)
    _area: dict[str, float] = field(default_factory=dict)
    _span: dict[str, float] = field(default_factory=dict)
    _last: dict[str, tuple[float, float]] = field(default_factory=dict)
    count: int = 0

    def add(self, sample: UsageSample) -> None:
        self.count += 1
        for r, v in sample.values.items():
            self.peak[r] = max(self.peak.get(r, 0.0), v)
            if r in self._last:
                t0, v0 = self._last[r]
                dt = max(0.0, sample.time - t0)
                # Trapezoids: a mean that does not depend on the sampling interval.
                self._area[r] = self._area.get(r, 0.0) + dt * (v0 + v) / 2.0
                self._span[r] = self._span.get(r, 0.0) + dt
            self._last[r] = (sample.time, v)

    def mean(self) -> dict[str, float]:
        out = {}
        for r, (_, last) in self._last.items():
            span = self._span.get(r, 0.0)
            out[r] = self._area[r] / span if span > 0 else last
        return out

"""A predicted profile: what one stage is expected to need, per resource.

``median`` is the typical need; ``upper`` the covering quantile (calibrated so that the share
of runs exceeding it is ``1 - coverage`` on recent data). Sizing uses ``upper`` for limits and
may use ``median`` for requests; the monitor compares observations with both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow_adaptive.domain.features import RESOURCES


@dataclass(frozen=True)
class ResourceEstimate:
    median: float
    upper: float

    def __post_init__(self) -> None:
        for name in ("median", "upper"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if self.upper < self.median:
            raise ValueError(f"upper ({self.upper}) is below median ({self.median})")


@dataclass(frozen=True)
class PhaseNeed:
    """One predicted phase of a stage's run: from ``start_s`` to ``end_s`` after the start (the
    last phase lasts to the run's end, however long), needing ``median`` / ``upper``. ``step``:
    how far usage has jumped above the phase's running peak from one sample to the next (None:
    not learned, a profile from before steps were learned)."""

    start_s: float
    end_s: float
    median: float
    upper: float
    step: float | None = None

    def to_dict(self) -> dict[str, float]:
        out = {"start_s": self.start_s, "end_s": self.end_s, "median": self.median, "upper": self.upper}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class GpuScaling:
    """A stage's speed-up law learned from its history (``logic/gpu_scaling.py``):
    duration ~= ``a`` x gpus^(-``alpha``), ``alpha`` in [0, 1] (0: more GPUs do not shorten it; 1:
    linear speed-up). ``runs`` runs at the distinct GPU ``counts`` taught it; ``source`` is
    ``"stage"`` (its own runs at several counts) or ``"pooled"`` (alpha from similar stages that ran
    at several counts, ``a`` from its own runs)."""

    a: float
    alpha: float
    runs: int
    counts: tuple[int, ...]
    source: str = "stage"

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", tuple(int(c) for c in self.counts))
        if not (math.isfinite(self.a) and self.a > 0):
            raise ValueError(f"gpu scaling a must be a positive number, got {self.a!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"gpu scaling alpha must be in [0, 1], got {self.alpha!r}")

    def duration(self, gpus: float) -> float:
        return self.a * gpus ** -self.alpha

    def speedup(self, from_gpus: float, to_gpus: float) -> float:
        """How many times faster ``to_gpus`` runs than ``from_gpus`` by the law."""
        return (to_gpus / from_gpus) ** self.alpha

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "alpha": self.alpha, "runs": self.runs, "counts": list(self.counts), "source": self.source}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GpuScaling":
        return cls(float(data["a"]), float(data["alpha"]), int(data["runs"]), tuple(data.get("counts") or ()),
                   str(data.get("source", "stage")))


@dataclass(frozen=True)
class PredictedProfile:
    """Per-resource estimates (units of ``RESOURCE_UNITS``), duration in seconds, provenance."""

    resources: Mapping[str, ResourceEstimate]
    coverage: float
    duration: ResourceEstimate | None = None
    cold_start: bool = False
    schema_id: str = ""
    model_uri: str = ""
    model_version: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: How each resource evolves over the run (logic/usage_profile.py); empty: constant over the run.
    phases: Mapping[str, tuple[PhaseNeed, ...]] = field(default_factory=dict)
    #: The stage's learned duration-vs-GPU-count law (None: not learned, or not enough history).
    gpu_scaling: GpuScaling | None = None

    def __post_init__(self) -> None:
        unknown = [r for r in self.resources if r not in RESOURCES]
        if unknown:
            raise ValueError(f"unknown resources {unknown}; known: {RESOURCES}")
        if not 0.0 < self.coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {self.coverage}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "coverage": self.coverage,
            "cold_start": self.cold_start,
            "schema": self.schema_id,
            "model_uri": self.model_uri,
            "model_version": self.model_version,
            "resources": {r: {"median": e.median, "upper": e.upper} for r, e in self.resources.items()},
        }
        if self.duration is not None:
            out["duration_seconds"] = {"median": self.duration.median, "upper": self.duration.upper}
        if self.notes:
            out["notes"] = list(self.notes)
        if self.phases:
            out["phases"] = {r: [p.to_dict() for p in ps] for r, ps in self.phases.items()}
        if self.gpu_scaling is not None:
            out["gpu_scaling"] = self.gpu_scaling.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PredictedProfile":
        duration = data.get("duration_seconds")
        return cls(
            resources={
                r: ResourceEstimate(float(e["median"]), float(e["upper"]))
                for r, e in data["resources"].items()
            },
            coverage=float(data["coverage"]),
            duration=ResourceEstimate(float(duration["median"]), float(duration["upper"])) if duration else None,
            cold_start=bool(data.get("cold_start", False)),
            schema_id=str(data.get("schema", "")),
            model_uri=str(data.get("model_uri", "")),
            model_version=str(data.get("model_version", "")),
            notes=tuple(data.get("notes", ())),
            phases={r: tuple(PhaseNeed(float(p["start_s"]), float(p["end_s"]), float(p["median"]), float(p["upper"]),
                                       None if p.get("step") is None else float(p["step"]))
                             for p in ps) for r, ps in (data.get("phases") or {}).items()},
            gpu_scaling=GpuScaling.from_dict(data["gpu_scaling"]) if data.get("gpu_scaling") else None,
        )

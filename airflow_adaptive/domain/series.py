"""Usage series: what a stage used over time, one series per run.

A :class:`UsageSeries` is one run of one stage: per resource, sample times (seconds since the
run's start, increasing) and values (cores for cpu, bytes for memory and gpu_memory, GPUs for
gpu). A :class:`SeriesSet` holds the runs of every stage in time order, and what loading them
found (duplicated timestamps, negative values): real data is messy, and both are counted, not
refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

SERIES_RESOURCES = ("cpu", "memory", "gpu", "gpu_memory")
#: Resources whose shortfall kills (the kernel's OOM killer, CUDA out of memory); cpu and gpu
#: utilisation above the allocation is throttling, not a kill.
KILLING = ("memory", "gpu_memory")


@dataclass(frozen=True)
class UsageSeries:
    """One run of ``stage``: ``usage[resource] = (times_s, values)``, both float arrays."""

    series: str
    stage: str
    usage: Mapping[str, tuple[np.ndarray, np.ndarray]]
    #: When the run started, on a clock shared by all series (MLflow, Prometheus); None when the
    #: source has none (the long CSV): then the runs of different stages count as concurrent by rank.
    start: float | None = None

    @property
    def duration(self) -> float:
        return max((float(t[-1]) for t, _ in self.usage.values() if len(t)), default=0.0)

    def peak(self, resource: str) -> float | None:
        pair = self.usage.get(resource)
        return float(pair[1].max()) if pair is not None and len(pair[1]) else None


@dataclass
class SeriesLoadReport:
    source: str
    rows: int = 0
    duplicated_timestamps: int = 0  # a repeated (series, resource, time): the larger value is kept
    negative_values: int = 0  # counted as 0
    skipped: dict[str, int] = field(default_factory=dict)  # what a format leaves out, by reason

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "rows": self.rows, "duplicated_timestamps": self.duplicated_timestamps,
                "negative_values": self.negative_values, "skipped": dict(self.skipped)}


@dataclass(frozen=True)
class SeriesSet:
    """Runs of every stage; ``runs`` are in the order the stage ran them."""

    runs: tuple[UsageSeries, ...]
    report: SeriesLoadReport

    def __iter__(self) -> Iterator[UsageSeries]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def stages(self) -> list[str]:
        return list(dict.fromkeys(r.stage for r in self.runs))

    @property
    def resources(self) -> list[str]:
        present = {r for run in self.runs for r in run.usage}
        return [r for r in SERIES_RESOURCES if r in present]

    @property
    def samples(self) -> int:
        return sum(len(t) for run in self.runs for t, _ in run.usage.values())

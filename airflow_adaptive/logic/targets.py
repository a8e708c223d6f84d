"""What both profilers share and nothing else: target names, the prediction type, the
per-row keys and log targets of a job table, and how a job's estimates become its profile. Free of scikit-learn, so that loading a profiler
which does not need it (the scaling laws) costs no ``import sklearn`` (~1 s here) in a task's start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic import conformal

DURATION = "duration"


def level_strings(table: JobTable, level: tuple[str, ...]) -> np.ndarray:
    """The level's value per row as one string; numeric parts print as ``%g`` (4.0 -> '4')."""
    parts = []
    for name in level:
        col = table.features[name]
        if table.schema.feature(name).kind == "numeric":
            parts.append(np.array([f"{v:g}" for v in col], dtype=object))
        else:
            parts.append(col.astype(str).astype(object))
    if len(parts) == 1:
        return parts[0]
    return np.array(["\x1f".join(t) for t in zip(*parts)], dtype=object)


def target_values(table: JobTable, target: str) -> np.ndarray:
    """Log of the observed value (NaN when unknown or not positive)."""
    raw = table.run_time if target == DURATION else table.used[target]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(raw > 0, np.log(np.where(raw > 0, raw, 1.0)), np.nan)



@dataclass
class TargetPrediction:
    median_log: np.ndarray
    offsets: np.ndarray  # (n, len(conformal.QUANTILES)), log scale, non-decreasing per row
    stratum: np.ndarray

    def quantile(self, coverage: float) -> np.ndarray:
        return np.exp(self.median_log + conformal.interpolate_level(self.offsets, coverage))


def profile_of(estimates: Mapping[str, ResourceEstimate], cold: set[str], *, coverage: float,
               schema_id: str) -> PredictedProfile:
    """One job's PredictedProfile from per-target estimates; ``cold``: the targets with no history
    of their own (a pooled guess). A cold resource is left out, so the user's request sizes it
    and the others are still sized by their own history (an evaluation stage whose CPU was never
    recorded keeps its memory prediction); the profile is a cold start only when every resource
    is cold."""
    resources = {t: e for t, e in estimates.items() if t != DURATION}
    warm = {t: e for t, e in resources.items() if t not in cold}
    notes = ()
    if warm and len(warm) < len(resources):
        left = ", ".join(sorted(set(resources) - set(warm)))
        notes = (f"cold start for {left}: no history of this stage's {left} yet; the user's request sizes it",)
    return PredictedProfile(resources=warm or resources, coverage=coverage, duration=estimates.get(DURATION),
                            cold_start=not warm, schema_id=schema_id, notes=notes)

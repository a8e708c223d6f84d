"""What a workload's past runs say about its next one: sequence features without future leaks.

For each job and each *level* (a tuple of key features, e.g. ``("user", "executable")``), only
jobs of the same level value that **ended strictly before the job was submitted** count. From
their observed values (log scale, in end order) come the recent-run features:

| feature | meaning |
|---|---|
| ``n`` | how many runs are known (log1p) |
| ``last1..3`` | the last three observed values |
| ``max_k`` / ``med_k`` / ``min_k`` | over the last ``K`` runs |
| ``max_all`` | the largest ever observed |
| ``age`` | seconds since the last run ended (log1p) |

The table path is vectorised (sort by level and end, ``searchsorted`` each submit); the single
job path (``SequenceState``) keeps the last runs per level value and gives the same numbers,
which a test checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Window of recent runs summarised by max/median/min: about a week of a daily job.
K = 8
LAST = 3
STATS = ("n", *(f"last{i}" for i in range(1, LAST + 1)), "max_k", "med_k", "min_k", "max_all", "age")


def level_name(level: tuple[str, ...]) -> str:
    return "+".join(level)


def feature_names(levels: list[tuple[str, ...]]) -> list[str]:
    return [f"{level_name(lv)}:{s}" for lv in levels for s in STATS]


def level_codes(columns: list[np.ndarray]) -> np.ndarray:
    """Integer id per row for the combination of categorical columns."""
    if len(columns) == 1:
        _, codes = np.unique(columns[0].astype(str), return_inverse=True)
        return codes.astype(np.int64)
    joined = np.array(["\x1f".join(map(str, t)) for t in zip(*columns)])
    _, codes = np.unique(joined, return_inverse=True)
    return codes.astype(np.int64)


def sequence_features(
    codes: np.ndarray, submit: np.ndarray, end: np.ndarray, log_value: np.ndarray
) -> np.ndarray:
    """(n, len(STATS)) features for one level; rows whose value is unknown teach nothing."""
    n = len(codes)
    out = np.full((n, len(STATS)), np.nan)
    observed = np.isfinite(log_value) & np.isfinite(end)
    obs_idx = np.flatnonzero(observed)
    order = obs_idx[np.lexsort((end[obs_idx], codes[obs_idx]))]
    s_codes, s_end, s_val = codes[order], end[order], log_value[order]
    # Position of each code's first observed run, and the searchable (code, end) axis.
    scale = float(max(np.nanmax(np.abs(end)) if len(end) else 1.0, np.nanmax(np.abs(submit)) if n else 1.0)) * 4 + 1
    axis = s_codes * scale + s_end
    first = np.searchsorted(s_codes, codes, side="left")
    stop = np.searchsorted(axis, codes * scale + submit, side="left")  # runs that ended < submit
    count = stop - first
    out[:, 0] = np.log1p(count)
    has = count > 0
    if not len(order):
        out[:, 0] = 0.0
        return out
    # Last values: positions stop-1, stop-2, ... when still inside the same code's segment.
    window = np.full((n, K), np.nan)
    for j in range(1, K + 1):
        ok = count >= j
        window[ok, j - 1] = s_val[stop[ok] - j]
    for j in range(LAST):
        out[:, 1 + j] = window[:, j]
    # Only rows with a known run: an all-NaN window has no max/median/min (and numpy warns).
    recent = window[has]
    out[has, LAST + 1] = np.nanmax(recent, axis=1)
    out[has, LAST + 2] = np.nanmedian(recent, axis=1)
    out[has, LAST + 3] = np.nanmin(recent, axis=1)
    # Expanding max within each code segment: offset by code so one accumulate serves all.
    span = float(np.nanmax(np.abs(s_val))) * 2 + 1
    cummax = np.maximum.accumulate(s_val + s_codes * span) - s_codes * span
    out[has, LAST + 4] = cummax[stop[has] - 1]
    out[has, LAST + 5] = np.log1p(np.maximum(submit[has] - s_end[stop[has] - 1], 0.0))
    return out


@dataclass
class SequenceState:
    """Last runs per level value, kept by a fitted profiler to featurise one new job."""

    values: dict[str, list[float]] = field(default_factory=dict)  # last K log values, oldest first
    count: dict[str, int] = field(default_factory=dict)
    max_all: dict[str, float] = field(default_factory=dict)
    last_end: dict[str, float] = field(default_factory=dict)

    def observe(self, key: str, log_value: float, end: float) -> None:
        vals = self.values.setdefault(key, [])
        vals.append(float(log_value))
        del vals[:-K]
        self.count[key] = self.count.get(key, 0) + 1
        self.max_all[key] = max(self.max_all.get(key, -np.inf), float(log_value))
        self.last_end[key] = max(self.last_end.get(key, -np.inf), float(end))

    def features(self, key: str, submit: float) -> np.ndarray:
        out = np.full(len(STATS), np.nan)
        n = self.count.get(key, 0)
        out[0] = np.log1p(n)
        if not n:
            return out
        recent = self.values[key][::-1]  # newest first
        for j in range(min(LAST, len(recent))):
            out[1 + j] = recent[j]
        out[LAST + 1] = max(recent)
        out[LAST + 2] = float(np.median(recent))
        out[LAST + 3] = min(recent)
        out[LAST + 4] = self.max_all[key]
        out[LAST + 5] = np.log1p(max(submit - self.last_end[key], 0.0))
        return out

    def to_dict(self) -> dict:
        return {"values": self.values, "count": self.count, "max_all": self.max_all, "last_end": self.last_end}

    @classmethod
    def from_dict(cls, data: dict) -> "SequenceState":
        return cls(dict(data["values"]), dict(data["count"]), dict(data["max_all"]), dict(data["last_end"]))

"""More GPUs for a GPU-bound, long stage: the speed-up law learned from history, and the decision
(an elastic stage) or recommendation (a fixed world size) it leads to. Pure.

The law: ``duration ~= a * gpus ** -alpha``, fitted on a stage's runs as (GPU count, run time)
pairs in log space, ``alpha`` clipped to [0, 1] (0: more GPUs do not help; 1: linear speed-up;
above 1 is noise, below 0 is contention that a bigger count would not fix either).

| constant | value | why |
|---|---|---|
| ``MIN_COUNTS`` | 2 | a slope needs two distinct GPU counts |
| ``MIN_RUNS_PER_COUNT`` | 2 | one run per count is one noisy sample (a slow data load, a straggler); the fit uses each count's median |
| ``POOL_MIN_STAGES`` | 2 | a pooled alpha (for stages that only ever ran at one count) needs at least two stages that ran at several, so no single stage's law is everyone's |
| ``saturated`` | 0.9 | summed GPU utilisation at >= 90% of the count: the GPUs are the bottleneck (NVML's utilisation is the share of time a kernel ran) |
| ``long_s`` | 1800 s | below half an hour a bigger pod's longer wait for a node eats the gain |
| ``min_speedup`` | 1.10 | asking for more GPUs for less than 10% is not worth the scheduling risk |
| ``max_extrapolation`` | 2 | never beyond twice the largest count seen in history: the law is a fit, not a promise |

The decision never goes above an elastic stage's declared ``max``; the recommendation for a
fixed world size never exceeds twice its count. Both are anchored on the profile's predicted
duration (made for the user's count), scaled by the law: ``expected(n) = d * (ref / n) ** alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from airflow_adaptive.domain.profile import GpuScaling
from airflow_adaptive.domain.records import JobTable

MIN_COUNTS = 2
MIN_RUNS_PER_COUNT = 2
POOL_MIN_STAGES = 2
#: Features that hold a run's GPU count, in order of preference (the first present and known wins).
GPU_COUNT_FEATURES = ("world_size", "gpus", "requested_gpu")
NOT_ENOUGH = (f"not enough history to learn the speed-up from more GPUs (it needs at least {MIN_RUNS_PER_COUNT} "
              f"runs at each of at least {MIN_COUNTS} distinct GPU counts)")

Kind = Literal["decision", "recommendation", "hold", "none"]


@dataclass(frozen=True)
class GpuScalingConfig:
    saturated: float = 0.9
    long_s: float = 1800.0
    min_speedup: float = 1.10
    max_extrapolation: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.saturated <= 1:
            raise ValueError(f"saturated must be in (0, 1], got {self.saturated!r}")
        if not self.long_s >= 0:
            raise ValueError(f"long_s must be >= 0, got {self.long_s!r}")
        if not self.min_speedup >= 1:
            raise ValueError(f"min_speedup must be >= 1, got {self.min_speedup!r}")
        if not self.max_extrapolation >= 1:
            raise ValueError(f"max_extrapolation must be >= 1, got {self.max_extrapolation!r}")


@dataclass(frozen=True)
class GpuAdvice:
    """``decision``: run with ``gpus`` (an elastic stage, within its bounds); ``recommendation``:
    the author should give it ``gpus`` next time (or widen its bounds); ``hold``: saturated and
    long, but nothing to advise (not enough history, no speed-up); ``none``: not GPU-bound or not
    long. ``gpus`` is the current count unless advised otherwise."""

    kind: Kind
    gpus: int
    current: int
    reason: str
    predicted_s: float | None = None  # the predicted duration at the current count
    expected_s: float | None = None  # ... and at ``gpus``
    speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "gpus": self.gpus, "current": self.current, "reason": self.reason}
        for k in ("predicted_s", "expected_s", "speedup"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out


# --- learning ------------------------------------------------------------------------------


def _per_count(gpus: Sequence[float], durations: Sequence[float]) -> dict[int, np.ndarray]:
    """Log durations per GPU count, only counts with enough runs; rows with no count or run time dropped."""
    g = np.asarray(gpus, dtype=float)
    d = np.asarray(durations, dtype=float)
    ok = np.isfinite(g) & np.isfinite(d) & (g >= 1) & (d > 0)
    out: dict[int, np.ndarray] = {}
    for count in np.unique(np.round(g[ok])):
        logs = np.log(d[ok][np.round(g[ok]) == count])
        if len(logs) >= MIN_RUNS_PER_COUNT:
            out[int(count)] = logs
    return out


def _slope_terms(groups: Mapping[int, np.ndarray]) -> tuple[float, float, float, float, float]:
    """Weighted (by runs) sums for a least-squares fit of median log duration on log count:
    (sum w, mean x, mean y, sum w dx dy, sum w dx dx)."""
    x = np.log(np.array(list(groups), dtype=float))
    y = np.array([float(np.median(v)) for v in groups.values()])
    w = np.array([len(v) for v in groups.values()], dtype=float)
    mx, my = float(np.average(x, weights=w)), float(np.average(y, weights=w))
    return float(w.sum()), mx, my, float(np.sum(w * (x - mx) * (y - my))), float(np.sum(w * (x - mx) ** 2))


def fit_gpu_scaling(gpus: Sequence[float], durations: Sequence[float]) -> GpuScaling | None:
    """The law from one stage's runs, or None when there is not enough history (:data:`NOT_ENOUGH`)."""
    groups = _per_count(gpus, durations)
    if len(groups) < MIN_COUNTS:
        return None
    n, mx, my, sxy, sxx = _slope_terms(groups)
    alpha = min(max(-sxy / sxx, 0.0), 1.0)
    return GpuScaling(a=math.exp(my + alpha * mx), alpha=alpha, runs=int(n), counts=tuple(sorted(groups)), source="stage")


def pooled_alpha(stages: Mapping[str, Mapping[int, np.ndarray]]) -> float | None:
    """One alpha from every stage that ran at several counts (each around its own mean), or None."""
    terms = [_slope_terms(g) for g in stages.values() if len(g) >= MIN_COUNTS]
    if len(terms) < POOL_MIN_STAGES:
        return None
    sxx = sum(t[4] for t in terms)
    return min(max(-sum(t[3] for t in terms) / sxx, 0.0), 1.0) if sxx > 0 else None


def gpu_counts(table: JobTable) -> np.ndarray:
    """Each run's GPU count: the first of :data:`GPU_COUNT_FEATURES` known for the row, else its
    requested ``gpu``; NaN when none is known."""
    out = np.full(len(table), np.nan)
    columns = [np.asarray(table.features[f], dtype=float) for f in GPU_COUNT_FEATURES
               if f in table.features and f in table.schema.names and table.schema.feature(f).kind == "numeric"]
    if "gpu" in table.requested:
        columns.append(np.asarray(table.requested["gpu"], dtype=float))
    for col in columns:
        fill = np.isnan(out) & np.isfinite(col) & (col > 0)
        out[fill] = col[fill]
    return out


def learn_gpu_scaling(table: JobTable, pooled: bool = True) -> dict[str, GpuScaling]:
    """Per stage (keyed like ``logic/targets.level_strings(table, table.schema.key)``), its law.

    A stage with enough runs at several counts gets its own (``source="stage"``). With ``pooled``,
    a stage that ran only at one count (a fixed world size: the usual case) gets the alpha pooled
    from the stages that ran at several, and its own ``a`` (``source="pooled"``); a stage with too
    few runs at any count gets nothing.
    """
    from airflow_adaptive.logic.targets import level_strings

    if len(table) == 0:
        return {}
    counts, durations = gpu_counts(table), np.asarray(table.run_time, dtype=float)
    with_gpus = np.flatnonzero(np.isfinite(counts) & (counts >= 1))
    if len(with_gpus) == 0:  # a CPU-only history (most traces): nothing to learn, at no cost
        return {}
    keys = level_strings(table, table.schema.key) if table.schema.key else np.array(["*"] * len(table), dtype=object)
    # One pass over the rows with GPUs, grouped by key (a trace has thousands of keys).
    names, inverse = np.unique(keys[with_gpus].astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(names) + 1))
    rows_of = {str(names[i]): with_gpus[order[bounds[i]:bounds[i + 1]]] for i in range(len(names))}
    groups = {key: _per_count(counts[rows], durations[rows]) for key, rows in rows_of.items()}
    out: dict[str, GpuScaling] = {}
    for key, g in groups.items():
        law = fit_gpu_scaling(counts[rows_of[key]], durations[rows_of[key]]) if len(g) >= MIN_COUNTS else None
        if law is not None:
            out[key] = law
    alpha = pooled_alpha(groups) if pooled else None
    if alpha is not None:
        for key, g in groups.items():
            if key not in out and g:
                n, mx, my, _, _ = _slope_terms(g)
                out[key] = GpuScaling(a=math.exp(my + alpha * mx), alpha=alpha, runs=int(n), counts=tuple(sorted(g)),
                                      source="pooled")
    return out


# --- deciding ------------------------------------------------------------------------------


def decide(current: int, utilisation_upper: float | None, duration_s: float | None, scaling: GpuScaling | None,
           elastic: tuple[int, int] | None = None, predicted_at: int | None = None,
           config: GpuScalingConfig = GpuScalingConfig()) -> GpuAdvice:
    """What to do about ``current`` GPUs for a stage predicted to keep ``utilisation_upper`` GPUs
    busy (summed) for ``duration_s`` seconds (made for ``predicted_at`` GPUs, default ``current``).
    ``elastic``: the declared (min, max), else the count is the job's fixed world size."""
    ref = predicted_at or current

    def none(kind: Kind, why: str, **kw: Any) -> GpuAdvice:
        return GpuAdvice(kind, current, current, why, **kw)

    if current <= 0:
        return none("none", "no GPUs")
    if utilisation_upper is None:
        return none("none", "GPU utilisation is not predicted")
    if utilisation_upper < config.saturated * current:
        return none("none", f"not GPU-saturated (predicted utilisation upper {utilisation_upper:.2f} of {current} GPUs)")
    if duration_s is None or duration_s <= 0:
        return none("none", "GPU-saturated, but the duration is not predicted")
    law = scaling

    def expected(n: int) -> float:
        return duration_s * (ref / n) ** (law.alpha if law else 0.0)

    now = expected(current)
    if now < config.long_s:
        return none("none", f"GPU-saturated, but short (predicted {_duration(now)}, under {_duration(config.long_s)})",
                    predicted_s=now)
    saturated = (f"GPU-saturated (utilisation upper {utilisation_upper:.2f} of {current} GPUs) and long "
                 f"(predicted {_duration(now)})")
    if law is None:
        return none("hold", f"{saturated}; {NOT_ENOUGH}", predicted_s=now)
    learned = (f"duration ~ gpus^-{law.alpha:.2f}, learned from {law.runs} runs at {_counts(law.counts)} GPUs"
               + (" (alpha pooled from similar stages)" if law.source == "pooled" else ""))
    reach = max(current, int(math.floor(config.max_extrapolation * max(law.counts or (current,)))))
    cap = min(elastic[1], reach) if elastic else min(2 * current, reach)
    target = _target(current, cap, expected, law.alpha, config)
    if target is None and elastic and current >= elastic[1]:
        beyond = _target(current, min(2 * current, reach), expected, law.alpha, config)
        if beyond is not None:
            return GpuAdvice("recommendation", beyond, current,
                             f"{saturated}, at its declared maximum of {elastic[1]} GPUs: raising elastic_gpus max to {beyond} "
                             f"would take about {_duration(expected(beyond))} (x{(beyond / current) ** law.alpha:.2f} faster; {learned})",
                             now, expected(beyond), (beyond / current) ** law.alpha)
    if target is None:
        best = (max(cap, current + 1) / current) ** law.alpha
        return none("hold", f"{saturated}, but more GPUs would hardly shorten it (x{best:.2f} at most; {learned})",
                    predicted_s=now)
    speedup = (target / current) ** law.alpha
    if elastic:
        why = (f"elastic: {target} GPUs instead of {current} (within the declared [{elastic[0]}, {elastic[1]}]): {saturated}; "
               f"expected {_duration(expected(target))} (x{speedup:.2f} faster; {learned})")
        return GpuAdvice("decision", target, current, why, now, expected(target), speedup)
    why = (f"recommendation for the next run: {saturated}; {target} GPUs would take about {_duration(expected(target))} "
           f"(x{speedup:.2f} faster; {learned}). The GPU count is the job's world size, so it is kept: set "
           f"nvidia.com/gpu to {target}, or declare elastic_gpus={{'min': {current}, 'max': {target}}} to let the operator choose")
    return GpuAdvice("recommendation", target, current, why, now, expected(target), speedup)


def _target(current: int, cap: int, expected, alpha: float, config: GpuScalingConfig) -> int | None:
    """The smallest count above ``current`` (up to ``cap``) that is worth it and brings the stage
    under ``long_s``; else ``cap`` when it is worth it; else None."""
    worth = [n for n in range(current + 1, cap + 1) if (n / current) ** alpha >= config.min_speedup]
    if not worth:
        return None
    short = [n for n in worth if expected(n) <= config.long_s]
    return short[0] if short else worth[-1]


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _counts(counts: Sequence[int]) -> str:
    return ", ".join(str(c) for c in counts)

"""Conformal calibration of the median model's residuals, per stratum, over a sliding window.

A median model in log space says what a job typically needs; how far above it to size depends
on how predictable the job is. Jobs are split into strata by what their history says (never
seen, seen but not at this size, few runs, stable runs, variable runs) and, within each stratum,
the empirical quantiles of the last ``window`` out-of-sample residuals give the offset for each
coverage level (split conformal, Mondrian by stratum). Only residuals of jobs that **ended**
before the moment of prediction are used, so the calibration holds on recent data without
looking ahead.

| constant | value | why |
|---|---|---|
| ``QUANTILES`` | 0.5 ... 0.9995 | the levels a sizing policy may choose among |
| ``WINDOW`` | 3000 | ~2 weeks of LANL-CM5 jobs per stratum: recent, yet 30 samples beyond p99 |
| ``MIN_RESIDUALS`` | 50 | below this a stratum borrows the pooled residuals |
| ``STABLE_SPREAD`` | 0.05 | max/min of the last runs within 5%: a job that repeats itself |
"""

from __future__ import annotations

import numpy as np

QUANTILES = np.array(
    [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995]
)
WINDOW = 3000
MIN_RESIDUALS = 50
STABLE_SPREAD = 0.05
#: Offsets (log scale) assumed before any residual is known: e^3 = 20x, the prior is wide.
UNINFORMED_OFFSETS = np.linspace(0.0, 3.0, len(QUANTILES))

STRATA = ("cold", "new_size", "few_runs", "stable", "variable")


def strata(n_finest: np.ndarray, n_key: np.ndarray, spread_finest: np.ndarray) -> np.ndarray:
    """Stratum index per job from its history counts (not log) and recent spread (log)."""
    s = np.full(len(n_finest), 4, dtype=np.int64)
    s[n_finest < 3] = 2
    s[(n_finest >= 3) & (spread_finest < STABLE_SPREAD)] = 3
    s[(n_finest == 0)] = 1
    s[(n_finest == 0) & (n_key == 0)] = 0
    return s


def _window_quantiles(residuals: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    if len(residuals) >= MIN_RESIDUALS:
        return np.quantile(residuals, QUANTILES)
    if len(pooled) >= MIN_RESIDUALS:
        return np.quantile(pooled, QUANTILES)
    return UNINFORMED_OFFSETS.copy()


def batch_offsets(stratum_of_residual: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """(len(STRATA), len(QUANTILES)) offsets from the last ``WINDOW`` residuals of each stratum.

    ``residuals`` must be in end order (oldest first).
    """
    pooled = residuals[-WINDOW:]
    table = np.empty((len(STRATA), len(QUANTILES)))
    for s in range(len(STRATA)):
        table[s] = _window_quantiles(residuals[stratum_of_residual == s][-WINDOW:], pooled)
    return np.maximum.accumulate(table, axis=1)


def online_offsets(
    stratum: np.ndarray,
    submit: np.ndarray,
    end: np.ndarray,
    residual: np.ndarray,
    refresh_every: int = 25,
) -> np.ndarray:
    """(n, len(QUANTILES)) offsets per job from residuals of jobs that ended before its submit.

    ``residual`` is NaN for jobs that have none (no model yet, unknown usage). Window quantiles
    are refreshed every ``refresh_every`` new residuals per stratum, which keeps the replay fast
    and changes an offset by at most one job's worth of evidence.
    """
    n = len(stratum)
    out = np.empty((n, len(QUANTILES)))
    known = np.flatnonzero(np.isfinite(residual))
    pooled_order = known[np.argsort(end[known], kind="stable")]
    pooled_end, pooled_res = end[pooled_order], residual[pooled_order]
    for s in range(len(STRATA)):
        jobs = np.flatnonzero(stratum == s)
        if not len(jobs):
            continue
        mine = pooled_order[stratum[pooled_order] == s]
        m_end, m_res = end[mine], residual[mine]
        seen = np.searchsorted(m_end, submit[jobs], side="left")
        seen_pooled = np.searchsorted(pooled_end, submit[jobs], side="left")
        checkpoint = (seen // refresh_every) * refresh_every
        cache: dict[tuple[int, int], np.ndarray] = {}
        for j, c, p in zip(jobs, checkpoint, (seen_pooled // refresh_every) * refresh_every):
            key = (int(c), int(p) if c < MIN_RESIDUALS else -1)
            row = cache.get(key)
            if row is None:
                row = _window_quantiles(m_res[max(0, c - WINDOW) : c], pooled_res[max(0, p - WINDOW) : p])
                cache[key] = row
            out[j] = row
    return np.maximum.accumulate(out, axis=1)


def interpolate_level(offsets: np.ndarray, coverage: float) -> np.ndarray:
    """Offsets at ``coverage`` (linear between grid levels), for each row of ``offsets``."""
    coverage = float(np.clip(coverage, QUANTILES[0], QUANTILES[-1]))
    hi = int(np.searchsorted(QUANTILES, coverage))
    if QUANTILES[hi] == coverage:
        return offsets[..., hi]
    lo = hi - 1
    t = (coverage - QUANTILES[lo]) / (QUANTILES[hi] - QUANTILES[lo])
    return offsets[..., lo] * (1 - t) + offsets[..., hi] * t

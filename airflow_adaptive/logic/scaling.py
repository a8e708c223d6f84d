"""The small-history profiler: per-workload scaling laws for pipelines with few finished runs.

The :class:`~airflow_adaptive.logic.profiler.JobProfiler` learns from thousands of trace jobs;
a new pipeline has a dozen stage runs. With so few rows a gradient-boosted tree predicts one
constant (its leaves need 20 rows) and cannot extrapolate to a larger data size, which is the
one thing a stage's next run is sure to have. What does hold with little data is that an ML
stage's needs follow its input size: usage ~ a * size^b, a straight line in log-log space.

Per target and per workload key (for stages: ``(dag_id, task_id)``):

1. **Median**: least squares of log usage on log1p of the key's *size feature* (the numeric
   feature whose log best explains usage within the key, chosen on the training rows; ties go to
   the schema's order), fitted per key when the key has ``MIN_KEY_ROWS`` runs at two or more
   sizes, else the key's mean; a key never seen uses the same law fitted across all keys (its
   *cold* stratum).
2. **Covering quantile**: leave-one-out residuals of each key's law (what a run the law had not
   seen deviated), pooled over keys; the offset at coverage q is the conformal order statistic
   ``ceil((n + 1) q)`` of the n residuals, and beyond the largest residual the largest plus
   ``TAIL_MARGIN`` (a dozen residuals cannot vouch for a 1-in-100 event). Cold keys get the
   pooled law's residuals plus the same tail margin.

| constant | value | why |
|---|---|---|
| ``MIN_KEY_ROWS`` | 3 | two points define any line; a third is the first check of it |
| ``MIN_ROWS`` | 6 | fewer finished runs than this teach nothing we would size by |
| ``TAIL_MARGIN`` | log(1.15) | 15% over the worst seen miss: the order statistic's own uncertainty at n~10 |
| ``SLOPE_BOUNDS`` | [0, 2] | usage neither falls with input size nor grows faster than quadratically |

Same contract as ``JobProfiler`` (fit returns self, learned attributes end in ``_``,
``predict_targets`` gives :class:`~airflow_adaptive.logic.profiler.TargetPrediction`), so the
registry, the pyfunc wrapper and the champion/challenger rule treat both alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic import conformal
from airflow_adaptive.logic.targets import DURATION, TargetPrediction, level_strings, profile_of, target_values

MIN_KEY_ROWS = 3
MIN_ROWS = 6
TAIL_MARGIN = math.log(1.15)
SLOPE_BOUNDS = (0.0, 2.0)
#: The conformal strata this profiler uses (a subset of ``conformal.STRATA``).
COLD, KNOWN = 0, 4


@dataclass(frozen=True)
class Law:
    """log usage = intercept + slope * log1p(feature); slope 0 means "the key's mean"."""

    feature: str | None
    intercept: float
    slope: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.feature is None or self.slope == 0.0:
            return np.full(len(x), self.intercept)
        return self.intercept + self.slope * x


def fit_law(x: np.ndarray, y: np.ndarray, feature: str | None) -> Law:
    """Least squares of ``y`` on ``x`` with the slope kept in ``SLOPE_BOUNDS``."""
    known = np.isfinite(x) & np.isfinite(y)
    x, y = x[known], y[known]
    if feature is None or len(y) < 2 or np.ptp(x) == 0:
        return Law(None, float(np.mean(y)) if len(y) else 0.0, 0.0)
    slope = float(np.clip(np.polyfit(x, y, 1)[0], *SLOPE_BOUNDS))
    return Law(feature, float(np.mean(y - slope * x)), slope)


def leave_one_out(x: np.ndarray, y: np.ndarray, feature: str | None) -> np.ndarray:
    """Residual of each row under the law fitted without it (NaN where nothing is left to fit)."""
    out = np.full(len(y), np.nan)
    for i in range(len(y)):
        rest = np.arange(len(y)) != i
        if rest.sum() >= 1:
            out[i] = y[i] - fit_law(x[rest], y[rest], feature).predict(x[i : i + 1])[0]
    return out


def conformal_offsets(residuals: np.ndarray) -> np.ndarray:
    """Offsets at each ``conformal.QUANTILES`` level from a small residual sample (see module)."""
    r = np.sort(residuals[np.isfinite(residuals)])
    n = len(r)
    if n == 0:
        return conformal.UNINFORMED_OFFSETS.copy()
    ranks = np.ceil((n + 1) * conformal.QUANTILES).astype(int)  # 1-based order statistics
    out = np.where(ranks <= n, r[np.minimum(ranks, n) - 1], r[-1] + TAIL_MARGIN)
    return np.maximum.accumulate(np.maximum(out, 0.0))


class ScalingProfiler:
    """Per-key log-log scaling laws with conformal offsets; for histories of a few dozen runs.

    scikit-learn's estimator contract (``get_params``, ``fit`` returns self, learned attributes
    end in ``_``) without its base class: importing ``sklearn.base`` would cost a task ~1 s."""

    def __init__(self, coverage: float = 0.99):
        self.coverage = coverage

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"coverage": self.coverage}

    def __repr__(self) -> str:
        return f"ScalingProfiler(coverage={self.coverage})"

    def fit(self, X: JobTable, y: Any = None) -> "ScalingProfiler":
        if not isinstance(X, JobTable):
            raise TypeError("ScalingProfiler.fit takes a JobTable (records with times), not an array")
        if not 0.5 <= self.coverage < 1.0:
            raise UserError(f"coverage must be in [0.5, 1), got {self.coverage}")
        schema = X.schema
        self.schema_ = schema
        self.categories_ = {f.name: sorted({str(v) for v in X.features[f.name]}) for f in schema.features if f.kind == "categorical"}
        self.numeric_ = [f.name for f in schema.features if f.kind == "numeric"]
        keys = level_strings(X, schema.key)
        sizes = {name: np.log1p(np.maximum(X.features[name].astype(float), 0.0)) for name in self.numeric_}
        self.laws_: dict[str, dict[str, Law]] = {}
        self.pooled_: dict[str, Law] = {}
        self.offsets_: dict[str, np.ndarray] = {}
        self.training_rows_: dict[str, int] = {}
        for target in (*schema.resources, DURATION):
            y_log = target_values(X, target)
            rows = np.flatnonzero(np.isfinite(y_log))
            if len(rows) < MIN_ROWS:
                continue
            laws, residuals = {}, []
            for key in dict.fromkeys(keys[rows]):
                mine = rows[keys[rows] == key]
                feature = _size_feature(sizes, mine, y_log) if len(mine) >= MIN_KEY_ROWS else None
                x = sizes[feature][mine] if feature else np.zeros(len(mine))
                laws[key] = fit_law(x, y_log[mine], feature)
                residuals.append(leave_one_out(x, y_log[mine], feature))
            pooled_feature = _size_feature(sizes, rows, y_log)
            px = sizes[pooled_feature][rows] if pooled_feature else np.zeros(len(rows))
            self.pooled_[target] = fit_law(px, y_log[rows], pooled_feature)
            table = np.empty((len(conformal.STRATA), len(conformal.QUANTILES)))
            table[:] = conformal_offsets(np.concatenate(residuals))
            table[COLD] = conformal_offsets(leave_one_out(px, y_log[rows], pooled_feature)) + TAIL_MARGIN
            self.laws_[target], self.offsets_[target] = laws, table
            self.training_rows_[target] = len(rows)
        if not self.laws_:
            raise UserError(
                f"no resource has {MIN_ROWS} or more finished runs with known usage ({len(X)} records of "
                f"schema {schema.id}); run the pipeline a few more times (seed runs) before training"
            )
        self.trained_until_ = float(np.nanmax(X.end))
        return self

    def predict_targets(self, X: JobTable) -> dict[str, TargetPrediction]:
        _check_fitted(self)
        self.schema_.require_same(X.schema, "the jobs")
        keys = level_strings(X, self.schema_.key)
        out = {}
        for target, laws in self.laws_.items():
            median = np.empty(len(X))
            stratum = np.full(len(X), KNOWN, dtype=np.int64)
            for i, key in enumerate(keys):
                law = laws.get(key)
                if law is None:
                    law, stratum[i] = self.pooled_[target], COLD
                x = np.log1p(max(float(X.features[law.feature][i]), 0.0)) if law.feature else 0.0
                median[i] = law.predict(np.array([x]))[0] if np.isfinite(x) else law.intercept
            out[target] = TargetPrediction(median, self.offsets_[target][stratum], stratum)
        return out

    def predict(self, X: JobTable) -> dict[str, dict[str, np.ndarray]]:
        return {t: {"median": np.exp(p.median_log), "upper": p.quantile(self.coverage)} for t, p in self.predict_targets(X).items()}

    def predict_profile(self, job: Mapping[str, Any], submit: float | None = None, where: str = "job") -> PredictedProfile:
        _check_fitted(self)
        features = self.schema_.validate_job(job, where)
        now = self.trained_until_ if submit is None else float(submit)
        table = JobTable.from_rows(self.schema_, [{"job_id": where, "submit": now, "end": now, "run_time": 0.0, "features": features}])
        preds = self.predict_targets(table)
        estimates = {}
        for t, p in preds.items():
            median = float(np.exp(p.median_log[0]))
            estimates[t] = ResourceEstimate(median, max(float(p.quantile(self.coverage)[0]), median))
        cold = {t for t, p in preds.items() if int(p.stratum[0]) == COLD}
        return profile_of(estimates, cold, coverage=self.coverage, schema_id=self.schema_.id)


def _check_fitted(profiler: "ScalingProfiler") -> None:
    if not hasattr(profiler, "laws_"):
        raise UserError("this ScalingProfiler is not fitted yet: call fit() with a JobTable of finished runs first")


def _size_feature(sizes: Mapping[str, np.ndarray], rows: np.ndarray, y_log: np.ndarray) -> str | None:
    """The numeric feature whose log best explains ``y_log`` over ``rows`` (None if none varies)."""
    best, best_r = None, 0.0
    y = y_log[rows]
    for name, col in sizes.items():
        x = col[rows]
        known = np.isfinite(x)
        if known.sum() < 2 or np.ptp(x[known]) == 0 or np.ptp(y[known]) == 0:
            continue
        r = abs(float(np.corrcoef(x[known], y[known])[0, 1]))
        if r > best_r + 1e-9:
            best, best_r = name, r
    return best


#: Below this many records the scaling laws beat the gradient-boosted profiler (whose leaves
#: need 20 rows each and which cannot extrapolate to a larger input); above it, the trees learn
#: what the laws cannot (interactions, history sequences).
SMALL_HISTORY = 200


def profiler_for(table: JobTable, coverage: float = 0.99):
    """An unfitted profiler suited to ``table``'s size (see ``SMALL_HISTORY``)."""
    from airflow_adaptive.logic.profiler import JobProfiler

    return ScalingProfiler(coverage=coverage) if len(table) < SMALL_HISTORY else JobProfiler(coverage=coverage)

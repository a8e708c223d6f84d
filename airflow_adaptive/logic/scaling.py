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
   sizes, else the key's mean.
2. **A stage never seen (cold start)** is predicted from *similar stages*: the first of the
   schema's coarser levels (same task id, same algorithm and framework, same model family, same
   algorithm) whose group holds ``MIN_GROUP_ROWS`` runs, else all stages. The group's law may
   use the product of two features (memory against parameters x batch size), which is what
   carries across stages of different sizes.
3. **Covering quantile**: leave-one-out residuals of each key's law (what a run the law had not
   seen deviated), pooled over keys; the offset at coverage q is the conformal order statistic
   ``ceil((n + 1) q)`` of the n residuals, and beyond the largest residual the largest plus
   ``TAIL_MARGIN`` (a dozen residuals cannot vouch for a 1-in-100 event). A cold stage's offsets
   come from *leave-one-stage-out* residuals (each stage predicted as if it had never run, from
   its similar stages without it), per route (a similar group, or all stages), plus the tail
   margin: wider, and calibrated on what a new stage really is.

| constant | value | why |
|---|---|---|
| ``MIN_KEY_ROWS`` | 3 | two points define any line; a third is the first check of it |
| ``MIN_ROWS`` | 6 | fewer finished runs than this teach nothing we would size by |
| ``TAIL_MARGIN`` | log(1.15) | 15% over the worst seen miss: the order statistic's own uncertainty at n~10 |
| ``SLOPE_BOUNDS`` | [0, 2] | usage neither falls with input size nor grows faster than quadratically |
| ``MIN_GROUP_ROWS`` | 3 | runs of similar stages a cold stage borrows from (as ``MIN_KEY_ROWS``) |
| ``MIN_GROUP_STAGES`` | 2 | one stage's runs say how it scales with its own size, not how stages differ |
| ``PAIR_GAIN`` | 0.05 | a two-feature product must explain this much more (correlation) than one feature |

Same contract as ``JobProfiler`` (fit returns self, learned attributes end in ``_``,
``predict_targets`` gives :class:`~airflow_adaptive.logic.profiler.TargetPrediction`), so the
registry, the pyfunc wrapper and the champion/challenger rule treat both alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic import conformal
from airflow_adaptive.logic.gpu_scaling import learn_gpu_scaling
from airflow_adaptive.logic.targets import DURATION, TargetPrediction, level_strings, profile_of, target_values

MIN_KEY_ROWS = 3
MIN_GROUP_ROWS = 3
#: Stages a group of similar stages must hold: one stage's runs say how it scales with its own
#: size, not how stages differ from each other.
MIN_GROUP_STAGES = 2
PAIR_GAIN = 0.05
#: A feature known on fewer of a group's runs than this share cannot be its size (old runs
#: recorded before a feature was declared leave it unknown).
MIN_KNOWN_SHARE = 0.8
#: Fewer leave-one-stage-out residuals than this on a route and its offsets pool both routes.
MIN_ROUTE_RESIDUALS = 5
MIN_ROWS = 6
TAIL_MARGIN = math.log(1.15)
SLOPE_BOUNDS = (0.0, 2.0)
#: The conformal strata this profiler uses (a subset of ``conformal.STRATA``).
COLD, KNOWN = 0, 4


@dataclass(frozen=True)
class Law:
    """log usage = intercept + slope * log1p(feature); slope 0 means "the key's mean".

    ``feature`` may name a product, ``"parameters*batch_size"``: x is then the sum of the two
    logs. ``mean`` (log usage over the fitted runs) predicts a job that lacks the feature."""

    feature: str | None
    intercept: float
    slope: float
    mean: float | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.feature is None or self.slope == 0.0:
            return np.full(len(x), self.intercept)
        return self.intercept + self.slope * x

    def describe(self, target: str) -> str:
        if self.feature is None or self.slope == 0.0:
            return f"{target} ~ constant"
        return f"{target} ~ ({self.feature.replace('*', ' x ')})^{self.slope:.2f}"


@dataclass(frozen=True)
class SimilarLaw:
    """The law a cold stage borrows: from the runs of ``level`` = ``value`` (``()``: all stages)."""

    level: tuple[str, ...]
    value: str
    law: Law
    runs: int
    stages: int

    def describe(self) -> str:
        if not self.level:
            return f"all {self.stages} stages ({self.runs} runs)"
        shared = ", ".join(f"{n}={v}" for n, v in zip(self.level, self.value.split("\x1f")))
        return f"{self.runs} runs of {self.stages} stage(s) with {shared}"


def fit_law(x: np.ndarray, y: np.ndarray, feature: str | None) -> Law:
    """Least squares of ``y`` on ``x`` with the slope kept in ``SLOPE_BOUNDS``."""
    mean = float(np.mean(y[np.isfinite(y)])) if np.isfinite(y).any() else 0.0
    known = np.isfinite(x) & np.isfinite(y)
    x, y = x[known], y[known]
    if feature is None or len(y) < 2 or np.ptp(x) == 0:
        return Law(None, float(np.mean(y)) if len(y) else mean, 0.0, mean)
    slope = float(np.clip(np.polyfit(x, y, 1)[0], *SLOPE_BOUNDS))
    return Law(feature, float(np.mean(y - slope * x)), slope, mean)


def size_of(sizes: Mapping[str, np.ndarray], feature: str) -> np.ndarray:
    """The log size column of ``feature`` (a product ``a*b`` is the sum of the two logs)."""
    if "*" in feature:
        a, b = feature.split("*", 1)
        return sizes[a] + sizes[b]
    return sizes[feature]


def fit_similar_law(sizes: Mapping[str, np.ndarray], rows: np.ndarray, y_log: np.ndarray) -> Law:
    """The law of a group of stages: its best single feature, or product of two (see module)."""
    feature = _size_feature(sizes, rows, y_log, pairs=True)
    x = size_of(sizes, feature)[rows] if feature else np.zeros(len(rows))
    return fit_law(x, y_log[rows], feature)


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
        self.similar_: dict[str, dict[tuple[tuple[str, ...], str], SimilarLaw]] = {}
        self.cold_offsets_: dict[str, dict[str, np.ndarray]] = {}
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
            self.pooled_[target] = fit_similar_law(sizes, rows, y_log)
            self.similar_[target] = self._similar_laws(X, keys, sizes, rows, y_log)
            routes = self._cold_residuals(X, keys, sizes, rows, y_log)
            both = np.concatenate(list(routes.values()))
            self.cold_offsets_[target] = {
                route: conformal_offsets(r if len(r) >= MIN_ROUTE_RESIDUALS else both) + TAIL_MARGIN
                for route, r in routes.items()
            }
            table = np.empty((len(conformal.STRATA), len(conformal.QUANTILES)))
            table[:] = conformal_offsets(np.concatenate(residuals))
            table[COLD] = self.cold_offsets_[target]["pooled"]
            self.laws_[target], self.offsets_[target] = laws, table
            self.training_rows_[target] = len(rows)
        if not self.laws_:
            raise UserError(
                f"no resource has {MIN_ROWS} or more finished runs with known usage ({len(X)} records of "
                f"schema {schema.id}); run the pipeline a few more times (seed runs) before training"
            )
        self.trained_until_ = float(np.nanmax(X.end))
        self.gpu_scaling_ = learn_gpu_scaling(X)  # duration against GPU count, per stage
        return self

    # -- cold start: similar stages
    def _groups(self, X: JobTable) -> list[tuple[tuple[str, ...], np.ndarray]]:
        """Each coarser level of the schema and its value per row ("" where a part is unknown)."""
        out = []
        for level in self.schema_.levels:
            if tuple(level) == tuple(self.schema_.key):
                continue
            values = level_strings(X, level)
            parts = [X.features[n].astype(str) for n in level]
            unknown = np.zeros(len(X), dtype=bool)
            for col in parts:
                unknown |= np.isin(col, UNKNOWN_VALUES)
            out.append((tuple(level), np.where(unknown, "", values).astype(object)))
        return out

    def _similar_laws(self, X, keys, sizes, rows, y_log) -> dict[tuple[tuple[str, ...], str], SimilarLaw]:
        out = {}
        for level, values in self._groups(X):
            for value in dict.fromkeys(values[rows]):
                members = rows[values[rows] == value]
                if value and len(members) >= MIN_GROUP_ROWS and len(set(keys[members])) >= MIN_GROUP_STAGES:
                    out[(level, value)] = SimilarLaw(level, value, fit_similar_law(sizes, members, y_log),
                                                     len(members), len(set(keys[members])))
        return out

    def _cold_residuals(self, X, keys, sizes, rows, y_log) -> dict[str, np.ndarray]:
        """Leave-one-stage-out: each stage predicted as a cold start from the others, by route."""
        groups = self._groups(X)
        out: dict[str, list[np.ndarray]] = {"similar": [], "pooled": []}
        for key in dict.fromkeys(keys[rows]):
            mine, others = rows[keys[rows] == key], rows[keys[rows] != key]
            if len(others) < MIN_GROUP_ROWS:
                continue
            route, peers = "pooled", others
            for _, values in groups:
                value = values[mine[0]]
                same = others[values[others] == value] if value else others[:0]
                if len(same) >= MIN_GROUP_ROWS and len(set(keys[same])) >= MIN_GROUP_STAGES:
                    route, peers = "similar", same
                    break
            law = fit_similar_law(sizes, peers, y_log)
            out[route].append(y_log[mine] - _predict_rows(law, sizes, mine))
        return {route: np.concatenate(r) if r else np.empty(0) for route, r in out.items()}

    def similar_to(self, target: str, X: JobTable, i: int) -> SimilarLaw:
        """The law row ``i`` of ``X`` borrows as a cold start (all stages when no group fits)."""
        similar = getattr(self, "similar_", {}).get(target, {})
        for level, values in self._groups(X):
            found = similar.get((level, values[i]))
            if found is not None:
                return found
        return SimilarLaw((), "", self.pooled_[target], self.training_rows_.get(target, 0),
                          len(self.laws_.get(target, ())))

    # -- prediction
    def predict_targets(self, X: JobTable) -> dict[str, TargetPrediction]:
        _check_fitted(self)
        self.schema_.require_same(X.schema, "the jobs")
        X = X.project(self.schema_)
        keys = level_strings(X, self.schema_.key)
        sizes = {name: np.log1p(np.maximum(X.features[name].astype(float), 0.0)) for name in self.numeric_}
        cold_offsets = getattr(self, "cold_offsets_", {})  # a format-2 profiler has only the pooled law
        out = {}
        for target, laws in self.laws_.items():
            median = np.empty(len(X))
            stratum = np.full(len(X), KNOWN, dtype=np.int64)
            offsets = self.offsets_[target][stratum].copy()
            for i, key in enumerate(keys):
                law = laws.get(key)
                if law is None:
                    similar = self.similar_to(target, X, i)
                    law, stratum[i] = similar.law, COLD
                    route = "similar" if similar.level else "pooled"
                    offsets[i] = cold_offsets.get(target, {}).get(route, self.offsets_[target][COLD])
                median[i] = _predict_rows(law, sizes, np.array([i]))[0]
            out[target] = TargetPrediction(median, offsets, stratum)
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
        profile = profile_of(estimates, cold, coverage=self.coverage, schema_id=self.schema_.id)
        key = str(level_strings(table, self.schema_.key)[0]) if self.schema_.key else "*"
        profile = replace(profile, gpu_scaling=getattr(self, "gpu_scaling_", {}).get(key))
        if profile.cold_start:
            profile = replace(profile, notes=(*profile.notes, *self._cold_notes(table, sorted(cold))))
        return profile

    def _cold_notes(self, table: JobTable, targets: list[str]) -> list[str]:
        """What a cold stage was compared with, one line per group of similar stages."""
        by_group: dict[str, list[str]] = {}
        for t in targets:
            similar = self.similar_to(t, table, 0)
            by_group.setdefault(similar.describe(), []).append(similar.law.describe(t))
        return [f"cold start: no runs of this stage yet; predicted from {group}: {'; '.join(laws)}"
                for group, laws in by_group.items()]


def _check_fitted(profiler: "ScalingProfiler") -> None:
    if not hasattr(profiler, "laws_"):
        raise UserError("this ScalingProfiler is not fitted yet: call fit() with a JobTable of finished runs first")


def _predict_rows(law: Law, sizes: Mapping[str, np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The law at ``rows``; a row that lacks the law's feature gets the fitted runs' mean."""
    if law.feature is None or law.slope == 0.0:
        return np.full(len(rows), law.intercept)
    x = size_of(sizes, law.feature)[rows]
    fallback = law.mean if law.mean is not None else law.intercept
    return np.where(np.isfinite(x), law.predict(np.nan_to_num(x)), fallback)


#: Category values that mean "not recorded" (a missing param reads back as "None").
UNKNOWN_VALUES = ("", "None", "nan")


def _size_feature(sizes: Mapping[str, np.ndarray], rows: np.ndarray, y_log: np.ndarray, pairs: bool = False) -> str | None:
    """The numeric feature whose log best explains ``y_log`` over ``rows`` (None if none varies).

    ``pairs``: also the product of two features, kept only when it explains ``PAIR_GAIN`` more
    (a dozen runs always fit two features a little better than one); then a feature must be
    known on ``MIN_KNOWN_SHARE`` of the rows."""
    y = y_log[rows]

    def fit(col: np.ndarray) -> float:
        x = col[rows]
        known = np.isfinite(x)
        if known.sum() < 2 or np.ptp(x[known]) == 0 or np.ptp(y[known]) == 0:
            return 0.0
        if pairs and known.mean() < MIN_KNOWN_SHARE:
            return 0.0
        return abs(float(np.corrcoef(x[known], y[known])[0, 1]))

    best, best_r = None, 0.0
    scores = {}
    for name, col in sizes.items():
        scores[name] = r = fit(col)
        if r > best_r + 1e-9:
            best, best_r = name, r
    if not pairs:
        return best
    useful = [n for n, r in scores.items() if r > 0]
    pair, pair_r = None, 0.0
    for i, a in enumerate(useful):
        for b in useful[i + 1:]:
            r = fit(sizes[a] + sizes[b])
            if r > pair_r + 1e-9:
                pair, pair_r = f"{a}*{b}", r
    return pair if pair_r > best_r + PAIR_GAIN else best


#: Below this many records the scaling laws beat the gradient-boosted profiler (whose leaves
#: need 20 rows each and which cannot extrapolate to a larger input); above it, the trees learn
#: what the laws cannot (interactions, history sequences).
SMALL_HISTORY = 200


def profiler_for(table: JobTable, coverage: float = 0.99):
    """An unfitted profiler suited to ``table``'s size (see ``SMALL_HISTORY``)."""
    from airflow_adaptive.logic.profiler import JobProfiler

    return ScalingProfiler(coverage=coverage) if len(table) < SMALL_HISTORY else JobProfiler(coverage=coverage)

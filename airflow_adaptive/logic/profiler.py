"""The Job Profiler: per-resource median and covering quantile of a job's needs, from history.

scikit-learn's estimator contract: ``__init__`` only stores parameters, ``fit`` returns self,
learned attributes end in ``_``. ``X`` is a :class:`JobTable` (rows need their times: history is
ordered), ``y`` is taken from its ``used`` columns.

How a prediction is made, per target (each resource of the schema, plus ``duration``):

1. **Features** known before the job runs: its numeric features (log scale), its low-cardinality
   categorical features, and for each history *level* of the schema (e.g. (user, executable,
   procs), (user, executable), (user,), (executable,)) the recent-run sequence features of
   :mod:`airflow_adaptive.logic.history`. An unseen workload still has its user's and its
   executable's history and its own request: that is the cold-start path, from similar jobs'
   features rather than a fallback to the request.
2. **Median model**: ``HistGradientBoostingRegressor`` on log usage, recency-weighted (by
   weighted resampling of the training rows).
3. **Covering quantile**: conformal offsets per history stratum
   (:mod:`airflow_adaptive.logic.conformal`) from residuals of the most recent records, which
   the median model did not see.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.utils.validation import check_is_fitted

from airflow_adaptive.domain.errors import FeatureSchemaMismatch, UserError
from airflow_adaptive.domain.features import FeatureSchema
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic import conformal
from airflow_adaptive.logic.gpu_scaling import learn_gpu_scaling
from airflow_adaptive.logic.targets import DURATION, TargetPrediction, level_strings, profile_of, target_values  # noqa: F401 (re-exported)
from airflow_adaptive.logic.history import STATS, SequenceState, feature_names, level_codes, sequence_features

#: Fewer records than this for a target and the profiler does not model it.
MIN_ROWS = 30
#: A categorical feature with more values than this is an identity, used only through history.
MAX_CATEGORIES = 64
SECONDS_PER_DAY = 86400.0
#: Above this many training rows, recency weights are applied by resampling (see fit_median_model).
RESAMPLE_ABOVE_ROWS = 6000


# ----------------------------------------------------------------------------- feature blocks
def history_block(table: JobTable, target: str) -> np.ndarray:
    """Sequence features of every row from the rows that ended before it was submitted."""
    log_value = target_values(table, target)
    blocks = [
        sequence_features(level_codes([level_strings(table, lv)]), table.submit, table.end, log_value)
        for lv in table.schema.levels
    ]
    return np.column_stack(blocks)


def static_block(table: JobTable, categories: Mapping[str, list[str]]) -> np.ndarray:
    cols = []
    for feat in table.schema.features:
        if feat.kind == "numeric":
            v = table.features[feat.name].astype(float)
            cols.append(np.where(v >= 0, np.log1p(np.abs(v)), np.nan))
        elif feat.name in categories:
            index = {c: i for i, c in enumerate(categories[feat.name])}
            cols.append(np.array([index.get(str(v), np.nan) for v in table.features[feat.name]], dtype=float))
    return np.column_stack(cols) if cols else np.empty((len(table), 0))


def learn_categories(table: JobTable) -> dict[str, list[str]]:
    out = {}
    for feat in table.schema.features:
        if feat.kind == "categorical":
            # First-appearance order: a category first seen later never renumbers earlier ones.
            values = list(dict.fromkeys(str(v) for v in table.features[feat.name]))
            if len(values) <= MAX_CATEGORIES:
                out[feat.name] = values
    return out


def design_names(schema: FeatureSchema, categories: Mapping[str, list[str]]) -> list[str]:
    static = [f.name for f in schema.features if f.kind == "numeric" or f.name in categories]
    return static + feature_names(list(schema.levels))


def stratum_of(history: np.ndarray, n_levels: int) -> np.ndarray:
    """History stratum from the finest level and the key level (the first two levels)."""
    width = len(STATS)
    finest = history[:, :width]
    key = history[:, width : 2 * width] if n_levels > 1 else finest
    n_finest = np.rint(np.expm1(finest[:, 0]))
    n_key = np.rint(np.expm1(key[:, 0]))
    spread = finest[:, STATS.index("max_k")] - finest[:, STATS.index("min_k")]
    return conformal.strata(n_finest, n_key, np.nan_to_num(spread, nan=np.inf))


@dataclass
class MedianModel:
    """A fitted regressor over the informative columns of the design matrix only.

    Columns with fewer than two distinct known values in the training rows are left out:
    they carry nothing, and scikit-learn 1.9's binning raises on them.
    """

    regressor: HistGradientBoostingRegressor
    columns: np.ndarray

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.regressor.predict(X[:, self.columns])


def informative_columns(X: np.ndarray) -> np.ndarray:
    keep = []
    for j in range(X.shape[1]):
        col = X[:, j]
        col = col[np.isfinite(col)]
        keep.append(len(col) > 0 and col.min() < col.max())
    return np.flatnonzero(keep)


def fit_median_model(
    X: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    categorical: np.ndarray,
    max_iter: int,
    learning_rate: float,
    random_state: int,
) -> MedianModel:
    columns = informative_columns(X)
    categorical = categorical[columns]
    model = HistGradientBoostingRegressor(
        max_iter=max_iter,
        learning_rate=learning_rate,
        max_leaf_nodes=31,
        min_samples_leaf=20,
        categorical_features=categorical if categorical.any() else None,
        early_stopping=False,
        random_state=random_state,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(y) <= RESAMPLE_ABOVE_ROWS:
            return MedianModel(model.fit(X[:, columns], y, sample_weight=weight), columns)
        # Large sets: recency weighting by weighted resampling rather than ``sample_weight``,
        # with which HistGradientBoosting fits ~18x slower here (4.4 s vs 0.24 s on 15k x 44).
        # Small sets keep exact weights: resampling noise costs them accuracy.
        rng = np.random.default_rng(random_state)
        rows = rng.choice(len(y), size=len(y), replace=True, p=weight / weight.sum())
        return MedianModel(model.fit(X[rows][:, columns], y[rows]), columns)


def recency_weight(end: np.ndarray, now: float, half_life_days: float) -> np.ndarray:
    return np.exp2(-np.maximum(now - end, 0.0) / (half_life_days * SECONDS_PER_DAY))


# ----------------------------------------------------------------------------- the estimator
class JobProfiler(BaseEstimator):
    """Learns what each job needs per resource from finished jobs of one feature schema."""

    def __init__(
        self,
        coverage: float = 0.99,
        half_life_days: float = 90.0,
        max_train_rows: int = 20000,
        max_iter: int = 60,
        learning_rate: float = 0.1,
        calibration_fraction: float = 0.2,
        random_state: int = 0,
    ):
        self.coverage = coverage
        self.half_life_days = half_life_days
        self.max_train_rows = max_train_rows
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.calibration_fraction = calibration_fraction
        self.random_state = random_state

    # -- fitting
    def fit(self, X: JobTable, y: Any = None) -> "JobProfiler":
        if not isinstance(X, JobTable):
            raise TypeError("JobProfiler.fit takes a JobTable (records with times), not an array")
        if not 0.5 <= self.coverage < 1.0:
            raise UserError(f"coverage must be in [0.5, 1), got {self.coverage}")
        table = X.take(np.argsort(X.end, kind="stable"))
        self.schema_ = table.schema
        self.categories_ = learn_categories(table)
        self.feature_names_in_ = np.array(design_names(table.schema, self.categories_), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        static = static_block(table, self.categories_)
        categorical = self._categorical_mask(static.shape[1])
        now = float(np.nanmax(table.end))
        self.models_: dict[str, MedianModel] = {}
        self.offsets_: dict[str, np.ndarray] = {}
        self.states_: dict[str, dict[str, SequenceState]] = {}
        self.training_rows_: dict[str, int] = {}
        for target in (*table.schema.resources, DURATION):
            y_log = target_values(table, target)
            rows = np.flatnonzero(np.isfinite(y_log))
            if len(rows) < MIN_ROWS:
                continue
            design = np.column_stack([static, history_block(table, target)])
            self.models_[target], self.offsets_[target] = self._fit_target(
                design, y_log, rows, table, categorical, now
            )
            self.states_[target] = self._states(table, target, y_log)
            self.training_rows_[target] = len(rows)
        if not self.models_:
            raise UserError(
                f"no resource has {MIN_ROWS} or more records with known usage "
                f"({len(table)} records of schema {table.schema.id}); give the profiler more history"
            )
        self.trained_until_ = now
        self.gpu_scaling_ = learn_gpu_scaling(table)  # duration against GPU count, per stage
        return self

    def _categorical_mask(self, n_static: int) -> np.ndarray:
        names = [f.name for f in self.schema_.features if f.kind == "numeric" or f.name in self.categories_]
        mask = np.array([n in self.categories_ for n in names], dtype=bool)
        n_history = len(self.feature_names_in_) - n_static
        return np.concatenate([mask, np.zeros(n_history, dtype=bool)])

    def _fit_target(self, design, y_log, rows, table, categorical, now):
        n_cal = max(int(len(rows) * self.calibration_fraction), min(MIN_ROWS, len(rows) // 2))
        train, cal = rows[:-n_cal], rows[-n_cal:]
        recent = train[-self.max_train_rows :]
        model = fit_median_model(
            design[recent], y_log[recent], recency_weight(table.end[recent], now, self.half_life_days),
            categorical, self.max_iter, self.learning_rate, self.random_state,
        )
        residuals = y_log[cal] - model.predict(design[cal])
        n_levels = len(table.schema.levels)
        history = design[:, -len(STATS) * n_levels :]
        offsets = conformal.batch_offsets(stratum_of(history[cal], n_levels), residuals)
        # Refit on everything so the served median also knows the newest records; the
        # calibration stays that of a model that had not seen them (slightly conservative).
        final_rows = rows[-self.max_train_rows :]
        model = fit_median_model(
            design[final_rows], y_log[final_rows], recency_weight(table.end[final_rows], now, self.half_life_days),
            categorical, self.max_iter, self.learning_rate, self.random_state,
        )
        return model, offsets

    def _states(self, table: JobTable, target: str, y_log: np.ndarray) -> dict[str, SequenceState]:
        states = {}
        for lv in table.schema.levels:
            state = SequenceState()
            for key, value, end in zip(level_strings(table, lv), y_log, table.end):
                if np.isfinite(value):
                    state.observe(key, value, end)
            states["+".join(lv)] = state
        return states

    # -- prediction
    def check_schema(self, table: JobTable) -> JobTable:
        """``table`` under this profiler's schema (a compatible one is projected onto it)."""
        check_is_fitted(self, "models_")
        self.schema_.require_same(table.schema, "the jobs")
        return table.project(self.schema_)

    def predict_targets(self, X: JobTable) -> dict[str, TargetPrediction]:
        """Median (log) and conformal offsets per target, from the history known at fit time."""
        X = self.check_schema(X)
        static = static_block(X, self.categories_)
        keys = {"+".join(lv): level_strings(X, lv) for lv in self.schema_.levels}
        out = {}
        for target, model in self.models_.items():
            states = self.states_[target]
            history = np.column_stack(
                [
                    np.array([states[level].features(k, s) for k, s in zip(level_keys, X.submit)]).reshape(len(X), len(STATS))
                    for level, level_keys in keys.items()
                ]
            )
            design = np.column_stack([static, history])
            stratum = stratum_of(history, len(self.schema_.levels))
            out[target] = TargetPrediction(model.predict(design), self.offsets_[target][stratum], stratum)
        return out

    def predict(self, X: JobTable) -> dict[str, dict[str, np.ndarray]]:
        """Per target: ``median`` and ``upper`` (at ``coverage``) in the target's unit."""
        return {
            target: {"median": np.exp(p.median_log), "upper": p.quantile(self.coverage)}
            for target, p in self.predict_targets(X).items()
        }

    def predict_profile(self, job: Mapping[str, Any], submit: float | None = None, where: str = "job") -> PredictedProfile:
        """The profile of one job given as ``{feature: value}`` (validated against the schema)."""
        check_is_fitted(self, "models_")
        features = self.schema_.validate_job(job, where)
        now = self.trained_until_ if submit is None else float(submit)
        table = JobTable.from_rows(
            self.schema_, [{"job_id": where, "submit": now, "end": now, "run_time": 0.0, "features": features}]
        )
        preds = self.predict_targets(table)
        estimates = {t: self._estimate(p) for t, p in preds.items()}
        cold = {t for t, p in preds.items() if int(p.stratum[0]) == 0}
        profile = profile_of(estimates, cold, coverage=self.coverage, schema_id=self.schema_.id)
        key = str(level_strings(table, self.schema_.key)[0]) if self.schema_.key else "*"
        profile = replace(profile, gpu_scaling=getattr(self, "gpu_scaling_", {}).get(key))
        if profile.cold_start:
            shared = ", ".join(" + ".join(lv) for lv in self.schema_.levels[1:])
            note = (f"cold start: no runs of this workload yet; predicted from all {max(self.training_rows_.values())} "
                    f"runs through the features and history it shares with them ({shared})")
            profile = replace(profile, notes=(*profile.notes, note))
        return profile

    def _estimate(self, prediction: TargetPrediction) -> ResourceEstimate:
        median = float(np.exp(prediction.median_log[0]))
        return ResourceEstimate(median, max(float(prediction.quantile(self.coverage)[0]), median))


__all__ = ["JobProfiler", "TargetPrediction", "DURATION", "FeatureSchemaMismatch"]

"""The profiler as an MLflow ``pyfunc``: one row per job in, medians and covering quantiles out.

Why a pyfunc around a pickle, and not MLflow's sklearn flavour: MLflow 3 serialises sklearn
models with skops by default, and skops refuses types it does not trust, which includes
``HistGradientBoostingRegressor`` internals and our own ``JobProfiler``. The profiler is
therefore pickled as is (``profiler.pkl``, a model artifact) and this thin wrapper unpickles it
once in ``load_context``. The pickle refers to ``airflow_adaptive`` by module name, so whatever
loads it (a serving container, the operator) needs this package installed; the same pickle
file is what :mod:`.registry` caches for the fast path that skips ``pyfunc.load_model``.

This is the only profiler module that imports mlflow.
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.adapters.mlflow.profiler_pickle import dump_profiler, read_profiler  # noqa: F401 (re-exported)
from airflow_adaptive.logic.profiler import JobProfiler
from airflow_adaptive.logic.targets import DURATION

PROFILER_ARTIFACT = "profiler.pkl"
ARTIFACT_KEY = "profiler"


def example_frame(profiler: JobProfiler) -> pd.DataFrame:
    """One plausible job in the schema's columns (strings for categorical, floats for numeric):
    what MLflow infers the signature from and shows as the input example."""
    row: dict[str, Any] = {}
    for feat in profiler.schema_.features:
        if feat.kind == "numeric":
            row[feat.name] = 1.0
        else:
            known = profiler.categories_.get(feat.name)
            row[feat.name] = known[0] if known else "unknown"
    return pd.DataFrame([row])


def predict_frame(profiler: JobProfiler, model_input: pd.DataFrame) -> pd.DataFrame:
    """``<target>_median`` / ``<target>_upper`` per modelled target (with ``duration``) and
    ``<target>_cold`` and ``cold_start``, per input row, as :meth:`JobProfiler.predict_profile`
    would give them."""
    schema = profiler.schema_
    # to_dict gives Python scalars, so validate_job sees int/float/str rather than numpy types.
    records = model_input.to_dict("records")
    features = [schema.validate_job(r, f"row {i}") for i, r in enumerate(records)]
    now = profiler.trained_until_
    table = JobTable.from_rows(
        schema,
        [{"job_id": str(i), "submit": now, "end": now, "run_time": 0.0, "features": f} for i, f in enumerate(features)],
    )
    preds = profiler.predict_targets(table) if len(table) else {}
    out: dict[str, np.ndarray] = {}
    for target, p in preds.items():
        median = np.exp(p.median_log)
        out[f"{target}_median"] = median
        out[f"{target}_upper"] = np.maximum(p.quantile(profiler.coverage), median)
    # As ``logic.targets.profile_of``: a cold resource (``<target>_cold``) is left to the user's
    # request; the row is a cold start only when every resource is cold.
    cold = np.ones(len(table), dtype=bool)
    for target, p in preds.items():
        out[f"{target}_cold"] = p.stratum == 0
        if target != DURATION:
            cold &= p.stratum == 0
    out["cold_start"] = cold
    return pd.DataFrame(out, index=model_input.index)


class ProfilerPyfunc(mlflow.pyfunc.PythonModel):
    """Unpickles the profiler once per process; ``predict`` is then a plain profiler call."""

    def load_context(self, context) -> None:
        self.profiler = read_profiler(context.artifacts[ARTIFACT_KEY])

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_frame(self.profiler, model_input)

"""The profiler's on-disk form (``profiler.pkl``), readable without importing mlflow.

The operator sizes a stage in a fresh worker process within a 1 s budget; ``import mlflow``
alone costs seconds, so the fast path (alias resolved over REST, pickle from the on-disk cache)
reads the pickle here. ``pyfunc_model`` uses the same functions inside MLflow's pyfunc.
"""

from __future__ import annotations

import pickle
from pathlib import Path

PROFILER_TYPE_NAMES = ("JobProfiler", "ScalingProfiler")


def dump_profiler(profiler, path: str | Path) -> None:
    with open(path, "wb") as fh:
        pickle.dump(profiler, fh, protocol=pickle.HIGHEST_PROTOCOL)


def read_profiler(path: str | Path):
    with open(path, "rb") as fh:
        profiler = pickle.load(fh)
    # By name: importing JobProfiler's module here would import scikit-learn for every load; the
    # pickle itself imports whatever the profiler it holds needs.
    if type(profiler).__name__ not in PROFILER_TYPE_NAMES or not type(profiler).__module__.startswith("airflow_adaptive.logic"):
        raise TypeError(f"{path} holds a {type(profiler).__name__}, not a JobProfiler or ScalingProfiler")
    return profiler

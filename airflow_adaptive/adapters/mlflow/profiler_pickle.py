"""The profiler's on-disk form (``profiler.pkl``), readable without importing mlflow.

The operator sizes a stage in a fresh worker process within a 1 s budget; ``import mlflow``
alone costs seconds, so the fast path (alias resolved over REST, pickle from the on-disk cache)
reads the pickle here. ``pyfunc_model`` uses the same functions inside MLflow's pyfunc.
"""

from __future__ import annotations

import pickle
from pathlib import Path

PROFILER_TYPE_NAMES = ("JobProfiler", "ScalingProfiler")
#: The pickle's format: 1 (no ``format_version_``): peaks only; 2: plus ``shapes_``, each stage's
#: usage over time (logic/usage_profile.py); 3: open stage features (schema ``stage/2``) and, for
#: the scaling laws, cold starts from similar stages (``similar_``, ``cold_offsets_``; a format-2
#: one predicts a new stage from all stages, as it did). A reader loads every format up to its own.
PROFILER_FORMAT = 3


def dump_profiler(profiler, path: str | Path) -> None:
    """Stamps the format (and an empty ``shapes_`` when no series were learned) and pickles."""
    if getattr(profiler, "shapes_", None) is None:
        profiler.shapes_ = {}
    profiler.format_version_ = PROFILER_FORMAT
    with open(path, "wb") as fh:
        pickle.dump(profiler, fh, protocol=pickle.HIGHEST_PROTOCOL)


def read_profiler(path: str | Path):
    """The profiler in ``path``; an unreadable file (truncated, from an incompatible version) is
    removed from the cache, so the next load downloads it again, and reported as a RegistryError."""
    from airflow_adaptive.domain.errors import RegistryError

    try:
        with open(path, "rb") as fh:
            profiler = pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ModuleNotFoundError, ValueError, TypeError) as exc:
        Path(path).unlink(missing_ok=True)
        raise RegistryError(f"the cached profiler {path} cannot be read ({type(exc).__name__}: {exc}); it was removed "
                            "and will be downloaded again, or re-register the model if this repeats") from exc
    # By name: importing JobProfiler's module here would import scikit-learn for every load; the
    # pickle itself imports whatever the profiler it holds needs.
    if type(profiler).__name__ not in PROFILER_TYPE_NAMES or not type(profiler).__module__.startswith("airflow_adaptive.logic"):
        raise TypeError(f"{path} holds a {type(profiler).__name__}, not a JobProfiler or ScalingProfiler")
    version = getattr(profiler, "format_version_", 1)
    if version > PROFILER_FORMAT:
        raise RegistryError(f"the profiler {path} has format {version}, newer than this airflow-adaptive reads "
                            f"({PROFILER_FORMAT}): upgrade airflow-adaptive on the workers, or point the alias at an "
                            "older version")
    return profiler

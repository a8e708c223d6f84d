"""Where the Job Profiler is served from, and one call that predicts a stage from it.

MLflow's location, in order: the Airflow connection ``mlflow_conn_id`` (default
``mlflow_default``; its host, or ``http://host:port``; login/password become MLflow's basic-auth
variables), else ``MLFLOW_TRACKING_URI``, else the embedded SQLite store under
``$AIRFLOW_ADAPTIVE_HOME``. The model comes through :mod:`airflow_adaptive.adapters.mlflow.registry`
(alias resolved at every call, version cached on disk).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from airflow_adaptive import metrics
from airflow_adaptive.adapters.mlflow import store
from airflow_adaptive.domain.errors import FeatureSchemaMismatch
from airflow_adaptive.domain.profile import PredictedProfile

log = logging.getLogger(__name__)
DEFAULT_CONN_ID = "mlflow_default"


def tracking_uri_from_connection(conn: Any) -> str:
    host = (conn.host or "").rstrip("/")
    if "://" in host:
        base = host
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
        base = f"{scheme}://{host}"
    if conn.port and f":{conn.port}" not in base.split("://", 1)[1]:
        base += f":{conn.port}"
    return base


def connection_uri(conn_id: str | None) -> str | None:
    """The tracking URI of Airflow connection ``conn_id``, or None when there is no such connection."""
    if not conn_id:
        return None
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # noqa: BLE001 - AirflowNotFoundException and friends: no connection means "use the environment"
        return None
    if conn.login and conn.password:
        os.environ.setdefault("MLFLOW_TRACKING_USERNAME", conn.login)
        os.environ.setdefault("MLFLOW_TRACKING_PASSWORD", conn.password)
    return tracking_uri_from_connection(conn) if conn.host else None


def coerce_features(schema, features: Mapping[str, Any]) -> dict[str, Any]:
    """Rendered templates are strings: a numeric feature given as "200000" becomes 200000.0.

    Anything else is left for the schema to judge, so a real type error still names the field.
    """
    out = dict(features)
    for feat in schema.features:
        value = out.get(feat.name)
        if feat.kind == "numeric" and isinstance(value, str):
            try:
                out[feat.name] = float(value)
            except ValueError:
                pass
    return out


def known_features(schema, features: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The features ``schema`` knows, and the names it does not (sorted).

    A stage's features are open (``domain/stage_run.py``): the author may declare one the
    champion was never trained on. It is recorded in the stage run and learned at the next
    retraining; until then it is left out of the prediction rather than failing it.
    """
    names = set(schema.names)
    return {k: v for k, v in features.items() if k in names}, sorted(k for k in features if k not in names)


class ProfilerHook:
    """Predicts stages with the profiler at ``model_uri`` (a plain class: Airflow's BaseHook adds
    nothing here but import time, and the capacity sensor's trigger uses it outside a task)."""

    def __init__(self, mlflow_conn_id: str | None = DEFAULT_CONN_ID, model_uri: str = "models:/job-profiler@champion") -> None:
        self.mlflow_conn_id = mlflow_conn_id
        self.model_uri = model_uri
        self.tracking_uri = connection_uri(mlflow_conn_id) or store.tracking_uri()

    def predict(self, features: Mapping[str, Any], where: str) -> tuple[PredictedProfile, str]:
        """The profile of one stage and the model version that made it.

        Raises ``FeatureSchemaMismatch`` (features vs the model's schema), ``ModelNotFound`` /
        ``RegistryError`` (no such model or alias, MLflow does not answer).
        """
        profiler, version = self.load()
        profile = predict_with(profiler, version, self.model_uri, features, where)
        metrics.record(metrics.profiler_version, self.model_uri, version)
        return profile, version

    def load(self) -> tuple[Any, str]:
        """The profiler at ``model_uri`` and its version (alias resolved now, artifact cached)."""
        from airflow_adaptive.adapters.mlflow.registry import load_profiler

        previous = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        try:
            return load_profiler(self.model_uri)
        finally:
            if previous is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = previous


def predict_with(profiler: Any, version: str, model_uri: str, features: Mapping[str, Any], where: str) -> PredictedProfile:
    """The profile of one stage from a loaded profiler (no I/O: the cluster policy's cached model uses it too)."""
    from dataclasses import replace

    from airflow_adaptive.logic.usage_profile import with_phases

    if not isinstance(features, Mapping):
        raise FeatureSchemaMismatch(f"{where}: features must be a mapping of feature name to value, got {type(features).__name__}")
    coerced, new = known_features(profiler.schema_, coerce_features(profiler.schema_, features))
    profile = profiler.predict_profile(coerced, where=where)
    profile = with_phases(profile, getattr(profiler, "shapes_", None), coerced)
    if new:
        note = (f"feature(s) {', '.join(new)} not known to model version {version}: ignored until a retraining "
                "learns them from the stage runs that record them")
        log.info("%s: %s", where, note)
        profile = replace(profile, notes=(*profile.notes, note))
    return replace(profile, model_uri=model_uri, model_version=version)

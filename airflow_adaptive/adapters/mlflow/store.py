"""Where MLflow data lives when nobody says otherwise: an embedded SQLite store per project.

A laptop, a CI job or a single-node Airflow should train, register and serve a profiler without
running an MLflow server first, so the default tracking URI is a SQLite file in a project-local
state directory. ``MLFLOW_TRACKING_URI`` (a server, another database) overrides it, as MLflow
users expect.

| what | where |
|---|---|
| state directory ("home") | ``$AIRFLOW_ADAPTIVE_HOME``, else ``./.airflow-adaptive`` (made absolute) |
| tracking + registry store | ``sqlite:///<home>/mlflow/mlflow.db`` |
| artifacts of local stores | ``<home>/mlflow/artifacts`` (a server decides its own) |
| unpickled-model cache | ``<home>/model-cache`` (see :mod:`.registry`) |
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing mlflow costs seconds: only the functions that need it do
    from mlflow.tracking import MlflowClient

HOME_ENV = "AIRFLOW_ADAPTIVE_HOME"
DEFAULT_HOME = ".airflow-adaptive"
REMOTE_SCHEMES = ("http://", "https://", "databricks")


def home() -> Path:
    """The project's state directory, absolute (a relative path would move with the cwd)."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().resolve()


def default_tracking_uri() -> str:
    return f"sqlite:///{home() / 'mlflow' / 'mlflow.db'}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_SCHEMES)


def artifact_location(uri: str | None = None) -> str | None:
    """Artifact root for new experiments of a local store; None lets a server pick its own.

    Without it MLflow would put a local store's artifacts under ``./mlruns`` of whatever
    directory the process happens to run in.
    """
    if is_remote(uri or tracking_uri()):
        return None
    return (home() / "mlflow" / "artifacts").as_uri()


def ensure_local_dirs(uri: str) -> None:
    """SQLite creates the database file but not its directory."""
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if not is_remote(uri):
        (home() / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)


def configure() -> str:
    """Point MLflow's fluent API (tracking and registry) at :func:`tracking_uri`; return it."""
    import mlflow

    uri = tracking_uri()
    ensure_local_dirs(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client(uri: str | None = None) -> "MlflowClient":
    """An ``MlflowClient`` on ``uri`` (default :func:`tracking_uri`) for tracking and registry."""
    from mlflow.tracking import MlflowClient

    uri = uri or tracking_uri()
    ensure_local_dirs(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(mlflow_client: "MlflowClient", name: str) -> str:
    """The id of experiment ``name``, created (with a project-local artifact root) if missing."""
    existing = mlflow_client.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    from airflow_adaptive.adapters.mlflow.rest import EXPERIMENT_KIND_TAGS

    return mlflow_client.create_experiment(name, artifact_location=artifact_location(mlflow_client.tracking_uri),
                                           tags=EXPERIMENT_KIND_TAGS)  # the classic-ML view, not GenAI

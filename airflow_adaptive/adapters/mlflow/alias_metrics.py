"""The version a registered model's alias points to now, and the metrics of that version's run.

Read over MLflow's REST API for an http(s) tracking URI (:mod:`.rest`, no mlflow import) and
through ``MlflowClient`` for a local store (SQLite, files). Used by the model-quality check
(``triggers/model_quality.check_quality``), which decides on what is read here.

A missing model or alias is an answer, not an error: :func:`read_alias` returns the sentence
to show the user, and the caller waits. Anything else (MLflow not answering, credentials
refused) is raised for the caller to classify.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from airflow_adaptive.adapters.mlflow import store
# MLflow error codes that mean "no such model / alias": the registry adapter's own list.
from airflow_adaptive.adapters.mlflow.registry import _MISSING_CODES as MISSING_CODES


@dataclass(frozen=True)
class AliasVersion:
    version: str
    run_id: str | None
    metrics: Mapping[str, float] = field(default_factory=dict)


def read_alias(tracking_uri: str, name: str, alias: str) -> AliasVersion | str:
    """The version ``name@alias`` resolves to now, or why there is none yet (a sentence)."""
    return (_read_rest if store.is_remote(tracking_uri) else _read_local)(tracking_uri, name, alias)


def _missing(name: str, alias: str, tracking_uri: str) -> str:
    return (f"model '{name}' has no alias '{alias}' in the registry at {tracking_uri} (yet): register a version and "
            f"set the alias (the retraining DAG promotes one when it beats the champion)")


def _read_rest(tracking_uri: str, name: str, alias: str) -> AliasVersion | str:
    from airflow_adaptive.adapters.mlflow.rest import MlflowRequestError, MlflowRestClient

    rest = MlflowRestClient(tracking_uri)
    try:
        found = rest.get_model_version_by_alias(name, alias)
    except MlflowRequestError as exc:
        if exc.error_code in MISSING_CODES:
            return _missing(name, alias, rest.tracking_uri)
        raise
    if not found.get("version"):
        return _missing(name, alias, rest.tracking_uri)
    run_id = found.get("run_id") or None
    metrics: dict[str, float] = {}
    if run_id:
        data = rest.get_run(run_id).get("data") or {}
        metrics = {m["key"]: float(m["value"]) for m in data.get("metrics") or [] if "key" in m and "value" in m}
    return AliasVersion(str(found["version"]), run_id, metrics)


def _read_local(tracking_uri: str, name: str, alias: str) -> AliasVersion | str:
    from mlflow.exceptions import MlflowException

    client = store.client(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in MISSING_CODES:
            return _missing(name, alias, tracking_uri)
        raise
    run_id = mv.run_id or None
    metrics = dict(client.get_run(run_id).data.metrics) if run_id else {}
    return AliasVersion(str(mv.version), run_id, metrics)


__all__ = ["MISSING_CODES", "AliasVersion", "read_alias"]

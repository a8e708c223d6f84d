"""Extra links in the Airflow UI: the stage's MLflow run and the profiler version that sized it.

The operator pushes each URL to XCom under the link's ``xcom_key`` while it runs; the UI reads it
back (Airflow 3 links never call external systems when the page renders).

The links point at the MLflow UI, which need not be the tracking server the task wrote to (the
demo's server is gone when the demo ends; a cluster's tracking URI may be an internal address):
``AIRFLOW_ADAPTIVE_MLFLOW_UI_URL``, else Airflow's ``[adaptive] mlflow_ui_url``, else the tracking
URI itself when it is http(s). Without any of them (a local SQLite store) there is no UI to point
at, and the link stays empty.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

UI_URL_ENV = "AIRFLOW_ADAPTIVE_MLFLOW_UI_URL"
log = logging.getLogger(__name__)


class _XComLink(BaseOperatorLink):
    def get_link(self, operator, *, ti_key) -> str:
        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""


class StageRunLink(_XComLink):
    name = "MLflow stage run"


class ProfilerModelLink(_XComLink):
    name = "Profiler model version"


def _configured_ui_url() -> str | None:
    value = os.environ.get(UI_URL_ENV)
    if value is None:
        try:
            from airflow.sdk import conf

            value = conf.get("adaptive", "mlflow_ui_url", fallback=None)
        except Exception:  # noqa: BLE001 - no Airflow configuration here: the environment decides
            value = None
    return (value or "").strip() or None


def mlflow_ui_url(tracking_uri: str) -> str | None:
    """The MLflow UI's base URL (see the module docstring); None when there is none."""
    configured = _configured_ui_url()
    if configured and configured.startswith(("http://", "https://")):
        return configured.rstrip("/")
    if configured:  # a bad setting must not cost the stage its MLflow run: say so, use the tracking URI
        log.warning("%s / [adaptive] mlflow_ui_url is %r, not an http(s) URL: set it to the address the MLflow UI "
                    "answers on (e.g. http://127.0.0.1:5000); linking to the tracking URI instead", UI_URL_ENV, configured)
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    log.info("no MLflow UI to link to (tracking URI %s is not http; set %s): the extra links stay empty",
             tracking_uri, UI_URL_ENV)
    return None


#: MLflow 3.17's UI shows every experiment in its GenAI view (traces, evaluation runs) unless the
#: URL or the user's toggle asks for "Model training" (its ``workflowType`` query parameter; the
#: experiment's ``mlflow.experimentKind`` tag is ignored there since the toggle came).
CLASSIC_VIEW = "?workflowType=machine_learning"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The stage run's page in the MLflow UI, or "" when there is no UI (see the module docstring)."""
    base = mlflow_ui_url(tracking_uri)
    return f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{quote(run_id)}{CLASSIC_VIEW}" if base else ""


def model_url(tracking_uri: str, name: str, version: str) -> str:
    """The registered model version's page in the MLflow UI, or "" when there is no UI."""
    base = mlflow_ui_url(tracking_uri)
    return f"{base}/#/models/{quote(name, safe='')}/versions/{quote(str(version))}" if base else ""

"""Extra links in the Airflow UI: the stage's MLflow run and the profiler version that sized it.

The operator pushes each URL to XCom under the link's ``xcom_key`` while it runs; the UI reads it
back (Airflow 3 links never call external systems when the page renders).
"""

from __future__ import annotations

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom


class _XComLink(BaseOperatorLink):
    def get_link(self, operator, *, ti_key) -> str:
        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""


class StageRunLink(_XComLink):
    name = "MLflow stage run"


class ProfilerModelLink(_XComLink):
    name = "Profiler model version"


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"{tracking_uri}#experiment={experiment_id}&run={run_id}"


def model_url(tracking_uri: str, name: str, version: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/#/models/{name}/versions/{version}"
    return f"{tracking_uri}#model={name}&version={version}"

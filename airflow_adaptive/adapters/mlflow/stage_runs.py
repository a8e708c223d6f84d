"""Stage runs in MLflow: written per the stage-run schema, read back as training records.

The names (tags, params, metrics) live in :mod:`airflow_adaptive.domain.stage_run`; this module
only moves them in and out of MLflow, so the operator, the monitor and retraining agree.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from airflow_adaptive.adapters.mlflow import store
from airflow_adaptive.domain.errors import RegistryError
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.records import JobTable, LoadedTrace, LoadReport
from airflow_adaptive.domain.stage_run import (
    OOM_EVENTS_ARTIFACT,
    SCHEMA_ID,
    STAGE_FEATURES,
    TAG_FEATURE_SCHEMA,
    TAG_MODEL_URI,
    TAG_MODEL_VERSION,
    TAG_OUTCOME,
    TAG_SCHEMA,
    ObservedSummary,
    StageIdentity,
    record_from_run,
    TAG_UNTRUSTED,
    sizing_params,
)

UNFINISHED = "unfinished: no end time or observed peak yet"
PAGE = 1000


def log_stage_run(
    experiment: str,
    identity: StageIdentity,
    features: Mapping[str, Any],
    profile: PredictedProfile,
    allocated: Mapping[str, float],
    requested: Mapping[str, float],
    summary: ObservedSummary | None = None,
) -> str:
    """One MLflow run for one stage try; returns its run id.

    Without ``summary`` the run stays RUNNING (the stage has been sized but not observed yet),
    which is what the operator writes before the monitor has anything to add.
    """
    from mlflow.entities import Metric, Param, RunTag

    client = store.client()
    experiment_id = store.ensure_experiment(client, experiment)
    tags = {
        **identity.tags(),
        TAG_FEATURE_SCHEMA: STAGE_FEATURES.id,
        TAG_MODEL_URI: profile.model_uri,
        TAG_MODEL_VERSION: profile.model_version,
    }
    run = client.create_run(experiment_id, tags=tags, run_name=f"{identity.task_id}-try{identity.try_number}")
    run_id = run.info.run_id
    params = [Param(k, v) for k, v in sizing_params(features, profile, allocated, requested).items()]
    client.log_batch(run_id, params=params)
    if summary is not None:
        now = int(summary.end_time * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in summary.metrics().items()]
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(TAG_OUTCOME, summary.outcome)])
        if summary.oom_events:
            client.log_text(run_id, json.dumps([e.to_dict() for e in summary.oom_events]), OOM_EVENTS_ARTIFACT)
        client.set_terminated(run_id, "FAILED" if summary.outcome != "success" else "FINISHED")
    return run_id


def load_stage_runs(experiment_name: str) -> LoadedTrace:
    """Finished stage runs of ``experiment_name`` as a ``stage/1`` JobTable (submit order).

    Runs not yet finished (no end time or no observed peak) and runs whose features follow
    another feature schema are counted in the report's ``excluded``, not silently dropped.
    """
    client = store.client()
    uri = client.tracking_uri
    report = LoadReport(source=f"{uri} experiment '{experiment_name}'")
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise RegistryError(
            f"no MLflow experiment '{experiment_name}' at {uri}: stage runs are logged there by the "
            "operator; check the experiment name and MLFLOW_TRACKING_URI"
        )
    rows = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{TAG_SCHEMA}` = '{SCHEMA_ID}'",
            max_results=PAGE, page_token=token,
        )
        for run in page:
            report.lines += 1
            tags, data = run.data.tags, run.data
            schema_id = tags.get(TAG_FEATURE_SCHEMA, STAGE_FEATURES.id)
            if schema_id != STAGE_FEATURES.id:
                report.exclude(f"feature schema {schema_id}, not {STAGE_FEATURES.id}")
                continue
            if tags.get(TAG_OUTCOME) == "oom_killed":
                # Its peak is the limit it was killed at, not what it needed: it would teach the
                # profiler to predict exactly the size that failed.
                report.exclude("OOM-killed: the observed peak is the kill limit, not the need")
                continue
            if tags.get(TAG_UNTRUSTED) == "true":
                # The monitor's log had lines the operator refused: the workload may have written
                # into it, so its usage is not evidence (logic/monitor_trust.py).
                report.exclude("untrusted: the monitor's log had forged or malformed lines")
                continue
            record = record_from_run(STAGE_FEATURES, run.info.run_id, tags, data.params, data.metrics)
            if record is None:
                report.exclude(UNFINISHED)
            else:
                rows.append(record)
        token = page.token
        if not token:
            break
    report.kept = len(rows)
    return LoadedTrace(JobTable.from_rows(STAGE_FEATURES, rows).sorted_by_submit(), report)

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
    FEATURE_NAME,
    OOM_EVENTS_ARTIFACT,
    READABLE_STAGE_SCHEMAS,
    SCHEMA_ID,
    STAGE_FEATURES,
    TAG_FEATURE_SCHEMA,
    TAG_MODEL_URI,
    TAG_MODEL_VERSION,
    TAG_OUTCOME,
    TAG_SCHEMA,
    ObservedSummary,
    StageIdentity,
    infer_feature_kinds,
    record_from_run,
    stage_schema,
    TAG_UNTRUSTED,
    sizing_params,
)

FEATURE_PREFIX = "feature."
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
    """Finished stage runs of ``experiment_name`` as a stage JobTable (submit order).

    The table's schema is the base stage schema plus every feature the runs declared
    (:func:`~airflow_adaptive.domain.stage_run.stage_schema`; a feature missing in a run is
    unknown there). Runs not yet finished (no end time or no observed peak) and runs whose
    features follow another feature schema are counted in the report's ``excluded``, not
    silently dropped.
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
    usable = []
    token = None
    while True:
        page = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{TAG_SCHEMA}` = '{SCHEMA_ID}'",
            max_results=PAGE, page_token=token,
        )
        for run in page:
            report.lines += 1
            why = _excluded(run.data.tags)
            if why:
                report.exclude(why)
            else:
                usable.append(run)
        token = page.token
        if not token:
            break
    schema = stage_schema(declared_features(run.data.params for run in usable))
    rows = []
    for run in usable:
        record = record_from_run(schema, run.info.run_id, run.data.tags, run.data.params, run.data.metrics)
        if record is None:
            report.exclude(UNFINISHED)
        else:
            rows.append(record)
    report.kept = len(rows)
    return LoadedTrace(JobTable.from_rows(schema, rows).sorted_by_submit(), report)


def declared_features(params_of_runs) -> dict[str, str]:
    """``{name: kind}`` of the features runs recorded beyond the base stage schema."""
    base = set(STAGE_FEATURES.names)
    values: dict[str, list[str | None]] = {}
    for params in params_of_runs:
        for key, value in params.items():
            name = key[len(FEATURE_PREFIX):] if key.startswith(FEATURE_PREFIX) else None
            if name and name not in base and FEATURE_NAME.match(name):
                values.setdefault(name, []).append(value)
    return infer_feature_kinds(values)


def _excluded(tags: Mapping[str, str]) -> str | None:
    """Why a stage run cannot teach the profiler, or None."""
    schema_id = tags.get(TAG_FEATURE_SCHEMA, "stage/1")
    if schema_id not in READABLE_STAGE_SCHEMAS:
        return f"feature schema {schema_id}, not one of {', '.join(READABLE_STAGE_SCHEMAS)}"
    if tags.get(TAG_OUTCOME) == "oom_killed":
        # Its peak is the limit it was killed at, not what it needed: it would teach the
        # profiler to predict exactly the size that failed.
        return "OOM-killed: the observed peak is the kill limit, not the need"
    if tags.get(TAG_UNTRUSTED) == "true":
        # The monitor's log had lines the operator refused: the workload may have written
        # into it, so its usage is not evidence (logic/monitor_trust.py).
        return "untrusted: the monitor's log had forged or malformed lines"
    return None

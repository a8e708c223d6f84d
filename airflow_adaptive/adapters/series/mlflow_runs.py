"""Usage series from the stage runs in an MLflow experiment: each run's ``usage.<resource>``
metric history (what the monitor sampled), its stage ``dag_id.task_id``, its start the first
sample's time. Runs with no usage yet, and runs tagged untrusted (the monitor's log had forged or
malformed lines), are left out and counted."""

from __future__ import annotations

import numpy as np

from airflow_adaptive.adapters.mlflow import store
from airflow_adaptive.domain.errors import RegistryError, TraceFormatError
from airflow_adaptive.domain.series import SERIES_RESOURCES, SeriesLoadReport, SeriesSet, UsageSeries
from airflow_adaptive.domain.stage_run import SCHEMA_ID, TAG_DAG, TAG_SCHEMA, TAG_TASK, TAG_UNTRUSTED, usage_metric

PAGE = 1000


def load_mlflow_series(experiment_name: str) -> SeriesSet:
    client = store.client()
    report = SeriesLoadReport(source=f"{client.tracking_uri} experiment '{experiment_name}'")
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise RegistryError(f"no MLflow experiment '{experiment_name}' at {client.tracking_uri}: stage runs are logged "
                            "there by the operator; check the experiment name and MLFLOW_TRACKING_URI")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], filter_string=f"tags.`{TAG_SCHEMA}` = '{SCHEMA_ID}'",
                                  max_results=PAGE, page_token=token)
        for run in page:
            tags = run.data.tags
            if tags.get(TAG_UNTRUSTED) == "true":
                _skip(report, "untrusted runs (forged or malformed monitor lines)")
                continue
            usage = {}
            for resource in SERIES_RESOURCES:
                if usage_metric(resource) not in run.data.metrics:
                    continue
                history = sorted(client.get_metric_history(run.info.run_id, usage_metric(resource)),
                                 key=lambda m: (m.timestamp, m.step))
                times = np.asarray([m.timestamp / 1000.0 for m in history], float)
                values = np.maximum(np.asarray([m.value for m in history], float), 0.0)
                keep = np.append(np.diff(times) > 0, True)  # one sample per millisecond: the last logged
                report.duplicated_timestamps += int((~keep).sum())
                usage[resource] = (times[keep], values[keep])
            if not usage:
                _skip(report, "runs with no usage samples")
                continue
            start = min(float(t[0]) for t, _ in usage.values())
            stage = f"{tags.get(TAG_DAG, '?')}.{tags.get(TAG_TASK, '?')}"
            runs.append(UsageSeries(run.info.run_id, stage, {r: (t - start, v) for r, (t, v) in usage.items()}, start))
            report.rows += sum(len(t) for t, _ in usage.values())
        token = page.token
        if not token:
            break
    if not runs:
        raise TraceFormatError(f"{report.source}: no stage run with usage samples (left out: {report.skipped or 'none'})")
    runs.sort(key=lambda r: (r.stage, r.start))
    return SeriesSet(tuple(runs), report)


def _skip(report: SeriesLoadReport, reason: str) -> None:
    report.skipped[reason] = report.skipped.get(reason, 0) + 1

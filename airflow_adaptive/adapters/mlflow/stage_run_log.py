"""The operator's side of a stage run in MLflow: open it with the prediction, record OOM kills,
close it with what was observed, and find the OOM kills of earlier tries of the same task.

Two backends behind one small interface, chosen by the tracking URI:

| tracking URI | backend | why |
|---|---|---|
| ``http(s)://`` (a server) | :class:`~.rest.MlflowRestClient` | no ``import mlflow`` (seconds) in a task's start |
| ``sqlite:///``, a path (the embedded default) | ``mlflow.MlflowClient`` | only MLflow's client speaks to local stores |

The names come from :mod:`airflow_adaptive.domain.stage_run` (the stage-run schema).
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping, Sequence

from airflow_adaptive.adapters.mlflow import store
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.stage_run import (
    OUTCOMES, TAG_DAG, TAG_DEFERRED_SIZES, TAG_TRY, TAG_MAP_INDEX, TAG_FEATURE_SCHEMA, TAG_MODEL_URI, TAG_MODEL_VERSION, TAG_OOM_EVENTS, TAG_OUTCOME, TAG_RUN,
    TAG_MONITOR, TAG_MONITOR_REASON, TAG_REJECTED_LINES, TAG_UNTRUSTED, TAG_SIZING, TAG_SIZING_REASON, TAG_TASK, ObservedSummary, OomEvent, StageIdentity,
    deferred_sizes_from_json, oom_events_from_json, resize_metric, sizing_params, usage_metric,
)

STAGE_EXPERIMENT = "airflow-adaptive-stages"


class _RestBackend:
    def __init__(self, uri: str) -> None:
        from airflow_adaptive.adapters.mlflow.rest import MlflowRestClient

        self.rest = MlflowRestClient(uri)

    def experiment(self, name: str) -> str:
        return self.rest.ensure_experiment(name)

    def create_run(self, experiment_id: str, tags: Mapping[str, str], name: str) -> str:
        return self.rest.create_run(experiment_id, tags, run_name=name)["info"]["run_id"]

    def log(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        self.rest.log_batch(run_id, metrics=list(metrics), params=list(params), tags=list(tags))

    def terminate(self, run_id: str, status: str) -> None:
        self.rest.set_terminated(run_id, status)

    def search(self, experiment_id: str, filter_string: str) -> list[dict[str, str]]:
        """Tags of each matching run."""
        out = []
        for run in self.rest.search_runs([experiment_id], filter_string):
            tags = {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}
            out.append(tags)
        return out

    def upload(self, run_id: str, path: str, data: bytes) -> None:
        self.rest.upload_artifact(run_id, path, data)


class _ClientBackend:
    def __init__(self, uri: str) -> None:
        self.client = store.client(uri)

    def experiment(self, name: str) -> str:
        return store.ensure_experiment(self.client, name)

    def create_run(self, experiment_id: str, tags: Mapping[str, str], name: str) -> str:
        return self.client.create_run(experiment_id, tags=dict(tags), run_name=name).info.run_id

    def log(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        from mlflow.entities import Metric, Param, RunTag

        metrics = [Metric(m["key"], float(m["value"]), int(m["timestamp"]), int(m.get("step", 0))) for m in metrics]
        params = [Param(p["key"], str(p["value"])) for p in params]
        tags = [RunTag(t["key"], str(t["value"])) for t in tags]
        for i in range(0, max(len(metrics), 1), 1000):  # the store's batch limits
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000], params=params if i == 0 else [],
                                  tags=tags if i == 0 else [])

    def terminate(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def search(self, experiment_id: str, filter_string: str) -> list[dict[str, str]]:
        return [dict(r.data.tags) for r in self.client.search_runs([experiment_id], filter_string, max_results=1000)]

    def upload(self, run_id: str, path: str, data: bytes) -> None:
        self.client.log_text(run_id, data.decode(), path)


def _kv(mapping: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in mapping.items()]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


class StageRunLog:
    """One experiment's stage runs, written by the operator (see the module docstring)."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = STAGE_EXPERIMENT) -> None:
        self.tracking_uri = tracking_uri or store.tracking_uri()
        self.backend = _RestBackend(self.tracking_uri) if store.is_remote(self.tracking_uri) else _ClientBackend(self.tracking_uri)
        self.experiment_name = experiment
        self._experiment_id: str | None = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.backend.experiment(self.experiment_name)
        return self._experiment_id

    def start(self, identity: StageIdentity, features: Mapping[str, Any], profile: PredictedProfile | None,
              allocated: Mapping[str, float], requested: Mapping[str, float], *, sizing: str, reason: str,
              model_uri: str, model_version: str | None, schema_id: str) -> str:
        """A RUNNING run holding the prediction and the size given; returns its id."""
        tags = {**identity.tags(), TAG_FEATURE_SCHEMA: schema_id, TAG_MODEL_URI: model_uri,
                TAG_MODEL_VERSION: model_version or "", TAG_SIZING: sizing, TAG_SIZING_REASON: reason[:5000]}
        mapped = f"-{identity.map_index}" if identity.map_index >= 0 else ""
        run_id = self.backend.create_run(self.experiment_id, tags, f"{identity.task_id}{mapped}-try{identity.try_number}")
        self.backend.log(run_id, params=_kv(sizing_params(features, profile, allocated, requested)))
        return run_id

    def log_usage(self, run_id: str, samples: Sequence[UsageSample]) -> None:
        """``usage.<resource>`` at the sample's time (``timestamp``) with step = the monitor's sample
        number, unique within a try whoever writes the batch (the operator, its trigger, a new
        process): the MLflow UI charts it over time with the x axis set to *Relative time*. Memory
        also as ``usage.memory_mib`` (the UI prints raw bytes as 2.1e+8)."""
        metrics = [
            {"key": usage_metric(r), "value": v, "timestamp": int(s.time * 1000), "step": s.step}
            for s in samples for r, v in s.values.items()
        ]
        metrics += [{"key": usage_metric("memory_mib"), "value": s.values["memory"] / 2**20, "timestamp": int(s.time * 1000),
                     "step": s.step} for s in samples if "memory" in s.values]
        if metrics:
            self.backend.log(run_id, metrics=metrics)

    def log_resizes(self, run_id: str, resizes: Sequence[Mapping[str, Any]]) -> None:
        """Every resize decision, with its reason, in ``resizes.json``; each one applied (or capped)
        also as ``resize.<resource>`` (its new size), step = resize number. Entries without a
        ``status`` are the local Resource Manager's, which only records the cgroup writes it made."""
        applied = [r for r in resizes if r.get("status", "applied") in ("applied", "capped")]
        metrics = [
            {"key": resize_metric(r["resource"]), "value": float(r["new"]), "timestamp": int(float(r.get("time", time.time())) * 1000), "step": i}
            for i, r in enumerate(applied)
        ]
        if metrics:
            self.backend.log(run_id, metrics=metrics)
        if resizes:
            self.backend.upload(run_id, "resizes.json", json.dumps(list(resizes), indent=1, default=str).encode())

    def record_deferred_sizes(self, run_id: str, sizes: Mapping[str, float]) -> None:
        """Increases this try could not get in place: the next try starts at them."""
        if sizes:
            self.backend.log(run_id, tags=[{"key": TAG_DEFERRED_SIZES, "value": json.dumps(dict(sizes))}])

    def earlier_deferred_sizes(self, identity: StageIdentity) -> dict[str, float]:
        """The largest size each resource was left wanting by an earlier try of this task in this DAG run."""
        out: dict[str, float] = {}
        for tags in self.backend.search(self.experiment_id, self._same_task(identity)):
            try_number = int(tags.get(TAG_TRY, 0) or 0)
            if try_number and try_number >= identity.try_number:
                continue
            for r, v in deferred_sizes_from_json(tags.get(TAG_DEFERRED_SIZES)).items():
                out[r] = max(out.get(r, 0.0), v)
        return out

    @staticmethod
    def _same_task(identity: StageIdentity) -> str:
        """The same task instance in the same DAG run (a mapped instance: its own map index)."""
        same = (f"tags.`{TAG_DAG}` = '{_quote(identity.dag_id)}' and tags.`{TAG_TASK}` = '{_quote(identity.task_id)}' "
                f"and tags.`{TAG_RUN}` = '{_quote(identity.run_id)}'")
        if identity.map_index >= 0:
            same += f" and tags.`{TAG_MAP_INDEX}` = '{identity.map_index}'"
        return same

    def log_metrics(self, run_id: str, values: Mapping[str, float]) -> None:
        now = int(time.time() * 1000)
        self.backend.log(run_id, metrics=[{"key": k, "value": float(v), "timestamp": now, "step": 0} for k, v in values.items()])

    def record_oom(self, run_id: str, events: Sequence[OomEvent], peak_memory: float | None = None) -> None:
        """The OOM kills of this try, before anything (pod deletion, a retry) can lose them."""
        payload = json.dumps([e.to_dict() for e in events])
        metrics = [{"key": "oom_kills", "value": float(len(events)), "timestamp": int(time.time() * 1000), "step": 0}]
        if peak_memory:
            metrics.append({"key": "observed.memory.peak", "value": float(peak_memory), "timestamp": int(time.time() * 1000), "step": 0})
        self.backend.log(run_id, metrics=metrics, tags=[{"key": TAG_OOM_EVENTS, "value": payload}])
        self.backend.upload(run_id, "oom_events.json", payload.encode())

    def record_monitor_lines(self, run_id: str, samples: Sequence[UsageSample], summary_metrics: Mapping[str, float] | None,
                             rejected: Mapping[str, int]) -> None:
        """What the operator read from the monitor's log: usage samples (in batches, as they come),
        the monitor's summary (peaks, means, times) once, and the lines it refused (the run is then
        ``untrusted``: retraining leaves it out)."""
        for i in range(0, len(samples), 200):  # MLflow's log-batch takes 1000 metrics: 5 resources a sample
            self.log_usage(run_id, samples[i:i + 200])
        tags = []
        if rejected:
            tags = [{"key": TAG_UNTRUSTED, "value": "true"},
                    {"key": TAG_REJECTED_LINES, "value": json.dumps(dict(sorted(rejected.items())))}]
        now = int(time.time() * 1000)
        metrics = [{"key": k, "value": float(v), "timestamp": now, "step": 0} for k, v in (summary_metrics or {}).items()]
        if metrics or tags:
            self.backend.log(run_id, metrics=metrics, tags=tags)

    def record_monitor_unavailable(self, run_id: str, reason: str) -> None:
        """The monitor could not read the workload: no usage series, no resizes, and why."""
        self.backend.log(run_id, tags=[{"key": TAG_MONITOR, "value": "unavailable"},
                                       {"key": TAG_MONITOR_REASON, "value": reason[:5000]}])

    def record_outcome(self, run_id: str, outcome: str) -> None:
        """The try's outcome as the operator saw it (a pod's exit code), and the run closed. The
        monitor sidecar cannot see the workload's exit code; this is the authoritative record."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
        self.backend.log(run_id, tags=[{"key": TAG_OUTCOME, "value": outcome}])
        self.backend.terminate(run_id, "FINISHED" if outcome == "success" else "FAILED")

    def finish(self, run_id: str, summary: ObservedSummary) -> None:
        now = int(summary.end_time * 1000)
        metrics = [{"key": k, "value": float(v), "timestamp": now, "step": 0} for k, v in summary.metrics().items()]
        self.backend.log(run_id, metrics=metrics, tags=[{"key": TAG_OUTCOME, "value": summary.outcome}])
        self.backend.terminate(run_id, "FINISHED" if summary.outcome == "success" else "FAILED")

    def earlier_oom_kills(self, identity: StageIdentity) -> list[OomEvent]:
        """OOM kills recorded by earlier tries of the same task in the same DAG run, oldest first."""
        events = []
        for tags in self.backend.search(self.experiment_id, self._same_task(identity)):
            events.extend(e for e in oom_events_from_json(tags.get(TAG_OOM_EVENTS)) if e.try_number < identity.try_number)
        return sorted(events, key=lambda e: (e.try_number, e.time))

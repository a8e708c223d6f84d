"""airflow-adaptive's own metrics, sent through Airflow's metrics (StatsD, Datadog or OpenTelemetry).

Names follow Airflow's (dotted, lower case) under the prefix ``airflow_adaptive.``; Airflow puts
its configured prefix in front (``[metrics] statsd_prefix`` / ``otel_prefix``, ``airflow`` by
default), so a dashboard sees ``airflow.airflow_adaptive.sizing.decision``. Tags go through
Airflow's ``tags=``: Datadog and OpenTelemetry keep them as tags/attributes, plain StatsD only with
``[metrics] statsd_influxdb_enabled = True`` (``name,tag=value``), else it drops them. Every tag
value comes from a short, fixed label set below, except ``dag_id``/``task_id`` (Airflow's own
task metrics carry them too).

| metric | kind | tags | when |
|---|---|---|---|
| ``airflow_adaptive.sizing.decision`` | counter | mode, reason, dag_id, task_id | a try's size is decided |
| ``airflow_adaptive.sizing.duration`` | timer (ms) | outcome (predicted / fallback), dag_id, task_id | the prediction took this long |
| ``airflow_adaptive.profiler.version`` | gauge | model | the registered profiler version that predicted |
| ``airflow_adaptive.prediction.ratio.<resource>`` | gauge | dag_id, task_id | a try ended: observed peak / predicted upper (1.0 = the covering quantile was met exactly) |
| ``airflow_adaptive.prediction.under`` | counter | resource, dag_id, task_id | a try ended with its peak above the predicted upper |
| ``airflow_adaptive.resize`` | counter | outcome, resource | a resize signal was applied or could not be |
| ``airflow_adaptive.oom.kill`` | counter | kind (kernel / gpu / ephemeral_storage), dag_id, task_id | a try was killed out of memory (or evicted past its ephemeral-storage limit) |
| ``airflow_adaptive.oom.escalation`` | counter | dag_id, task_id | a retry starts with more memory after an OOM kill |

| tag | values |
|---|---|
| mode | ``adaptive`` (sized from the prediction), ``shadow``, ``fallback`` (the user's request), ``off`` |
| reason | adaptive: ``predicted``, ``oom_escalation``; shadow: ``shadow``; off: ``kill_switch``, ``mode_off``; fallback: ``feature_mismatch``, ``model_not_found``, ``registry_error``, ``invalid_input``, ``error`` |
| outcome (resize) | ``applied``, ``capped``, ``deferred``, ``ignored``, ``rejected``, ``conflict``, ``gone``, ``unreachable``, ``forbidden``, ``other`` |
| resource | ``cpu``, ``memory``, ``gpu``, ``gpu_memory``, ``other`` |

The builders are pure (tested by tables); :func:`emit` is the only code that talks to Airflow.
A metric must never fail a task: an error while emitting is logged once per process and swallowed.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable, Literal, Mapping

from airflow_adaptive.domain.errors import FeatureSchemaMismatch, ModelNotFound, RegistryError, UserError
from airflow_adaptive.domain.features import RESOURCES

log = logging.getLogger(__name__)

PREFIX = "airflow_adaptive"
Kind = Literal["counter", "gauge", "timer"]


@dataclass(frozen=True)
class Metric:
    """One metric's name (without Airflow's prefix), kind and the tags it carries."""

    name: str
    kind: Kind
    tags: tuple[str, ...]
    description: str


SIZING_DECISION = Metric(f"{PREFIX}.sizing.decision", "counter", ("mode", "reason", "dag_id", "task_id"),
                         "a try's size was decided")
SIZING_DURATION = Metric(f"{PREFIX}.sizing.duration", "timer", ("outcome", "dag_id", "task_id"),
                         "milliseconds the prediction took (load from the registry or cache, predict)")
PROFILER_VERSION = Metric(f"{PREFIX}.profiler.version", "gauge", ("model",),
                          "the registered profiler version that made the last prediction")
PREDICTION_UNDER = Metric(f"{PREFIX}.prediction.under", "counter", ("resource", "dag_id", "task_id"),
                          "a try's observed peak was above the predicted upper")
RESIZE = Metric(f"{PREFIX}.resize", "counter", ("outcome", "resource"), "a resize signal's outcome")
OOM_KILL = Metric(f"{PREFIX}.oom.kill", "counter", ("kind", "dag_id", "task_id"), "a try was killed out of memory")
OOM_ESCALATION = Metric(f"{PREFIX}.oom.escalation", "counter", ("dag_id", "task_id"),
                        "a retry starts with more memory after an earlier try's OOM kill")


def resource_label(resource: Any) -> str:
    """A resource as a tag or name part: one of ``RESOURCES``, else ``other``."""
    return resource if resource in RESOURCES else "other"


def prediction_ratio(resource: str) -> Metric:
    return Metric(f"{PREFIX}.prediction.ratio.{resource_label(resource)}", "gauge", ("dag_id", "task_id"),
                  f"observed peak / predicted upper of {resource}")


#: Every metric, for the README's table and the tests.
METRICS: tuple[Metric, ...] = (SIZING_DECISION, SIZING_DURATION, PROFILER_VERSION,
                               *(prediction_ratio(r) for r in RESOURCES), PREDICTION_UNDER, RESIZE, OOM_KILL, OOM_ESCALATION)

MODE_LABELS = ("adaptive", "shadow", "fallback", "off")
REASON_LABELS = ("predicted", "oom_escalation", "shadow", "kill_switch", "mode_off",
                 "feature_mismatch", "model_not_found", "registry_error", "invalid_input", "error")
RESIZE_OUTCOMES = ("applied", "capped", "deferred", "ignored", "rejected", "conflict", "gone", "unreachable", "forbidden", "other")
OOM_KINDS = ("kernel", "gpu", "ephemeral_storage")


@dataclass(frozen=True)
class Emission:
    """One value of one metric with its tags: what :func:`emit` sends."""

    metric: Metric
    value: float
    tags: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.metric.name


def _one(metric: Metric, value: float, **tags: Any) -> Emission:
    missing = set(metric.tags) - set(tags)
    if missing or set(tags) - set(metric.tags):
        raise ValueError(f"{metric.name} takes tags {metric.tags}, got {sorted(tags)}")
    return Emission(metric, float(value), {k: str(v) for k, v in tags.items()})


# ---------------------------------------------------------------- labels (bounded sets)
def fallback_reason(exc: BaseException) -> str:
    """Why a prediction could not be made, as a label (most specific class first)."""
    for cls, label in ((FeatureSchemaMismatch, "feature_mismatch"), (ModelNotFound, "model_not_found"),
                       (RegistryError, "registry_error"), (UserError, "invalid_input")):
        if isinstance(exc, cls):
            return label
    return "error"


def decision_labels(sizing: str, *, escalated: bool = False, fallback: str | None = None,
                    switched_off: bool = False) -> tuple[str, str]:
    """(mode, reason) of a plan whose stage-run tag is ``sizing`` (predicted / fallback / shadow / off).

    ``fallback``: :func:`fallback_reason`'s label (None: ``error``); ``switched_off``: the global
    kill switch rather than ``sizing_mode="off"``.
    """
    if sizing == "predicted":
        return "adaptive", "oom_escalation" if escalated else "predicted"
    if sizing == "shadow":
        return "shadow", "shadow"
    if sizing == "off":
        return "off", "kill_switch" if switched_off else "mode_off"
    if sizing == "fallback":
        return "fallback", fallback if fallback in REASON_LABELS else "error"
    raise ValueError(f"unknown sizing {sizing!r}; expected predicted, fallback, shadow or off")


# ---------------------------------------------------------------- builders (pure)
def sizing_decision(sizing: str, dag_id: str, task_id: str, *, escalated: bool = False,
                    fallback: str | None = None, switched_off: bool = False) -> list[Emission]:
    """The decision counter, and the escalation counter when an OOM kill raised this try's memory."""
    mode, reason = decision_labels(sizing, escalated=escalated, fallback=fallback, switched_off=switched_off)
    out = [_one(SIZING_DECISION, 1, mode=mode, reason=reason, dag_id=dag_id, task_id=task_id)]
    if escalated and mode in ("adaptive", "fallback"):  # shadow only says what it would have done
        out.append(_one(OOM_ESCALATION, 1, dag_id=dag_id, task_id=task_id))
    return out


def plan_decision(plan: Any, dag_id: str, task_id: str, *, fallback: str | None = None,
                  switched_off: bool = False) -> list[Emission]:
    """:func:`sizing_decision` of a ``StagePlan`` (an escalation in shadow mode is not applied)."""
    return sizing_decision(plan.sizing, dag_id, task_id, escalated=bool(plan.escalation) and plan.mode == "adaptive",
                           fallback=fallback, switched_off=switched_off)


def sizing_duration(seconds: float, predicted: bool, dag_id: str, task_id: str) -> list[Emission]:
    return [_one(SIZING_DURATION, max(0.0, seconds) * 1000.0, outcome="predicted" if predicted else "fallback",
                 dag_id=dag_id, task_id=task_id)]


def profiler_version(model_uri: str, version: Any) -> list[Emission]:
    """The version as a number (MLflow's are integers); none for a version that is not one."""
    try:
        number = float(int(str(version)))
    except (TypeError, ValueError):
        return []
    return [_one(PROFILER_VERSION, number, model=model_name(model_uri))]


def model_name(model_uri: str) -> str:
    """``models:/job-profiler@champion`` -> ``job-profiler`` (the registered name: a bounded label)."""
    if model_uri.startswith("models:/"):
        rest = model_uri[len("models:/"):]
        return rest.split("@")[0].split("/")[0] or "unknown"
    return "other"


def prediction_vs_observed(predicted_upper: Mapping[str, float], observed_peak: Mapping[str, float],
                           dag_id: str, task_id: str) -> list[Emission]:
    """Per resource both sides know (upper > 0): the ratio gauge, and the under-prediction counter."""
    out = []
    for resource in RESOURCES:
        upper, peak = predicted_upper.get(resource), observed_peak.get(resource)
        if upper is None or peak is None or not upper > 0:
            continue
        ratio = float(peak) / float(upper)
        out.append(_one(prediction_ratio(resource), ratio, dag_id=dag_id, task_id=task_id))
        if ratio > 1.0:
            out.append(_one(PREDICTION_UNDER, 1, resource=resource, dag_id=dag_id, task_id=task_id))
    return out


def profile_vs_observed(profile: Any, observed_peak: Mapping[str, float] | None, dag_id: str,
                        task_id: str) -> list[Emission]:
    """:func:`prediction_vs_observed` of a profile (or its ``to_dict()``; None: no prediction, nothing)."""
    return prediction_vs_observed(predicted_uppers(profile), observed_peak or {}, dag_id, task_id)


def predicted_uppers(profile: Any) -> dict[str, float]:
    """``{resource: upper}`` of a ``PredictedProfile`` (None: none), or of its ``to_dict()`` form
    (the plan in XCom, which a resumed deferred try reads)."""
    if profile is None:
        return {}
    if isinstance(profile, Mapping):
        resources = profile.get("resources") or {}
        return {r: float(e["upper"]) for r, e in resources.items() if isinstance(e, Mapping) and "upper" in e}
    return {r: float(e.upper) for r, e in profile.resources.items()}


def resize_outcomes(resizes: Iterable[Mapping[str, Any]]) -> list[Emission]:
    """One count per resize record; a record without a status is one the local runner applied."""
    out = []
    for r in resizes:
        status = str(r.get("status") or "applied")
        out.append(_one(RESIZE, 1, outcome=status if status in RESIZE_OUTCOMES else "other",
                        resource=resource_label(r.get("resource"))))
    return out


def oom_kill(kind: str, dag_id: str, task_id: str) -> list[Emission]:
    return [_one(OOM_KILL, 1, kind=kind if kind in OOM_KINDS else "kernel", dag_id=dag_id, task_id=task_id)]


# ---------------------------------------------------------------- I/O: through Airflow's Stats
class _Emitter:
    """Sends emissions through the Task SDK's stats (``airflow.sdk.observability.stats``, what
    Airflow 3 asks task code to use; ``airflow.stats`` is a deprecated shim over it)."""

    def __init__(self) -> None:
        self.warned = False
        self.checked = False

    def stats(self):
        from airflow.sdk.observability import stats

        if not self.checked:
            self.checked = True
            # The task runner (and the SDK's serde import) configure it from [metrics]; a process
            # that has not (a trigger, a script calling the hook) gets the same configuration here.
            # (The factory lives in the module that defines ``initialize``; a private, so read defensively.)
            if getattr(sys.modules.get(stats.initialize.__module__), "_factory", "unknown") is None:
                from airflow.sdk.configuration import conf
                from airflow.sdk.observability.metrics import stats_utils

                stats.initialize(factory=stats_utils.get_stats_factory(),
                                 export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True))
        return stats

    def send(self, emissions: Iterable[Emission]) -> None:
        try:
            stats = self.stats()
            for e in emissions:
                tags = dict(e.tags) or None
                if e.metric.kind == "counter":
                    stats.incr(e.name, count=int(e.value), tags=tags)
                elif e.metric.kind == "gauge":
                    stats.gauge(e.name, e.value, tags=tags)
                else:
                    stats.timing(e.name, timedelta(milliseconds=e.value), tags=tags)
        except Exception as exc:  # noqa: BLE001 - a metric must never fail the task
            self.failed(exc)

    def failed(self, exc: BaseException) -> None:
        if not self.warned:
            self.warned = True
            log.warning("cannot emit airflow-adaptive metrics (%s: %s); further errors are not logged",
                        type(exc).__name__, exc)


_EMITTER = _Emitter()


def emit(emissions: Iterable[Emission]) -> None:
    """Send ``emissions``; never raises."""
    _EMITTER.send(emissions)


def record(builder: Callable[..., Iterable[Emission]], *args: Any, **kwargs: Any) -> None:
    """``emit(builder(*args, **kwargs))``, where the building too must never fail the task."""
    try:
        emissions = list(builder(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - a bug in a builder is a missing metric, not a failed task
        _EMITTER.failed(exc)
        return
    _EMITTER.send(emissions)


__all__ = ["METRICS", "Emission", "Metric", "decision_labels", "emit", "fallback_reason", "oom_kill", "plan_decision",
           "prediction_vs_observed", "predicted_uppers", "profile_vs_observed", "profiler_version", "record",
           "resize_outcomes", "sizing_decision", "sizing_duration"]

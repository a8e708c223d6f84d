"""The stage-run schema: what one MLflow run of one pipeline stage holds.

Writers (the operator at sizing time, the monitor while the stage runs) and the reader (the
``records`` loader that feeds retraining) share this module, so the names live in one place.

One MLflow run per stage *try*:

| MLflow field | name | written by | meaning |
|---|---|---|---|
| tag | ``airflow_adaptive.schema`` | operator | ``stage-run/1`` |
| tag | ``airflow_adaptive.dag_id`` / ``task_id`` / ``run_id`` / ``try_number`` | operator | which Airflow task try |
| tag | ``airflow_adaptive.feature_schema`` | operator | feature schema id of the features below |
| tag | ``airflow_adaptive.model_uri`` / ``model_version`` | operator | the profiler that predicted |
| tag | ``airflow_adaptive.outcome`` | monitor | ``success``, ``failed``, ``oom_killed`` |
| param | ``feature.<name>`` | operator | one job feature (string form) |
| param | ``predicted.<resource>.median`` / ``.upper`` | operator | the prediction |
| param | ``allocated.<resource>`` | operator | what the stage was given at start |
| param | ``requested.<resource>`` | operator | the user's own request (the prior) |
| metric | ``usage.<resource>`` | monitor | time series, ``step`` = whole seconds since the first sample (the MLflow UI's x axis), timestamp = sample time; bandwidths (``disk_read``, ``disk_write``, ``network_rx``, ``network_tx``) are bytes/s since the previous sample |
| metric | ``usage.memory_mib`` | monitor | ``usage.memory`` in MiB, for the MLflow UI's charts |
| metric | ``observed.<resource>.peak`` / ``.mean`` | monitor | summary at the end (a bandwidth's peak: its fastest sampling interval) |
| metric | ``observed.<io total>`` | monitor | ``IO_TOTALS``: the try's disk and network bytes and operations, I/O wait, storage peak |
| metric | ``stage.start_time`` / ``stage.end_time`` | monitor | Unix seconds |
| metric | ``oom_kills`` | monitor / operator | kernel OOM kills seen in this try |
| artifact | ``oom_events.json`` | monitor / operator | list of {time, container, limit_bytes, try_number, kind} |
| tag | ``airflow_adaptive.oom_events`` | operator | the same list as JSON: read back by the next try without an artifact download |
| tag | ``airflow_adaptive.deferred_sizes`` | operator | in-place increases this try could not get (JSON ``{resource: size}``); the next try starts there |
| tag | ``airflow_adaptive.sizing`` | operator | ``predicted``, ``fallback`` (the user's request, and why in ``sizing_reason``), ``shadow``, ``off`` |
| metric | ``resize.<resource>`` | operator | the size after each applied resize, ``step`` = resize number |
| metric | ``reserved.memory_byte_seconds`` / ``reserved.cpu_core_seconds`` | operator (local) | the limits in force integrated over the try |
| metric | ``started.<resource>`` / ``final.<resource>`` | operator (local) | the size in force when the try started / ended |

A stage run becomes a training record when it has an end time and an observed peak for at
least one resource; ``used`` is the observed peak (a covering need, which is what sizing must
meet), ``submit`` the start time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow_adaptive.domain.features import RESOURCES, Feature, FeatureSchema
from airflow_adaptive.domain.profile import PredictedProfile

SCHEMA_ID = "stage-run/1"
TAG_PREFIX = "airflow_adaptive."
TAG_SCHEMA = TAG_PREFIX + "schema"
TAG_DAG = TAG_PREFIX + "dag_id"
TAG_TASK = TAG_PREFIX + "task_id"
TAG_RUN = TAG_PREFIX + "run_id"
TAG_TRY = TAG_PREFIX + "try_number"
TAG_MAP_INDEX = TAG_PREFIX + "map_index"  # a mapped task's instance (absent: not mapped)
TAG_FEATURE_SCHEMA = TAG_PREFIX + "feature_schema"
TAG_MODEL_URI = TAG_PREFIX + "model_uri"
TAG_MODEL_VERSION = TAG_PREFIX + "model_version"
TAG_OUTCOME = TAG_PREFIX + "outcome"
TAG_OOM_EVENTS = TAG_PREFIX + "oom_events"
#: In-place increases a try asked for and could not get (``{"cpu"|"memory": bytes or cores}``):
#: the next try of the same task in the same DAG run starts there.
TAG_DEFERRED_SIZES = TAG_PREFIX + "deferred_sizes"
TAG_SIZING = TAG_PREFIX + "sizing"
#: "unavailable" when the monitor could not read the workload (its reason in TAG_MONITOR_REASON).
TAG_MONITOR = TAG_PREFIX + "monitor"
TAG_MONITOR_REASON = TAG_PREFIX + "monitor_reason"
#: "true" when lines of the monitor's log were rejected (``logic/monitor_trust.py``): the
#: workload may have written into it, so retraining leaves the run out. The counts are in
#: TAG_REJECTED_LINES.
TAG_UNTRUSTED = TAG_PREFIX + "untrusted"
TAG_REJECTED_LINES = TAG_PREFIX + "rejected_monitor_lines"
TAG_SIZING_REASON = TAG_PREFIX + "sizing_reason"
OUTCOMES = ("success", "failed", "oom_killed")
METRIC_START = "stage.start_time"
METRIC_END = "stage.end_time"
METRIC_OOM_KILLS = "oom_kills"
OOM_EVENTS_ARTIFACT = "oom_events.json"


def feature_param(name: str) -> str:
    return f"feature.{name}"


def usage_metric(resource: str) -> str:
    return f"usage.{resource}"


def observed_metric(resource: str, stat: str) -> str:
    return f"observed.{resource}.{stat}"


#: The features every stage schema knows, in a fixed order. Stage features are *open*: a DAG
#: author may declare any other named number or category (``stage_schema`` adds them as the
#: history holds them). The deep-learning ones are listed so that their kinds are fixed
#: (``precision`` "16" is a category, not a number) and so the README can recommend them.
BASE_STAGE_FEATURES: tuple[Feature, ...] = (
    Feature("dag_id", "categorical", description="Airflow DAG id"),
    Feature("task_id", "categorical", description="Airflow task id (the stage)"),
    Feature("algorithm", "categorical", description="e.g. random_forest, resnet18, transformer"),
    Feature("framework", "categorical", description="e.g. sklearn, pytorch"),
    Feature("model_family", "categorical", description="e.g. resnet, transformer, gbdt: what a new stage is compared with"),
    Feature("data_rows", "numeric", "rows", "rows of input data"),
    Feature("data_bytes", "numeric", "bytes", "size of input data"),
    Feature("n_features", "numeric", "columns", "input dimensionality"),
    Feature("epochs", "numeric", "", "passes over the data (1 for non-iterative stages)"),
    Feature("parameters", "numeric", "", "trainable parameters of the model"),
    Feature("batch_size", "numeric", "samples", "samples per step (per device)"),
    Feature("sequence_length", "numeric", "tokens", "tokens per sample (sequence models)"),
    Feature("image_size", "numeric", "pixels", "side of an input image (vision models)"),
    Feature("precision", "categorical", description="fp32, bf16, fp16, int8"),
    Feature("optimizer", "categorical", description="sgd, adam, adamw, ... (its state is 0-2x the parameters)"),
    Feature("world_size", "numeric", "processes", "data-parallel processes (GPUs) of the job"),
    Feature("requested_cpu", "numeric", "cores", "the user's own CPU request (filled from container_resources)"),
    Feature("requested_memory", "numeric", "bytes", "the user's own memory request (filled from container_resources)"),
    Feature("requested_gpu", "numeric", "GPUs", "the user's own GPU request (filled from container_resources)"),
)
STAGE_LEVELS = (("dag_id", "task_id"), ("task_id",), ("algorithm", "framework"), ("model_family",), ("algorithm",))
#: Feature names as Python identifiers: they become MLflow param names and pandas columns.
FEATURE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Stage runs logged under these feature schemas are read back (``stage/1`` runs lack the newer
#: features, which are then unknown).
READABLE_STAGE_SCHEMAS = ("stage/1", "stage/2")


def stage_schema(declared: Mapping[str, str] | None = None) -> FeatureSchema:
    """The stage schema: the base features plus ``declared`` ones (``{name: kind}``, sorted)."""
    base = {f.name for f in BASE_STAGE_FEATURES}
    extra = tuple(Feature(name, kind, description="declared by the DAG author")  # type: ignore[arg-type]
                  for name, kind in sorted((declared or {}).items()) if name not in base)
    return FeatureSchema(
        name="stage",
        version=2,
        description="Features of an Airflow pipeline stage known before it runs (open: base features + declared ones).",
        key=("dag_id", "task_id"),
        resources=RESOURCES,
        levels=STAGE_LEVELS,
        features=(*BASE_STAGE_FEATURES, *extra),
    )


#: The stage schema with no declared features: what the operator tags its runs with.
STAGE_FEATURES = stage_schema()


def infer_feature_kinds(values: Mapping[str, list[str | None]]) -> dict[str, str]:
    """The kind of each declared feature from the values its runs recorded (MLflow params are
    text): numeric when every recorded value reads as a finite number, else categorical."""
    out = {}
    for name, seen in values.items():
        known = [v for v in seen if v not in (None, "", "None", "nan")]
        out[name] = "numeric" if known and all(_is_number(v) for v in known) else "categorical"
    return out


def check_feature_names(features: Mapping[str, Any], where: str) -> None:
    """A declared feature's name must be an identifier (it becomes an MLflow param name)."""
    from airflow_adaptive.domain.errors import UserError

    bad = [str(k) for k in features if not isinstance(k, str) or not FEATURE_NAME.match(k)]
    if bad:
        raise UserError(f"{where}: feature name(s) {bad} are not identifiers (letters, digits and '_', "
                        "not starting with a digit, at most 64 characters); rename them")


def _is_number(text: str) -> bool:
    if text.strip().lower() in ("true", "false"):
        return False
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


@dataclass(frozen=True)
class StageIdentity:
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int = -1  # Airflow's: -1 for a task that is not mapped

    def tags(self) -> dict[str, str]:
        tags = {
            TAG_SCHEMA: SCHEMA_ID,
            TAG_DAG: self.dag_id,
            TAG_TASK: self.task_id,
            TAG_RUN: self.run_id,
            TAG_TRY: str(self.try_number),
        }
        if self.map_index >= 0:
            tags[TAG_MAP_INDEX] = str(self.map_index)
        return tags


@dataclass(frozen=True)
class OomEvent:
    time: float
    container: str
    limit_bytes: float
    try_number: int
    #: "kernel" (cgroup OOM kill), "gpu" (CUDA out of memory in the log) or "ephemeral_storage"
    #: (the kubelet evicted the pod for passing its ephemeral-storage limit, ``limit_bytes``; the
    #: try's outcome is then ``oom_killed`` too: it ended at a limit, not at its need).
    kind: str = "kernel"

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "container": self.container,
            "limit_bytes": self.limit_bytes,
            "try_number": self.try_number,
            "kind": self.kind,
        }


@dataclass
class ObservedSummary:
    """The monitor's summary of one try: peaks and means per resource, times, outcome, and the
    try's I/O totals (``IO_TOTALS``; only those measured)."""

    start_time: float
    end_time: float
    outcome: str
    peak: dict[str, float] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    oom_events: list[OomEvent] = field(default_factory=list)
    io: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        unknown = [k for k in self.io if k not in IO_TOTALS]
        if unknown:
            raise ValueError(f"unknown I/O totals {unknown}; known: {IO_TOTALS}")

    def metrics(self) -> dict[str, float]:
        out = {METRIC_START: self.start_time, METRIC_END: self.end_time, METRIC_OOM_KILLS: float(len(self.oom_events))}
        for r, v in self.peak.items():
            out[observed_metric(r, "peak")] = float(v)
        for r, v in self.mean.items():
            out[observed_metric(r, "mean")] = float(v)
        out.update(io_metrics(self.io))
        return out


#: A try's disk, network and working-directory storage figures (``adapters/io_counters``), logged
#: as ``observed.<name>``: totals over the try, the storage figure a peak. What is predicted are
#: the resources of the samples (``disk_read`` ... bytes/s, ``ephemeral_storage`` bytes): their
#: ``observed.<resource>.peak`` like cpu's and memory's.
IO_TOTALS = ("disk_read_bytes", "disk_write_bytes", "disk_read_ops", "disk_write_ops", "io_wait_seconds",
             "network_rx_bytes", "network_tx_bytes", "ephemeral_storage_peak_bytes")


def io_metrics(io: Mapping[str, float]) -> dict[str, float]:
    return {f"observed.{k}": float(v) for k, v in io.items() if k in IO_TOTALS}


def resize_metric(resource: str) -> str:
    return f"resize.{resource}"


def deferred_sizes_from_json(text: str | None) -> dict[str, float]:
    """The sizes of a ``deferred_sizes`` tag (cpu/memory only); malformed entries are skipped."""
    import json

    try:
        data = json.loads(text) if text else {}
    except (ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {r: float(v) for r, v in data.items()
            if r in ("cpu", "memory") and isinstance(v, (int, float)) and _finite(v) and v > 0}


def oom_events_from_json(text: str | None) -> list[OomEvent]:
    """The events of an ``oom_events`` tag; malformed entries are skipped (never fatal)."""
    import json

    try:
        items = json.loads(text) if text else []
    except (ValueError, RecursionError):
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        try:
            out.append(OomEvent(float(item["time"]), str(item["container"]), float(item["limit_bytes"]),
                                int(item["try_number"]), str(item.get("kind", "kernel"))))
        except (KeyError, TypeError, ValueError, OverflowError):  # Overflow: int(1e999), float(10**400)
            continue
    return out


def sizing_params(
    features: Mapping[str, Any],
    profile: PredictedProfile | None,
    allocated: Mapping[str, float],
    requested: Mapping[str, float],
) -> dict[str, str]:
    """The params the operator logs when it sizes a stage."""
    params = {feature_param(k): str(v) for k, v in features.items()}
    for r, est in (profile.resources.items() if profile is not None else ()):
        params[f"predicted.{r}.median"] = repr(float(est.median))
        params[f"predicted.{r}.upper"] = repr(float(est.upper))
    for r, phases in (profile.phases.items() if profile is not None else ()):
        # start_s:median:upper per phase: short enough for an MLflow param (6000 characters)
        params[f"predicted.{r}.phases"] = " ".join(f"{p.start_s:.4g}:{p.median:.6g}:{p.upper:.6g}" for p in phases)
    params.update({f"allocated.{r}": repr(float(v)) for r, v in allocated.items()})
    params.update({f"requested.{r}": repr(float(v)) for r, v in requested.items()})
    return params


def record_from_run(
    schema: FeatureSchema,
    run_id: str,
    tags: Mapping[str, str],
    params: Mapping[str, str],
    metrics: Mapping[str, float],
) -> dict[str, Any] | None:
    """One stage run as a record row (``JobTable.from_rows`` shape), or None when unfinished.

    Returns None for runs without an end time or without any observed peak: they cannot teach
    the profiler anything yet (the caller counts them as excluded).
    """
    end = metrics.get(METRIC_END)
    start = metrics.get(METRIC_START)
    used = {r: metrics.get(observed_metric(r, "peak")) for r in schema.resources}
    if end is None or start is None or all(v is None for v in used.values()):
        return None
    features: dict[str, Any] = {}
    for feat in schema.features:
        raw = params.get(feature_param(feat.name))
        if feat.kind == "numeric":
            features[feat.name] = _float_or_none(raw)
        else:
            features[feat.name] = raw
    return {
        "job_id": run_id,
        "submit": float(start),
        "end": float(end),
        "run_time": max(0.0, float(end) - float(start)),
        "features": features,
        "used": used,
        "requested": {r: _float_or_none(params.get(f"requested.{r}")) for r in schema.resources},
        "outcome": tags.get(TAG_OUTCOME, ""),
    }


def _finite(value: int | float) -> bool:
    """math.isfinite without its OverflowError on an int past float range (JSON allows one)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _float_or_none(raw: Any) -> float | None:
    if raw is None or raw == "" or raw == "None":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


__all__ = [name for name in dir() if not name.startswith("_")] + ["RESOURCES"]

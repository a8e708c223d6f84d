"""Usage series from Prometheus range queries, as a user exports them (``/api/v1/query_range``).

The file holds one response (``{"status": "success", "data": {"resultType": "matrix", ...}}``) or a
JSON list of them (memory and CPU are usually queried apart). Each result is one container of one
pod; its series is ``namespace/pod/container``, and its stage the pod name without the random
suffix Airflow's KubernetesPodOperator (8 characters) or a Job/ReplicaSet adds
(``train-model-x7k2p9qa`` -> ``train-model``), plus the container. Each series starts at its first
sample, on Prometheus' clock, so a run learns from the runs that ended before it began.

| metric | resource | conversion |
|---|---|---|
| ``container_memory_working_set_bytes`` | memory | bytes (what the kubelet evicts and the OOM killer charges) |
| ``container_cpu_usage_seconds_total`` | cpu | a counter: cores = its increase / the interval; a reset starts over |
| ``DCGM_FI_DEV_FB_USED`` | gpu_memory | MiB -> bytes (NVIDIA's DCGM exporter) |
| ``DCGM_FI_DEV_GPU_UTIL`` | gpu | percent -> GPUs busy |

Results of other metrics, cAdvisor's pod-level series (container ``""`` or ``POD``) and ``NaN``
samples are left out and counted in the load report.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from airflow_adaptive.adapters.files import is_file, parse_json, read_text
from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.series import SeriesLoadReport, SeriesSet, UsageSeries

METRICS = {
    "container_memory_working_set_bytes": ("memory", 1.0),
    "container_cpu_usage_seconds_total": ("cpu", None),  # a counter
    "DCGM_FI_DEV_FB_USED": ("gpu_memory", float(2**20)),
    "DCGM_FI_DEV_GPU_UTIL": ("gpu", 0.01),
}
_SUFFIX = re.compile(r"-[a-z0-9]{5,10}$")


def stage_of(pod: str, container: str) -> str:
    """The pod's name without its random suffixes (a ReplicaSet's hash and the pod's own)."""
    name = _SUFFIX.sub("", pod)
    if name != pod and _SUFFIX.search(name) and any(c.isdigit() for c in name.rsplit("-", 1)[-1]):
        name = _SUFFIX.sub("", name)
    return f"{name}/{container}"


def _responses(data: Any, path: Path) -> list[dict[str, Any]]:
    items = data if isinstance(data, list) else [data]
    out = []
    for i, item in enumerate(items):
        where = f"{path}: response {i + 1}" if isinstance(data, list) else str(path)
        if not isinstance(item, dict) or not isinstance(item.get("data"), dict):
            raise TraceFormatError(f"{where}: not a Prometheus query response (no 'data' object); export "
                                   "/api/v1/query_range results as JSON")
        if item.get("status", "success") != "success":
            raise TraceFormatError(f"{where}: the query failed ({item.get('error') or item.get('status')})")
        if item["data"].get("resultType") != "matrix":
            raise TraceFormatError(f"{where}: resultType {item['data'].get('resultType')!r}; expected 'matrix' "
                                   "(a range query, /api/v1/query_range)")
        out.append(item["data"])
    return out


def _skip(report: SeriesLoadReport, reason: str, n: int = 1) -> None:
    report.skipped[reason] = report.skipped.get(reason, 0) + n


def load_prometheus(path: str | Path) -> SeriesSet:
    path = Path(path)
    if not is_file(path):
        raise TraceFormatError(f"{path}: no such file (expected Prometheus range-query JSON)")
    data = parse_json(read_text(path, str(path), TraceFormatError), str(path), TraceFormatError)
    report = SeriesLoadReport(source=str(path))
    by_series: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    stages: dict[str, str] = {}
    for r_index, response in enumerate(_responses(data, path)):
        results = response.get("result") or []
        if not isinstance(results, list):
            raise TraceFormatError(f"{path}: response {r_index + 1}: 'result' is not a list of series")
        for i, result in enumerate(results):
            where = f"{path}: response {r_index + 1}, result {i + 1}"
            labels = result.get("metric") if isinstance(result, dict) else []  # [] : refused below
            labels = {} if labels is None else labels
            if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
                raise TraceFormatError(f"{where}: not a series ({{\"metric\": {{label: text}}, \"values\": [...]}})")
            name = labels.get("__name__")
            if name is None:
                raise TraceFormatError(f"{where} has no __name__ label: export the raw metric (for example "
                                       "container_memory_working_set_bytes{namespace=...}), not an expression over it")
            if name not in METRICS:
                _skip(report, f"metric {name}")
                continue
            pod, container = labels.get("pod") or labels.get("pod_name"), labels.get("container") or labels.get("container_name")
            if not pod:
                raise TraceFormatError(f"{where} ({name}) has no pod label; keep the pod and container labels in the query")
            if not container or container == "POD":
                _skip(report, "pod-level series (container '' or POD)")
                continue
            resource, scale = METRICS[name]
            times, values = _samples(result.get("values"), where, report)
            if scale is None:
                times, values = _rate(times, values, report)
            else:
                values = values * scale
            if not len(times):
                continue
            series = f"{labels.get('namespace', '')}/{pod}/{container}"
            stages[series] = stage_of(pod, container)
            by_series.setdefault(series, {})[resource] = (times, values)
            report.rows += len(times)
    if not by_series:
        raise TraceFormatError(f"{path}: no usable series (metrics read: {', '.join(METRICS)}; "
                               f"left out: {report.skipped or 'nothing'})")
    runs = []
    for series, usage in by_series.items():
        start = min(float(t[0]) for t, _ in usage.values())
        runs.append(UsageSeries(series, stages[series], {r: (t - start, v) for r, (t, v) in usage.items()}, start))
    runs.sort(key=lambda r: (r.stage, r.start))
    return SeriesSet(tuple(runs), report)


def _samples(raw: Any, where: str, report: SeriesLoadReport) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(raw, list):
        raise TraceFormatError(f"{where}: 'values' is not a list of [time, \"value\"] pairs")
    times, values = [], []
    for j, pair in enumerate(raw):
        try:
            t, v = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError, KeyError, OverflowError):  # Overflow: float(10**400)
            raise TraceFormatError(f"{where}: sample {j + 1} is {str(pair)[:80]}, not a [time, \"value\"] pair") from None
        if not math.isfinite(t):
            raise TraceFormatError(f"{where}: sample {j + 1} is at time {pair[0]!r}, not a finite Unix time")
        if not math.isfinite(v):
            _skip(report, "NaN or infinite samples")
            continue
        if times and t <= times[-1]:
            raise TraceFormatError(f"{where}: sample {j + 1} at {t} is not after {times[-1]}; Prometheus returns "
                                   "samples in time order, so the file was edited or merged")
        if v < 0:
            report.negative_values += 1
            v = 0.0
        times.append(t)
        values.append(v)
    return np.asarray(times, float), np.asarray(values, float)


def _rate(times: np.ndarray, counter: np.ndarray, report: SeriesLoadReport) -> tuple[np.ndarray, np.ndarray]:
    """Cores from a CPU-seconds counter: the increase over each interval, at the interval's end."""
    if len(times) < 2:
        return times[:0], counter[:0]
    rise = np.diff(counter)
    resets = rise < 0
    if resets.any():
        _skip(report, "counter resets (the container restarted)", int(resets.sum()))
        rise = np.where(resets, counter[1:], rise)  # after a reset the counter counts from 0
    return times[1:], rise / np.diff(times)

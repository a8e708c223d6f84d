"""The long CSV of usage series: ``series,stage,time_s,resource,value``, one sample a row.

Units: cpu in cores, memory and gpu_memory in bytes, gpu in GPUs. The series of a stage are its
runs, in the order they first appear. Real data is messy, so two things are counted, not refused:
a repeated timestamp of a (series, resource) keeps the larger value; a negative value counts as 0.
Everything else that is wrong is one clear error naming the line: an unknown resource, a time that
is negative, not a number, or earlier than the one before it in its series, a series that names
two stages, an empty file.

:func:`write_long_csv` writes the same format (``.gz``: gzip), runs in the order given: the
reader keeps a stage's runs in file order, and ``simulate`` takes that order (rank within the
stage) as time order, so write them in start order.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import zlib
from pathlib import Path
from typing import Iterable

import numpy as np

from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.series import SERIES_RESOURCES, SeriesLoadReport, SeriesSet, UsageSeries

HEADER = ["series", "stage", "time_s", "resource", "value"]


def _open(path: Path) -> io.TextIOBase:
    if not path.is_file():
        raise TraceFormatError(f"{path}: no such file (expected the long CSV {','.join(HEADER)})")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(f"{where}: {what} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise TraceFormatError(f"{where}: {what} {text!r} is not a finite number")
    return value


def load_long_csv(path: str | Path) -> SeriesSet:
    path = Path(path)
    report = SeriesLoadReport(source=str(path))
    stage_of: dict[str, str] = {}
    samples: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    try:
        with _open(path) as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise TraceFormatError(f"{path}: the file is empty; expected the header {','.join(HEADER)}")
            if [h.strip() for h in header] != HEADER:
                raise TraceFormatError(f"{path}:1: the header is {','.join(header)!r}; expected {','.join(HEADER)}")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                where = f"{path}:{line}"
                if len(row) != 5:
                    raise TraceFormatError(f"{where}: {len(row)} fields; expected 5 ({','.join(HEADER)})")
                series, stage, time_text, resource, value_text = row
                if resource not in SERIES_RESOURCES:
                    raise TraceFormatError(f"{where}: unknown resource {resource!r}; expected one of {', '.join(SERIES_RESOURCES)}")
                t = _number(time_text, "time_s", where)
                if t < 0:
                    raise TraceFormatError(f"{where}: time_s {time_text} is negative; times are seconds since the run's start")
                value = _number(value_text, "value", where)
                if value < 0:
                    report.negative_values += 1
                    value = 0.0
                known = stage_of.setdefault(series, stage)
                if known != stage:
                    raise TraceFormatError(f"{where}: series {series!r} was stage {known!r} and is now {stage!r}; "
                                           "a series is one run of one stage")
                times, values = samples.setdefault(series, {}).setdefault(resource, ([], []))
                if times and t < times[-1]:
                    raise TraceFormatError(f"{where}: time_s {time_text} of series {series!r} ({resource}) comes after "
                                           f"{times[-1]:g}; sort the rows by series, then time")
                if times and t == times[-1]:
                    report.duplicated_timestamps += 1
                    values[-1] = max(values[-1], value)
                    continue
                times.append(t)
                values.append(value)
                report.rows += 1
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile, zlib.error, csv.Error) as exc:  # zlib: corrupt .gz
        raise TraceFormatError(f"{path}: cannot read it as a CSV ({type(exc).__name__}: {exc})") from None
    if not samples:
        raise TraceFormatError(f"{path}: no samples after the header; expected rows of {','.join(HEADER)}")
    runs = tuple(
        UsageSeries(series, stage_of[series], {r: (np.asarray(t, float), np.asarray(v, float)) for r, (t, v) in by_resource.items()})
        for series, by_resource in samples.items()
    )
    # The runs of a stage keep their file order; stages in order of first appearance.
    order = {stage: i for i, stage in enumerate(dict.fromkeys(stage_of.values()))}
    runs = tuple(sorted(runs, key=lambda r: order[r.stage]))
    return SeriesSet(runs, report)


def write_long_csv(runs: SeriesSet | Iterable[UsageSeries], path: str | Path) -> int:
    """Write ``runs`` (in the order given) as the long CSV at ``path``, gzip when it ends in
    ``.gz`` (no timestamp in the header: the same runs give the same bytes); returns the rows.
    Numbers are written exactly (``repr``), so :func:`load_long_csv` reads the same series back."""
    path = Path(path)
    rows = 0
    raw = io.StringIO(newline="")
    writer = csv.writer(raw, lineterminator="\n")
    # With "\n" line ends Python's csv leaves a lone "\r" in a name unquoted, and every reader ends
    # the line there: rows whose names hold one are written fully quoted.
    quoted = csv.writer(raw, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(HEADER)
    for run in runs:
        for resource in SERIES_RESOURCES:
            if resource not in run.usage:
                continue
            times, values = run.usage[resource]
            for t, v in zip(times, values):
                row = [run.series, run.stage, repr(float(t)), resource, repr(float(v))]
                (quoted if "\r" in run.series + run.stage else writer).writerow(row)
                rows += 1
    data = raw.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with open(path, "wb") as handle, gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    return rows

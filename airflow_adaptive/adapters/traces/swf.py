"""Standard Workload Format (SWF) loader, for the Parallel Workloads Archive's job logs.

Each job line has 18 numeric fields, ``-1`` for unknown (field list in
``shared/data/traces/README.md``). What becomes a record:

| record column | SWF fields | note |
|---|---|---|
| ``procs`` feature | 8 (requested processors), else 5 | the CM-5 allocates what was requested |
| ``used.memory`` | 7 x 5 (KB per processor x processors) | an *average* per processor, not a peak |
| ``requested.memory`` | 10 x 8 | per-processor request x processors |
| ``used.cpu`` | 5 x 6 / 4 | cores busy on average over the run |
| ``requested.cpu`` | 8 | |
| ``submit`` / ``end`` | 2 / 2 + 3 + 4 | ``end`` is when the job's usage becomes known |

Unknown parts are NaN, never multiplied: ``-1 x -1`` would turn an unknown job into a tiny one.
A log whose "used" memory equals the request in most jobs (HPC2N copies the request) has its
memory usage dropped, with a count in the report, rather than trusted.

``drop_requests=True`` loads the log as one that records usage only (what a cluster's metrics
give): requested processors, time and memory become unknown, and ``procs`` is the allocated
processor count (field 5), what the job ran on. The copy check above runs first, so a log whose
"used" memory is a copy of its request does not become a usage log by losing the request.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from airflow_adaptive.adapters.files import is_file
from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.features import Feature, FeatureSchema
from airflow_adaptive.domain.records import JobTable, LoadedTrace, LoadReport

SWF_SCHEMA = FeatureSchema(
    name="swf",
    version=1,
    description="Batch jobs of the Parallel Workloads Archive (Standard Workload Format 2.2).",
    key=("user", "executable"),
    resources=("cpu", "memory"),
    # (user, executable, processors) is the recurring workload; then coarser groupings.
    levels=(("user", "executable", "procs"), ("user", "executable"), ("user",), ("executable",)),
    features=(
        Feature("user", "categorical", description="SWF field 12"),
        Feature("group", "categorical", description="SWF field 13"),
        Feature("executable", "categorical", description="SWF field 14 (application number)"),
        Feature("queue", "categorical", description="SWF field 15"),
        Feature("partition", "categorical", description="SWF field 16"),
        Feature("procs", "numeric", "processors", "requested processors (field 8, else 5)"),
        Feature("requested_time", "numeric", "s", "SWF field 9"),
        Feature("requested_memory", "numeric", "bytes", "fields 10 x 8"),
    ),
)

N_FIELDS = 18
KB = 1024.0
#: Above this share of jobs with used == requested memory, "used" is a copy, not a measurement
#: (HPC2N: 98.5%; LANL-CM5: 1%).
COPIED_MEMORY_SHARE = 0.9
#: CPU time above run time x processors by more than this is a logging artefact (HPC2N README).
CPU_OVERSHOOT_TOLERANCE = 1.05


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="ascii", errors="replace")
    return open(path, "rt", encoding="ascii", errors="replace")


def read_swf_fields(path: str | Path, report: LoadReport) -> np.ndarray:
    """The job lines as an (n, 18) float array; bad lines are counted in ``report``."""
    path = Path(path)
    if not is_file(path):
        raise TraceFormatError(f"{path}: no such trace file; pass --trace PATH to an SWF log (.swf or .swf.gz)")
    rows: list[list[float]] = []
    try:
        with _open_text(path) as handle:
            for line_no, line in enumerate(handle, start=1):
                text = line.strip()
                if not text or text.startswith(";"):
                    continue
                report.lines += 1
                parts = text.split()
                if len(parts) != N_FIELDS:
                    report.bad_line(line_no, f"{len(parts)} fields, expected {N_FIELDS}")
                    continue
                try:
                    row = [float(p) for p in parts]
                except ValueError:
                    report.bad_line(line_no, "non-numeric field")
                    continue
                if not all(map(math.isfinite, row)):  # "nan", "inf", "1e999": ids and counts are finite
                    report.bad_line(line_no, "non-finite field (nan or inf)")
                    continue
                rows.append(row)
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupt gzip, unreadable file
        if not rows:
            raise TraceFormatError(f"{path}: cannot read SWF trace ({exc}); is it an SWF log?") from exc
        report.bad_line(-1, f"file ends early after {len(rows)} jobs ({exc})")
    if not rows:
        raise TraceFormatError(
            f"{path}: no job lines found ({report.malformed} malformed of {report.lines}); "
            "an SWF log has 18 numeric fields per job line"
        )
    return np.asarray(rows, dtype=np.float64)


def load_swf(path: str | Path, drop_requests: bool = False) -> LoadedTrace:
    report = LoadReport(source=str(path))
    f = read_swf_fields(path, report)

    def known(col: int) -> np.ndarray:
        v = f[:, col - 1]
        return np.where(v >= 0, v, np.nan)

    run_time, alloc, cpu_avg, mem_kb = known(4), known(5), known(6), known(7)
    req_procs, req_time, req_mem_kb = known(8), known(9), known(10)
    procs = np.where(req_procs > 0, req_procs, alloc)
    procs = np.where(procs > 0, procs, np.nan)

    # A job's allocation is requested processors x per-processor request; NaN stays NaN.
    requested_memory = req_mem_kb * procs * KB
    used_memory = np.where(mem_kb > 0, mem_kb * alloc * KB, np.nan)
    both = np.isfinite(used_memory) & np.isfinite(requested_memory)
    copied = both & np.isclose(used_memory, requested_memory, rtol=1e-9)
    if both.sum() and copied.sum() / both.sum() > COPIED_MEMORY_SHARE:
        report.exclude("memory usage dropped: 'used' equals the request (a copy, not a measurement)", int(np.isfinite(used_memory).sum()))
        used_memory = np.full(len(f), np.nan)

    if drop_requests:
        report.exclude("requests dropped (loaded as a usage-only log): processors, time, memory", len(f))
        procs = np.where(alloc > 0, alloc, np.nan)
        req_time = np.full(len(f), np.nan)
        requested_memory = np.full(len(f), np.nan)

    used_cpu = np.where(run_time > 0, alloc * cpu_avg / np.where(run_time > 0, run_time, 1.0), np.nan)
    overshoot = used_cpu > alloc * CPU_OVERSHOOT_TOLERANCE
    report.exclude("cpu usage capped at allocated processors (CPU time > run time)", int(np.nansum(overshoot)))
    used_cpu = np.where(overshoot, alloc, used_cpu)
    used_cpu = np.where(used_cpu > 0, used_cpu, np.nan)

    submit = f[:, 1]
    wait = np.where(f[:, 2] >= 0, f[:, 2], 0.0)
    end = submit + wait + np.nan_to_num(run_time, nan=0.0)

    def cat(col: int) -> np.ndarray:
        return np.array([str(int(v)) for v in f[:, col - 1]], dtype=object)

    table = JobTable(
        schema=SWF_SCHEMA,
        job_id=np.array([str(int(v)) for v in f[:, 0]], dtype=object),
        submit=submit,
        end=end,
        run_time=run_time,
        features={
            "user": cat(12),
            "group": cat(13),
            "executable": cat(14),
            "queue": cat(15),
            "partition": cat(16),
            "procs": procs,
            "requested_time": req_time,
            "requested_memory": requested_memory,
        },
        used={"cpu": used_cpu, "memory": used_memory},
        requested={"cpu": np.full(len(f), np.nan) if drop_requests else procs.copy(), "memory": requested_memory},
    )
    report.kept = len(table)
    return LoadedTrace(table=table, report=report)

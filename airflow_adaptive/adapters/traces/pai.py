"""Loader for the Alibaba PAI GPU cluster trace (``cluster-trace-gpu-v2020``).

Source: https://github.com/alibaba/clusterdata/tree/master/cluster-trace-gpu-v2020, described in
Weng et al., "MLaaS in the Wild: Workload Analysis and Scheduling in Large-Scale Heterogeneous
GPU Clusters", NSDI 2022. The CSVs are headerless; column lists are the published ``*.header``
files (see ``COLUMNS``).

One record per *task* (a role of a job: ``worker``, ``ps``, ``tensorflow``...). Joins:

* sensor -> task on ``(job_name, task_name)``: the sensor table carries both, so the instance
  table (only needed to map ``worker_name`` to a task) is not read;
* task -> job on ``job_name`` for ``user`` and ``inst_id`` (the job id);
* job -> group tag on ``inst_id`` for ``group``, ``workload`` and ``gpu_type_spec``. A job without
  a group tag gets ``group = user``, as the trace's own ``analysis/utils.py`` does.

Units (trace README), all converted to the record units (cores, bytes, GPUs):

| trace column | trace unit | record |
|---|---|---|
| ``plan_cpu``, sensor ``cpu_usage`` | percent of one core (600 = 6 cores) | / 100 -> cores |
| ``plan_gpu``, sensor ``gpu_wrk_util`` | percent of one GPU (50 = half, GPUs are shared) | / 100 -> GPUs |
| ``plan_mem``, sensor ``max_mem``, ``max_gpu_wrk_mem`` | "GB", in fact GiB (30000 MiB = 29.296875) | x 2**30 -> bytes |
| sensor ``read``, ``write`` | bytes of *network* input/output, lifetime average (see below) | bytes/s, as is -> ``network_rx``, ``network_tx`` |
| ``start_time``, ``end_time`` | seconds, shifted by a constant | ``submit``, ``end`` |

``plan_*`` are per instance (every instance of a task inherits them) and sensor rows are per
instance (averages over its lifetime, except ``max_mem``/``max_gpu_wrk_mem``, maxima). A task's
``used`` is the **maximum over its instances** of each sensor value, because a size must cover the
hungriest instance: cpu from ``cpu_usage`` (a lifetime average), memory from ``max_mem``, gpu from
``gpu_wrk_util``, gpu_memory from ``max_gpu_wrk_mem``, network_rx from ``read`` and network_tx from
``write``. The trace has no GPU-memory and no bandwidth request, so ``requested.gpu_memory``,
``requested.network_rx`` and ``requested.network_tx`` are NaN.

**Network columns.** The trace README (``cluster-trace-gpu-v2020/README.md``, section
``pai_sensor_table``) says: "``read``: Bytes of network input." / "``write``: Bytes of network
output." / "``read_count``: Number of times of network read input." / "``write_count``: Number of
times of network write output.", and: "all the sensor metrics (CPU, GPU, Memory, I/O) in this table
are collected for each *instance* (indexed by ``worker_name``) but *not task*, taking the average of
all data in the instance's lifetime (except for ``max_mem`` and ``max_gpu_wrk_mem`` being the
maximum)". So they are *network* traffic, not disk (``disk_read``/``disk_write`` stay unknown), and
they are lifetime **averages of the sampled rate, not totals** (the README's example, read
21271328.384615384 = 276527269/13, is no whole number of bytes): they are not divided by the run
time. The README gives no sampling interval; the loader takes a sample to be bytes per second (a
sampled network counter's rate) and keeps the value as is. ``read_count``/``write_count`` (network
operations) have no resource and are not read.

A ``read``/``write`` value that is blank (or ``nan``/``null``), negative or not a finite number
is unknown (NaN) for that instance, counted in the report (``excluded``, one count per sensor row
and reason); the row is kept, so its task keeps its other usage. A task whose instances all lack
it has an unknown bandwidth (NaN); otherwise the maximum of the known ones, as for the other
sensor columns.

Only tasks with status ``Terminated`` (the trace's only successful status), start and end times,
a job row and at least one sensor row are kept; the others are counted in the report by reason.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from airflow_adaptive.adapters.files import is_dir, is_file
from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.features import Feature, FeatureSchema
from airflow_adaptive.domain.records import JobTable, LoadedTrace, LoadReport

PAI_SCHEMA = FeatureSchema(
    name="pai",
    version=1,
    description="Tasks of Alibaba PAI ML jobs (cluster-trace-gpu-v2020, NSDI 2022).",
    key=("user", "group"),
    resources=("cpu", "memory", "gpu", "gpu_memory", "network_rx", "network_tx"),
    features=(
        Feature("user", "categorical", description="job owner (pai_job_table.user)"),
        Feature("group", "categorical", description="hash of the entry script/command: the recurring workload"),
        Feature("workload", "categorical", description="e.g. bert, resnet, ctr; empty for most jobs"),
        Feature("task_name", "categorical", description="task role: worker, ps, tensorflow..."),
        Feature("gpu_type_spec", "categorical", description="requested GPU type; empty if none"),
        Feature("inst_num", "numeric", "instances", "instances launched by the task"),
        Feature("plan_cpu", "numeric", "cores", "requested cores per instance"),
        Feature("plan_mem", "numeric", "bytes", "requested memory per instance"),
        Feature("plan_gpu", "numeric", "GPUs", "requested GPUs per instance (fractional when shared)"),
    ),
)

#: Published column lists (``cluster-trace-gpu-v2020/data/*.header``).
COLUMNS: dict[str, tuple[str, ...]] = {
    "pai_job_table": ("job_name", "inst_id", "user", "status", "start_time", "end_time"),
    "pai_task_table": (
        "job_name", "task_name", "inst_num", "status", "start_time", "end_time",
        "plan_cpu", "plan_mem", "plan_gpu", "gpu_type",
    ),
    "pai_instance_table": (
        "job_name", "task_name", "inst_name", "worker_name", "inst_id", "status",
        "start_time", "end_time", "machine",
    ),
    "pai_sensor_table": (
        "job_name", "task_name", "worker_name", "inst_id", "machine", "gpu_name", "cpu_usage",
        "gpu_wrk_util", "avg_mem", "max_mem", "avg_gpu_wrk_mem", "max_gpu_wrk_mem",
        "read", "write", "read_count", "write_count",
    ),
    "pai_group_tag_table": ("inst_id", "user", "gpu_type_spec", "group", "workload"),
    "pai_machine_spec": ("machine", "gpu_type", "cap_cpu", "cap_mem", "cap_gpu"),
}
#: Columns that must parse as numbers (an empty field is a NaN, not an error).
NUMERIC: dict[str, tuple[str, ...]] = {
    "pai_job_table": ("start_time", "end_time"),
    "pai_task_table": ("inst_num", "start_time", "end_time", "plan_cpu", "plan_mem", "plan_gpu"),
    "pai_sensor_table": ("cpu_usage", "gpu_wrk_util", "max_mem", "max_gpu_wrk_mem"),
    "pai_group_tag_table": (),
}
#: Columns read leniently: a bad value is unknown (NaN) and counted, its line is kept. Per table:
#: column -> the resource it becomes (named in the report's reasons).
LENIENT: dict[str, dict[str, str]] = {"pai_sensor_table": {"read": "network_rx", "write": "network_tx"}}
#: The tables ``load_pai`` reads.
REQUIRED = ("pai_task_table", "pai_sensor_table", "pai_job_table", "pai_group_tag_table")

GIB = float(2**30)
_MISSING = {"", "nan", "null", "none"}


def _read_table(path: Path, table: str, report: LoadReport) -> pd.DataFrame:
    """A headerless table as strings (numeric columns as floats); bad lines are counted.

    Each line is read whole and split on commas (the trace has no quoting), which keeps the line
    number of every row with the wrong number of fields or an unparsable number.
    """
    columns = COLUMNS[table]
    try:
        raw = pd.read_csv(
            path, header=None, names=["line"], sep="\x1f", dtype=str, quoting=csv.QUOTE_NONE,
            keep_default_na=False, skip_blank_lines=False, encoding_errors="replace",
        )["line"]
    except pd.errors.ParserError as exc:  # a line holding the \x1f we split on: not a PAI table
        raise TraceFormatError(f"{path}: cannot read it as a PAI table ({str(exc).strip()})") from None
    report.lines += len(raw)
    n_fields = raw.str.count(",") + 1
    ok = (n_fields == len(columns)).to_numpy()
    for i in np.flatnonzero(~ok):
        report.bad_line(i + 1, f"{path.name}: {n_fields.iat[i]} fields, expected {len(columns)}")
    lines = raw[ok]
    if len(lines):
        df = lines.str.split(",", expand=True).apply(lambda c: c.str.strip()).astype(object)
        df.columns = list(columns)
    else:
        df = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    bad = pd.Series(False, index=df.index)
    for name in NUMERIC.get(table, ()):
        values = pd.to_numeric(df[name], errors="coerce")
        unparsable = values.isna() & ~df[name].str.lower().isin(_MISSING)
        bad |= unparsable
        df[name] = values.astype(float)
    for label in df.index[bad.to_numpy()]:
        report.bad_line(int(label) + 1, f"{path.name}: unparsable number")
    df = df[~bad.to_numpy()].copy()
    for name, resource in LENIENT.get(table, {}).items():
        df[name] = _lenient_number(df[name], f"{table}.{name} ({resource})", report)
    return df


def _lenient_number(text: pd.Series, what: str, report: LoadReport) -> pd.Series:
    """Floats of ``text``; a blank, negative or non-finite value is NaN, counted per reason."""
    values = pd.to_numeric(text, errors="coerce").astype(float)
    missing = text.str.lower().isin(_MISSING)
    not_finite = ~missing & ~np.isfinite(values)
    negative = values < 0
    for failing, reason in ((missing, "missing"), (not_finite, "not a finite number"), (negative, "negative")):
        report.exclude(f"{what} {reason}: taken as unknown, row kept", int(failing.sum()))
    return values.where(~(missing | not_finite | negative))


def _check_files(directory: Path) -> dict[str, Path]:
    expected = ", ".join(f"{t}.csv" for t in REQUIRED)
    if not is_dir(directory):
        raise TraceFormatError(f"{directory}: no such PAI trace directory; expected a folder with {expected}")
    paths = {t: directory / f"{t}.csv" for t in REQUIRED}
    missing = [p.name for p in paths.values() if not is_file(p)]
    if missing:
        raise TraceFormatError(
            f"{directory}: missing {', '.join(missing)}; a PAI trace directory holds {expected} "
            "(unpacked from cluster-trace-gpu-v2020/data/*.tar.gz)"
        )
    return paths


def load_pai(directory: str | Path) -> LoadedTrace:
    """Tasks of a PAI trace directory, one record per task (used = max over its instances)."""
    directory = Path(directory)
    paths = _check_files(directory)
    report = LoadReport(source=str(directory))
    tasks, sensors, jobs, tags = (_read_table(paths[t], t, report) for t in REQUIRED)

    # Sensor rows -> per-task maxima over instances.
    sensor_cols = ["cpu_usage", "max_mem", "gpu_wrk_util", "max_gpu_wrk_mem", "read", "write"]
    usage = sensors.groupby(["job_name", "task_name"])[sensor_cols].max()
    usage["n_sensor_rows"] = sensors.groupby(["job_name", "task_name"]).size()
    jobs = jobs.drop_duplicates("job_name").set_index("job_name")[["inst_id", "user"]]
    tags = tags.drop_duplicates("inst_id").set_index("inst_id")[["group", "workload", "gpu_type_spec"]]

    dup = tasks.duplicated(["job_name", "task_name"])
    report.exclude("duplicate task row (same job_name, task_name)", int(dup.sum()))
    df = tasks[~dup].join(jobs, on="job_name").join(usage, on=["job_name", "task_name"])
    df = df.join(tags, on="inst_id")

    # Each excluded task is counted once, under the first reason that applies.
    keep = pd.Series(True, index=df.index)
    checks = [
        (df["status"] != "Terminated", None),
        (~(df["start_time"] > 0), "task has no start time"),
        (~(df["end_time"] > 0), "task has no end time (unfinished)"),
        (df["end_time"] < df["start_time"], "task ends before it starts"),
        (df["user"].isna(), "task's job not in pai_job_table"),
        (df["n_sensor_rows"].isna(), "task has no sensor rows"),
    ]
    for failing, reason in checks:
        hit = keep & failing
        if reason is None:
            for status, n in df.loc[hit, "status"].fillna("").value_counts().items():
                report.exclude(f"task status {status or '(empty)'!s}, not Terminated", int(n))
        else:
            report.exclude(reason, int(hit.sum()))
        keep &= ~hit
    df = df[keep]
    if df.empty:
        reasons = "; ".join(f"{r}: {n}" for r, n in sorted(report.excluded.items())) or "no task rows"
        raise TraceFormatError(
            f"{directory}: no usable task found ({reasons}; {report.malformed} malformed of "
            f"{report.lines} lines); a usable task is Terminated, has start and end times, "
            "a row in pai_job_table and sensor rows in pai_sensor_table"
        )

    def text(col: str, default: pd.Series | str = "") -> np.ndarray:
        """Strings; missing or empty values take ``default``."""
        return df[col].replace("", np.nan).fillna(default).fillna("").astype(str).to_numpy(dtype=object)

    def num(col: str, scale: float = 1.0) -> np.ndarray:
        return df[col].to_numpy(dtype=np.float64) * scale

    submit, end = num("start_time"), num("end_time")
    plan_cpu, plan_mem, plan_gpu = num("plan_cpu", 0.01), num("plan_mem", GIB), num("plan_gpu", 0.01)
    table = JobTable(
        schema=PAI_SCHEMA,
        job_id=(df["job_name"] + "/" + df["task_name"]).to_numpy(dtype=object),
        submit=submit,
        end=end,
        run_time=end - submit,
        features={
            "user": text("user"),
            "group": text("group", df["user"]),
            "workload": text("workload"),
            "task_name": text("task_name"),
            "gpu_type_spec": text("gpu_type_spec"),
            "inst_num": num("inst_num"),
            "plan_cpu": plan_cpu,
            "plan_mem": plan_mem,
            "plan_gpu": plan_gpu,
        },
        used={
            "cpu": num("cpu_usage", 0.01),
            "memory": num("max_mem", GIB),
            "gpu": num("gpu_wrk_util", 0.01),
            "gpu_memory": num("max_gpu_wrk_mem", GIB),
            "network_rx": num("read"),  # lifetime-average bytes/s (see the module docstring)
            "network_tx": num("write"),
        },
        requested={
            "cpu": plan_cpu.copy(),
            "memory": plan_mem.copy(),
            "gpu": plan_gpu.copy(),
            "gpu_memory": np.full(len(df), np.nan),
            "network_rx": np.full(len(df), np.nan),
            "network_tx": np.full(len(df), np.nan),
        },
    )
    report.kept = len(table)
    return LoadedTrace(table=table, report=report)

"""Trace loaders: each turns a file (or an MLflow experiment) into a JobTable + load report."""

from __future__ import annotations

from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.records import LoadedTrace

FORMATS = ("swf", "pai", "records")


def load_trace(path: str, fmt: str) -> LoadedTrace:
    """Load ``path`` in format ``fmt`` (swf: an SWF log; pai: a directory of the PAI tables;
    records: the name of an MLflow experiment holding stage runs)."""
    if fmt == "swf":
        from airflow_adaptive.adapters.traces.swf import load_swf

        return load_swf(path)
    if fmt == "pai":
        from airflow_adaptive.adapters.traces.pai import load_pai

        return load_pai(path)
    if fmt == "records":
        from airflow_adaptive.adapters.mlflow.stage_runs import load_stage_runs

        return load_stage_runs(path)
    raise TraceFormatError(f"unknown trace format {fmt!r}; use one of: {', '.join(FORMATS)}")


def guess_format(path: str) -> str:
    name = path.lower()
    if name.endswith((".swf", ".swf.gz")):
        return "swf"
    from airflow_adaptive.adapters.files import is_dir

    if is_dir(path):
        return "pai"
    raise TraceFormatError(f"cannot tell the format of {path!r}: pass --format swf|pai|records")

"""Usage-series loaders for ``airflow-adaptive simulate``: each turns a file (or an MLflow
experiment) into a :class:`~airflow_adaptive.domain.series.SeriesSet`."""

from __future__ import annotations

from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.series import SeriesSet

FORMATS = ("csv", "prometheus", "mlflow")


def load_series(path: str, fmt: str = "csv") -> SeriesSet:
    """``csv``: the long CSV ``series,stage,time_s,resource,value`` (``.gz`` too); ``prometheus``:
    range-query JSON; ``mlflow``: the name of an MLflow experiment holding stage runs."""
    if fmt == "csv":
        from airflow_adaptive.adapters.series.long_csv import load_long_csv

        return load_long_csv(path)
    if fmt == "prometheus":
        from airflow_adaptive.adapters.series.prometheus import load_prometheus

        return load_prometheus(path)
    if fmt == "mlflow":
        from airflow_adaptive.adapters.series.mlflow_runs import load_mlflow_series

        return load_mlflow_series(path)
    raise TraceFormatError(f"unknown series format {fmt!r}; use one of: {', '.join(FORMATS)}")

"""Usage series of one stage for the hold-out score over time (unit and integration tests)."""

from __future__ import annotations

import numpy as np

from airflow_adaptive.domain.series import UsageSeries

MiB = 2**20


def stage_history(n_runs=20, step_at=0.5, holdout_step_at=None, scale=1.0):
    """``n_runs`` runs of one stage, one every 200 s, 100 s long, memory stepping from 30% of
    the peak to the peak at ``step_at`` of the run (``holdout_step_at`` for the last 20%)."""
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.series import SeriesLoadReport, SeriesSet
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES

    rows, runs = [], []
    times = np.arange(0.0, 101.0, 4.0)  # no sample on the 50 s boundary, where rounding would decide
    for i in range(n_runs):
        size = 50_000 * (1 + i % 5)
        peak = (100 + 0.002 * size) * MiB
        at = holdout_step_at if holdout_step_at is not None and i >= n_runs * 0.8 else step_at
        values = np.where(times / 100 < at, 0.3, 1.0) * peak
        features = {"dag_id": "ml", "task_id": "train", "algorithm": "rf", "framework": "sklearn",
                    "data_rows": float(size), "data_bytes": size * 256.0, "n_features": 32.0, "epochs": 1.0}
        rows.append({"job_id": f"run-{i}", "submit": 1e9 + 200 * i, "end": 1e9 + 200 * i + 100, "run_time": 100.0,
                     "features": features, "used": {"memory": peak * scale, "cpu": 1.0}, "requested": {}})
        runs.append(UsageSeries(f"run-{i}", "ml.train", {"memory": (times, values)}, 1e9 + 200 * i))
    return JobTable.from_rows(STAGE_FEATURES, rows).sorted_by_submit(), SeriesSet(tuple(runs), SeriesLoadReport("test"))

"""Shared fixtures: the real job traces in ../shared/data/traces, loaded once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
TRACES = Path(os.environ.get("AIRFLOW_ADAPTIVE_TRACES", REPO.parent / "shared" / "data" / "traces"))
LANL = TRACES / "LANL-CM5-1994-4.1-cln.swf.gz"
HPC2N = TRACES / "HPC2N-2002-2.2-cln.swf.gz"


@pytest.fixture(scope="session")
def lanl_path() -> Path:
    assert LANL.is_file(), f"the shared LANL-CM5 trace is missing at {LANL}"
    return LANL


@pytest.fixture(scope="session")
def lanl():
    from airflow_adaptive.adapters.traces.swf import load_swf

    assert LANL.is_file(), f"the shared LANL-CM5 trace is missing at {LANL}"
    return load_swf(LANL)


@pytest.fixture(scope="session")
def lanl_slice(lanl):
    """The first 6000 jobs with known memory usage and request, in submit order."""
    t = lanl.table
    keep = np.flatnonzero((t.used["memory"] > 0) & (t.requested["memory"] > 0) & (t.run_time > 0))
    return t.take(keep[:6000]).sorted_by_submit()


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    """A migrated Airflow home (SQLite metadata database) shared by this module's DAG runs."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


@pytest.fixture
def grow_profiler(monkeypatch):
    """Register a champion trained on synthetic runs of ``dag_id``'s stage ``stage`` (the example
    ``grow`` workload): memory = 30 MiB + 1.1 x the MiB grown (``data_rows``). Returns the version."""

    def register(tracking: str, dag_id: str) -> str:
        from airflow_adaptive.adapters.mlflow.registry import log_profiler, set_alias
        from airflow_adaptive.domain.records import JobTable
        from airflow_adaptive.domain.stage_run import STAGE_FEATURES
        from airflow_adaptive.logic.scaling import ScalingProfiler

        mib_bytes = 2**20
        rng = np.random.default_rng(0)
        rows = [{"job_id": str(i), "submit": 1e9 + i * 10, "end": 1e9 + i * 10 + 5, "run_time": 5.0,
                 "features": {"dag_id": dag_id, "task_id": "stage", "algorithm": "grow", "framework": "numpy",
                              "data_rows": float(mib)},
                 "used": {"memory": (30 + 1.1 * mib) * mib_bytes * (1 + 0.02 * rng.standard_normal()), "cpu": 1.0},
                 "requested": {}}
                for i, mib in enumerate([100, 150, 200, 250, 300, 350, 120, 280])]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
        _, version = log_profiler(ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, rows)), name="job-profiler")
        set_alias("job-profiler", "champion", version)
        return version

    return register


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """A real ``mlflow server`` (SQLite) for one test module."""
    from airflow_adaptive.adapters.mlflow.local_server import LocalMlflowServer

    server = LocalMlflowServer(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server.start()
    finally:
        server.stop()

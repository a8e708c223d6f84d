"""Shared fixtures: the real job traces in ../shared/data/traces, loaded once per session."""

from __future__ import annotations

import os
import shutil
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


# Markers by directory, so a module cannot forget its own: `-m "not kubelet"` and the like select
# reliably, and `kubelet` and `browser` stay apart from `kubernetes`.
DIRECTORY_MARKERS = {"integration": "integration", "kubernetes": "kubernetes", "kubelet": "kubelet",
                     "browser": "browser"}
# Under pytest-xdist (`--dist loadgroup`) each group runs in one worker: the control plane is one
# session fixture, and what changes the host (the real node, cgroups, timing-sensitive limits) never
# runs beside itself.
HOST_STATE_FIXTURES = {"managed_cgroup", "cgroups_available", "real_node"}


def xdist_group(item, directory: str) -> str:
    """The worker group of ``item``: the host's, the cluster's, the browser's, else its module's
    (module-scoped servers and Airflow homes start once, as without xdist)."""
    if directory == "kubelet" or HOST_STATE_FIXTURES & set(item.fixturenames):
        return "host"
    if directory == "kubernetes":
        return "cluster"
    if directory == "browser":
        return "browser"
    return item.nodeid.split("::", 1)[0]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups (its own hook of the same name)
def pytest_collection_modifyitems(config, items):
    tests = REPO / "tests"
    for item in items:
        parts = Path(item.fspath).resolve().relative_to(tests).parts
        directory = parts[0] if len(parts) > 1 else ""
        marker = DIRECTORY_MARKERS.get(directory)
        if marker and item.get_closest_marker(marker) is None:
            item.add_marker(marker)
        item.add_marker(pytest.mark.xdist_group(xdist_group(item, directory)))


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


@pytest.fixture(scope="session")
def migrated_airflow_db(tmp_path_factory) -> Path:
    """``airflow db migrate`` once per test session (per xdist worker): the SQLite metadata database
    every Airflow home of the run starts from (a migration costs 10-20 s; a copy, milliseconds)."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return home / "airflow.db"


def migrated_airflow_home(template: Path, home: Path) -> Path:
    """``home`` holding its own copy of the migrated metadata database (Airflow writes its
    ``airflow.cfg`` there on first use, as after ``airflow db migrate``)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, home / "airflow.db")
    return home


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory, migrated_airflow_db):
    """A migrated Airflow home (SQLite metadata database) shared by this module's DAG runs."""
    return migrated_airflow_home(migrated_airflow_db, tmp_path_factory.mktemp("airflow-home"))


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

"""Real MLflow backends for integration tests: a running ``mlflow server`` and a SQLite store."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from airflow_adaptive.adapters.mlflow.local_server import LocalMlflowServer, free_port

ROOT = Path(__file__).resolve().parents[2]
TRACES = Path(os.environ.get("AIRFLOW_ADAPTIVE_TRACES", ROOT.parent / "shared" / "data" / "traces"))
LANL = TRACES / "LANL-CM5-1994-4.1-cln.swf.gz"


def running_mlflow_server(folder):
    """Start a real ``mlflow server`` in ``folder``, yield its URI, always stop it."""
    server = LocalMlflowServer(folder)
    try:
        yield server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` (SQLite backend, proxied artifacts) on a free port; its URI."""
    yield from running_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))


@pytest.fixture(scope="module")
def private_mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` for one test module: modules that register ``job-profiler``
    versions (the operator's default model) must not shift the version numbers other modules
    expect on the session's shared server."""
    yield from running_mlflow_server(tmp_path_factory.mktemp("private-mlflow-server"))


@pytest.fixture
def closed_port():
    """A port nothing listens on (just freed by the OS)."""
    return free_port()


@pytest.fixture
def sqlite_store(tmp_path):
    """A fresh SQLite tracking/registry store URI in the test's tmp dir."""
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private AIRFLOW_ADAPTIVE_HOME (model cache, embedded store, artifacts)."""
    path = tmp_path / "home"
    monkeypatch.setenv("AIRFLOW_ADAPTIVE_HOME", str(path))
    return path


@pytest.fixture(params=["mlflow_server", "sqlite_store"])
def tracking(request, home, monkeypatch):
    """Both backends in turn, selected through MLFLOW_TRACKING_URI; yields the URI."""
    uri = request.getfixturevalue(request.param)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri


@pytest.fixture(scope="session")
def lanl_table():
    from airflow_adaptive.adapters.traces.swf import load_swf

    if not LANL.exists():
        pytest.skip(f"LANL trace not found at {LANL}")
    return load_swf(LANL).table


@pytest.fixture(scope="session")
def profiler(lanl_table):
    """A small profiler fitted once for the session (3000 LANL-CM5 jobs).

    One OpenMP thread: on a shared, busy machine HistGradientBoosting's spinning threads made
    this fit ~9x slower (83 s vs 9 s); the result does not depend on the thread count.
    """
    from threadpoolctl import threadpool_limits

    from airflow_adaptive.logic.profiler import JobProfiler

    with threadpool_limits(1):
        return JobProfiler(max_iter=20).fit(lanl_table.take(np.arange(3000)))


# -- real cgroups ---------------------------------------------------------------------------

WORKLOAD = ROOT / "airflow_adaptive" / "examples" / "workloads.py"


def cgroups_must_work() -> bool:
    """In CI, on Linux as root, a cgroup test must fail rather than skip."""
    return os.environ.get("CI") == "true" and sys.platform == "linux" and os.geteuid() == 0


@pytest.fixture
def managed_cgroup():
    """A real cgroup (v2 where it has memory+cpu, else v1 memory/cpu/cpuacct), always removed."""
    from airflow_adaptive.adapters.cgroups import CgroupUnavailable, ManagedCgroup

    try:
        group = ManagedCgroup.create()
    except CgroupUnavailable as exc:
        if cgroups_must_work():
            pytest.fail(f"cgroups must work in CI as root, but: {exc}")
        pytest.skip(f"no permission to create cgroups here: {exc}")
    try:
        yield group
    finally:
        group.remove()


@pytest.fixture
def cgroups_available():
    """Skip (or fail in CI as root) unless this process may create cgroups."""
    from airflow_adaptive.adapters.cgroups import CgroupUnavailable, ManagedCgroup

    try:
        ManagedCgroup.create().remove()
    except CgroupUnavailable as exc:
        if cgroups_must_work():
            pytest.fail(f"cgroups must work in CI as root, but: {exc}")
        pytest.skip(f"no permission to create cgroups here: {exc}")


def _workload_cmd(*args: str) -> list[str]:
    return [sys.executable, str(WORKLOAD), *args]


@pytest.fixture
def workload_cmd():
    """``workload_cmd("grow", "--to-mib", "300")``: argv of a real workload (airflow_adaptive/examples/workloads.py)."""
    return _workload_cmd


# -- the stand-in NVML library (no GPU here) ----------------------------------------------

FAKE_NVML_SOURCE = ROOT / "tests" / "support" / "fake_nvml" / "fake_nvml.c"


@pytest.fixture(scope="session")
def fake_nvml(tmp_path_factory) -> Path:
    """A directory holding the stand-in ``libnvidia-ml.so.1``, built from fake_nvml.c with gcc.
    Skips nothing: a missing gcc or a compile error fails the tests that need it."""
    out = tmp_path_factory.mktemp("fake-nvml")
    lib = out / "libnvidia-ml.so.1"
    cmd = ["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Wl,-soname,libnvidia-ml.so.1",
           "-o", str(lib), str(FAKE_NVML_SOURCE)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        pytest.fail(f"gcc is needed to build the stand-in NVML library: {e}")
    if proc.returncode != 0 or not lib.is_file():
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return out

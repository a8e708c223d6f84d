"""The UIs as a user meets them: the Airflow 3 UI (``airflow api-server``) and the MLflow UI (a real
``mlflow server``), both on 127.0.0.1, driven by Debian's headless Chromium through Playwright.

One module-wide state: a champion registered by the retraining code (hold-out metrics, plot,
description), then one sized stage run by ``airflow dags test --use-executor`` with the
:class:`~airflow_adaptive.inline_executor.InlineExecutor` (what the demo does: the task log is
written where the API server reads it). Nothing is mocked. The browser reaches loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import AIRFLOW, migrated_airflow_home

CHROMIUM = Path(os.environ.get("AIRFLOW_ADAPTIVE_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS_ENV = "AIRFLOW_ADAPTIVE_TEST_ARTIFACTS"
DAG_ID = "browser_sized"
MODEL = "job-profiler"
MiB = 2**20
START_TIMEOUT_S = 120
# Loopback only: every name but localhost fails to resolve, and Chromium's own traffic (updates,
# safe browsing, metrics) is switched off.
CHROMIUM_ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--no-first-run", "--no-default-browser-check",
    "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--metrics-recording-only",
    "--safebrowsing-disable-auto-update", "--disable-dev-shm-usage", "--password-store=basic",
]

DAG = '''
import pendulum
from airflow.sdk import DAG
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    AdaptiveTrainingOperator(
        task_id="stage",
        cmds=["python", "-m", "airflow_adaptive.examples.workloads", "grow"],
        arguments=["--to-mib", "150", "--rate-mib-s", "400", "--hold-s", "1.5"],
        features={{"algorithm": "grow", "framework": "numpy", "data_rows": 150}},
        container_resources={{"requests": {{"cpu": "1", "memory": "64Mi"}}, "limits": {{"cpu": "1", "memory": "1Gi"}}}},
        sizing_mode="adaptive",
        monitor_interval=0.25,
    )
'''


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Where the screenshots go: ``$AIRFLOW_ADAPTIVE_TEST_ARTIFACTS`` or a temporary directory."""
    path = Path(os.environ.get(ARTIFACTS_ENV) or tmp_path_factory.mktemp("browser-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {path}")
    return path


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: the browser tests drive Debian's headless Chromium. Run scripts/setup.sh "
                    "as root (it runs apt-get install --no-install-recommends chromium), or set AIRFLOW_ADAPTIVE_CHROMIUM")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if os.geteuid() == 0 else [])]
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(chromium_path), headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        context.close()


def _grow_table(dag_id: str):
    """Synthetic finished runs of ``dag_id``'s ``stage`` (the ``grow`` workload): memory = 30 MiB +
    1.1 x the MiB grown, 2% noise (the integration tests' champion, with enough runs for a hold-out)."""
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES

    rng = np.random.default_rng(0)
    sizes = [100, 150, 200, 250, 300, 350, 120, 280, 180, 220, 160, 320, 140, 260, 240, 200, 300, 110, 330, 190]
    rows = [{"job_id": str(i), "submit": 1e9 + i * 10, "end": 1e9 + i * 10 + 5, "run_time": 5.0,
             "features": {"dag_id": dag_id, "task_id": "stage", "algorithm": "grow", "framework": "numpy", "data_rows": float(mib)},
             "used": {"memory": (30 + 1.1 * mib) * MiB * (1 + 0.02 * rng.standard_normal()), "cpu": 1.0}, "requested": {}}
            for i, mib in enumerate(sizes)]
    return JobTable.from_rows(STAGE_FEATURES, rows)


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[:2]} exited with {proc.returncode}: {log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer in {timeout_s:.0f} s: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="module")
def ui_state(tmp_path_factory, migrated_airflow_db, mlflow_uri):
    """The champion (retrained, promoted), one sized stage run, and the Airflow API server over it.

    The extra links are built from ``AIRFLOW_ADAPTIVE_MLFLOW_UI_URL``, set to ``localhost`` where
    the tracking URI says ``127.0.0.1``: a link that lands proves the UI URL, not the tracking
    URI, was used."""
    from airflow_adaptive.adapters.mlflow.local_server import free_port
    from airflow_adaptive.inline_executor import EXECUTOR
    from airflow_adaptive.retraining import retrain_and_promote

    root = tmp_path_factory.mktemp("browser")
    home = migrated_airflow_home(migrated_airflow_db, root / "airflow")
    dags = root / "dags"
    dags.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG.format(dag_id=DAG_ID))
    ui_url = mlflow_uri.replace("127.0.0.1", "localhost")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True", "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
           "MLFLOW_TRACKING_URI": mlflow_uri, "AIRFLOW_ADAPTIVE_HOME": str(root / "adaptive-home"),
           "AIRFLOW_ADAPTIVE_RUNNER": "local", "AIRFLOW_ADAPTIVE_MLFLOW_UI_URL": ui_url}

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
        mp.setenv("AIRFLOW_ADAPTIVE_HOME", str(root / "adaptive-home"))
        retrained = retrain_and_promote(_grow_table(DAG_ID), MODEL, plot=True)
    assert retrained.promoted, retrained

    started = time.perf_counter()
    done = subprocess.run([AIRFLOW, "dags", "test", DAG_ID, "--use-executor", "-c", json.dumps({})], env=env, cwd=root,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    dag_test_s = time.perf_counter() - started

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("airflow-adaptive-stages")
    (stage_run,) = client.search_runs([experiment.experiment_id], f"tags.`airflow_adaptive.dag_id` = '{DAG_ID}'")
    airflow_run_id = stage_run.data.tags["airflow_adaptive.run_id"]

    port = free_port()
    log = root / "api-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=root,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/v2/monitor/health", proc, log)
        yield {"airflow": f"http://127.0.0.1:{port}", "mlflow": mlflow_uri, "mlflow_ui": ui_url, "dag_id": DAG_ID,
               "run_id": airflow_run_id, "stage_run": stage_run, "experiment_id": experiment.experiment_id,
               "version": retrained.version, "retrained": retrained, "dag_test_s": dag_test_s, "home": home}
    finally:
        _stop(proc)

"""``InlineExecutor`` under real Airflow (``airflow dags test --use-executor``, SQLite metadata
database): each task runs under Airflow's supervisor, its log lands in ``base_log_folder`` where
the API server reads it, tasks run in dependency order, and a failing task fails the run."""

import json
import os
import subprocess

import pytest

from airflow_adaptive.inline_executor import EXECUTOR
from tests.conftest import AIRFLOW

pytestmark = [pytest.mark.integration]

DAG = '''
import logging, pendulum
from airflow.sdk import DAG
from airflow.providers.standard.operators.python import PythonOperator

def say(word, **_):
    logging.getLogger("airflow.task").info("the word is %s", word)
    if word == "fail":
        raise RuntimeError("asked to fail")

with DAG("inline", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    PythonOperator(task_id="first", python_callable=say, op_args=["{{ dag_run.conf['first'] }}"]) >> \\
        PythonOperator(task_id="second", python_callable=say, op_args=["second"])
'''


def run(airflow_home, dags, first: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__EXECUTOR": EXECUTOR}
    return subprocess.run([AIRFLOW, "dags", "test", "inline", "--use-executor", "-c", json.dumps({"first": first})],
                          env=env, capture_output=True, text=True, timeout=300, cwd=dags)


def logs(airflow_home, task: str) -> list[dict]:
    files = sorted((airflow_home / "logs" / "dag_id=inline").glob(f"run_id=*/task_id={task}/attempt=1.log"),
                   key=lambda p: p.stat().st_mtime)
    assert files, f"no log file for {task} under {airflow_home / 'logs'}"
    return [json.loads(line) for line in files[-1].read_text().splitlines() if line.strip()]


def test_tasks_run_in_order_under_the_supervisor_and_write_their_logs(airflow_home, tmp_path):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "inline.py").write_text(DAG)
    done = run(airflow_home, dags, "hello")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    first, second = logs(airflow_home, "first"), logs(airflow_home, "second")
    assert "the word is hello" in [e["event"] for e in first]
    assert "the word is second" in [e["event"] for e in second]
    assert first[-1]["timestamp"] <= second[0]["timestamp"]  # downstream after upstream

    done = run(airflow_home, dags, "fail")
    assert done.returncode != 0 and "DagRun failed" in done.stdout + done.stderr
    events = logs(airflow_home, "first")
    assert "the word is fail" in [e["event"] for e in events]
    assert any("asked to fail" in json.dumps(e) for e in events)

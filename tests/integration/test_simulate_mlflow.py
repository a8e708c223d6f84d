"""``simulate --format mlflow``: the usage series the operator logged to stage runs, read back
from a real ``mlflow server`` and replayed."""

import json
import os
import subprocess
import sys

import pytest

from airflow_adaptive.adapters.mlflow.stage_run_log import StageRunLog
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.stage_run import StageIdentity

pytestmark = [pytest.mark.integration]
MiB = 2**20
EXPERIMENT = "simulate-series-test"


def logged_run(log, run_id, start, memory, untrusted=False):
    identity = StageIdentity("pipeline", "train", run_id, 1)
    run = log.start(identity, {"algorithm": "x"}, None, {"memory": 512 * MiB}, {"memory": 256 * MiB}, sizing="predicted",
                    reason="", model_uri="models:/job-profiler@champion", model_version="1", schema_id="stage/1")
    log.log_usage(run, [UsageSample(start + 10 * i, {"memory": m * MiB, "cpu": 0.5}, step=i) for i, m in enumerate(memory)])
    if untrusted:
        log.record_monitor_lines(run, [], None, {"above_maximum": 3})
    return run


def test_stage_runs_replay_in_time_order(mlflow_server, tmp_path):
    log = StageRunLog(mlflow_server, EXPERIMENT)
    logged_run(log, "manual__1", 1_000_000.0, [100, 200, 200])
    logged_run(log, "manual__2", 1_000_100.0, [100, 100, 300, 300])  # steps past the first run's peak
    logged_run(log, "manual__3", 1_000_200.0, [100] * 3, untrusted=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server}
    out = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", "simulate", "--series", EXPERIMENT,
                           "--format", "mlflow", "--json", str(out)], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["ordering"] == "start times" and report["runs"] == 2
    assert report["load"]["skipped"] == {"untrusted runs (forged or malformed monitor lines)": 1}
    assert report["warmup_runs"]["memory"] == 1 and report["scored_runs"]["memory"] == 1
    history = report["policies"]["static_history"]["memory"]
    assert history["kills"] == 1  # 300 MiB against the first run's 200 MiB + 20%
    assert set(report["resources"]) == {"cpu", "memory"}

"""`airflow-adaptive train --register` against a real SQLite MLflow store, as a user runs it."""

import gzip
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def cli(*args, env):
    return subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", *args], capture_output=True, text=True, env=env, timeout=600)


def test_register_applies_the_champion_rule(tmp_path, lanl_path):
    trace = tmp_path / "head.swf"
    with gzip.open(lanl_path, "rt") as src:
        trace.write_text("".join([l for l in src if not l.startswith(";")][:4000]))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "home")}

    first = cli("train", "--trace", str(trace), "--register", "job-profiler", env=env)
    assert first.returncode == 0, first.stderr
    assert "registered job-profiler version 1" in first.stdout
    # On this early slice the calibrated coverage does not hold on the newest 20% (6% of jobs
    # under-sized against a 1% target), so with no champion the rule refuses to promote.
    assert "champion unchanged (no champion)" in first.stdout and "outside 0.01 of the target" in first.stdout
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()

    job = tmp_path / "job.json"
    job.write_text(json.dumps({"user": "3", "executable": "3", "procs": 64}))
    refused = cli("predict", "--job", str(job), env=env)
    assert refused.returncode == 2 and "has no alias 'champion'" in refused.stderr and "Traceback" not in refused.stderr

    # A user promotes version 1 by hand; a second challenger scored on the same window then
    # competes with it, and whatever the rule decides is said with its reason.
    from airflow_adaptive.adapters.mlflow import registry

    os.environ["AIRFLOW_ADAPTIVE_HOME"] = env["AIRFLOW_ADAPTIVE_HOME"]
    try:
        registry.set_alias("job-profiler", "champion", "1")
    finally:
        del os.environ["AIRFLOW_ADAPTIVE_HOME"]
    second = cli("train", "--trace", str(trace), "--register", "job-profiler", env=env)
    assert second.returncode == 0, second.stderr
    assert "registered job-profiler version 2" in second.stdout
    # Same data, same seed: the challenger ties the champion, and a tie keeps the champion.
    assert "champion unchanged (version 1)" in second.stdout and "ties" in second.stdout
    served = cli("predict", "--job", str(job), env=env)
    assert served.returncode == 0, served.stderr
    assert "version 1" in json.loads(served.stdout)["job"]["model"]

"""The local runner and the sidecar log to a real ``mlflow server`` through its REST API."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from airflow_adaptive.adapters.mlflow.rest import MlflowRestClient

pytestmark = pytest.mark.integration
MIB = 2**20
CLI = [sys.executable, "-m", "airflow_adaptive.cli.main"]


@pytest.fixture
def stage_run(mlflow_server):
    client = MlflowRestClient(mlflow_server)
    experiment = client.create_experiment(f"runtime-{uuid.uuid4().hex[:8]}")
    return client.create_run(experiment, tags={"airflow_adaptive.task_id": "train"})["info"]["run_id"]


def _run(tmp_path, uri, run_id, *args):
    out = tmp_path / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0"}
    proc = subprocess.run([*CLI, "run", "--json", str(out), "--mlflow-uri", uri, "--run-id", run_id,
                           "--spool-dir", str(tmp_path / "spool"), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_every_sample_and_the_summary_reach_the_stage_run(tmp_path, mlflow_server, stage_run, cgroups_available, workload_cmd):
    from mlflow.tracking import MlflowClient

    proc, report = _run(tmp_path, mlflow_server, stage_run, "--cpu", "1", "--memory", "256Mi", "--interval", "0.3", "--",
                        *workload_cmd("steady", "--mib", "60", "--seconds", "2"))
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(mlflow_server)
    history = client.get_metric_history(stage_run, "usage.memory")
    with_memory = [s for s in report["samples"] if "memory" in s["values"]]
    assert sorted(m.step for m in history) == [s["step"] for s in with_memory]
    assert {m.step: m.value for m in history} == {s["step"]: s["values"]["memory"] for s in with_memory}
    run = client.get_run(stage_run)
    assert run.data.tags["airflow_adaptive.outcome"] == "success"
    assert run.data.metrics["observed.memory.peak"] == pytest.approx(report["peak_memory_bytes"])
    assert run.data.metrics["oom_kills"] == 0
    assert run.data.metrics["stage.end_time"] > run.data.metrics["stage.start_time"]


def test_an_oom_kill_is_recorded_in_the_stage_run(tmp_path, mlflow_server, stage_run, cgroups_available, workload_cmd):
    from mlflow.tracking import MlflowClient

    proc, report = _run(tmp_path, mlflow_server, stage_run, "--cpu", "1", "--memory", "64Mi", "--no-resize", "--",
                        *workload_cmd("grow", "--to-mib", "300", "--rate-mib-s", "500"))
    assert report["oom_killed"] and proc.returncode == 137
    client = MlflowClient(mlflow_server)
    run = client.get_run(stage_run)
    assert run.data.tags["airflow_adaptive.outcome"] == "oom_killed"
    assert run.data.metrics["oom_kills"] == 1
    download = tmp_path / "download"
    download.mkdir()
    events = json.loads(Path(client.download_artifacts(stage_run, "oom_events.json", str(download))).read_text())
    assert events[0]["limit_bytes"] == 64 * MIB and events[0]["kind"] == "kernel"


def test_a_run_id_mlflow_does_not_know_is_a_clear_error_before_anything_starts(tmp_path, mlflow_server):
    marker = tmp_path / "started"
    proc, report = _run(tmp_path, mlflow_server, "0" * 32, "--cpu", "1", "--memory", "64Mi", "--", "touch", str(marker))
    assert proc.returncode == 2
    assert "0" * 32 in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists() and report is None


def test_with_mlflow_down_the_run_completes_and_the_samples_wait_in_the_spool(tmp_path, closed_port, cgroups_available, workload_cmd):
    proc, report = _run(tmp_path, f"http://127.0.0.1:{closed_port}", "a" * 32, "--cpu", "1", "--memory", "128Mi",
                        "--interval", "0.3", "--", *workload_cmd("steady", "--mib", "20", "--seconds", "1.5"))
    assert proc.returncode == 0, proc.stderr
    assert "does not answer" in proc.stderr
    spooled = (tmp_path / "spool" / f"{'a' * 32}.jsonl").read_text().splitlines()
    steps = [r["metrics"][0]["step"] for r in map(json.loads, spooled) if r["metrics"] and r["metrics"][0]["key"].startswith("usage.")]
    assert len(set(steps)) == len([s for s in report["samples"] if s["values"]])


def test_sidecar_with_an_unknown_run_id_logs_it_and_keeps_monitoring(tmp_path, mlflow_server, workload_cmd):
    """A monitor fault never touches the workload: a wrong run id is logged, samples stay spooled."""
    marker = f"AIRFLOW_ADAPTIVE_WORKLOAD=mlflow-{os.getpid()}"
    workload = subprocess.Popen(workload_cmd("steady", "--mib", "20", "--seconds", "2"),
                                env={**os.environ, "AIRFLOW_ADAPTIVE_WORKLOAD": marker.split("=")[1]})
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "MLFLOW_TRACKING_URI": mlflow_server, "AIRFLOW_ADAPTIVE_RUN_ID": "f" * 32,
           "AIRFLOW_ADAPTIVE_SPOOL": str(tmp_path / "spool")}
    monitor = subprocess.run([*CLI, "monitor", "--cpu", "1", "--memory", "1Gi", "--interval", "0.3", "--workload-env", marker],
                             capture_output=True, text=True, env=env, timeout=90, cwd=tmp_path)
    assert workload.wait(timeout=30) == 0
    assert monitor.returncode == 0, monitor.stderr
    assert "f" * 32 in monitor.stderr and "Traceback" not in monitor.stderr
    spooled = (tmp_path / "spool" / f"{'f' * 32}.jsonl").read_text().splitlines()
    assert len(spooled) >= 3


def test_disk_bandwidth_and_storage_reach_the_stage_run_and_its_training_record(tmp_path, mlflow_server, stage_run, cgroups_available):
    """A real 24 MiB fsync'd write: ``usage.disk_write`` (bytes/s) per sample, its peak and the
    storage peak in the summary, and the record retraining reads back carries both."""
    from mlflow.tracking import MlflowClient

    from airflow_adaptive.domain.stage_run import STAGE_FEATURES, record_from_run

    script = ("import os, time\ntime.sleep(0.8)\nfd = os.open('out.bin', os.O_WRONLY | os.O_CREAT, 0o644)\n"
              "os.write(fd, os.urandom(24 << 20))\nos.fsync(fd)\nos.close(fd)\ntime.sleep(1.5)\n")
    proc, report = _run(tmp_path, mlflow_server, stage_run, "--cpu", "1", "--memory", "256Mi", "--interval", "0.2", "--",
                        sys.executable, "-c", script)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(mlflow_server)
    rated = [s for s in report["samples"] if "disk_write" in s["values"]]
    history = client.get_metric_history(stage_run, "usage.disk_write")
    assert {m.step: m.value for m in history} == {s["step"]: s["values"]["disk_write"] for s in rated}
    run = client.get_run(stage_run)
    peak = max(s["values"]["disk_write"] for s in rated)
    assert peak > 24 * MIB / 0.5  # the write fell within one or two 0.2 s intervals
    assert run.data.metrics["observed.disk_write.peak"] == pytest.approx(peak)
    assert run.data.metrics["observed.ephemeral_storage.peak"] >= 24 * MIB
    assert run.data.metrics["observed.disk_write_bytes"] >= 24 * MIB  # the try's total, beside the rate
    record = record_from_run(STAGE_FEATURES, stage_run, run.data.tags, run.data.params, run.data.metrics)
    assert record["used"]["disk_write"] == pytest.approx(peak)
    assert record["used"]["ephemeral_storage"] >= 24 * MIB
    assert record["used"]["network_rx"] is None  # not measured (the host's namespace): unknown, not 0

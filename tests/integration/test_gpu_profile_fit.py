"""GPU usage recorded through the operator's local path and learned by the profiler.

No GPU is present on the machines these tests run on: the stand-in NVML library
(tests/support/fake_nvml, built by the ``fake_nvml`` fixture) plays the driver. Each stage's
workload is a real process that registers its own PID as a GPU process in the stand-in's
configuration, as a CUDA program appears to NVML, with GPU memory growing with its input size.
The stages run through ``operators/local.run_stage_locally`` (the local Resource Manager with
its default GPU reader) in one subprocess (``tests/support/fake_nvml/run_local_stage.py``); what
they hand to the stage-run writer is read back as training records with the same function that
reads MLflow runs (``record_from_run``), and a ScalingProfiler is fitted on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
DRIVER = REPO / "tests" / "support" / "fake_nvml" / "run_local_stage.py"
GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10
DEVICE = f"device GPU-aaaa-0000 Fake-A100 97 10 {80 * GiB} {40 * GiB}\n"
#: Another process on the same GPU, which must never be counted: PID 1 exists in every PID
#: namespace, so it also shows the runner that NVML's PIDs are its own.
NEIGHBOUR = f"process 0 1 {8 * GiB} 50\n"


def gpu_memory_of(rows: int) -> int:
    """The stand-in training stage's GPU memory: a fixed 1 GiB (CUDA context, model) plus 8 KiB a row."""
    return GiB + rows * 8 * KiB


def sm_of(rows: int) -> int:
    return min(95, 20 + rows // 100_000)


def features(task: str, rows: int) -> dict:
    return {"dag_id": "ml", "task_id": task, "algorithm": "mlp", "framework": "torch", "data_rows": float(rows),
            "data_bytes": rows * 256.0, "n_features": 32.0, "epochs": 1.0}


def gpu_stage(config: Path, task: str, rows: int, seconds: float = 1.0) -> dict:
    line = f"process 0 $$ {gpu_memory_of(rows)} {sm_of(rows)}"
    # Replaced whole (rename), as the stand-in re-reads it on every NVML call.
    script = (f"printf '%s' '{DEVICE}{NEIGHBOUR}' > {config}.$$; echo \"{line}\" >> {config}.$$; "
              f"mv {config}.$$ {config}; exec sleep {seconds}")
    return {"task_id": task, "cmd": ["sh", "-c", script], "features": features(task, rows)}


def cpu_stage(config: Path, task: str, rows: int) -> dict:
    script = f"printf '%s' '{DEVICE}{NEIGHBOUR}' > {config}.$$; mv {config}.$$ {config}; exec sleep 0.8"
    return {"task_id": task, "cmd": ["sh", "-c", script], "features": features(task, rows)}


def run_stages(lib_dir: Path, tmp_path: Path, stages: list[dict]) -> list[dict]:
    config = tmp_path / "nvml.conf"
    config.write_text(DEVICE + NEIGHBOUR)
    env = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW_ADAPTIVE_NVML", "NVIDIA_VISIBLE_DEVICES")}
    env.update(LD_LIBRARY_PATH=str(lib_dir), FAKE_NVML_CONFIG=str(config),
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps({"stages": stages, "interval_s": 0.15})],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.splitlines()[-1])["runs"]


def as_record(i: int, run: dict) -> dict:
    """A try's stage-run metrics and feature params read back as retraining reads MLflow runs."""
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES, feature_param, record_from_run

    params = {feature_param(k): str(v) for k, v in run["features"].items()}
    record = record_from_run(STAGE_FEATURES, f"run-{i}", {}, params, run["metrics"])
    assert record is not None, run["metrics"]
    return record


def test_profiler_learns_gpu_memory_recorded_through_the_local_path(fake_nvml, tmp_path):
    sizes = (100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000)
    config = tmp_path / "nvml.conf"
    stages = [gpu_stage(config, "train", n) for n in sizes]
    stages += [cpu_stage(config, "evaluate", n) for n in (100_000, 800_000, 3_200_000)]
    runs = run_stages(fake_nvml, tmp_path, stages)

    # Recorded: the workload's own GPU memory and SM utilisation, never the neighbour's 8 GiB.
    for n, run in zip(sizes, runs):
        assert run["exit_code"] == 0, run["log"]
        m = run["metrics"]
        assert m["observed.gpu_memory.peak"] == gpu_memory_of(n), (n, run["usage"])
        assert m["observed.gpu.peak"] == pytest.approx(sm_of(n) / 100)
        assert 0 < m["observed.gpu_memory.mean"] <= gpu_memory_of(n)
        assert run["xcom"]["peak_gpu"]["gpu_memory"] == gpu_memory_of(n)
        assert any("NVML sampler" in msg and "PID mode" in msg for _, msg in run["log"])
        assert not [msg for level, msg in run["log"] if level in ("WARNING", "ERROR") and "NVML" in msg]
    for run in runs[len(sizes):]:  # a stage with no GPU process: 0 in use, recorded as such
        assert run["metrics"]["observed.gpu_memory.peak"] == 0.0 and run["metrics"]["observed.gpu.peak"] == 0.0

    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES
    from airflow_adaptive.logic.scaling import ScalingProfiler

    table = JobTable.from_rows(STAGE_FEATURES, [as_record(i, r) for i, r in enumerate(runs)]).sorted_by_submit()
    profiler = ScalingProfiler().fit(table)
    assert profiler.training_rows_["gpu_memory"] == len(sizes)  # the CPU stage's 0s teach no GPU law
    for rows in (300_000, 2_400_000):
        predicted = profiler.predict_profile(features("train", rows)).resources
        assert predicted["gpu_memory"].median == pytest.approx(gpu_memory_of(rows), rel=0.15), rows
        assert predicted["gpu_memory"].upper >= predicted["gpu_memory"].median
        assert predicted["gpu"].median == pytest.approx(sm_of(rows) / 100, rel=0.25), rows
    small = profiler.predict_profile(features("train", 150_000)).resources["gpu_memory"].median
    large = profiler.predict_profile(features("train", 3_000_000)).resources["gpu_memory"].median
    assert large > 3 * small  # it follows the input size


def test_local_path_without_nvml_says_so_once_and_records_no_gpu(tmp_path):
    """No libnvidia-ml.so.1 at all (as on this machine, which has no GPU; no stand-in here): the
    stage runs, the log says once that GPU usage is not sampled, and no GPU value is recorded."""
    empty = tmp_path / "no-library-here"
    empty.mkdir()
    probe = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libnvidia-ml.so.1')"],
                           env={**os.environ, "LD_LIBRARY_PATH": str(empty)}, capture_output=True)
    if probe.returncode == 0:
        pytest.skip("a real libnvidia-ml.so.1 (an NVIDIA driver) is installed on this machine")
    (run,) = run_stages(empty, tmp_path, [gpu_stage(tmp_path / "nvml.conf", "train", 100_000, seconds=0.6)])
    assert run["exit_code"] == 0
    said = [msg for _, msg in run["log"] if "GPU usage not sampled" in msg]
    assert len(said) == 1 and "NVML Shared Library Not Found" in said[0], run["log"]
    assert not any(k.startswith(("observed.gpu.", "observed.gpu_memory.")) for k in run["metrics"])
    assert all("gpu" not in v and "gpu_memory" not in v for v in run["usage"]) and run["usage"]
    assert "peak_gpu" not in run["xcom"]

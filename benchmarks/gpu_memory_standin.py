"""Benchmark: GPU memory predicted against observed, through the whole local path, on the NVML stand-in.

No GPU here. The stand-in NVML library (``tests/support/fake_nvml``, built with gcc) plays the
driver: each training stage's workload is a real process that registers its own PID as a GPU
process holding ``1 GiB + 8 KiB x rows`` of GPU memory (a CUDA context and model, plus its batch),
beside a neighbour process's 8 GiB that must never be counted. The stages run through
``operators/local.run_stage_locally`` (the local Resource Manager, NVML in PID mode); their
observed peaks become training records exactly as retraining reads MLflow runs
(``record_from_run``); a ScalingProfiler is fitted on six sizes and predicts three new ones,
which are then run and observed.

What it measures is the pipeline (sampling, recording, learning), not a GPU: the stand-in's memory
law is ours. The real-GPU figure needs a device machine (README).

Writes ``benchmarks/results/gpu-memory-standin.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/gpu_memory_standin.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
OUT = REPO / "benchmarks" / "results" / "gpu-memory-standin.json"
SOURCE = REPO / "tests" / "support" / "fake_nvml" / "fake_nvml.c"
DRIVER = REPO / "tests" / "support" / "fake_nvml" / "run_local_stage.py"
GIB, MIB, KIB = 1 << 30, 1 << 20, 1 << 10
DEVICE = f"device GPU-aaaa-0000 Fake-A100 97 10 {80 * GIB} {40 * GIB}\n"
NEIGHBOUR = f"process 0 1 {8 * GIB} 50\n"
TRAIN_SIZES = (100_000, 200_000, 400_000, 800_000, 1_600_000, 3_200_000)
NEW_SIZES = (300_000, 1_200_000, 2_400_000)


def gpu_memory_of(rows: int) -> int:
    return GIB + rows * 8 * KIB


def stage(config: Path, rows: int) -> dict:
    line = f"process 0 $$ {gpu_memory_of(rows)} {min(95, 20 + rows // 100_000)}"
    script = (f"printf '%s' '{DEVICE}{NEIGHBOUR}' > {config}.$$; echo \"{line}\" >> {config}.$$; "
              f"mv {config}.$$ {config}; exec sleep 1")
    features = {"dag_id": "ml", "task_id": "train", "algorithm": "mlp", "framework": "torch", "data_rows": float(rows),
                "n_features": 32.0, "epochs": 1.0}
    return {"task_id": "train", "cmd": ["sh", "-c", script], "features": features}


def run_stages(lib: Path, work: Path, sizes) -> list[dict]:
    config = work / "nvml.conf"
    config.write_text(DEVICE + NEIGHBOUR)
    env = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW_ADAPTIVE_NVML", "NVIDIA_VISIBLE_DEVICES")}
    env.update(LD_LIBRARY_PATH=str(lib), FAKE_NVML_CONFIG=str(config), PYTHONPATH=str(REPO))
    plan = {"stages": [stage(config, n) for n in sizes], "interval_s": 0.15}
    proc = subprocess.run([sys.executable, str(DRIVER), json.dumps(plan)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=work, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"the stages failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.splitlines()[-1])["runs"]


def main() -> int:
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES, feature_param, record_from_run
    from airflow_adaptive.logic.scaling import ScalingProfiler

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lib = work / "libnvidia-ml.so.1"
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wl,-soname,libnvidia-ml.so.1", "-o", str(lib), str(SOURCE)], check=True)
        history = run_stages(work, work, TRAIN_SIZES)
        new = run_stages(work, work, NEW_SIZES)
    records = [record_from_run(STAGE_FEATURES, f"run-{i}", {}, {feature_param(k): str(v) for k, v in r["features"].items()}, r["metrics"])
               for i, r in enumerate(history)]
    profiler = ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, records).sorted_by_submit())
    rows = []
    for n, run in zip(NEW_SIZES, new):
        observed = run["metrics"]["observed.gpu_memory.peak"]
        est = profiler.predict_profile(run["features"]).resources["gpu_memory"]
        rows.append({"data_rows": n, "stand_in_bytes": gpu_memory_of(n), "observed_peak_bytes": observed,
                     "predicted_median_bytes": est.median, "predicted_upper_bytes": est.upper,
                     "median_over_observed": round(est.median / observed, 3), "upper_over_observed": round(est.upper / observed, 3)})
    recorded_exactly = all(r["metrics"]["observed.gpu_memory.peak"] == gpu_memory_of(n) for n, r in zip(TRAIN_SIZES + NEW_SIZES, history + new))
    # Exactly the workload's own bytes: the neighbour's 8 GiB on the same GPU was never added.
    result = {"train_sizes": TRAIN_SIZES, "new": rows, "recorded_exactly": recorded_exactly,
              "seconds": round(time.perf_counter() - started, 1)}
    OUT.write_text(json.dumps(result, indent=1))
    print(f"{'rows':>10} {'observed MiB':>13} {'median MiB':>11} {'upper MiB':>10} {'median/obs':>11} {'upper/obs':>10}")
    for r in rows:
        print(f"{r['data_rows']:>10} {r['observed_peak_bytes'] / MIB:>13.0f} {r['predicted_median_bytes'] / MIB:>11.0f} "
              f"{r['predicted_upper_bytes'] / MIB:>10.0f} {r['median_over_observed']:>11.3f} {r['upper_over_observed']:>10.3f}")
    print(f"each stage's peak recorded exactly (its own bytes, never the neighbour's 8 GiB): {recorded_exactly}; {result['seconds']} s")
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

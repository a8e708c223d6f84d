"""How long sizing adds to a task's start: a fresh process resolving ``models:/job-profiler@champion``
against a real ``mlflow server``, loading the model (from the on-disk cache, and without it),
predicting one stage and sizing it; then the cost per prediction once loaded.

Writes ``benchmarks/results/sizing-latency.json`` and prints a table. Targets (issue 4): at most
1 s in a fresh process with the cache, at most 10 ms per prediction once loaded.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sizing-latency.json"
REPEATS = 5

# The child: everything a task does to size itself, timed from the first import.
CHILD = r"""
import time, json, sys
t0 = time.perf_counter()
from airflow_adaptive.hooks.profiler import ProfilerHook
from airflow_adaptive.logic.sizing import SizingPolicy, size_container
from airflow_adaptive.domain.resources import ResourceVector
t_import = time.perf_counter()
hook = ProfilerHook(None)
profile, version = hook.predict({"dag_id": "ml_training_pipeline", "task_id": "train_model", "algorithm": "sgd",
                                 "framework": "sklearn", "data_rows": 120000, "n_features": 32, "epochs": 1}, where="bench")
size = size_container(profile, ResourceVector(1, 2**31), ResourceVector(2, 2**33), SizingPolicy())
t_done = time.perf_counter()
print(json.dumps({"import_s": t_import - t0, "resolve_load_predict_size_s": t_done - t_import, "total_s": t_done - t0,
                  "mlflow_imported": "mlflow" in sys.modules, "version": version}))
"""


def stage_table(n_sizes: int = 6):
    from airflow_adaptive.domain.records import JobTable
    from airflow_adaptive.domain.stage_run import STAGE_FEATURES

    rng = np.random.default_rng(0)
    rows, t = [], 1e9
    for i, n in enumerate(np.linspace(40_000, 360_000, n_sizes).astype(int)):
        for task, (a, b) in {"load_data": (100e6, 1100.0), "train_model": (150e6, 1500.0), "evaluate_model": (200e6, 350.0)}.items():
            rows.append({"job_id": f"{task}{i}", "submit": t, "end": t + 5, "run_time": 5.0,
                         "features": {"dag_id": "ml_training_pipeline", "task_id": task, "algorithm": "sgd", "framework": "sklearn",
                                      "data_rows": float(n), "n_features": 32.0, "epochs": 1.0},
                         "used": {"memory": (a + b * n) * (1 + 0.03 * rng.standard_normal()), "cpu": 1.0}, "requested": {}})
            t += 10
    return JobTable.from_rows(STAGE_FEATURES, rows)


def fresh(env) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    wall = json.loads(out.stdout.strip().splitlines()[-1])
    return wall


def main() -> None:
    from airflow_adaptive.adapters.mlflow.local_server import LocalMlflowServer
    from airflow_adaptive.adapters.mlflow.registry import load_profiler, log_profiler, set_alias
    from airflow_adaptive.logic.scaling import ScalingProfiler

    with tempfile.TemporaryDirectory() as tmp:
        server = LocalMlflowServer(Path(tmp) / "mlflow")
        uri = server.start()
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "AIRFLOW_ADAPTIVE_HOME": str(Path(tmp) / "home")}
        os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "AIRFLOW_ADAPTIVE_HOME")})
        try:
            _, version = log_profiler(ScalingProfiler().fit(stage_table()), name="job-profiler")
            set_alias("job-profiler", "champion", version)
            cache = Path(tmp) / "home" / "model-cache"
            cold = []
            for _ in range(REPEATS):
                shutil.rmtree(cache, ignore_errors=True)
                cold.append(fresh(env))
            warm = [fresh(env) for _ in range(REPEATS)]
            profiler, _ = load_profiler()
            job = {"dag_id": "ml_training_pipeline", "task_id": "train_model", "algorithm": "sgd", "framework": "sklearn",
                   "data_rows": 120000, "n_features": 32, "epochs": 1}
            per = []
            for _ in range(200):
                t = time.perf_counter()
                profiler.predict_profile(job)
                per.append(time.perf_counter() - t)
        finally:
            server.stop()
    med = lambda xs, k: statistics.median(x[k] for x in xs)  # noqa: E731
    result = {
        "fresh_process_with_cache_s": {"median": med(warm, "total_s"), "max": max(x["total_s"] for x in warm),
                                       "import_s": med(warm, "import_s"), "resolve_load_predict_size_s": med(warm, "resolve_load_predict_size_s")},
        "fresh_process_without_cache_s": {"median": med(cold, "total_s"), "max": max(x["total_s"] for x in cold),
                                          "resolve_load_predict_size_s": med(cold, "resolve_load_predict_size_s")},
        "mlflow_imported_on_cached_path": any(x["mlflow_imported"] for x in warm),
        "per_prediction_ms": {"median": statistics.median(per) * 1000, "p99": float(np.quantile(per, 0.99)) * 1000},
        "repeats": REPEATS, "machine": f"{os.cpu_count()} cores",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1))
    print(f"{'what':<42} {'median':>9} {'max':>9}")
    w, c = result["fresh_process_with_cache_s"], result["fresh_process_without_cache_s"]
    print(f"{'fresh process, on-disk cache (s)':<42} {w['median']:>9.3f} {w['max']:>9.3f}")
    print(f"{'  of which imports (s)':<42} {w['import_s']:>9.3f}")
    print(f"{'fresh process, no cache (s)':<42} {c['median']:>9.3f} {c['max']:>9.3f}")
    print(f"{'per prediction, loaded (ms)':<42} {result['per_prediction_ms']['median']:>9.2f} {result['per_prediction_ms']['p99']:>9.2f} (p99)")
    print(f"mlflow imported on the cached path: {result['mlflow_imported_on_cached_path']}")


if __name__ == "__main__":
    main()

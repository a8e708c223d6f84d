"""Benchmark: disk bandwidth and ephemeral storage of the example pipeline, predicted against observed.

The example pipeline (``airflow_adaptive/examples/pipeline.py all``: load, train and evaluate in
one process, as a one-pod pipeline would run) writes its data, features and model into its
working directory, which is what a pod's writable layer would hold. Each run goes through the
local Resource Manager (``airflow-adaptive run --json``, real cgroups, 0.5 s sampling) in a fresh
directory; the report's samples give the peak disk write and read bandwidth (bytes/s over one
sampling interval) and the storage peak (the working directory's walks).

The small-history profiler (``logic/scaling.py``, what a pipeline with a few runs is served by)
is fitted on the seed sizes and predicts the held-out ones, one smaller than the largest seed
(interpolation) and one past it (extrapolation): median and covering upper against what the run
then used.

Writes ``benchmarks/results/io-profile.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/io_profile.py`` (about 3 minutes here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_adaptive.domain.records import JobTable  # noqa: E402
from airflow_adaptive.domain.stage_run import STAGE_FEATURES  # noqa: E402
from airflow_adaptive.logic.scaling import ScalingProfiler  # noqa: E402

SEED_ROWS = (20_000, 30_000, 45_000, 60_000, 80_000, 100_000)
HELD_OUT_ROWS = (70_000, 140_000)
RESOURCES = ("disk_write", "disk_read", "ephemeral_storage", "memory")
MIB = 2**20


def run_pipeline(rows: int, interval: float) -> dict:
    """One run of the pipeline in a fresh working directory; its peaks per resource."""
    workdir = Path(tempfile.mkdtemp(prefix="io-profile-"))
    try:
        report_path = workdir / "report.json"
        env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "OMP_NUM_THREADS": "2"}
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "airflow_adaptive.cli.main", "run", "--cpu", "2", "--memory", "3Gi",
             "--interval", str(interval), "--json", str(report_path), "--",
             sys.executable, "-m", "airflow_adaptive.examples.pipeline", "all", "--rows", str(rows), "--workdir", "."],
            cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"pipeline at {rows} rows failed: {proc.stderr[-2000:]}")
        report = json.loads(report_path.read_text())
        samples = [s["values"] for s in report["samples"]]
        peaks = {r: max((s[r] for s in samples if r in s), default=None) for r in RESOURCES}
        peaks["ephemeral_storage"] = report["ephemeral_storage_peak_bytes"]  # the final walk counts too
        return {"rows": rows, "wall_seconds": round(time.monotonic() - started, 2), "peak": peaks,
                "disk_write_bytes": report["disk_write_bytes"], "disk_read_bytes": report["disk_read_bytes"],
                "samples": len(samples)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def record(run: dict, t: float) -> dict:
    features = {"dag_id": "example", "task_id": "all", "algorithm": "extra_trees", "framework": "sklearn",
                "data_rows": float(run["rows"])}
    return {"job_id": f"all-{run['rows']}", "submit": t, "end": t + run["wall_seconds"], "run_time": run["wall_seconds"],
            "features": features, "used": dict(run["peak"]), "requested": {}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interval", type=float, default=0.5, help="sampling interval (seconds)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "io-profile.json"))
    args = parser.parse_args()
    seeds = []
    for rows in SEED_ROWS:
        seeds.append(run_pipeline(rows, args.interval))
        print(f"[io-profile] seed {rows} rows: {seeds[-1]['peak']}", flush=True)
    table = JobTable.from_rows(STAGE_FEATURES, [record(r, 1e9 + 1000 * i) for i, r in enumerate(seeds)])
    profiler = ScalingProfiler().fit(table)
    held_out = []
    for rows in HELD_OUT_ROWS:
        run = run_pipeline(rows, args.interval)
        profile = profiler.predict_profile(record(run, 2e9)["features"])
        run["predicted"] = {r: {"median": e.median, "upper": e.upper} for r, e in profile.resources.items() if r in RESOURCES}
        run["covered"] = {r: run["peak"][r] is not None and run["peak"][r] <= p["upper"] for r, p in run["predicted"].items()}
        run["median_error"] = {r: (p["median"] / run["peak"][r] - 1) if run["peak"][r] else None for r, p in run["predicted"].items()}
        held_out.append(run)
        print(f"[io-profile] held out {rows} rows: observed {run['peak']}", flush=True)
    result = {"sampling_interval_s": args.interval, "seed_rows": SEED_ROWS, "seeds": seeds, "held_out": held_out,
              "profiler": "ScalingProfiler (logic/scaling.py), coverage 0.99"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(table_text(result))


def _fmt(resource: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / MIB:.1f} MiB/s" if resource.startswith("disk") else f"{value / MIB:.1f} MiB"


def table_text(result: dict) -> str:
    lines = ["| rows | resource | observed peak | predicted median | predicted upper | covered | median error |",
             "|---|---|---|---|---|---|---|"]
    for run in result["held_out"]:
        for r, p in run["predicted"].items():
            err = run["median_error"][r]
            lines.append(f"| {run['rows']:,} | {r} | {_fmt(r, run['peak'][r])} | {_fmt(r, p['median'])} | "
                         f"{_fmt(r, p['upper'])} | {'yes' if run['covered'][r] else 'NO'} | "
                         f"{'-' if err is None else f'{err:+.0%}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""Benchmark: the example pipeline's resource profile per stage and data size.

Runs ``load``, ``train`` and ``evaluate`` (``airflow_adaptive/examples/pipeline.py``) as separate
processes at a few row counts and records, per stage run:

- wall seconds of the process (interpreter start and imports included);
- peak RSS, two ways: polled with psutil every 50 ms (the process plus its children), and the
  kernel's ``ru_maxrss`` of that child from ``os.wait4`` -- the per-child form of
  ``getrusage(RUSAGE_CHILDREN).ru_maxrss``, which is a maximum over every child waited so far
  and is recorded too;
- train's resident memory over the run (polled), to show that it grows rather than being
  allocated at start, and the stage's own JSON summary.

Writes ``benchmarks/results/pipeline-profile.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/pipeline_profile.py [--sizes 50000,130000,200000,300000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from airflow_adaptive.examples.pipeline import STAGES, stage_command  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "pipeline-profile.json"
SIZES = (50_000, 130_000, 200_000, 300_000)
POLL_S = 0.05
MIB = 2**20


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(argv: list[str]) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO)
        proc = psutil.Process(child.pid)
        peak, curve = 0, []
        while True:
            try:
                pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            except ChildProcessError:
                raise RuntimeError("lost the child") from None
            if pid:
                break
            try:
                rss = _tree_rss(proc)
            except psutil.Error:
                rss = 0
            peak = max(peak, rss)
            curve.append((round(time.perf_counter() - t0, 2), round(rss / MIB, 1)))
            time.sleep(POLL_S)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}: {stderr[-1000:]}")
    return {"wall_seconds": round(wall, 2), "peak_rss_mib_polled": round(peak / MIB, 1),
            "peak_rss_mib_rusage": round(usage.ru_maxrss / 1024, 1),
            "rusage_children_maxrss_mib_so_far": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            "summary": json.loads(stdout.strip().splitlines()[-1]), "rss_curve": curve}


def _downsample(curve: list, points: int = 40) -> list:
    step = max(1, len(curve) // points)
    return curve[::step] + ([curve[-1]] if curve and (len(curve) - 1) % step else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    runs = []
    load_before = os.getloadavg()
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="pipeline-profile-") as workdir:
            for stage in STAGES:
                m = measure(stage_command(stage, rows, workdir))
                curve = m.pop("rss_curve")
                if stage == "train":
                    m["rss_curve_mib"] = _downsample(curve)
                runs.append({"stage": stage, "rows": rows, **m})
                print(f"  {stage:8s} {rows:>8,d} rows: {m['wall_seconds']:6.2f} s, peak {m['peak_rss_mib_rusage']:6.1f} MiB", flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "sizes": sizes,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")

    print(f"\n{'rows':>9} | " + " | ".join(f"{s:^22}" for s in STAGES))
    print(f"{'':>9} | " + " | ".join(f"{'seconds':>9} {'peak MiB':>12}" for _ in STAGES))
    for rows in sizes:
        cells = []
        for stage in STAGES:
            r = next(x for x in runs if x["rows"] == rows and x["stage"] == stage)
            cells.append(f"{r['wall_seconds']:>9.2f} {r['peak_rss_mib_rusage']:>12.1f}")
        print(f"{rows:>9,d} | " + " | ".join(cells))
    for r in runs:
        if r["stage"] == "train":
            steps = r["summary"]["rss_mib_by_step"]
            print(f"train {r['rows']:>8,d} rows, RSS after each warm-start step (MiB): {steps}")
    print(f"\nload average {result['machine']['loadavg_before']} -> {result['machine']['loadavg_after']} on {os.cpu_count()} CPUs")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Benchmark: does the local runner save a workload whose memory outgrows an under-predicted limit?

Runs real workloads through ``airflow-adaptive run`` on real cgroups:

- ``grow``: memory grows from ~0 to 768 MiB at 300 MiB/s under a 128 MiB starting limit, with
  resizing (must complete) and with ``--no-resize`` (must be OOM-killed);
- ``sustained`` / ``spike``: how many samples a sustained deviation takes to resize, and that a
  single spike resizes nothing.

Writes ``benchmarks/results/runtime-growth.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/runtime_growth.py``.
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
WORKLOAD = [sys.executable, str(REPO / "airflow_adaptive" / "examples" / "workloads.py")]
MIB = 2**20

CASES = {
    "grow, resize": (["--cpu", "1", "--memory", "128Mi", "--interval", "1"], ["grow", "--to-mib", "768", "--rate-mib-s", "300"]),
    "grow, --no-resize": (["--cpu", "1", "--memory", "128Mi", "--no-resize"], ["grow", "--to-mib", "768", "--rate-mib-s", "300"]),
    "sustained cpu": (["--cpu", "0.25", "--memory", "256Mi", "--max-cpu", "2", "--interval", "1"], ["spin", "--seconds", "6", "--processes", "2"]),
    "memory at 92% of limit": (["--cpu", "1", "--memory", "256Mi", "--interval", "1"],
                         ["steady", "--mib", "235", "--seconds", "6"]),
    "single spike": (["--cpu", "1", "--memory", "512Mi", "--interval", "1"],
                     ["steady", "--mib", "60", "--seconds", "6", "--spike-mib", "300", "--spike-at", "2.5", "--spike-s", "0.3"]),
}


def run_case(flags: list[str], workload: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0"}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", "run", "--json", str(out), *flags, "--", *WORKLOAD, *workload],
                              capture_output=True, text=True, env=env, cwd=tmp)
        wall = time.perf_counter() - t0
        report = json.loads(out.read_text())
    samples = report.pop("samples")
    first_resize = report["resizes"][0]["time"] if report["resizes"] else None
    start = samples[0]["time"] if samples else None
    report.update(
        wall_seconds=round(wall, 2),
        n_samples=len(samples),
        samples_before_first_resize=None if first_resize is None else sum(1 for s in samples if s["time"] <= first_resize),
        seconds_to_first_resize=None if first_resize is None or start is None else round(first_resize - start, 3),
        runner_stderr_tail=proc.stderr[-400:],
    )
    return report


def main() -> int:
    results = {name: run_case(*case) for name, case in CASES.items()}
    out = REPO / "benchmarks" / "results" / "runtime-growth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"{'case':<20} {'outcome':<11} {'resizes':>7} {'samples→resize':>14} {'peak MiB':>9} {'final mem MiB':>13} {'reserved GiB·s':>14} {'wall s':>7}")
    for name, r in results.items():
        outcome = "OOM-killed" if r["oom_killed"] else f"exit {r['exit_code']}"
        print(f"{name:<20} {outcome:<11} {len(r['resizes']):>7} {str(r['samples_before_first_resize']):>14} "
              f"{r['peak_memory_bytes'] / MIB:>9.0f} {r['final_allocation']['memory'] / MIB:>13.0f} "
              f"{r['reserved_memory_byte_seconds'] / 2**30:>14.2f} {r['wall_seconds']:>7.2f}")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

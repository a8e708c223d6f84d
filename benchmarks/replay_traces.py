"""Benchmark: replay the shared real traces with every policy and every knob setting.

Writes ``benchmarks/results/replay-<run>.json`` (the replay report plus wall time and peak
memory) and prints a table. Run: ``.venv/bin/python benchmarks/replay_traces.py [--only lanl]``.

The ``*-used-only`` runs load a log with its requests dropped (requested processors, time and
memory unknown, as in a log that records usage only) and replay it with
``--default-request cpu=1,memory=1Gi``. Their JSON holds a ``goal`` entry: the adaptive policy's
memory ``allocated_over_used`` at the target against 2.0 and against 0.75 x the better of
``vpa`` and ``autopilot_moving_window``, and the wall time against 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "data" / "traces"
LANL = "LANL-CM5-1994-4.1-cln.swf.gz"
HPC2N = "HPC2N-2002-2.2-cln.swf.gz"
USED_ONLY_DEFAULT = "cpu=1,memory=1Gi"
# name: (file, resources, drop the requests?, --default-request)
RUNS = {
    "lanl": (LANL, ("memory", "cpu"), False, None),
    "hpc2n": (HPC2N, ("cpu",), False, None),  # its memory is a copy of the request
    "lanl-used-only": (LANL, ("memory", "cpu"), True, USED_ONLY_DEFAULT),
    # HPC2N's memory is a copy of its request: without the request nothing of memory is left,
    # so only its CPU can be replayed as a usage-only log.
    "hpc2n-used-only": (HPC2N, ("cpu",), True, USED_ONLY_DEFAULT),
}
GOAL_RATIO = 2.0
GOAL_VS_BASELINES = 0.75
GOAL_SECONDS = 120.0


def goal(report: dict, wall: float) -> dict | None:
    """The used-memory-only goal, where the run replayed memory."""
    policies = report["policies"]
    if "memory" not in policies["adaptive"]:
        return None
    ours = policies["adaptive"]["memory"]["at_target"]
    better = min(policies[p]["memory"]["at_target"]["allocated_over_used"] for p in ("vpa", "autopilot_moving_window"))
    a = ours["allocated_over_used"]
    return {
        "adaptive_allocated_over_used": a,
        "reached_target": ours["reached"],
        "better_baseline_allocated_over_used": better,
        "ratio_to_better_baseline": a / better,
        "at_most_2": a <= GOAL_RATIO,
        "at_most_0.75_of_better_baseline": a <= GOAL_VS_BASELINES * better,
        "wall_seconds": round(wall, 1),
        "within_120_s": wall <= GOAL_SECONDS,
    }


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def main() -> int:
    from airflow_adaptive.adapters.traces.swf import load_swf
    from airflow_adaptive.cli.report import replay_plot, replay_table
    from airflow_adaptive.logic.replay import ReplayConfig, parse_default_request, replay

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(RUNS))
    args = parser.parse_args()
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (file, resources, drop, default) in RUNS.items():
        if args.only and name != args.only:
            continue
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        loaded = load_swf(TRACES / file, drop_requests=drop)
        config = ReplayConfig(resources=resources, default_request=parse_default_request(default) if default else {})
        report = replay(loaded.table, config)
        wall = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_started
        label = file + (" (requests dropped)" if drop else "")
        report = {"trace": label, **report, "load": loaded.report.to_dict(), "wall_seconds_with_load": round(wall, 1),
                  "cpu_seconds_with_load": round(cpu, 1), "load_average_1min": round(os.getloadavg()[0], 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        if default:
            report["default_request_flag"] = default
            report["goal"] = goal(report, wall)
        (out_dir / f"replay-{name}.json").write_text(json.dumps(report, indent=1))
        replay_plot(report, str(out_dir / f"replay-{name}.png"))
        print(replay_table(report))
        print(f"wall {wall:.1f} s, CPU {cpu:.1f} s (load included), peak RSS {report['peak_rss_mib']} MiB,"
              f" machine load average {report['load_average_1min']}")
        if report.get("goal"):
            print(f"goal: {json.dumps(report['goal'])}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

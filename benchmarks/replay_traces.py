"""Benchmark: replay the shared real traces with every policy and every knob setting.

Writes ``benchmarks/results/replay-<trace>.json`` (the replay report plus wall time and peak
memory) and prints a table. Run: ``.venv/bin/python benchmarks/replay_traces.py [--only lanl]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared" / "data" / "traces"
RUNS = {
    "lanl": ("LANL-CM5-1994-4.1-cln.swf.gz", ("memory", "cpu")),
    "hpc2n": ("HPC2N-2002-2.2-cln.swf.gz", ("cpu",)),  # its memory is a copy of the request
}


def main() -> int:
    from airflow_adaptive.adapters.traces.swf import load_swf
    from airflow_adaptive.cli.report import replay_plot, replay_table
    from airflow_adaptive.logic.replay import ReplayConfig, replay

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=sorted(RUNS))
    args = parser.parse_args()
    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for name, (file, resources) in RUNS.items():
        if args.only and name != args.only:
            continue
        started = time.perf_counter()
        loaded = load_swf(TRACES / file)
        report = replay(loaded.table, ReplayConfig(resources=resources))
        wall = time.perf_counter() - started
        report = {"trace": file, **report, "load": loaded.report.to_dict(), "wall_seconds_with_load": round(wall, 1),
                  "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        (out_dir / f"replay-{name}.json").write_text(json.dumps(report, indent=1))
        replay_plot(report, str(out_dir / f"replay-{name}.png"))
        print(replay_table(report))
        print(f"wall {wall:.1f} s (load included), peak RSS {report['peak_rss_mib']} MiB\n")
        summary.append((name, wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())

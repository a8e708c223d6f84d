"""Benchmark: ``simulate`` on the shared real usage series (Alibaba GenAI 2026 pods), every policy
and every margin in one run; then on the series recorded from the example pipeline.

Writes ``benchmarks/results/simulate-genai.json`` (the report plus wall time and peak memory)
and its sweep plot, and prints the table. The second section, ``pipeline``, is the same for
``benchmarks/results/pipeline-series.csv.gz``: the usage series of the stage runs of
``airflow-adaptive demo`` (the three-stage pipeline and the single-task DAG, every finished try,
in start order), which the demo writes next to its JSON report; its plot is
``simulate-pipeline.png``. A third section, ``pipeline_single_task``, is that file's single-task
stage alone (the phased stage, sampled every 0.25 s). Run: ``.venv/bin/python benchmarks/simulate_series.py``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SERIES = REPO.parent / "shared" / "data" / "series" / "alibaba-genai-2026-pods.csv.gz"
PIPELINE_SERIES = REPO / "benchmarks" / "results" / "pipeline-series.csv.gz"  # written by the demo
#: The phased stage alone (its series are sampled every 0.25 s; the three-stage pipeline's every
#: second, which misses most of its sub-second and 1-3 s stages' usage): section ``pipeline_single_task``.
SINGLE_TASK_STAGE = "ml_training_single_task.train_pipeline"


def main() -> int:
    from airflow_adaptive.adapters.series import load_series
    from airflow_adaptive.cli.report import simulate_plot, simulate_table
    from airflow_adaptive.logic.simulate import simulate

    out_dir = REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    series = load_series(str(SERIES))
    loaded = time.perf_counter()
    report = simulate(series)
    wall = time.perf_counter() - started
    report = {**report, "seconds": round(wall, 2), "load_seconds": round(loaded - started, 2),
              "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    simulate_plot(report, str(out_dir / "simulate-genai.png"))
    print(simulate_table(report))
    print(f"\nwall {wall:.1f} s (load {report['load_seconds']} s), peak RSS {report['peak_rss_mib']} MiB")

    # The example pipeline's own series (as recorded by the demo).
    from airflow_adaptive.domain.series import SeriesSet

    started = time.perf_counter()
    recorded = load_series(str(PIPELINE_SERIES))
    pipeline = simulate(recorded)
    pipeline = {**pipeline, "seconds": round(time.perf_counter() - started, 2),
                "file": str(PIPELINE_SERIES.relative_to(REPO))}
    report["pipeline"] = pipeline
    simulate_plot(pipeline, str(out_dir / "simulate-pipeline.png"))
    print("\nthe example pipeline's series (airflow-adaptive demo):")
    print(simulate_table(pipeline))
    single = SeriesSet(tuple(r for r in recorded.runs if r.stage == SINGLE_TASK_STAGE), recorded.report)
    started = time.perf_counter()
    report["pipeline_single_task"] = {**simulate(single), "seconds": round(time.perf_counter() - started, 2),
                                      "file": str(PIPELINE_SERIES.relative_to(REPO)), "stage": SINGLE_TASK_STAGE}
    print(f"\nthe same file, the single-task stage alone ({SINGLE_TASK_STAGE}, 0.25 s samples):")
    print(simulate_table(report["pipeline_single_task"]))
    (out_dir / "simulate-genai.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

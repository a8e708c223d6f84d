"""Benchmark: a deep-learning stage's first run, predicted from similar stages (leave one architecture out).

Runs the example deep-learning stages (``airflow_adaptive/examples/deep_learning.py``, PyTorch,
CPU here) for six architectures -- ResNet-10/18/34 and transformer LMs of 1, 2 and 4 layers --
each at four (batch size, input size) points, and measures each run's real peak memory (the
stage's own ``VmHWM``). Each architecture is its own stage (``task_id = train_<arch>``) with
the features a DAG author declares (model family, algorithm, parameters, batch size, image size
or sequence length, precision, optimizer).

Then, for each architecture in turn, the Job Profiler (the scaling laws, ``logic/scaling.py``)
is fitted on the *other* five architectures' runs, and the held-out architecture's runs are
sized as cold starts, as the operator would (limit = upper x 1.1, within the user's limit).
Compared with:

- **the user's request** (what today's code ran a cold stage at: the fall-back to the request):
  a typical author's ``limits.memory: 4Gi``;
- **no request**, the stated default (1Gi) a stage without ``container_resources`` gets;
- **all stages** (the previous cold path: one law over every stage, no similarity groups).

Reported per policy: under-provisioned runs (observed peak > limit: an OOM kill), and
limit / observed peak (median and max over the covered runs).

Writes ``benchmarks/results/deep_learning_cold_start.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/deep_learning_cold_start.py [--reuse]`` (``--reuse`` refits on
the measured runs in the JSON without running the stages again).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from deep_learning_memory import measure  # noqa: E402

from airflow_adaptive.domain.records import JobTable  # noqa: E402
from airflow_adaptive.domain.stage_run import STAGE_FEATURES  # noqa: E402
from airflow_adaptive.logic.scaling import ScalingProfiler  # noqa: E402
from airflow_adaptive.logic.sizing import DEFAULT_MARGIN  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "deep_learning_cold_start.json"
MIB, GIB = 2**20, 2**30
FIXED = {"steps": 3, "eval_batches": 1, "samples": 256, "threads": 2}
USER_LIMIT = 4 * GIB
NO_REQUEST_DEFAULT = 1 * GIB
ARCHITECTURES = {
    "resnet10": ("resnet", {"depth": 10, "width": 32, "classes": 10}),
    "resnet18": ("resnet", {"depth": 18, "width": 32, "classes": 10}),
    "resnet34": ("resnet", {"depth": 34, "width": 32, "classes": 10}),
    "transformer_l1": ("transformer", {"depth": 1, "width": 192, "heads": 4, "vocab": 1024}),
    "transformer_l2": ("transformer", {"depth": 2, "width": 128, "heads": 4, "vocab": 1024}),
    "transformer_l4": ("transformer", {"depth": 4, "width": 128, "heads": 4, "vocab": 1024}),
}
POINTS = {"resnet": [(8, 32), (32, 64), (64, 64), (32, 128)],  # (batch size, image size)
          "transformer": [(8, 64), (32, 128), (32, 256), (64, 256)]}  # (batch size, sequence length)


def run_grid() -> list[dict]:
    runs = []
    for name, (arch, options) in ARCHITECTURES.items():
        for batch, size in POINTS[arch]:
            extra = {"image_size": size} if arch == "resnet" else {"sequence_length": size}
            run = measure(arch, {**options, "batch_size": batch, **extra, **FIXED}, "cpu")
            run["architecture"] = name
            print(f"  {name:16s} batch {batch:3d} size {size:3d}: "
                  f"{run.get('summary', {}).get('peak_rss_mib', float('nan')):7.1f} MiB, {run['wall_seconds']:.1f} s", flush=True)
            runs.append(run)
    return runs


def records(runs: list[dict]) -> list[dict]:
    out, t = [], 1e9
    for run in runs:
        if run.get("returncode") != 0:
            continue
        f = dict(run["summary"]["features"])
        f.update({"dag_id": "deep_learning", "task_id": f"train_{run['architecture']}", "algorithm": run["architecture"]})
        out.append({"job_id": f"{run['architecture']}-{len(out)}", "submit": t, "end": t + 60, "run_time": 60.0,
                    "features": f, "used": {"memory": run["summary"]["peak_rss_mib"] * MIB}, "requested": {}})
        t += 100
    return out


def evaluate(rows: list[dict]) -> dict:
    per_policy: dict[str, list[tuple[float, float]]] = {"adaptive": [], "all_stages": [], "user_request": [], "no_request_default": []}
    per_arch = {}
    for held in ARCHITECTURES:
        train = [r for r in rows if r["features"]["algorithm"] != held]
        test = [r for r in rows if r["features"]["algorithm"] == held]
        profiler = ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, train))
        pooled = ScalingProfiler().fit(JobTable.from_rows(STAGE_FEATURES, train))
        pooled.similar_ = {t: {} for t in pooled.similar_}  # the previous cold path: every stage alike
        notes, arch_rows = [], []
        for r in test:
            observed = r["used"]["memory"]
            job = r["features"]
            profile = profiler.predict_profile(job)
            assert profile.cold_start, profile
            limit = min(profile.resources["memory"].upper * (1 + DEFAULT_MARGIN), USER_LIMIT)
            old = min(pooled.predict_profile(job).resources["memory"].upper * (1 + DEFAULT_MARGIN), USER_LIMIT)
            for policy, lim in (("adaptive", limit), ("all_stages", old), ("user_request", USER_LIMIT),
                                ("no_request_default", NO_REQUEST_DEFAULT)):
                per_policy[policy].append((lim, observed))
            arch_rows.append({"observed_mib": round(observed / MIB, 1), "median_mib": round(profile.resources["memory"].median / MIB, 1),
                              "limit_mib": round(limit / MIB, 1), "all_stages_limit_mib": round(old / MIB, 1)})
            notes = [n for n in profile.notes if n.startswith("cold start: no runs of this stage yet; predicted")]
        per_arch[held] = {"runs": arch_rows, "compared_with": notes}
    summary = {}
    for policy, pairs in per_policy.items():
        lim, obs = np.array(pairs).T
        covered = lim >= obs
        ratio = lim[covered] / obs[covered]
        summary[policy] = {"runs": len(pairs), "under_provisioned": int((~covered).sum()),
                           "limit_over_peak_median": round(float(np.median(ratio)), 3) if covered.any() else None,
                           "limit_over_peak_max": round(float(ratio.max()), 3) if covered.any() else None}
    return {"policies": summary, "architectures": per_arch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", action="store_true", help="refit on the runs already in the JSON")
    args = parser.parse_args()
    started = time.perf_counter()
    runs = json.loads(OUT.read_text())["runs"] if args.reuse else run_grid()
    result = {"user_limit_mib": USER_LIMIT / MIB, "no_request_default_mib": NO_REQUEST_DEFAULT / MIB, "margin": DEFAULT_MARGIN,
              **evaluate(records(runs)), "runs": runs}
    result["seconds"] = round(time.perf_counter() - started, 1)
    OUT.write_text(json.dumps(result, indent=1))
    print(f"\nleave one architecture out ({len(ARCHITECTURES)} architectures, {len(records(runs))} runs, peak memory of each):")
    print(f"{'policy':22s} {'under-provisioned':>18s} {'limit/peak median':>18s} {'limit/peak max':>15s}")
    for policy, s in result["policies"].items():
        print(f"{policy:22s} {s['under_provisioned']:>11d} of {s['runs']:<4d} {s['limit_over_peak_median']!s:>18s} {s['limit_over_peak_max']!s:>15s}")
    print(f"written: {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: does the deep-learning stages' memory really follow their declared features?

Runs ``airflow_adaptive/examples/deep_learning.py`` (a ResNet and a transformer LM, PyTorch) as
separate processes over a small grid -- batch size x image size (and width, optimizer, precision)
for the ResNet, batch size x sequence length x width (and precision) for the transformer -- and
records, per run:

- wall seconds of the process (interpreter start and ``import torch`` included);
- peak RSS from the kernel: the child's ``ru_maxrss`` from ``os.wait4``, and the stage's own
  ``VmHWM`` per phase (import, data, train, evaluate) from its JSON summary; ``baseline_rss_mib``
  is its resident memory right after ``import torch`` (before any data or model);
- on CUDA (``--device cuda`` or ``auto`` where a GPU is present): ``peak_gpu_mib`` from
  ``torch.cuda.max_memory_allocated``.

Then fits, per architecture, ordinary least squares in log-log space:

- ``log(peak_rss)`` against ``log(parameters x batch_size)`` -- the slope is what a sizing rule
  "memory ~ parameters x batch" would have to assume;
- ``log(peak_rss - baseline)`` (what the stage adds to an idle PyTorch process) against the same
  product, and against an activation count (ResNet: batch x image_size^2 x width; transformer:
  batch x sequence_length x width x depth);
- ``log(peak_rss - baseline)`` against the log features jointly (batch, image size or sequence
  length, width): each coefficient is the memory's elasticity in that feature;
- ``peak_rss - baseline`` as an affine function of parameters and activations (not logs): a fixed
  part (kernels paged in, allocator and oneDNN scratch), MiB per million parameters (weights,
  gradients, optimizer state), MiB per million activation elements.

Fixed for every run: 3 training steps (the peak comes in the first steps: activations, gradients
and, from the first optimizer step on, the optimizer state), 1 evaluation batch, 256 generated
training samples, 2 threads.

Writes ``benchmarks/results/deep_learning_memory.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/deep_learning_memory.py [--quick] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from airflow_adaptive.examples.deep_learning import stage_command  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "deep_learning_memory.json"
FIXED = {"steps": 3, "eval_batches": 1, "samples": 256, "threads": 2}
RESNET = {"depth": 18, "classes": 10}
TRANSFORMER = {"depth": 2, "heads": 4, "vocab": 1024}


def grid(quick: bool) -> list[tuple[str, dict]]:
    runs: list[tuple[str, dict]] = []
    batches = (8, 64) if quick else (8, 32, 128)
    for b in batches:
        for s in (32, 64):
            runs.append(("resnet", {**RESNET, "width": 32, "batch_size": b, "image_size": s}))
    runs.append(("resnet", {**RESNET, "width": 64, "batch_size": 32, "image_size": 32}))  # 4x parameters
    if not quick:
        runs.append(("resnet", {**RESNET, "width": 32, "batch_size": 64, "image_size": 128}))  # where activations dominate
        runs.append(("resnet", {**RESNET, "width": 64, "batch_size": 32, "image_size": 32, "optimizer": "sgd"}))
        runs.append(("resnet", {**RESNET, "width": 32, "batch_size": 128, "image_size": 64, "precision": "bf16"}))
    batches = (8, 32)
    for b in batches:
        for n in (64, 256):
            for w in ((128,) if quick else (128, 256)):
                runs.append(("transformer", {**TRANSFORMER, "width": w, "batch_size": b, "sequence_length": n}))
    if not quick:
        runs.append(("transformer", {**TRANSFORMER, "width": 128, "batch_size": 64, "sequence_length": 512}))  # where activations dominate
        runs.append(("transformer", {**TRANSFORMER, "width": 128, "batch_size": 32, "sequence_length": 256, "precision": "bf16"}))
    return runs


def measure(arch: str, options: dict, device: str) -> dict:
    argv = stage_command(arch, **{**FIXED, **options, "device": device})
    env = {**os.environ, "OMP_NUM_THREADS": str(FIXED["threads"])}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        child = subprocess.Popen(argv, stdout=out, stderr=err, cwd=REPO, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    run = {"arch": arch, "options": options, "returncode": child.returncode, "wall_seconds": round(wall, 2),
           "peak_rss_mib_rusage": round(usage.ru_maxrss / 1024, 1)}
    if child.returncode != 0:
        run["stderr"] = stderr[-2000:]
        return run
    summary = json.loads(stdout.strip().splitlines()[-1])
    run["summary"] = summary
    return run


def anon_added(summary: dict) -> float:
    """Anonymous memory at the end of training above that right after ``import torch``."""
    a = summary.get("phase_end_rss_anon_mib", {})
    return (a["train"] - a["import"]) if a.get("train") is not None and a.get("import") is not None else float("nan")


def activations(run: dict) -> float:
    o, f = run["options"], run["summary"]["features"]
    if run["arch"] == "resnet":
        return f["batch_size"] * f["image_size"] ** 2 * o["width"]
    return f["batch_size"] * f["sequence_length"] * o["width"] * o["depth"]


def slope(x: list[float], y: list[float]) -> dict:
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    a = np.vstack([lx, np.ones_like(lx)]).T
    (k, c), *_ = np.linalg.lstsq(a, ly, rcond=None)
    pred = a @ np.array([k, c])
    ss = float(((ly - ly.mean()) ** 2).sum())
    return {"slope": round(float(k), 3), "r2": round(1 - float(((ly - pred) ** 2).sum()) / ss, 3) if ss else None, "n": len(x)}


def elasticities(runs: list[dict], names: list[str], y: list[float]) -> dict:
    cols = [np.log([float(r["summary"]["features"].get(n, r["options"].get(n))) for r in runs]) for n in names]
    a = np.vstack([*cols, np.ones(len(runs))]).T
    coef, *_ = np.linalg.lstsq(a, np.log(y), rcond=None)
    return {n: round(float(c), 3) for n, c in zip(names, coef[:-1])}


def affine(runs: list[dict], y: list[float]) -> dict:
    """``added = c0 + c1 x parameters + c2 x activations`` by least squares, in MiB, per million."""
    a = np.array([[1.0, r["summary"]["parameters"] / 1e6, activations(r) / 1e6] for r in runs])
    yy = np.asarray(y, float)
    coef, *_ = np.linalg.lstsq(a, yy, rcond=None)
    ss = float(((yy - yy.mean()) ** 2).sum())
    r2 = 1 - float(((yy - a @ coef) ** 2).sum()) / ss if ss else None
    return {"mib_fixed": round(float(coef[0]), 1), "mib_per_million_parameters": round(float(coef[1]), 2),
            "mib_per_million_activations": round(float(coef[2]), 3), "r2": round(r2, 3) if r2 is not None else None,
            "n": len(runs)}


def fits(runs: list[dict], memory_key: str) -> dict:
    result = {}
    for arch, size_feature in (("resnet", "image_size"), ("transformer", "sequence_length")):
        # precision and optimizer change the memory at fixed features: fit the fp32 + adam runs
        rs = [r for r in runs if r["arch"] == arch and "summary" in r
              and r["summary"]["features"]["precision"] == "fp32" and r["summary"]["features"]["optimizer"] == "adam"]
        if len(rs) < 3:
            continue
        pb = [r["summary"]["parameters"] * r["summary"]["features"]["batch_size"] for r in rs]
        act = [activations(r) for r in rs]
        if memory_key == "peak_gpu_mib":
            peak = [r["summary"]["peak_gpu_mib"] for r in rs]
            added = peak
        else:
            peak = [r["summary"]["peak_rss_mib"] for r in rs]
            added = [max(1.0, r["summary"]["peak_rss_mib"] - r["summary"]["baseline_rss_mib"]) for r in rs]
        result[arch] = {
            "peak_vs_parameters_x_batch": slope(pb, peak),
            "added_vs_parameters_x_batch": slope(pb, added),
            "added_vs_activations": slope(act, added),
            "added_elasticities": elasticities(rs, ["batch_size", size_feature, "width"], added),
            "added_affine": affine(rs, added),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (passed to the stage)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import torch  # noqa: F401 -- fail here, not in every child, when it is missing

    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
               "cuda_available": torch.cuda.is_available(), "device": args.device,
               "loadavg_before": [round(x, 2) for x in os.getloadavg()], "fixed": FIXED}
    runs = []
    print(f"{'arch':12} {'batch':>5} {'size':>5} {'width':>5} {'prec':>5} {'opt':>5} {'params':>10} "
          f"{'wall s':>7} {'step s':>7} {'base MiB':>8} {'peak MiB':>8} {'added':>7} {'anon+':>6} {'GPU MiB':>8}", flush=True)
    for arch, options in grid(args.quick):
        run = measure(arch, options, args.device)
        runs.append(run)
        if "summary" not in run:
            print(f"{arch:12} {options} FAILED rc={run['returncode']}: {run.get('stderr', '')[-300:]}", flush=True)
            continue
        s, f = run["summary"], run["summary"]["features"]
        size = f.get("image_size", f.get("sequence_length"))
        print(f"{arch:12} {f['batch_size']:>5} {size:>5} {options['width']:>5} {f['precision']:>5} {f['optimizer']:>5} "
              f"{s['parameters']:>10,} {run['wall_seconds']:>7.1f} {s['step_seconds_median']:>7.2f} {s['baseline_rss_mib']:>8.0f} "
              f"{s['peak_rss_mib']:>8.0f} {s['peak_rss_mib'] - s['baseline_rss_mib']:>7.0f} {anon_added(s):>6.0f} "
              f"{s.get('peak_gpu_mib', float('nan')):>8.0f}",
              flush=True)
    machine["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    ok = [r for r in runs if "summary" in r]
    result = {"machine": machine, "runs": runs, "fits_rss": fits(ok, "peak_rss_mib")}
    if any("peak_gpu_mib" in r["summary"] for r in ok):
        result["fits_gpu"] = fits([r for r in ok if "peak_gpu_mib" in r["summary"]], "peak_gpu_mib")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key in ("fits_rss", "fits_gpu"):
        for arch, fit in result.get(key, {}).items():
            print(f"{key} {arch}: " + "; ".join(
                f"{name} slope {v['slope']} (r2 {v['r2']}, n {v['n']})" if "slope" in v else f"{name} {v}"
                for name, v in fit.items()))
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    if len(ok) < len(runs):
        sys.exit(1)


if __name__ == "__main__":
    main()

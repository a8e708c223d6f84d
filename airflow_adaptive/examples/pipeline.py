"""The example pipeline's real workloads: load -> train -> evaluate, one process per stage.

``python -m airflow_adaptive.examples.pipeline <stage> --rows N --workdir DIR [--seed S]``

Each stage has its own profile, and every profile follows the data size ``N``, which is what
the Job Profiler has to learn and what a fixed request cannot follow:

| stage | does | CPU | memory |
|---|---|---|---|
| ``load`` | generates N rows x 32 numeric columns, adds pairwise interactions and quantile bins, standardises | busy (2 BLAS threads) | moderate: the table and its copies |
| ``train`` | random Fourier features (``RBFSampler``) computed chunk by chunk into a feature cache, then a logistic model (``SGDClassifier``) over several epochs | one core | **grows over the run**: the cache fills as chunks are written (~1 KiB per row) |
| ``evaluate`` | transforms the hold-out, scores ROC AUC and accuracy | short | small |

Stages hand data over through files in ``DIR`` (``.npy``, a pickle, ``metrics.json``). Each
prints one JSON line at the end. Bad input exits 2 with ``pipeline: error: ...``.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

STAGES = ("load", "train", "evaluate")
DEFAULT_ROWS = 100_000
#: Data sizes of the demo: seeds take every other one, the comparison the rest.
DEMO_SIZES = (40_000, 60_000, 90_000, 130_000, 180_000, 240_000, 300_000, 360_000)
N_COLUMNS = 32
N_INTERACT = 12  # columns whose pairwise products are added (66 features)
N_COMPONENTS = 256  # random Fourier features in train's cache: 1 KiB per row as float32
CHUNK = 20_000
EPOCHS = 3
HOLDOUT = 0.2


class PipelineError(Exception):
    pass


def stage_command(stage: str, rows: int, workdir: str, seed: int = 0, python: str = sys.executable) -> list[str]:
    return [python, "-m", "airflow_adaptive.examples.pipeline", stage, "--rows", str(rows), "--workdir", str(workdir), "--seed", str(seed)]


def _need(path: Path, previous: str) -> Path:
    if not path.exists():
        raise PipelineError(f"{path} is missing: run the '{previous}' stage first with the same --workdir")
    return path


def load(rows: int, workdir: Path, seed: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, N_COLUMNS)).astype(np.float32)
    w = rng.standard_normal(N_COLUMNS)
    logits = X @ w + 0.5 * (X[:, 0] * X[:, 1]) + 0.8 * rng.standard_normal(rows)
    y = (logits > 0).astype(np.int8)
    pairs = [X[:, i] * X[:, j] for i in range(N_INTERACT) for j in range(i + 1, N_INTERACT)]
    edges = np.quantile(X[:, :8], np.linspace(0, 1, 17)[1:-1], axis=0)  # 16 bins per column
    bins = np.stack([np.searchsorted(edges[:, k], X[:, k]) for k in range(8)], axis=1).astype(np.float32)
    features = np.hstack([X, np.stack(pairs, axis=1), bins]).astype(np.float32)
    features -= features.mean(axis=0)
    features /= features.std(axis=0) + 1e-6
    np.save(workdir / "features.npy", features)
    np.save(workdir / "labels.npy", y)
    return {"columns": int(features.shape[1]), "positive_rate": round(float(y.mean()), 4)}


def train(rows: int, workdir: Path, seed: int) -> dict:
    import numpy as np
    from sklearn.kernel_approximation import RBFSampler
    from sklearn.linear_model import SGDClassifier

    X = np.load(_need(workdir / "features.npy", "load"))
    y = np.load(_need(workdir / "labels.npy", "load"))
    n_train = int(len(X) * (1 - HOLDOUT))
    sampler = RBFSampler(gamma=0.5 / X.shape[1], n_components=N_COMPONENTS, random_state=seed).fit(X[:1])
    cache = np.empty((n_train, N_COMPONENTS), dtype=np.float32)  # pages are charged as they are written
    for start in range(0, n_train, CHUNK):
        stop = min(start + CHUNK, n_train)
        cache[start:stop] = sampler.transform(X[start:stop])
    model = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=seed)
    classes = np.array([0, 1], dtype=np.int8)
    for _ in range(EPOCHS):
        for start in range(0, n_train, CHUNK):
            stop = min(start + CHUNK, n_train)
            model.partial_fit(cache[start:stop], y[start:stop], classes=classes)
    with open(workdir / "model.pkl", "wb") as fh:
        pickle.dump({"sampler": sampler, "model": model, "n_train": n_train}, fh)
    return {"train_rows": n_train, "train_accuracy": round(float(model.score(cache[:CHUNK], y[:CHUNK])), 4)}


def evaluate(rows: int, workdir: Path, seed: int) -> dict:
    import numpy as np
    from sklearn.metrics import accuracy_score, roc_auc_score

    with open(_need(workdir / "model.pkl", "train"), "rb") as fh:
        fitted = pickle.load(fh)
    X = np.load(_need(workdir / "features.npy", "load"), mmap_mode="r")
    y = np.load(workdir / "labels.npy")
    hold = slice(fitted["n_train"], len(X))
    Z = fitted["sampler"].transform(np.asarray(X[hold]))
    proba = fitted["model"].predict_proba(Z)[:, 1]
    metrics = {"roc_auc": round(float(roc_auc_score(y[hold], proba)), 4),
               "accuracy": round(float(accuracy_score(y[hold], proba > 0.5)), 4), "holdout_rows": int(len(proba))}
    (workdir / "metrics.json").write_text(json.dumps(metrics))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.rows < 1000:
            raise PipelineError(f"--rows must be at least 1000, got {args.rows}")
        workdir = Path(args.workdir)
        if args.stage == "load":
            workdir.mkdir(parents=True, exist_ok=True)
        elif not workdir.is_dir():
            raise PipelineError(f"--workdir {workdir} does not exist: run the 'load' stage first")
        started = time.perf_counter()
        result = {"load": load, "train": train, "evaluate": evaluate}[args.stage](args.rows, workdir, args.seed)
    except (PipelineError, OSError) as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"stage": args.stage, "rows": args.rows, "seconds": round(time.perf_counter() - started, 2), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The example pipeline's real workloads: load -> train -> evaluate, one process per stage.

``python -m airflow_adaptive.examples.pipeline <stage> --rows N --workdir DIR [--seed S] [--jobs J]``

Three stages with deliberately different resource profiles, all of which follow the data size
``N``. That is what the Job Profiler has to learn and what one fixed request cannot follow:

``load`` -- CPU-heavy, moderate memory, numpy only.
    Generates ``N`` rows x 32 raw columns (24 correlated numeric columns and 8 categorical codes,
    one of them a high-cardinality "entity" whose number of levels grows with ``N``) and a binary
    label, deterministically from ``--seed``. Then real feature engineering, fitted on the
    training rows only: standardisation, pairwise interactions, quantile transforms, out-of-fold
    target encoding and per-entity aggregates (~90 float32 features). Sorting, quantiles and
    group-bys keep ``--jobs`` threads busy; memory is the raw table plus the feature matrix.
``train`` -- the long stage, memory **grows over the run**.
    A small model search with scikit-learn ``ExtraTreesClassifier``: two candidates (fully grown
    trees, and regularised trees with ``min_samples_leaf``) grow side by side with ``warm_start``,
    a few trees per step, and the better one on a validation split is kept (the regularised one,
    in practice: the saved model is small). Fully grown trees on noisy labels have one to two
    nodes per training row, so every step adds memory in proportion
    to ``N``: resident memory climbs step by step to a peak that depends clearly on ``N`` (what
    adaptive sizing must predict, and what an in-place resize must follow). The kept model is
    pickled (``model.pkl``) and exported as flat tree arrays (``model.npz``). Its wall time
    includes importing scikit-learn: ~2 s of CPU with cached bytecode, ~4 s (more on a busy
    machine) where ``PYTHONDONTWRITEBYTECODE`` keeps it compiling every module on every start;
    ``phase_seconds`` in its summary splits import, fit and saving.
``evaluate`` -- short, small memory, numpy only.
    Scores the hold-out with the exported trees (no scikit-learn import, so no ~200 MiB
    baseline), writes accuracy, ROC AUC (with a bootstrap 95% interval), log loss and Brier score
    to ``metrics.json``.

``all`` -- the three in one process, one after the other: the common case of a team that does not
    split its stages, and a stage whose needs change over its life (CPU-bound loading, memory
    growing in training, a lighter evaluation): what a profile over time sizes phase by phase.

Stages hand data over through files in ``DIR``; every file is written atomically, so a stage
killed half-way (OOM) leaves nothing half-written. Each stage prints one JSON line at the end
(``stage``, ``rows``, ``seconds``, ``peak_rss_mib``, metrics where relevant). Bad input (``--rows``
below ``MIN_ROWS``, the previous stage's output missing or made for another ``--rows``) exits 2
with one line ``pipeline: error: ...``. Threads are bounded: ``--jobs`` defaults to
``OMP_NUM_THREADS`` (else 2) and also bounds the BLAS/OpenMP pools.

Measured profile (wall seconds and peak RSS per stage and size): ``benchmarks/pipeline_profile.py``
writes ``benchmarks/results/pipeline-profile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import sys
import time
from pathlib import Path

STAGES = ("load", "train", "evaluate")
COMMANDS = (*STAGES, "all")  # all: the three stages in one process
DEFAULT_ROWS = 150_000
#: Data sizes for the demo: its seed runs take every other one, the comparison the rest.
DEMO_SIZES = (50_000, 90_000, 130_000, 180_000, 240_000, 300_000)
MIN_ROWS = 1000

N_NUMERIC = 24
N_CATEGORICAL = 8  # the last one is the entity id
N_COLUMNS = N_NUMERIC + N_CATEGORICAL  # raw generated columns (float64)
N_LATENT = 8
N_INTERACT = 8  # standardised numeric columns whose pairwise products are features
N_QUANTILES = 1000
ROWS_PER_ENTITY = 40
TE_FOLDS = 5
TE_SMOOTHING = 20.0
HOLDOUT = 0.2  # last rows of the data: evaluate's
VALIDATION = 0.2  # last rows of the training part: train's model selection
#: train's candidates (ExtraTreesClassifier parameters), grown side by side.
CANDIDATES = {
    "deep": {"min_samples_leaf": 1, "max_features": 1},
    "regularised": {"min_samples_leaf": 10, "max_features": 0.2, "bootstrap": True, "max_samples": 0.1},
}
STEPS = 8
TREES_PER_STEP = 2
BOOTSTRAP = 500  # evaluate's resamples for the ROC AUC interval

DATA_FILES = ("X_train.npy", "y_train.npy", "X_holdout.npy", "y_holdout.npy", "data.json")
MIB = 2**20


class PipelineError(Exception):
    """Bad input: reported as one line and exit status 2."""


def stage_command(stage: str, rows: int, workdir: str | os.PathLike, seed: int = 0, python: str = sys.executable) -> list[str]:
    """The argv that runs one stage (or ``all`` of them) as its own process."""
    if stage not in COMMANDS:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(COMMANDS)}")
    return [python, "-m", "airflow_adaptive.examples.pipeline", stage, "--rows", str(int(rows)),
            "--workdir", str(workdir), "--seed", str(int(seed))]


# --- helpers --------------------------------------------------------------------------------

def _peak_rss_mib() -> float:
    """This process's peak resident memory since exec: ``VmHWM`` belongs to the address space, which
    exec replaces. (``ru_maxrss`` also counts the parent's size inherited at fork, so a stage started
    from a 700 MiB process would report 700 MiB.)"""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB, 1)
    except (OSError, ValueError, IndexError):
        return _peak_rss_mib()


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json(path: Path, obj: dict) -> None:
    _atomic(path, lambda fh: fh.write((json.dumps(obj, indent=1) + "\n").encode()))


def _save_npy(path: Path, array) -> None:
    import numpy as np

    _atomic(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _load_npy(path: Path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise PipelineError(f"{path} is not a readable .npy file ({exc})") from None


def _need(workdir: Path, names: tuple[str, ...], previous: str) -> None:
    missing = [n for n in names if not (workdir / n).is_file()]
    if missing:
        raise PipelineError(f"{workdir / missing[0]} is missing: run the '{previous}' stage first with the same --workdir and --rows")


def _read_meta(path: Path, rows: int, previous: str) -> dict:
    try:
        meta = json.loads(path.read_text())
        made_for = int(meta["rows"])
    except (ValueError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path} is not valid ({exc}): run the '{previous}' stage again") from None
    if made_for != rows:
        raise PipelineError(f"{path.parent} holds the '{previous}' output for --rows {made_for}, not {rows}: "
                            f"run '{previous}' with --rows {rows} or pass --rows {made_for}")
    return meta


def _split(rows: int) -> tuple[int, int]:
    n_holdout = max(1, int(rows * HOLDOUT))
    return rows - n_holdout, n_holdout


def roc_auc(y, score, weight=None, group=None) -> float:
    """ROC AUC (ties count one half), optionally with per-row weights; numpy only.

    ``group``: ``np.unique(score, return_inverse=True)[1]``, to reuse across bootstrap resamples.
    """
    import numpy as np

    y = np.asarray(y).astype(bool)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    if group is None:
        group = np.unique(score, return_inverse=True)[1]
    pos = np.bincount(group, weights=w * y)
    neg = np.bincount(group, weights=w * ~y)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    below = np.cumsum(neg) - neg  # negatives scored strictly lower than each group
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


# --- load -----------------------------------------------------------------------------------

def _generate(rows: int, seed: int):
    """Raw table (rows x N_COLUMNS float64: numeric, then categorical codes) and the label."""
    import numpy as np

    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((N_LATENT, N_NUMERIC)) / np.sqrt(N_LATENT)
    levels = [3, 5, 8, 12, 20, 50, 200, max(2, rows // ROWS_PER_ENTITY)]
    effects = [rng.normal(0.0, 0.8 if k < 1000 else 1.0, k) for k in levels]
    latent = rng.standard_normal((rows, N_LATENT))
    raw = np.empty((rows, N_COLUMNS))
    raw[:, :N_NUMERIC] = latent @ mixing  # BLAS
    raw[:, :N_NUMERIC] += 0.6 * rng.standard_normal((rows, N_NUMERIC))
    logit = (1.4 * latent[:, 0] - 1.0 * latent[:, 1] * latent[:, 2] + 0.9 * (np.abs(latent[:, 3]) - 0.8)
             + 0.7 * np.sin(2.0 * latent[:, 4]) + 0.6 * latent[:, 5] * (latent[:, 6] > 0))
    for j, k in enumerate(levels):
        if j < N_CATEGORICAL - 1:  # codes lean on the latent factors
            u = 1.0 / (1.0 + np.exp(-1.7 * (latent[:, j] + 0.8 * rng.standard_normal(rows))))
            code = np.minimum((u * k).astype(np.int64), k - 1)
        else:  # entity id: uniform, its own effect
            code = rng.integers(0, k, rows)
        logit += effects[j][code]
        raw[:, N_NUMERIC + j] = code
    y = (logit + rng.logistic(size=rows) > 0.4).astype(np.int8)
    return raw, y


def _engineer(raw, y, n_train: int, seed: int, jobs: int):
    """Feature matrix (float32); every statistic is fitted on the training rows only."""
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    rows = len(raw)
    num = raw[:, :N_NUMERIC]
    pairs = [(i, j) for i in range(N_INTERACT) for j in range(i + 1, N_INTERACT)]
    n_agg = 1 + 2 * 4  # entity count, mean and std of 4 numeric columns
    n_out = N_NUMERIC + len(pairs) + N_NUMERIC + (N_CATEGORICAL - 1) + 1 + n_agg
    out = np.empty((rows, n_out), dtype=np.float32)
    names: list[str] = []
    std = np.empty((rows, N_INTERACT))
    folds = np.random.default_rng(seed + 1).integers(0, TE_FOLDS, n_train)
    prior = float(y[:n_train].mean())

    def standardise(c):
        col = num[:, c]
        mu, sd = col[:n_train].mean(), col[:n_train].std() + 1e-9
        z = (col - mu) / sd
        if c < N_INTERACT:
            std[:, c] = z
        out[:, c] = z

    def interaction(k):
        i, j = pairs[k]
        out[:, N_NUMERIC + k] = std[:, i] * std[:, j]

    def quantile_transform(c):  # like QuantileTransformer: piecewise-linear map onto [0, 1]
        col = num[:, c]
        grid = np.linspace(0.0, 1.0, N_QUANTILES)
        edges = np.quantile(col[:n_train], grid)  # sorts the column
        out[:, N_NUMERIC + len(pairs) + c] = np.interp(col, edges, grid)

    def target_encode(j):
        code = raw[:, N_NUMERIC + j].astype(np.int64)
        k = int(code.max()) + 1
        enc = np.empty(rows)
        ytr, ctr = y[:n_train], code[:n_train]
        total_s = np.bincount(ctr, weights=ytr, minlength=k)
        total_n = np.bincount(ctr, minlength=k)
        for f in range(TE_FOLDS):  # out-of-fold on the training rows: no leakage of a row's own label
            inside = folds == f
            s = total_s - np.bincount(ctr[inside], weights=ytr[inside], minlength=k)
            n = total_n - np.bincount(ctr[inside], minlength=k)
            enc[:n_train][inside] = ((s + TE_SMOOTHING * prior) / (n + TE_SMOOTHING))[ctr[inside]]
        enc[n_train:] = ((total_s + TE_SMOOTHING * prior) / (total_n + TE_SMOOTHING))[code[n_train:]]
        out[:, 2 * N_NUMERIC + len(pairs) + j] = enc

    def entity_aggregates(_):  # group-by entity: count, mean and std of 4 numeric columns
        entity = raw[:, N_COLUMNS - 1].astype(np.int64)
        base = 2 * N_NUMERIC + len(pairs) + N_CATEGORICAL
        count = np.bincount(entity)
        n = np.maximum(count, 1)
        out[:, base] = count[entity]
        for c in range(4):
            col = num[:, c]
            mean = np.bincount(entity, weights=col, minlength=len(count)) / n
            var = np.maximum(np.bincount(entity, weights=col * col, minlength=len(count)) / n - mean * mean, 0.0)
            out[:, base + 1 + 2 * c] = mean[entity]
            out[:, base + 2 + 2 * c] = np.sqrt(var)[entity]

    names += [f"num{c}" for c in range(N_NUMERIC)] + [f"num{i}*num{j}" for i, j in pairs]
    names += [f"quantile{c}" for c in range(N_NUMERIC)] + [f"te_cat{j}" for j in range(N_CATEGORICAL - 1)] + ["te_entity"]
    names += ["entity_count"] + [f"entity_{s}{c}" for c in range(4) for s in ("mean", "std")]
    with ThreadPoolExecutor(max_workers=jobs) as pool:  # numpy releases the GIL in sorts and loops
        list(pool.map(standardise, range(N_NUMERIC)))
        tasks = [(interaction, k) for k in range(len(pairs))] + [(quantile_transform, c) for c in range(N_NUMERIC)]
        tasks += [(target_encode, j) for j in range(N_CATEGORICAL)] + [(entity_aggregates, 0)]
        list(pool.map(lambda t: t[0](t[1]), tasks))
    assert len(names) == n_out
    return out, names


def load(rows: int, workdir: Path, seed: int, jobs: int) -> dict:
    if workdir.exists() and not workdir.is_dir():
        raise PipelineError(f"--workdir {workdir} exists and is not a directory")
    workdir.mkdir(parents=True, exist_ok=True)
    import numpy as np

    raw, y = _generate(rows, seed)
    n_train, n_holdout = _split(rows)
    X, names = _engineer(raw, y, n_train, seed, jobs)
    del raw
    _save_npy(workdir / "X_train.npy", X[:n_train])
    _save_npy(workdir / "y_train.npy", y[:n_train])
    _save_npy(workdir / "X_holdout.npy", X[n_train:])
    _save_npy(workdir / "y_holdout.npy", y[n_train:])
    _write_json(workdir / "data.json", {"rows": rows, "seed": seed, "train_rows": n_train, "holdout_rows": n_holdout,
                                        "raw_columns": N_COLUMNS, "features": names})
    return {"features": int(X.shape[1]), "train_rows": n_train, "holdout_rows": n_holdout,
            "positive_rate": round(float(np.mean(y)), 4), "finite": bool(np.isfinite(X).all())}


# --- train ----------------------------------------------------------------------------------

def export_forest(forest) -> dict:
    """A fitted binary forest as flat arrays (what ``predict_proba`` needs), children offset per tree."""
    import numpy as np

    if list(forest.classes_) != [0, 1]:
        raise PipelineError(f"the training labels must hold both classes 0 and 1, got {list(forest.classes_)}")
    trees = [e.tree_ for e in forest.estimators_]
    sizes = np.array([t.node_count for t in trees])
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)

    def child(a, off):
        return np.where(a >= 0, a + off, -1)

    value = [t.value[:, 0, :] for t in trees]
    return {
        "roots": roots,
        "left": np.concatenate([child(t.children_left, o) for t, o in zip(trees, roots)]).astype(np.int64),
        "right": np.concatenate([child(t.children_right, o) for t, o in zip(trees, roots)]).astype(np.int64),
        "feature": np.concatenate([t.feature for t in trees]).astype(np.int64),
        "threshold": np.concatenate([t.threshold for t in trees]),
        "proba": np.concatenate([v[:, 1] / v.sum(axis=1) for v in value]),
    }


def predict_proba(model: dict, X, chunk: int = 8192):
    """P(class 1) from exported trees: the mean of the trees' leaf probabilities, like scikit-learn."""
    import numpy as np

    roots, left, right = model["roots"], model["left"], model["right"]
    feature, threshold, proba = model["feature"], model["threshold"], model["proba"]
    leaf = left < 0
    n_trees = len(roots)
    out = np.empty(len(X))
    for start in range(0, len(X), chunk):
        Xc = X[start:start + chunk]
        n = len(Xc)
        node = np.tile(roots, n)  # row-major: row i, tree t
        row = np.repeat(np.arange(n), n_trees)
        active = np.flatnonzero(~leaf[node])
        while active.size:
            at = node[active]
            go_left = Xc[row[active], feature[at]] <= threshold[at]
            node[active] = np.where(go_left, left[at], right[at])
            active = active[~leaf[node[active]]]
        out[start:start + n] = proba[node].reshape(n, n_trees).mean(axis=1)
    return out


def train(rows: int, workdir: Path, seed: int, jobs: int) -> dict:
    _need(workdir, DATA_FILES, "load")
    _read_meta(workdir / "data.json", rows, "load")
    t0 = time.perf_counter()
    import numpy as np
    from sklearn.ensemble import ExtraTreesClassifier

    t_import = time.perf_counter()
    X = _load_npy(workdir / "X_train.npy")
    y = _load_npy(workdir / "y_train.npy")
    if X.ndim != 2 or len(X) != len(y):
        raise PipelineError(f"{workdir}: X_train and y_train do not match, run the 'load' stage again")
    n_fit = len(X) - max(1, int(len(X) * VALIDATION))
    X_fit, y_fit, X_val, y_val = X[:n_fit], y[:n_fit], X[n_fit:], y[n_fit:]
    models = {name: ExtraTreesClassifier(n_estimators=0, warm_start=True, n_jobs=jobs, random_state=seed, **params)
              for name, params in CANDIDATES.items()}
    rss_by_step = [_rss_mib()]
    for step in range(1, STEPS + 1):
        for model in models.values():  # a few more trees for every candidate: memory grows per step
            model.n_estimators = step * TREES_PER_STEP
            model.fit(X_fit, y_fit)
        rss_by_step.append(_rss_mib())
    t_fit = time.perf_counter()
    val_auc = {name: roc_auc(y_val, m.predict_proba(X_val)[:, 1]) for name, m in models.items()}
    nodes = {name: int(sum(e.tree_.node_count for e in m.estimators_)) for name, m in models.items()}
    selected = max(val_auc, key=lambda name: val_auc[name])
    forest = models.pop(selected)
    models.clear()  # the other candidate's trees go
    exported = export_forest(forest)
    check = X_val[:2000]
    drift = float(np.max(np.abs(predict_proba(exported, check) - forest.predict_proba(check)[:, 1])))
    if drift > 1e-9:
        raise RuntimeError(f"exported trees disagree with the forest by {drift}")
    _atomic(workdir / "model.pkl", lambda fh: pickle.dump(forest, fh, protocol=pickle.HIGHEST_PROTOCOL))
    _atomic(workdir / "model.npz", lambda fh: np.savez(fh, **exported))
    info = {"rows": rows, "seed": seed, "selected": selected, "params": CANDIDATES[selected],
            "trees": len(forest.estimators_), "nodes": nodes[selected], "fit_rows": n_fit, "validation_rows": len(y_val),
            "validation_auc": {k: round(v, 4) for k, v in val_auc.items()}}
    _write_json(workdir / "model.json", info)
    phases = {"import": t_import - t0, "fit": t_fit - t_import, "select_and_save": time.perf_counter() - t_fit}
    return {"selected": selected, "trees": info["trees"], "nodes": nodes, "validation_auc": info["validation_auc"],
            "rss_mib_by_step": rss_by_step, "phase_seconds": {k: round(v, 2) for k, v in phases.items()}}


# --- evaluate -------------------------------------------------------------------------------

def evaluate(rows: int, workdir: Path, seed: int, jobs: int) -> dict:
    _need(workdir, DATA_FILES, "load")
    _read_meta(workdir / "data.json", rows, "load")
    _need(workdir, ("model.npz", "model.json"), "train")
    info = _read_meta(workdir / "model.json", rows, "train")
    import numpy as np

    try:
        with np.load(workdir / "model.npz", allow_pickle=False) as z:
            model = {k: z[k] for k in ("roots", "left", "right", "feature", "threshold", "proba")}
    except (ValueError, KeyError, EOFError, OSError) as exc:
        raise PipelineError(f"{workdir / 'model.npz'} is not a readable model ({exc}): run the 'train' stage again") from None
    X = _load_npy(workdir / "X_holdout.npy")
    y = _load_npy(workdir / "y_holdout.npy").astype(bool)
    if X.ndim != 2 or len(X) != len(y) or int(model["feature"].max(initial=0)) >= X.shape[1]:
        raise PipelineError(f"{workdir}: the hold-out does not fit the model, run 'load' and 'train' again")
    p = predict_proba(model, X)
    eps = 1e-12
    rng = np.random.default_rng(seed)
    group = np.unique(p, return_inverse=True)[1]
    boot = [roc_auc(y, p, np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)), group) for _ in range(BOOTSTRAP)]
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    metrics = {
        "accuracy": round(float(np.mean((p > 0.5) == y)), 4),
        "roc_auc": round(roc_auc(y, p), 4),
        "roc_auc_ci95": [round(float(lo), 4), round(float(hi), 4)],
        "log_loss": round(float(-np.mean(np.where(y, np.log(p + eps), np.log(1 - p + eps)))), 4),
        "brier": round(float(np.mean((p - y) ** 2)), 4),
        "positive_rate": round(float(y.mean()), 4),
        "majority_accuracy": round(float(max(y.mean(), 1 - y.mean())), 4),
        "holdout_rows": int(len(y)),
        "model": info.get("selected"),
    }
    _write_json(workdir / "metrics.json", metrics)
    return {"metrics": metrics}


# --- command line ---------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        self.exit(2, f"pipeline: error: {message}\n")


def all_stages(rows: int, workdir: Path, seed: int, jobs: int) -> dict:
    """Load, train and evaluate in this one process; each stage's result and wall seconds."""
    out: dict = {"phase_seconds": {}}
    for name, stage in (("load", load), ("train", train), ("evaluate", evaluate)):
        started = time.perf_counter()
        out[name] = stage(rows, workdir, seed, jobs)
        out["phase_seconds"][name] = round(time.perf_counter() - started, 2)
    return out


def _default_jobs() -> int:
    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", "2"))
    except ValueError:
        wanted = 2
    return max(1, min(wanted, os.cpu_count() or 1))


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="pipeline", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=COMMANDS)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help=f"rows of generated data (default {DEFAULT_ROWS})")
    parser.add_argument("--workdir", required=True, help="where stages hand data over")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=None, help="threads (default: OMP_NUM_THREADS, else 2)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        if args.rows < MIN_ROWS:
            raise PipelineError(f"--rows must be at least {MIN_ROWS}, got {args.rows}")
        jobs = args.jobs if args.jobs is not None else _default_jobs()
        if jobs < 1:
            raise PipelineError(f"--jobs must be at least 1, got {jobs}")
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before numpy loads BLAS
            os.environ.setdefault(var, str(jobs))
        workdir = Path(args.workdir)
        if args.stage not in ("load", "all") and not workdir.is_dir():
            raise PipelineError(f"--workdir {workdir} does not exist: run the 'load' stage first")
        result = {"load": load, "train": train, "evaluate": evaluate, "all": all_stages}[args.stage](args.rows, workdir, args.seed, jobs)
    except (PipelineError, OSError) as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return 2
    summary = {"stage": args.stage, "rows": args.rows, "seed": args.seed, "jobs": jobs,
               "seconds": round(time.perf_counter() - started, 2), "peak_rss_mib": _peak_rss_mib(), **result}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

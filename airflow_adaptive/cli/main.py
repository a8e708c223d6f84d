"""``airflow-adaptive``: train, predict, replay, run and monitor from the command line.

A user's mistake (a bad file, flag, feature or an unreachable registry) prints one line,
``airflow-adaptive: error: ...``, and exits 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from airflow_adaptive.domain.errors import UserError

log = logging.getLogger("airflow_adaptive.cli")
DEFAULT_MODEL_URI = "models:/job-profiler@champion"
HOLDOUT_FRACTION = 0.2  # most recent records kept out of a challenger's training
TARGET_UNDER = 0.01  # the under-provisioning at which challenger and champion are compared


def _load(args) -> Any:
    from airflow_adaptive.adapters.traces import guess_format, load_trace

    fmt = args.format or guess_format(args.trace)
    loaded = load_trace(args.trace, fmt)
    r = loaded.report
    if r.malformed:
        log.warning("%s: %d malformed line(s) skipped, e.g. %s", args.trace, r.malformed, "; ".join(r.malformed_examples))
    return loaded


def cmd_replay(args) -> int:
    from tqdm import tqdm

    from airflow_adaptive.cli.report import replay_plot, replay_table
    from airflow_adaptive.logic.replay import ReplayConfig, replay

    if not 0 < args.target_under < 1:
        raise UserError(f"--target-under must be between 0 and 1 (a fraction of jobs), got {args.target_under}")
    loaded = _load(args)
    table = loaded.table
    bars: dict[str, tqdm] = {}

    def progress(resource: str, jobs: int) -> None:
        bar = bars.get(resource)
        if bar is None:
            bar = bars[resource] = tqdm(total=len(table), desc=f"replay {resource}", unit="job", file=sys.stderr, leave=False)
        bar.update(jobs)

    config = ReplayConfig(target_under=args.target_under, refit_days=args.refit_days)
    report = replay(table, config, progress=progress)
    for bar in bars.values():
        bar.close()
    report = {"trace": Path(args.trace).name, **report, "load": loaded.report.to_dict()}
    print(replay_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        replay_plot(report, args.plot)
    return 0


def cmd_train(args) -> int:
    from airflow_adaptive.logic.profiler import JobProfiler

    loaded = _load(args)
    profiler = JobProfiler(coverage=args.coverage).fit(loaded.table)
    rows = ", ".join(f"{t}: {n}" for t, n in profiler.training_rows_.items())
    print(f"trained profiler on {len(loaded.table)} records of schema {profiler.schema_.id} ({rows})")
    if args.output:
        import pickle

        Path(args.output).write_bytes(pickle.dumps(profiler))
        print(f"saved to {args.output}")
    if args.register:
        register_with_promotion(loaded.table, args)
    return 0


def register_with_promotion(table, args) -> None:
    """Fit a challenger without the most recent 20% of records, score it and the current
    champion on that same hold-out window, register it, and move ``champion`` only if it wins."""
    import tempfile

    from airflow_adaptive.adapters.mlflow.registry import load_profiler, log_profiler, set_alias
    from airflow_adaptive.domain.errors import FeatureSchemaMismatch, ModelNotFound
    from airflow_adaptive.logic.profiler import JobProfiler
    from airflow_adaptive.logic.promotion import decide, score_on_window, split_holdout

    name = args.register
    train, holdout = split_holdout(table, HOLDOUT_FRACTION)
    challenger = JobProfiler(coverage=args.coverage).fit(train)
    score = score_on_window(challenger, holdout, TARGET_UNDER)
    champion_score = None
    try:
        champion, champion_version = load_profiler(f"models:/{name}@champion")
        champion_score = score_on_window(champion, holdout, TARGET_UNDER)
    except ModelNotFound:
        champion_version = None
    except FeatureSchemaMismatch as exc:
        log.warning("champion cannot be scored on this window (%s); treating it as absent", exc)
        champion_version = None
    decision = decide(score, champion_score, TARGET_UNDER)
    metrics = {
        "holdout_allocated_over_used": score.allocated_over_used,
        "holdout_under_provisioned_fraction": score.under_provisioned_fraction,
    }
    with tempfile.TemporaryDirectory() as tmp:
        plot = f"{tmp}/holdout.png"
        holdout_plot(challenger, holdout, plot)
        run_id, version = log_profiler(challenger, name=name, metrics=metrics, plot_path=plot, register=True)
    print(f"registered {name} version {version} (run {run_id}); hold-out: {score.window}")
    if decision.promote:
        set_alias(name, "champion", version)
        print(f"champion -> version {version}: {decision.reason}")
    else:
        kept = f"version {champion_version}" if champion_version else "no champion"
        print(f"champion unchanged ({kept}): {decision.reason}")


def holdout_plot(profiler, holdout, path: str) -> None:
    """Predicted median and upper against observed memory (or the first resource) on the hold-out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds = profiler.predict(holdout)
    target = "memory" if "memory" in preds else next(iter(preds))
    observed = holdout.run_time if target == "duration" else holdout.used[target]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(observed, preds[target]["median"], s=4, alpha=0.4, label="median")
    ax.scatter(observed, preds[target]["upper"], s=4, alpha=0.4, label=f"upper ({profiler.coverage:.0%})")
    lims = [max(1e-9, float(min(observed[observed > 0].min(), preds[target]["median"].min()))), float(max(observed.max(), preds[target]["upper"].max()))]
    ax.plot(lims, lims, color="grey", lw=1)
    ax.set_xscale("log"), ax.set_yscale("log")
    ax.set_xlabel(f"observed {target}"), ax.set_ylabel(f"predicted {target}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _profiler_from(args):
    if args.model_file:
        import pickle

        path = Path(args.model_file)
        if not path.is_file():
            raise UserError(f"--model-file {path}: no such file; create one with `airflow-adaptive train --output`")
        return pickle.loads(path.read_bytes()), str(path)
    from airflow_adaptive.adapters.mlflow.registry import load_profiler

    profiler, version = load_profiler(args.model)
    return profiler, f"{args.model} (version {version})"


def read_jobs(path: str) -> dict[str, dict[str, Any]]:
    """Stages from a job file: ``{"stages": {name: features}}``, a list, or one feature object."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--job {path}: no such file")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"--job {path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(data, dict) and "stages" in data:
        stages = data["stages"]
        if not isinstance(stages, dict) or not all(isinstance(v, dict) for v in stages.values()):
            raise UserError(f"--job {path}: 'stages' must map stage names to feature objects")
        return stages
    if isinstance(data, list) and all(isinstance(v, dict) for v in data):
        return {f"job-{i}": v for i, v in enumerate(data)}
    if isinstance(data, dict):
        return {"job": data}
    raise UserError(f"--job {path}: expected an object of features, a list of them, or {{\"stages\": {{...}}}}")


def cmd_predict(args) -> int:
    stages = read_jobs(args.job)
    profiler, source = _profiler_from(args)
    out = {}
    for name, features in stages.items():
        profile = profiler.predict_profile(features, where=f"{args.job}: stage '{name}'")
        out[name] = profile.to_dict() | {"model": source}
    print(json.dumps(out, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airflow-adaptive", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def trace_args(p):
        p.add_argument("--trace", required=True, help="trace file (swf), directory (pai) or MLflow experiment (records)")
        p.add_argument("--format", choices=("swf", "pai", "records"), help="default: guessed from --trace")

    p = sub.add_parser("train", help="fit the Job Profiler on a trace")
    trace_args(p)
    p.add_argument("--register", metavar="NAME", help="log and register the profiler in MLflow under NAME")
    p.add_argument("--output", metavar="FILE", help="also save the fitted profiler to FILE (pickle)")
    p.add_argument("--coverage", type=float, default=0.99, help="coverage of the upper estimate (default 0.99)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="predict the resources of each stage of a job file")
    p.add_argument("--job", required=True, help="JSON: {feature: value} or {\"stages\": {name: {...}}}")
    p.add_argument("--model", default=DEFAULT_MODEL_URI, help=f"registry URI (default {DEFAULT_MODEL_URI})")
    p.add_argument("--model-file", help="a profiler saved by `train --output` instead of the registry")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("replay", help="replay a trace: every policy sizes every job from the past only")
    trace_args(p)
    p.add_argument("--target-under", type=float, default=0.01, help="under-provisioning to compare at (default 0.01)")
    p.add_argument("--refit-days", type=float, default=45.0, help="trace days between refits of the adaptive model")
    p.add_argument("--json", metavar="OUT.json", help="write the machine-readable report")
    p.add_argument("--plot", metavar="OUT.png", help="plot every policy's trade-off curve")
    p.set_defaults(func=cmd_replay)

    from airflow_adaptive.cli.runtime_commands import add_parsers

    add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"airflow-adaptive: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("airflow-adaptive: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

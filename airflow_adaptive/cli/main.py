"""``airflow-adaptive``: train, predict, replay, simulate, run and monitor from the command line.

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
    from airflow_adaptive.logic.replay import ReplayConfig, parse_default_request, replay

    if not 0 < args.target_under < 1:
        raise UserError(f"--target-under must be between 0 and 1 (a fraction of jobs), got {args.target_under}")
    default_request = parse_default_request(args.default_request) if args.default_request is not None else {}
    loaded = _load(args)
    table = loaded.table
    bars: dict[str, tqdm] = {}

    def progress(resource: str, jobs: int) -> None:
        bar = bars.get(resource)
        if bar is None:
            bar = bars[resource] = tqdm(total=len(table), desc=f"replay {resource}", unit="job", file=sys.stderr, leave=False)
        bar.update(jobs)

    config = ReplayConfig(target_under=args.target_under, refit_days=args.refit_days, default_request=default_request)
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


def cmd_simulate(args) -> int:
    import time

    from tqdm import tqdm

    from airflow_adaptive.adapters.series import load_series
    from airflow_adaptive.cli.report import simulate_plot, simulate_table
    from airflow_adaptive.logic.simulate import POLICIES, SimulationConfig, simulate, total_work

    started = time.perf_counter()
    try:
        config = SimulationConfig(policies=tuple(args.policy or POLICIES))
    except ValueError as exc:
        raise UserError(f"--policy: {exc}") from None
    series = load_series(args.series, args.format)
    with tqdm(total=total_work(series, config), desc="simulate", unit="run", file=sys.stderr, leave=False,
              disable=not sys.stderr.isatty() and not args.progress) as bar:
        report = simulate(series, config, progress=bar.update)
    report = {**report, "seconds": round(time.perf_counter() - started, 2)}
    print(simulate_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    if args.plot:
        simulate_plot(report, args.plot)
    return 0


def cmd_train(args) -> int:
    from airflow_adaptive.logic.scaling import profiler_for

    loaded = _load(args)
    profiler = profiler_for(loaded.table, args.coverage).fit(loaded.table)
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
    from airflow_adaptive.retraining import retrain_and_promote

    result = retrain_and_promote(table, args.register, args.coverage, holdout_fraction=HOLDOUT_FRACTION, target_under=TARGET_UNDER)
    print(f"registered {result.model_name} version {result.version} ({result.profiler}); hold-out: {result.holdout_window}")
    if result.promoted:
        print(f"champion -> version {result.version}: {result.reason}")
    else:
        kept = f"version {result.champion_before}" if result.champion_before else "no champion"
        print(f"champion unchanged ({kept}): {result.reason}")


def _profiler_from(args):
    if args.model_file:
        import pickle

        path = Path(args.model_file)
        from airflow_adaptive.adapters.files import is_file

        if not is_file(path):
            raise UserError(f"--model-file {path}: no such file; create one with `airflow-adaptive train --output`")
        try:
            profiler = pickle.loads(path.read_bytes())
        except Exception as exc:  # noqa: BLE001: unpickling arbitrary bytes raises anything (EOFError, KeyError, ...)
            raise UserError(f"--model-file {path}: not a profiler saved by `airflow-adaptive train --output` "
                            f"({type(exc).__name__})") from None
        if not callable(getattr(profiler, "predict_profile", None)):
            raise UserError(f"--model-file {path}: holds a {type(profiler).__name__}, not a profiler saved by "
                            "`airflow-adaptive train --output`")
        return profiler, str(path)
    from airflow_adaptive.adapters.mlflow.registry import load_profiler

    profiler, version = load_profiler(args.model)
    return profiler, f"{args.model} (version {version})"


def read_jobs(path: str) -> dict[str, dict[str, Any]]:
    """Stages from a job file: ``{"stages": {name: features}}``, a list, or one feature object."""
    from airflow_adaptive.adapters.files import is_file, parse_json, read_text

    if not is_file(path):
        raise UserError(f"--job {path}: no such file")
    data = parse_json(read_text(path, f"--job {path}"), f"--job {path}")
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


def cmd_demo(args) -> int:
    from airflow_adaptive.demo import COMPARE_SIZES, SEED_SIZES, run_demo

    seeds, compare = _demo_sizes(args.seed_sizes, SEED_SIZES), _demo_sizes(args.sizes, COMPARE_SIZES)
    report = run_demo(seeds, compare, json_out=args.json, plot_out=args.plot)
    if args.json:
        print(f"report: {args.json}" + (f", plot: {args.plot}" if args.plot else ""))
    return 0 if report["runs"]["adaptive"]["succeeded"] else 1


def _demo_sizes(text: str | None, default) -> list[int]:
    if not text:
        return list(default)
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"sizes must be comma-separated row counts, e.g. 60000,120000; got {text!r}") from None
    if not sizes or any(n < 1000 for n in sizes):
        raise UserError(f"sizes must be row counts of at least 1000, got {text!r}")
    return sizes


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
    p.add_argument("--default-request", metavar="cpu=1,memory=1Gi",
                   help="the request of a job whose trace gives none (quantities as Kubernetes writes them); "
                        "default: such jobs are left out")
    p.add_argument("--json", metavar="OUT.json", help="write the machine-readable report")
    p.add_argument("--plot", metavar="OUT.png", help="plot every policy's trade-off curve")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("simulate", help="replay usage series through the runtime policies: reserved, requested, kills")
    p.add_argument("--series", required=True, help="long CSV (series,stage,time_s,resource,value; .gz too), "
                   "Prometheus range-query JSON, or an MLflow experiment of stage runs")
    p.add_argument("--format", choices=("csv", "prometheus", "mlflow"), default="csv", help="default csv")
    # No choices= here: they live with numpy in logic/simulate.py, and the monitor image (which
    # parses this same command line) has no numpy. cmd_simulate checks the names.
    p.add_argument("--policy", action="append", help="static_peak, static_history, reactive or profile (repeat; default: all)")
    p.add_argument("--json", metavar="OUT.json", help="write the machine-readable report")
    p.add_argument("--plot", metavar="OUT.png", help="plot each policy's margin sweep (reserved/used against kills)")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("demo", help="set up Airflow and MLflow, seed the profiler, run the example pipeline static vs adaptive")
    p.add_argument("--json", metavar="OUT.json", help="write the machine-readable demo report")
    p.add_argument("--plot", metavar="OUT.png", help="plot reserved memory over time and predictions")
    p.add_argument("--seed-sizes", help="comma-separated data sizes (rows) of the seed runs")
    p.add_argument("--sizes", help="comma-separated data sizes (rows) of the compared runs")
    p.set_defaults(func=cmd_demo)

    from airflow_adaptive.cli.follow_command import add_parser as add_follow_parser
    from airflow_adaptive.cli.runtime_commands import add_parsers

    add_parsers(sub)
    add_follow_parser(sub)
    return parser


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        # One line, whatever the user typed: a file name with a newline is shown escaped.
        print(f"airflow-adaptive: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the user named (--json, --output, --plot) that cannot be written or read
        log.debug("file error", exc_info=True)
        print(_one_line(f"airflow-adaptive: error: {exc.filename or ''}{': ' if exc.filename else ''}{exc.strerror or exc}"),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("airflow-adaptive: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

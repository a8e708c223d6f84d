"""``airflow-adaptive demo``: the example pipeline, sized three ways, on a fresh machine.

1. **Set up** (not timed): Airflow with its SQLite metadata database and an ``mlflow server``
   with a SQLite store, both under ``<home>/demo/`` (deleted first, so every demo starts clean).
2. **Seed runs**: the pipeline at a few data sizes in shadow mode (the author's own generous
   request; predictions are only logged), so the monitors log real usage to MLflow.
3. **Bootstrap**: the profiler is fitted on those stage runs and promoted by the
   champion/challenger rule (the same code as the retraining DAG).
4. **Comparison**: the same sequence of data sizes three times:
   ``static`` (a careful user: each stage's largest seed peak + 20%, requests = limits, never
   resized), ``optimistic`` (the median seed peak), and ``adaptive`` (the profiler's size,
   resized in place by the monitor). The single-task DAG (the pipeline in one process: a stage
   with phases) is compared three ways: ``static`` (careful), ``reactive`` (the profiler's
   constant profile, ``follow_phases=False``: sized for the peak, the monitor's reactive rules)
   and ``adaptive`` (started at the first predicted phase, the monitor following the phases).
   The deep-learning DAG (a ResNet and a transformer, PyTorch) is seeded the same way at three
   (batch size, image size, sequence length) points and compared two ways, ``static`` (careful)
   and ``adaptive``, at two new points.
5. **Closed loop**: the retraining DAG refits on everything logged and says whether the alias moved.
6. **Series**: every finished stage run's usage over time, as the long CSV ``simulate`` reads
   (``pipeline-series.csv.gz`` next to the JSON report).

Every pipeline run is ``DAG.test(use_executor=True)`` in this process (what ``airflow dags test
--use-executor`` runs; one interpreter saves Airflow's import per run) with the
:class:`~airflow_adaptive.inline_executor.InlineExecutor`: each task runs under Airflow's own
supervisor, which writes the task log where the Airflow UI reads it (``DAG.test()`` alone writes
none). Each DAG run's note names its policy (``seed``, ``static``, ``optimistic``, ``adaptive``...),
and so do its stage runs in MLflow (run name and tag ``airflow_adaptive.demo_policy``). The
extra links point at ``AIRFLOW_ADAPTIVE_MLFLOW_UI_URL`` (default ``http://127.0.0.1:5000``), where
the MLflow UI answers once started as the demo prints at the end (``<home>/demo/ui.env``). The
figures come back from the stage runs in MLflow, which is where the product itself keeps them.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
PIPELINE = "ml_training_pipeline"
SINGLE = "ml_training_single_task"  # the same work in one task: a stage with phases
RETRAIN = "retrain_profiler"
MODEL = "job-profiler"
STATIC_MARGIN = 0.20  # the careful user's headroom over the largest seed peak
#: Data sizes (rows): four seeds spanning the range (the scaling laws need three runs per stage
#: after the hold-out), then three compared runs between them; sized to finish in ~4 minutes here.
SEED_SIZES = (50_000, 110_000, 170_000, 230_000)
COMPARE_SIZES = (80_000, 140_000, 200_000)
SERIES_FILE = "pipeline-series.csv.gz"  # written next to the JSON report
DEEP = "deep_learning_pipeline"
#: (batch size, image size, sequence length) of the deep-learning runs: seeds spanning the range,
#: then two compared points between them; 3 training steps keep a run to ~10 s here.
DEEP_SEEDS = ((8, 32, 64), (32, 64, 128), (64, 64, 256))
DEEP_COMPARE = ((16, 48, 96), (48, 64, 192))
DEEP_FIXED = {"steps": 3, "precision": "fp32", "optimizer": "adam", "seed": 0}
#: Where the UIs answer once the user starts them after the demo (the commands it prints).
AIRFLOW_UI_PORT, MLFLOW_UI_PORT = 8080, 5000
TAG_POLICY = "airflow_adaptive.demo_policy"  # on the demo's stage runs in MLflow
# Named here, not imported: importing Airflow before _setup's environment would set it up on the
# wrong home (tests/unit/test_demo.py checks they match links.UI_URL_ENV, inline_executor.EXECUTOR).
UI_URL_ENV = "AIRFLOW_ADAPTIVE_MLFLOW_UI_URL"
EXECUTOR = "airflow_adaptive.inline_executor.InlineExecutor"


def _setup(base: Path) -> dict[str, str]:
    """Fresh Airflow home and MLflow server; returns the environment the runs need."""
    if base.exists():
        shutil.rmtree(base)
    (base / "airflow").mkdir(parents=True)
    env = {
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # INFO: the task logs (the sizing table) are written at this level; the demo's own console
        # is quieted after Airflow starts (_quiet_console).
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        "AIRFLOW_ADAPTIVE_HOME": str(base),
        "AIRFLOW_ADAPTIVE_RUNNER": "local",
        UI_URL_ENV: os.environ.get(UI_URL_ENV) or f"http://127.0.0.1:{MLFLOW_UI_PORT}",
    }
    os.environ.update(env)
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], env=os.environ.copy(), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stderr[-2000:]}")
    return env


def _quiet_console() -> None:
    """Airflow's own INFO lines (each task's scheduling) off the demo's console; the tasks' forked
    processes configure their logging afresh (``AIRFLOW__LOGGING__LOGGING_LEVEL``) and keep INFO."""
    from airflow.sdk.log import configure_logging

    configure_logging(log_level="WARNING")


def ui_commands(base: Path, mlflow_ui_url: str) -> str:
    """How to open what the demo left (written to ``<base>/ui.env`` and printed at the end)."""
    airflow, mlflow = Path(sys.executable).with_name("airflow"), Path(sys.executable).with_name("mlflow")
    from urllib.parse import urlsplit

    port = urlsplit(mlflow_ui_url).port or MLFLOW_UI_PORT
    return "\n".join([
        f"export AIRFLOW_HOME={base / 'airflow'} AIRFLOW__CORE__DAGS_FOLDER={DAGS} AIRFLOW__CORE__LOAD_EXAMPLES=False",
        "export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True  # the demo's UI without a login",
        f"{airflow} api-server --port {AIRFLOW_UI_PORT} &  # Airflow UI: http://127.0.0.1:{AIRFLOW_UI_PORT}",
        f"{mlflow} server --port {port} --backend-store-uri sqlite:///{base / 'mlflow'}/db.sqlite "
        f"--artifacts-destination {base / 'mlflow' / 'artifacts'} &  # MLflow UI: {mlflow_ui_url}",
    ])


def _label(dag_id: str, run_id: str, label: str, stage_runs: list[dict[str, Any]]) -> None:
    """The DAG run's note and its stage runs' names in MLflow say which policy ran it: the run ids
    (``manual__<time>``) cannot."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_adaptive.adapters.mlflow import store

    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is not None:
            run.note = label
    client = store.client()
    for s in stage_runs:
        client.set_tag(s["mlflow_run_id"], TAG_POLICY, label)
        client.set_tag(s["mlflow_run_id"], "mlflow.runName", f"{label} | {s['task']} try {s['try']}")


def _dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def _run(dag, conf: dict[str, Any]) -> tuple[str, str]:
    """One DAG run, each task under Airflow's supervisor (its log where the UI reads it). Pass
    every param the run depends on: in one process, a param left out keeps the value an earlier
    run's conf gave it."""
    import pendulum

    dr = dag.test(logical_date=pendulum.now("UTC"), run_conf=conf, use_executor=True)
    return dr.run_id, str(dr.state)


def _stage_runs(airflow_run_id: str) -> list[dict[str, Any]]:
    """Every try of every stage of one pipeline run, from MLflow."""
    from airflow_adaptive.adapters.mlflow import store
    from airflow_adaptive.adapters.mlflow.stage_run_log import STAGE_EXPERIMENT
    from airflow_adaptive.domain.stage_run import TAG_OUTCOME, TAG_RUN, TAG_TASK, TAG_TRY

    client = store.client()
    exp = client.get_experiment_by_name(STAGE_EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], f"tags.`{TAG_RUN}` = '{airflow_run_id}'", max_results=1000)
    out = []
    for r in runs:
        m, p, t = r.data.metrics, r.data.params, r.data.tags
        resizes = client.get_metric_history(r.info.run_id, "resize.memory") + client.get_metric_history(r.info.run_id, "resize.cpu")
        out.append({
            "task": t.get(TAG_TASK), "try": int(t.get(TAG_TRY, 1)), "outcome": t.get(TAG_OUTCOME, "unfinished"),
            "mlflow_run_id": r.info.run_id,
            "predicted_memory_median": _num(p.get("predicted.memory.median")),
            "predicted_memory_upper": _num(p.get("predicted.memory.upper")),
            "predicted_memory_phases": p.get("predicted.memory.phases"),
            "allocated_memory": _num(p.get("allocated.memory")),
            "allocated_cpu": _num(p.get("allocated.cpu")),
            "predicted_cpu_upper": _num(p.get("predicted.cpu.upper")),
            "started_memory": m.get("started.memory"),
            "started_cpu": m.get("started.cpu"),
            "final_memory": m.get("final.memory"),
            "observed_peak_memory": m.get("observed.memory.peak"),
            "observed_peak_cpu": m.get("observed.cpu.peak"),
            "oom_kills": int(m.get("oom_kills", 0)),
            "resizes": len(resizes),
            "reserved_memory_byte_seconds": m.get("reserved.memory_byte_seconds", 0.0),
            "reserved_cpu_core_seconds": m.get("reserved.cpu_core_seconds", 0.0),
            "start": m.get("stage.start_time"), "end": m.get("stage.end_time"),
            "resize_events": sorted(((h.timestamp / 1000, h.key.split(".")[1], h.value) for h in resizes)),
        })
    return sorted(out, key=lambda s: (s["start"] or 0))


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "None") else None
    except ValueError:
        return None


def _deep_point(point: tuple[int, int, int]) -> dict[str, Any]:
    batch, image, sequence = point
    return {"batch_size": batch, "image_size": image, "sequence_length": sequence, **DEEP_FIXED}


def _policy_runs(dag, sizes, conf_for, point_conf=lambda rows: {"data_rows": rows}, *, label: str) -> dict[str, Any]:
    """``sizes``: the points the DAG runs at, ``point_conf`` their run conf (data rows by default);
    ``label``: the policy, named on each run (``_label``)."""
    runs, stages = [], []
    for rows in sizes:
        run_id, state = _run(dag, {**point_conf(rows), **conf_for(rows)})
        tries = _stage_runs(run_id)
        point = f"{rows:,} rows" if isinstance(rows, int) else "(batch, image, sequence) " + ", ".join(map(str, rows))
        _label(dag.dag_id, run_id, f"{label}: {point}", tries)
        runs.append({"data_rows": rows, "run_id": run_id, "state": state})
        stages.extend({"data_rows": rows, **s} for s in tries)
    return {
        "succeeded": all(r["state"] == "success" for r in runs),
        "oom_kills": sum(s["oom_kills"] for s in stages),
        "resizes": sum(s["resizes"] for s in stages),
        "reserved_memory_byte_seconds": sum(s["reserved_memory_byte_seconds"] or 0.0 for s in stages),
        "reserved_cpu_core_seconds": sum(s["reserved_cpu_core_seconds"] or 0.0 for s in stages),
        "pipeline_runs": runs,
        "stages": stages,
    }


def static_resources(seed_stages: list[dict[str, Any]], user: dict[str, dict], statistic: str) -> dict[str, dict]:
    """Static ``container_resources`` per task from the seed peaks: ``max`` (+20%, the careful
    user) or ``median`` (the optimistic user), requests = limits, CPU as the author wrote it."""
    from airflow_adaptive.domain.quantities import format_memory

    out = {}
    for task, resources in user.items():
        peaks = [s["observed_peak_memory"] for s in seed_stages if s["task"] == task and s["observed_peak_memory"]]
        if not peaks:
            raise RuntimeError(f"no seed run of {task} observed a memory peak")
        memory = max(peaks) * (1 + STATIC_MARGIN) if statistic == "max" else statistics.median(peaks)
        cpu = resources["requests"]["cpu"]
        quantity = format_memory(round(memory / 2**20) * 2**20)
        out[task] = {"requests": {"cpu": cpu, "memory": quantity}, "limits": {"cpu": cpu, "memory": quantity}}
    return out


def run_demo(seed_sizes, compare_sizes, json_out: str | None = None, plot_out: str | None = None,
             series_out: str | None = None) -> dict[str, Any]:
    """``series_out``: where the stage runs' usage series go (long CSV); by default
    ``pipeline-series.csv.gz`` next to ``json_out``, none without it."""
    from airflow_adaptive.adapters.mlflow import store
    from airflow_adaptive.adapters.mlflow.local_server import LocalMlflowServer

    base = store.home() / "demo"
    t_setup = time.perf_counter()
    _setup(base)
    server = LocalMlflowServer(base / "mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = server.start()
    try:
        setup_s = time.perf_counter() - t_setup
        started = time.perf_counter()
        pipeline = _dag(PIPELINE)
        _quiet_console()
        user = _user_requests(pipeline)
        # The deep-learning and single-task seeds first: the profiler's hold-out window is the
        # newest seed runs, and it should stay the three-stage pipeline's, as it was before.
        deep = _dag(DEEP)
        deep_user = _user_requests(deep)
        print(f"[demo] seed runs of the deep-learning pipeline at (batch, image, sequence) {list(DEEP_SEEDS)}", flush=True)
        deep_seeds = _policy_runs(deep, DEEP_SEEDS, lambda p: {"sizing_mode": "shadow", "resources": {}}, _deep_point, label="seed")
        single = _dag(SINGLE)
        single_user = _user_requests(single)
        print(f"[demo] seed runs of the single-task pipeline (phases in one process) at {list(seed_sizes)} rows", flush=True)
        single_seeds = _policy_runs(single, seed_sizes,
                                    lambda rows: {"sizing_mode": "shadow", "resources": {}, "follow_phases": True}, label="seed")
        print(f"[demo] seed runs at {list(seed_sizes)} rows (shadow mode, the author's requests)", flush=True)
        seeds = _policy_runs(pipeline, seed_sizes, lambda rows: {"sizing_mode": "shadow", "resources": {}}, label="seed")
        bootstrap = _retrain()
        print(f"[demo] profiler: version {bootstrap['version']} ({bootstrap['profiler']}); champion -> "
              f"{bootstrap['champion_after']}: {bootstrap['reason']}", flush=True)
        careful = static_resources(seeds["stages"], user, "max")
        optimistic = static_resources(seeds["stages"], user, "median")
        runs = {}
        for name, conf in (("static", {"sizing_mode": "shadow", "resources": careful}),
                           ("optimistic", {"sizing_mode": "shadow", "resources": optimistic}),
                           ("adaptive", {"sizing_mode": "adaptive", "resources": {}})):
            print(f"[demo] {name}: {len(compare_sizes)} pipeline runs at {list(compare_sizes)} rows", flush=True)
            runs[name] = _policy_runs(pipeline, compare_sizes, lambda rows, c=conf: c, label=name)
        single_careful = static_resources(single_seeds["stages"], single_user, "max")
        single_runs = {}
        for name, conf in (("static", {"sizing_mode": "shadow", "resources": single_careful, "follow_phases": True}),
                           ("reactive", {"sizing_mode": "adaptive", "resources": {}, "follow_phases": False}),
                           ("adaptive", {"sizing_mode": "adaptive", "resources": {}, "follow_phases": True})):
            print(f"[demo] single task, {name}: {len(compare_sizes)} runs at {list(compare_sizes)} rows", flush=True)
            single_runs[name] = _policy_runs(single, compare_sizes, lambda rows, c=conf: c, label=name)
        deep_careful = static_resources(deep_seeds["stages"], deep_user, "max")
        deep_runs = {}
        for name, conf in (("static", {"sizing_mode": "shadow", "resources": deep_careful}),
                           ("adaptive", {"sizing_mode": "adaptive", "resources": {}})):
            print(f"[demo] deep learning, {name}: {len(DEEP_COMPARE)} runs at {list(DEEP_COMPARE)}", flush=True)
            deep_runs[name] = _policy_runs(deep, DEEP_COMPARE, lambda p, c=conf: c, _deep_point, label=name)
        closed_loop = _retrain_dag()
        seconds = time.perf_counter() - started
        if series_out is None and json_out:
            series_out = str(Path(json_out).parent / SERIES_FILE)
        finished = [s for arm in (deep_seeds, single_seeds, seeds, *runs.values(), *single_runs.values(), *deep_runs.values())
                    for s in arm["stages"]]
        series = _write_series(series_out, finished) if series_out else None
    finally:
        server.stop()
    report = _report(seeds, runs, bootstrap, closed_loop, careful, optimistic, seconds, setup_s)
    report["single_task"] = _single_task_report(single_seeds, single_runs, single_careful)
    report["deep_learning"] = _deep_report(deep_seeds, deep_runs, deep_careful)
    if series is not None:
        report["series"] = series
    commands = ui_commands(base, os.environ[UI_URL_ENV])
    (base / "ui.env").write_text(commands + "\n")
    report["ui"] = {"commands": commands, "airflow": f"http://127.0.0.1:{AIRFLOW_UI_PORT}", "mlflow": os.environ[UI_URL_ENV]}
    print(demo_table(report))
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=1))
    if plot_out:
        demo_plot(report, plot_out)
    print(f"[demo] to look at the runs (task logs, extra links, the profiler's versions), start the UIs "
          f"({base / 'ui.env'}):\n{report['ui']['commands']}")
    return report


def _write_series(path: str, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The usage series of the demo's stage runs (from MLflow) as the long CSV, in start order.
    Tries that did not succeed (OOM-killed, failed) are left out: their series stop at the kill
    and are capped by the limit, not what the stage needed."""
    from airflow_adaptive.adapters.mlflow.stage_run_log import STAGE_EXPERIMENT
    from airflow_adaptive.adapters.series import load_series
    from airflow_adaptive.adapters.series.long_csv import write_long_csv

    outcome = {s["mlflow_run_id"]: s["outcome"] for s in stages}
    loaded = load_series(STAGE_EXPERIMENT, "mlflow")
    kept = sorted((r for r in loaded.runs if outcome.get(r.series) == "success"), key=lambda r: r.start or 0.0)
    left_out = dict(loaded.report.skipped)
    unfinished = sum(1 for r in loaded.runs if outcome.get(r.series) != "success")
    if unfinished:
        left_out["tries that did not succeed (OOM-killed or failed)"] = unfinished
    rows = write_long_csv(kept, path)
    stages_count = dict(Counter(r.stage for r in kept))
    print(f"[demo] usage series of {len(kept)} stage runs ({rows} samples) -> {path}", flush=True)
    return {"path": path, "runs": len(kept), "rows": rows, "runs_per_stage": stages_count, "left_out": left_out}


def _user_requests(dag) -> dict[str, dict]:
    """The author's own ``container_resources`` per task, as the DAG file states them."""
    import runpy

    stages = runpy.run_path(dag.fileloc)["STAGES"]
    return {task: spec[2] for task, spec in stages.items()}


def _retrain() -> dict[str, Any]:
    from airflow_adaptive.adapters.mlflow.stage_run_log import STAGE_EXPERIMENT
    from airflow_adaptive.adapters.mlflow.stage_runs import load_stage_runs
    from airflow_adaptive.retraining import retrain_and_promote

    from airflow_adaptive.adapters.series import load_series

    loaded = load_stage_runs(STAGE_EXPERIMENT)
    series = load_series(STAGE_EXPERIMENT, "mlflow")  # usage over time: the challenger learns the stages' phases
    return retrain_and_promote(loaded.table, MODEL, plot=True, series=series).to_dict()


def _retrain_dag() -> dict[str, Any]:
    dag = _dag(RETRAIN)
    run_id, state = _run(dag, {})
    _label(RETRAIN, run_id, "closed loop: retraining on every run above", [])
    result = _xcom(RETRAIN, run_id, "retrain")
    return {"run_id": run_id, "state": state, **(result or {})}


def _xcom(dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key).first()
        if row is None:
            return None
        value = row.value
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def _report(seeds, runs, bootstrap, closed_loop, careful, optimistic, seconds, setup_s) -> dict[str, Any]:
    static = runs["static"]["reserved_memory_byte_seconds"]
    adaptive = runs["adaptive"]["reserved_memory_byte_seconds"]
    return {
        "runs": runs,
        "seeds": seeds,
        "static_resources": {"careful": careful, "optimistic": optimistic},
        "adaptive_memory_saving_vs_static": (1 - adaptive / static) if static else None,
        "mlflow": {"model_name": MODEL, "model_version": bootstrap["champion_after"], "alias": "champion",
                   "bootstrap": bootstrap, "closed_loop": closed_loop},
        "seconds": round(seconds, 1),
        "setup_seconds": round(setup_s, 1),
    }


def _single_task_report(seeds, runs, careful) -> dict[str, Any]:
    """The phased stage: the careful static user and the reactive runtime (the constant profile)
    against the profile over time."""
    static = runs["static"]["reserved_memory_byte_seconds"]
    reactive = runs["reactive"]["reserved_memory_byte_seconds"]
    adaptive = runs["adaptive"]["reserved_memory_byte_seconds"]
    phases = [s.get("predicted_memory_phases") for s in runs["adaptive"]["stages"] if s.get("predicted_memory_phases")]
    return {"runs": runs, "seeds": seeds, "static_resources": careful,
            "adaptive_memory_saving_vs_static": (1 - adaptive / static) if static else None,
            "adaptive_memory_saving_vs_reactive": (1 - adaptive / reactive) if reactive else None,
            "predicted_memory_phases": phases[0] if phases else None}


def _deep_report(seeds, runs, careful) -> dict[str, Any]:
    """The deep-learning stages: the careful static user against the profiler's size."""
    static = runs["static"]["reserved_memory_byte_seconds"]
    adaptive = runs["adaptive"]["reserved_memory_byte_seconds"]
    return {"runs": runs, "seeds": seeds, "static_resources": careful, "points": {"seeds": DEEP_SEEDS, "compared": DEEP_COMPARE},
            "adaptive_memory_saving_vs_static": (1 - adaptive / static) if static else None}


def _arm_row(name: str, r: dict[str, Any]) -> str:
    return (f"{name:<15} {'yes' if r['succeeded'] else 'NO':<4} {r['oom_kills']:>9} {r['resizes']:>7} "
            f"{r['reserved_memory_byte_seconds'] / 2**30:>12.1f} {r['reserved_cpu_core_seconds']:>10.1f}")


def demo_table(report: dict[str, Any]) -> str:
    lines = [f"{'policy':<15} {'ok':<4} {'OOM kills':>9} {'resizes':>7} {'memory GiB-s':>12} {'CPU core-s':>10}"]
    lines += [_arm_row(name, r) for name, r in report["runs"].items()]
    saving = report["adaptive_memory_saving_vs_static"]
    if saving is not None:
        lines.append(f"adaptive reserves {saving:.0%} fewer memory byte-seconds than the careful static baseline")
    single = report.get("single_task")
    if single:
        lines += [_arm_row("1-task " + name, r) for name, r in single["runs"].items()]
        if single["adaptive_memory_saving_vs_static"] is not None:
            lines.append(f"single task (phases in one process): adaptive reserves {single['adaptive_memory_saving_vs_static']:.0%} "
                         f"fewer memory byte-seconds than the careful static user; predicted memory phases: "
                         f"{single['predicted_memory_phases'] or 'none'}")
        if single.get("adaptive_memory_saving_vs_reactive") is not None:
            lines.append(f"single task: adaptive reserves {single['adaptive_memory_saving_vs_reactive']:.0%} fewer memory "
                         "byte-seconds than reactive (the constant profile, follow_phases=False)")
    deep = report.get("deep_learning")
    if deep:
        lines += [_arm_row("DL " + name, r) for name, r in deep["runs"].items()]
        if deep["adaptive_memory_saving_vs_static"] is not None:
            lines.append(f"deep learning (ResNet + transformer, PyTorch): adaptive reserves "
                         f"{deep['adaptive_memory_saving_vs_static']:.0%} fewer memory byte-seconds than the careful static user")
    lines.append(f"model {report['mlflow']['model_name']}@{report['mlflow']['alias']} = version {report['mlflow']['model_version']}; "
                 f"demo {report['seconds']:.0f} s (+{report['setup_seconds']:.0f} s set-up)")
    return "\n".join(lines)


def demo_plot(report: dict[str, Any], path: str) -> None:
    """Memory and CPU limits in force over time (stages back to back), and predictions vs peaks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_c, ax_p) = plt.subplots(1, 3, figsize=(18, 4.8))
    colours = {"static": "tab:grey", "optimistic": "tab:orange", "adaptive": "tab:blue"}
    for name, r in report["runs"].items():
        for ax, resource, scale, total in ((ax_m, "memory", 2**30, r["reserved_memory_byte_seconds"] / 2**30),
                                           (ax_c, "cpu", 1.0, r["reserved_cpu_core_seconds"])):
            xs, ys, kills = _timeline(r["stages"], resource, scale)
            unit = "GiB-s" if resource == "memory" else "core-s"
            ax.plot(xs, ys, color=colours[name], lw=1.4, label=f"{name} ({total:.1f} {unit}, {r['oom_kills']} OOM)")
            if resource == "memory" and kills:
                ax.plot(*zip(*kills), "x", color=colours[name], ms=9)
    ax_m.set_ylabel("memory limit in force (GiB)"), ax_m.set_title("reserved memory over time (x = OOM kill)")
    ax_c.set_ylabel("CPU limit in force (cores)"), ax_c.set_title("reserved CPU over time")
    for ax in (ax_m, ax_c):
        ax.set_xlabel("stage time, runs back to back (s)"), ax.legend(fontsize=8)
    stages = [s for s in report["runs"]["adaptive"]["stages"] if s["observed_peak_memory"] and s["predicted_memory_upper"]]
    for task in sorted({s["task"] for s in stages}):
        mine = [s for s in stages if s["task"] == task]
        peaks = [s["observed_peak_memory"] / 2**20 for s in mine]
        ax_p.scatter(peaks, [s["predicted_memory_upper"] / 2**20 for s in mine], label=f"{task} upper")
        ax_p.scatter(peaks, [s["predicted_memory_median"] / 2**20 for s in mine], marker=".", label=f"{task} median")
    top = max([s["predicted_memory_upper"] / 2**20 for s in stages] + [1.0])
    ax_p.plot([0, top], [0, top], color="grey", lw=1)
    ax_p.set_xlabel("observed peak memory (MiB)"), ax_p.set_ylabel("predicted (MiB)")
    ax_p.set_title("adaptive: prediction against observation"), ax_p.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _timeline(stages, resource: str, scale: float):
    """Step function of the limit in force, every try of every stage laid end to end."""
    xs, ys, kills, offset = [], [], [], 0.0
    for s in stages:
        if not s["start"] or not s["end"]:
            continue
        level = s.get(f"started_{resource}") or s.get(f"allocated_{resource}") or 0.0
        points = [(s["start"], level)] + [(t, v) for t, res, v in s["resize_events"] if res == resource] + [(s["end"], None)]
        for (a, v), (b, _) in zip(points, points[1:]):
            level = level if v is None else v
            xs += [offset + a - s["start"], offset + b - s["start"]]
            ys += [level / scale, level / scale]
        offset += s["end"] - s["start"]
        if s["oom_kills"]:
            kills.append((offset, level / scale))
    return xs, ys, kills

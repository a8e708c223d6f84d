"""The closed loop: refit the Job Profiler on the stage runs monitors logged, promote on a win.

Reads the finished stage runs of the MLflow experiment the operators write to, refits the
profiler without the most recent 20% (the hold-out window), scores challenger and champion on
that window, registers the challenger, and moves ``champion`` only if it is strictly better (or,
with no champion yet, honest about its risk). The task log and XCom say why the alias moved or
stayed.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task


with DAG(
    dag_id="retrain_profiler",
    description="refit the Job Profiler from logged stage runs; champion/challenger promotion",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-adaptive"],
    params={
        "experiment": Param("airflow-adaptive-stages", type="string"),
        "model_name": Param("job-profiler", type="string"),
        "coverage": Param(0.99, type="number", minimum=0.5, maximum=0.999),
    },
) as dag:

    @task
    def retrain(params=None) -> dict:
        import logging

        from airflow_adaptive.adapters.mlflow.stage_runs import load_stage_runs
        from airflow_adaptive.retraining import retrain_and_promote

        log = logging.getLogger("airflow.task")
        loaded = load_stage_runs(params["experiment"])
        log.info("stage runs: %d kept, excluded: %s", loaded.report.kept, loaded.report.to_dict().get("excluded"))
        from airflow_adaptive.adapters.series import load_series
        from airflow_adaptive.domain.errors import UserError

        try:  # the stage runs' usage over time: the challenger learns each stage's phases from it
            series = load_series(params["experiment"], "mlflow")
        except UserError as exc:
            log.warning("no usage series to learn phases from (%s): the profile stays constant over each run", exc)
            series = None
        result = retrain_and_promote(loaded.table, params["model_name"], float(params["coverage"]), plot=True,
                                     series=series)  # plot: predicted against observed, on the version's run
        verb = "moved to" if result.promoted else "stays at"
        log.info("champion %s version %s: %s", verb, result.champion_after, result.reason)
        return result.to_dict()

    retrain()

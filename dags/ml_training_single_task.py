"""The example pipeline as one task: load, train and evaluate in one process.

Teams that do not split their stages run the whole pipeline as one pod. Its needs change over
its life (CPU-bound loading, memory growing in training, a lighter evaluation), so one size for
the whole task is its worst moment for all of it. Once the profiler has seen three runs of this
task, it predicts the task's phases; the task then starts at the first phase, and the monitor
raises it before each predicted rise and releases it after each fall (README: "The profile over
time").

Embedded default (no Kubernetes configured): the command runs under the local Resource Manager.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_adaptive.adapters.mlflow.store import home
from airflow_adaptive.examples.dag_helpers import WORKDIR_ARG, pipeline_features, pipeline_params, templated_resources
from airflow_adaptive.examples.pipeline import DEFAULT_ROWS
from airflow_adaptive.operators import AdaptiveTrainingOperator

TASK = "train_pipeline"
#: The author's own request (requests = prior, limits = bound); run conf ``resources.train_pipeline`` overrides it.
REQUEST = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
STAGES = {TASK: ("all", "random_forest_pipeline", REQUEST)}  # the same shape as ml_training_pipeline's

with DAG(
    dag_id="ml_training_single_task",
    description="load, train and evaluate in one task, sized phase by phase",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-adaptive", "example"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    params={**pipeline_params(DEFAULT_ROWS, str(home() / "pipeline-data")),
            # False: the constant profile and the monitor's reactive rules only (the demo's "reactive" arm).
            "follow_phases": Param(True, type="boolean", description="size the task by its predicted phases")},
) as dag:
    AdaptiveTrainingOperator(
        task_id=TASK,
        image="ghcr.io/airflow-adaptive/pipeline:0.1.0",
        cmds=["python", "-m", "airflow_adaptive.examples.pipeline", "all"],
        arguments=["--rows", "{{ params.data_rows }}", "--workdir", WORKDIR_ARG, "--seed", "{{ params.seed }}"],
        features=pipeline_features("random_forest_pipeline"),
        container_resources=templated_resources(TASK, REQUEST),
        sizing_mode="{{ params.sizing_mode }}",
        follow_phases="{{ params.follow_phases }}",
        env_vars={"OMP_NUM_THREADS": "2"},
        # Four samples a second: at the example's sizes the whole task lasts 3-6 s, and its
        # phases (loading, training, evaluating) last one or two; a 1 s monitor sees too little.
        monitor_interval=0.25,
    )

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
from airflow_adaptive.examples.pipeline import DEFAULT_ROWS
from airflow_adaptive.operators import AdaptiveTrainingOperator

N_FEATURES = 32  # columns of the generated data; see examples/pipeline.py
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
    params={
        "data_rows": Param(DEFAULT_ROWS, type="integer", minimum=1000, description="rows of generated training data"),
        "sizing_mode": Param("adaptive", enum=["adaptive", "shadow", "off"]),
        "resources": Param({}, type="object", description="per-task override of container_resources"),
        "workdir": Param(str(home() / "pipeline-data"), type="string"),
        "seed": Param(0, type="integer"),
    },
) as dag:
    AdaptiveTrainingOperator(
        task_id=TASK,
        image="ghcr.io/airflow-adaptive/pipeline:0.1.0",
        cmds=["python", "-m", "airflow_adaptive.examples.pipeline", "all"],
        arguments=["--rows", "{{ params.data_rows }}", "--workdir",
                   "{{ params.workdir }}/{{ run_id | replace(':', '_') | replace('+', '_') }}", "--seed", "{{ params.seed }}"],
        features={"algorithm": "random_forest_pipeline", "framework": "sklearn", "data_rows": "{{ params.data_rows }}",
                  "data_bytes": f"{{{{ params.data_rows * {N_FEATURES} * 8 }}}}", "n_features": N_FEATURES, "epochs": 1},
        container_resources={kind: {r: f"{{{{ params.resources.get('{TASK}', {{}}).get('{kind}', {{}}).get('{r}', '{v}') }}}}"
                                    for r, v in REQUEST[kind].items()} for kind in ("requests", "limits")},
        sizing_mode="{{ params.sizing_mode }}",
        env_vars={"OMP_NUM_THREADS": "2"},
        # Four samples a second: at the example's sizes the whole task lasts 3-6 s, and its
        # phases (loading, training, evaluating) last one or two; a 1 s monitor sees too little.
        monitor_interval=0.25,
    )

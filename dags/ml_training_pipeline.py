"""An ML training pipeline whose stages are sized by airflow-adaptive.

Three stages with different profiles (``airflow_adaptive/examples/pipeline.py``): CPU-heavy data
loading and feature engineering, a longer training whose memory grows with the data, and a short
evaluation. ``data_rows`` changes from run to run, so each run needs a different size: that is
what a fixed ``container_resources`` cannot follow.

Each stage's ``container_resources`` is what its author would write without the product: a
guess (the prior) and a ceiling (the bound). Run conf can override them per stage, which is how
``airflow-adaptive demo`` plays the static baselines with ``sizing_mode=shadow``.

Embedded default (no Kubernetes configured): each stage's command runs under the local Resource
Manager in the worker's Python environment. On Kubernetes the same DAG runs pods of ``image``.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_adaptive.adapters.mlflow.store import home
from airflow_adaptive.examples.dag_helpers import WORKDIR_ARG, pipeline_features, pipeline_params, templated_resources
from airflow_adaptive.examples.pipeline import DEFAULT_ROWS
from airflow_adaptive.operators import AdaptiveTrainingOperator

IMAGE = "ghcr.io/airflow-adaptive/pipeline:0.1.0"
STAGES = {
    # task id: (pipeline stage, algorithm, the author's own request: requests = prior, limits = bound)
    "load_data": ("load", "feature_engineering", {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "3Gi"}}),
    "train_model": ("train", "random_forest", {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}),
    "evaluate_model": ("evaluate", "random_forest", {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}}),
}


with DAG(
    dag_id="ml_training_pipeline",
    description="load -> train -> evaluate, each stage sized by the Job Profiler",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-adaptive", "example"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    params=pipeline_params(DEFAULT_ROWS, str(home() / "pipeline-data")),
) as dag:
    previous = None
    for task_id, (stage, algorithm, _) in STAGES.items():
        task = AdaptiveTrainingOperator(
            task_id=task_id,
            image=IMAGE,
            cmds=["python", "-m", "airflow_adaptive.examples.pipeline", stage],
            arguments=["--rows", "{{ params.data_rows }}", "--workdir", WORKDIR_ARG, "--seed", "{{ params.seed }}"],
            features=pipeline_features(algorithm),
            container_resources=templated_resources(task_id, STAGES[task_id][2]),
            sizing_mode="{{ params.sizing_mode }}",
            env_vars={"OMP_NUM_THREADS": "2"},
        )
        if previous is not None:
            previous >> task
        previous = task

"""Reading back what a stage's tries left in MLflow and on the cluster (the operator tests on kwok and on the real node)."""

from __future__ import annotations


def stage_runs(tracking: str, dag_id: str) -> list:
    """The stage runs of ``dag_id``, by try number."""
    from mlflow.tracking import MlflowClient

    mlflow = MlflowClient(tracking)
    exp = mlflow.get_experiment_by_name("airflow-adaptive-stages")
    runs = mlflow.search_runs([exp.experiment_id], f"tags.`airflow_adaptive.dag_id` = '{dag_id}'") if exp else []
    return sorted(runs, key=lambda r: int(r.data.tags["airflow_adaptive.try_number"]))


def stage_pods(core, namespace) -> list:
    """The namespace's pods, oldest first."""
    return sorted(core.list_namespaced_pod(namespace).items, key=lambda p: p.metadata.creation_timestamp)

"""Airflow operators of airflow-adaptive."""

from airflow_adaptive.operators.training import AdaptiveTrainingOperator

__all__ = ["AdaptiveTrainingOperator"]

"""Airflow provider registration (``apache_airflow_provider`` entry point)."""

from airflow_adaptive import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-adaptive",
        "name": "Airflow Adaptive",
        "description": "Predictive, adaptive resource sizing of ML pipeline stages (Job Profiler served from MLflow).",
        "versions": [__version__],
    }

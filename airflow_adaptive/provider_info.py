"""Airflow provider registration (``apache_airflow_provider`` entry point).

The extra links must be listed here: the webserver rebuilds a serialized operator's links from
this list, not from the operator class.
"""

from airflow_adaptive import __version__


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-adaptive",
        "name": "Airflow Adaptive",
        "description": "Predictive, adaptive resource sizing of ML pipeline stages (Job Profiler served from MLflow).",
        "versions": [__version__],
        "integrations": [{"integration-name": "Airflow Adaptive", "tags": ["software"]}],
        "operators": [{"integration-name": "Airflow Adaptive", "python-modules": ["airflow_adaptive.operators.training"]}],
        "sensors": [{"integration-name": "Airflow Adaptive", "python-modules": [
            "airflow_adaptive.sensors.capacity", "airflow_adaptive.sensors.model_quality"]}],
        "triggers": [{"integration-name": "Airflow Adaptive", "python-modules": [
            "airflow_adaptive.triggers.pod", "airflow_adaptive.triggers.capacity", "airflow_adaptive.triggers.model_quality"]}],
        "extra-links": ["airflow_adaptive.links.StageRunLink", "airflow_adaptive.links.ProfilerModelLink"],
    }

"""airflow-adaptive: size ML pipeline stages before they run, adjust them while they run."""

__version__ = "0.1.0"

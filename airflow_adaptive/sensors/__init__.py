"""Sensors that hold a DAG until sizing can be trusted and will be honoured: the profiler meets a
quality bar (``model_quality``), and the next stage's predicted pod fits the cluster (``capacity``).

Import them from their modules; this package imports nothing, so loading it stays cheap."""

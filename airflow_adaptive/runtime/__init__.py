"""The runtime side: samplers composed into a monitor loop, signal channels, the local runner.

Imported by the monitor sidecar, so nothing here (or below it) may import numpy, pandas,
scikit-learn, mlflow or requests: the sidecar's budget is 60 MiB resident.
"""

"""I/O adapters: trace files, MLflow, Kubernetes, cgroups."""

# The monitor sidecar image: ghcr.io/airflow-adaptive/monitor:<version>.
#
# AdaptiveTrainingOperator adds it to every stage pod as the native sidecar `adaptive-monitor`
# with `command: ["airflow-adaptive", "-v", "monitor", "--channel", "stdout"]`
# (airflow_adaptive/adapters/kubernetes/pod_spec.py, MonitorSidecar), runAsNonRoot, a read-only
# root filesystem, no capabilities and a 64 MiB memory limit.
#
#   docker build -t ghcr.io/airflow-adaptive/monitor:0.1.0 .
#
# Only what the monitor imports is installed. `airflow-adaptive monitor` runs on the standard
# library (runtime/, domain/, the cgroup reader, the MLflow REST client; runtime/__init__.py
# forbids numpy, pandas, scikit-learn, mlflow and requests there, for its 60 MiB budget) plus:
#
# | package | version | why |
# |---|---|---|
# | psutil | 7.2.2 | procfs fallback when the workload's cgroup cannot be read (runtime/sampling.py) |
# | nvidia-ml-py | 13.615.71 | GPU sampling through NVML (adapters/nvml/sampler.py); without a driver it logs once and samples no GPU |
#
# Versions are those the test suite runs with. The package itself is installed with --no-deps:
# its declared dependencies (Airflow, MLflow, scikit-learn, ...) serve the operator and the
# profiler, which never run in this image, and would multiply its size and its attack surface.
# The operator's modules are present but not importable here; the monitor never imports them.
# (Checked by installing exactly this set into a clean Python 3.11 environment and running
# `airflow-adaptive monitor` against a marked process: it sampled and emitted resize signals.)

# The same base in both stages: the virtual environment's python is a link to the base image's
# /usr/local/bin/python.
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/airflow-adaptive

WORKDIR /src
# What `pip install .` needs, and no more (.dockerignore keeps the rest of the tree out anyway).
COPY pyproject.toml README.md ./
COPY airflow_adaptive ./airflow_adaptive

# Binary wheels only for the two dependencies (both publish manylinux wheels for amd64 and
# arm64), so no compiler is needed; pip byte-compiles everything here, because the sidecar's
# root filesystem is read-only and a cold import must not recompile.
RUN /opt/airflow-adaptive/bin/pip install --no-deps --only-binary=psutil,nvidia-ml-py \
        . psutil==7.2.2 nvidia-ml-py==13.615.71


FROM python:3.11.14-slim-bookworm

LABEL org.opencontainers.image.title="airflow-adaptive monitor" \
      org.opencontainers.image.description="The airflow-adaptive monitor sidecar: samples a stage's container and prints resize signals on its log" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=build /opt/airflow-adaptive /opt/airflow-adaptive

ENV PATH=/opt/airflow-adaptive/bin:$PATH
# Resize signals are lines on stdout that the operator follows live (the channel flushes each one
# too); warnings on stderr must not wait in a buffer either.
ENV PYTHONUNBUFFERED=1
# Nothing to write: the root filesystem is read-only in the pod, and the build compiled it all.
ENV PYTHONDONTWRITEBYTECODE=1
# When the pod gives the sidecar the workload's GPUs (NVIDIA_VISIBLE_DEVICES), NVML is all it
# needs from the NVIDIA container runtime: no compute libraries.
ENV NVIDIA_DRIVER_CAPABILITIES=utility

# A numeric non-root user, as the pod's runAsNonRoot requires (the kubelet cannot check a user
# name). The operator runs the sidecar as the workload's own runAsUser when the pod sets one
# (the same UID is what lets it read the workload's /proc entries); 1000:1000 applies otherwise,
# so stage pods that set runAsUser: 1000 (as the project's pod-spec tests do) need no more. No
# /etc/passwd entry is needed: nothing in the monitor looks the user up, and HOME falls back to /.
USER 1000:1000
# The pod mounts a writable emptyDir at /tmp: relative paths (the spool's default) land there.
WORKDIR /tmp

# The pod spec sets `command`, which replaces both of these; they make `docker run IMAGE` the same
# monitor the pod runs.
ENTRYPOINT ["airflow-adaptive"]
CMD ["-v", "monitor", "--channel", "stdout"]

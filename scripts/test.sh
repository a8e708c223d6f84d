#!/usr/bin/env bash
# Set everything up, then run the whole test suite: unit, integration against real services, the
# Kubernetes tests against a real control plane built from source (cached under
# ~/.cache/airflow-adaptive/control-plane; a fresh machine builds it once, about 10 minutes), and
# the real-node tests (kubelet, containerd, runc, CNI; images built without Docker, cached under
# ~/.cache/airflow-adaptive/node). Arguments go to pytest: `bash scripts/test.sh -m kubelet`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
AIRFLOW_ADAPTIVE_K8S_BIN="$(bash tools/control-plane/build.sh | tail -n 1)"
export AIRFLOW_ADAPTIVE_K8S_BIN
AIRFLOW_ADAPTIVE_NODE_IMAGES="$(bash tools/node/build.sh | tail -n 1)"
export AIRFLOW_ADAPTIVE_NODE_IMAGES
# Two pytest-xdist workers by default (AIRFLOW_ADAPTIVE_TEST_WORKERS, or `-n 0` to run serially):
# `--dist loadgroup` with the groups tests/conftest.py gives keeps the real node and the cgroup
# tests in one worker, the control plane's tests in another, each module's servers in one.
exec .venv/bin/python -m pytest -q -n "${AIRFLOW_ADAPTIVE_TEST_WORKERS:-2}" --dist loadgroup "$@"

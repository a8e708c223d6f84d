#!/usr/bin/env bash
# Set everything up, then run the whole test suite: unit, integration against real services, and
# the Kubernetes tests against a real control plane built from source (cached under
# ~/.cache/airflow-adaptive/control-plane; a fresh machine builds it once, about 10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
AIRFLOW_ADAPTIVE_K8S_BIN="$(bash tools/control-plane/build.sh | tail -n 1)"
export AIRFLOW_ADAPTIVE_K8S_BIN
exec .venv/bin/python -m pytest -q "$@"

#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default: `airflow-adaptive demo`
# (Airflow + MLflow from scratch, seed runs, the example pipeline static vs optimistic vs
# adaptive, the retraining DAG), with its report and plot.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p .airflow-adaptive/reports
.venv/bin/airflow-adaptive demo --json .airflow-adaptive/reports/demo.json --plot .airflow-adaptive/reports/demo.png

#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default: the Job Profiler's replay
# of the LANL-CM5 trace against the VPA, Autopilot and user-request baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TRACES="${AIRFLOW_ADAPTIVE_TRACES:-../shared/data/traces}"
mkdir -p .airflow-adaptive/reports
.venv/bin/airflow-adaptive replay --trace "$TRACES/LANL-CM5-1994-4.1-cln.swf.gz" \
    --json .airflow-adaptive/reports/lanl-cm5.json --plot .airflow-adaptive/reports/lanl-cm5.png
echo "report: .airflow-adaptive/reports/lanl-cm5.json, plot: .airflow-adaptive/reports/lanl-cm5.png"

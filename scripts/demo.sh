#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default: the Job Profiler's replay
# of the LANL-CM5 trace against the VPA, Autopilot and user-request baselines, then one stage
# run by the local Resource Manager.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
TRACES="${AIRFLOW_ADAPTIVE_TRACES:-../shared/data/traces}"
mkdir -p .airflow-adaptive/reports
.venv/bin/airflow-adaptive replay --trace "$TRACES/LANL-CM5-1994-4.1-cln.swf.gz" \
    --json .airflow-adaptive/reports/lanl-cm5.json --plot .airflow-adaptive/reports/lanl-cm5.png
echo "report: .airflow-adaptive/reports/lanl-cm5.json, plot: .airflow-adaptive/reports/lanl-cm5.png"

# The runtime on the embedded default: a workload whose memory grows to 512 MiB under a 128 MiB
# starting limit completes under the local Resource Manager because the limit is raised in place.
.venv/bin/airflow-adaptive run --cpu 1 --memory 128Mi --json .airflow-adaptive/reports/run-growth.json -- \
    .venv/bin/python -m airflow_adaptive.examples.workloads grow --to-mib 512 --rate-mib-s 200
echo "run report: .airflow-adaptive/reports/run-growth.json"

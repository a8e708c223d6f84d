"""Benchmark: what the monitor sidecar costs at 1 s sampling with MLflow logging on.

Starts a real ``mlflow server``, a workload in a real cgroup (marked like the operator marks
the workload container) and ``airflow-adaptive monitor`` beside it, logging every sample to the
stage's run through MLflow's REST API. Measures the monitor process from outside: CPU time over
the steady state (after start-up) as a share of one core, and peak resident memory (VmHWM).
Then checks that every sample reached MLflow.

Writes ``benchmarks/results/monitor-overhead.json`` and prints a table.
Run: ``.venv/bin/python benchmarks/monitor_overhead.py [--seconds 60]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
WORKLOAD = [sys.executable, str(REPO / "airflow_adaptive" / "examples" / "workloads.py")]
STARTUP_S = 5.0  # excluded from the steady-state CPU share: interpreter start and imports


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> int:
    from airflow_adaptive.adapters.cgroups import ManagedCgroup
    from airflow_adaptive.adapters.mlflow.local_server import LocalMlflowServer
    from airflow_adaptive.adapters.mlflow.rest import MlflowRestClient

    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        server = LocalMlflowServer(tmp)
        uri = server.start()
        group = ManagedCgroup.create()
        try:
            client = MlflowRestClient(uri)
            experiment = client.create_experiment("monitor-overhead")
            run_id = client.create_run(experiment, tags={})["info"]["run_id"]
            marker = "AIRFLOW_ADAPTIVE_WORKLOAD=bench"
            workload = subprocess.Popen([*WORKLOAD, "steady", "--mib", "200", "--seconds", str(args.seconds)],
                                        preexec_fn=group.join_current_process, env={**os.environ, "AIRFLOW_ADAPTIVE_WORKLOAD": "bench"})
            env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "MLFLOW_TRACKING_URI": uri, "AIRFLOW_ADAPTIVE_RUN_ID": run_id,
                   "AIRFLOW_ADAPTIVE_CPU": "1", "AIRFLOW_ADAPTIVE_MEMORY": "1Gi", "AIRFLOW_ADAPTIVE_INTERVAL": "1",
                   "AIRFLOW_ADAPTIVE_WORKLOAD_ENV": marker, "AIRFLOW_ADAPTIVE_SPOOL": str(tmp / "spool")}
            started = time.monotonic()
            monitor = subprocess.Popen([sys.executable, "-m", "airflow_adaptive.cli.main", "monitor"], env=env,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            steady_from = steady_to = None
            peak_rss = hwm = 0
            while monitor.poll() is None:
                try:
                    now, cpu, st = time.monotonic(), cpu_seconds(monitor.pid), proc_status(monitor.pid)
                except (OSError, IndexError):
                    break
                peak_rss, hwm = max(peak_rss, st.get("VmRSS", 0)), max(hwm, st.get("VmHWM", 0))
                if now - started >= STARTUP_S:
                    steady_from = steady_from or (now, cpu)
                    if workload.poll() is None:
                        steady_to = (now, cpu)
                time.sleep(0.25)
            _, monitor_err = monitor.communicate(timeout=60)
            workload.wait()
            wall = time.monotonic() - started
            steps = len(client.metric_history(run_id, "usage.memory"))
        finally:
            group.remove()
            server.stop()
    share = (steady_to[1] - steady_from[1]) / (steady_to[0] - steady_from[0])
    result = {
        "sampling_interval_s": 1.0,
        "mlflow_logging": True,
        "workload_seconds": args.seconds,
        "monitor_wall_seconds": round(wall, 2),
        "steady_cpu_share_of_one_core": round(share, 5),
        "steady_window_seconds": round(steady_to[0] - steady_from[0], 1),
        "peak_rss_bytes": hwm or peak_rss,
        "usage_memory_points_in_mlflow": steps,
        "monitor_exit_code": monitor.returncode,
        "monitor_stderr_tail": monitor_err[-500:],
        "targets": {"cpu_share": 0.01, "rss_bytes": 60 * 2**20},
    }
    out = REPO / "benchmarks" / "results" / "monitor-overhead.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"{'metric':<36} {'measured':>12} {'target':>10}")
    print(f"{'CPU, share of one core (steady)':<36} {share:>11.2%} {'<= 1%':>10}")
    print(f"{'peak resident memory (VmHWM)':<36} {(hwm or peak_rss) / 2**20:>9.1f} MiB {'<= 60 MiB':>10}")
    print(f"{'usage.memory points in MLflow':<36} {str(steps):>12}")
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

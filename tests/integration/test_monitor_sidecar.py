"""``airflow-adaptive monitor``, the sidecar, run as its own process beside a real workload.

The workload runs in a real cgroup, marked by its environment like the operator marks the
workload container; the monitor finds it through /proc, reads its cgroup through
``/proc/<pid>/root`` and writes resize signals as JSON lines on stdout.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from airflow_adaptive.domain.monitor_protocol import SummaryLine, UsageLine, parse_line
from airflow_adaptive.domain.signals import MonitorStatus, parse_signal_line

pytestmark = pytest.mark.integration
MIB = 2**20
CLI = [sys.executable, "-m", "airflow_adaptive.cli.main"]


def test_sidecar_reads_the_workload_cgroup_emits_signal_lines_and_exits_when_it_ends(managed_cgroup, workload_cmd, tmp_path):
    managed_cgroup.set_memory_limit(1024 * MIB)  # the container's real limit; the monitor only signals
    marker = f"AIRFLOW_ADAPTIVE_WORKLOAD=test-{os.getpid()}"
    workload = subprocess.Popen(workload_cmd("grow", "--to-mib", "320", "--rate-mib-s", "100", "--hold-s", "1.5"),
                                preexec_fn=managed_cgroup.join_current_process, env={**os.environ, marker.split("=")[0]: marker.split("=")[1]},
                                stdout=subprocess.DEVNULL)
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "AIRFLOW_ADAPTIVE_CPU": "1", "AIRFLOW_ADAPTIVE_MEMORY": "128Mi",
           "AIRFLOW_ADAPTIVE_INTERVAL": "0.3", "AIRFLOW_ADAPTIVE_WORKLOAD_ENV": marker}
    monitor = subprocess.run([*CLI, "-v", "monitor", "--container", "base", "--wait", "20"], capture_output=True,
                             text=True, env=env, timeout=90, cwd=tmp_path)
    assert workload.wait(timeout=30) == 0
    assert monitor.returncode == 0, monitor.stderr
    assert f"through cgroup-{managed_cgroup.version}" in monitor.stderr
    signals = [s for s in map(parse_signal_line, monitor.stdout.splitlines()) if s is not None]
    memory = [s for s in signals if s.resource == "memory"]
    assert memory, monitor.stdout + monitor.stderr
    assert memory[0].old == 128 * MIB and memory[0].new > memory[0].old
    assert [s.sequence for s in signals] == list(range(len(signals)))
    assert all(s.container == "base" for s in signals)
    # One writer: its samples and summary are lines beside the signals, for the operator to write.
    lines = [m for m in map(parse_line, monitor.stdout.splitlines()) if m is not None]
    usage = [m for m in lines if isinstance(m, UsageLine)]
    assert [u.seq for u in usage] == list(range(len(usage))) and len(usage) >= 5
    (summary,) = [m for m in lines if isinstance(m, SummaryLine)]
    assert summary.peak["memory"] >= max(u.sample.values["memory"] for u in usage) * 0.99


def test_sidecar_without_a_workload_says_what_the_pod_needs_and_stays_up_until_stopped(tmp_path):
    """A native sidecar that exits is restarted by the kubelet: the monitor says once why it cannot
    monitor (a status line the operator reads) and idles until SIGTERM, then exits 0."""
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0"}
    proc = subprocess.Popen([*CLI, "monitor", "--cpu", "1", "--memory", "1Gi", "--wait", "1",
                             "--workload-env", "AIRFLOW_ADAPTIVE_WORKLOAD=nobody-has-this"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        status = parse_line(proc.stdout.readline())
        assert isinstance(status, MonitorStatus) and status.event == "unavailable"
        assert "shareProcessNamespace" in status.reason
        time.sleep(0.5)
        assert proc.poll() is None, "the monitor must stay up (a native sidecar that exits is restarted)"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    assert "Traceback" not in proc.stderr.read()


def test_a_bad_interval_in_the_environment_is_a_clear_error_not_a_traceback(tmp_path):
    env = {**os.environ, "AIRFLOW_ADAPTIVE_INTERVAL": "soon"}
    for argv in (["monitor", "--cpu", "1", "--memory", "1Gi"], ["replay", "--help"]):
        proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
        assert "Traceback" not in proc.stderr
    assert proc.returncode == 0  # other commands are unaffected
    proc = subprocess.run([*CLI, "monitor", "--cpu", "1", "--memory", "1Gi"], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "expected a number of seconds" in proc.stderr

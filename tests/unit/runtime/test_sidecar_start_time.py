"""The workload's start time, read from procfs (real processes, no mock): the monitor's phases
count from it, not from its own first sample."""

import subprocess
import time

from airflow_adaptive.runtime.sidecar import process_start_time


def test_a_process_start_time_is_read_from_procfs():
    before = time.time()
    child = subprocess.Popen(["sleep", "5"])
    after = time.time()
    try:
        started = process_start_time(child.pid)
    finally:
        child.kill()
        child.wait()
    assert started is not None and before - 0.05 <= started <= after + 0.05  # clock ticks are 10 ms


def test_an_unknown_process_has_no_start_time_and_says_so(caplog):
    assert process_start_time(2**22 + 7) is None  # above pid_max: never a process
    assert "phases count from the first sample" in caplog.text

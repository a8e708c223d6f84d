"""``airflow-adaptive run --json``: the run's disk, network and working-directory storage figures,
from real workloads writing and reading real files (and, as root, sending real frames in a
network namespace of their own that dies with them)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_adaptive.adapters.io_counters import REPORT_KEYS, StageIoMeter, delay_accounting_on, exited
from airflow_adaptive.runtime.sampling import ProcfsSampler

pytestmark = pytest.mark.integration
MIB = 2**20
CLI = [sys.executable, "-m", "airflow_adaptive.cli.main"]
#: Room over the bytes a workload writes: file-system metadata (one 4 KiB block per fsync here),
#: Python's own start-up. Double counting a child's writes would overshoot it by 16 MiB.
SLACK = 8 * MIB

WRITE = """
import os, sys
def write(path, mib):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    chunk = os.urandom(MIB)
    for _ in range(mib):
        os.write(fd, chunk)
    os.fsync(fd)  # on the disk now, not only dirty in the page cache
    os.close(fd)
MIB = 1 << 20
"""


def run_cli(tmp_path, script, *, interval="0.2", timeout=120):
    """Run ``script`` (Python) under the local runner in ``tmp_path``; (process, report)."""
    out = tmp_path / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("AIRFLOW_ADAPTIVE_REQUIRE_CGROUPS", None)
    proc = subprocess.run([*CLI, "-v", "run", "--cpu", "1", "--memory", "256Mi", "--interval", interval, "--json", str(out),
                           "--", sys.executable, "-c", WRITE + textwrap.dedent(script)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def assert_every_key_present_and_each_null_explained(report):
    assert set(REPORT_KEYS) <= set(report) and isinstance(report["unmeasured"], dict)
    nulls = {key for key in REPORT_KEYS if report[key] is None}
    assert set(report["unmeasured"]) == nulls and all(report["unmeasured"][k] for k in nulls)


#: A parent that writes half itself and has a child write the other half: the kernel folds the
#: reaped child's counters into the parent's, which must not count them twice.
CHILD = WRITE + "write('child.bin', 16)\nimport time\ntime.sleep(0.5)\n"  # lives through two samples
PARENT_AND_CHILD = f"import subprocess\nsubprocess.run([sys.executable, '-c', {CHILD!r}], check=True)\nwrite('data.bin', 16)\n"
WRITERS = {"one process": "write('data.bin', 32)\n", "a process and its child": PARENT_AND_CHILD}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_disk_writes_of_the_stage_are_its_totals(tmp_path, cgroups_available, writer):
    proc, report = run_cli(tmp_path, WRITERS[writer])
    assert_every_key_present_and_each_null_explained(report)
    assert 32 * MIB <= report["disk_write_bytes"] <= 32 * MIB + SLACK, report
    assert report["disk_write_ops"] >= 32
    assert report["ephemeral_storage_peak_bytes"] >= 32 * MIB  # the files are still in the working directory
    # The stage shares the runner's network namespace: the host's counters are not the stage's.
    for key in ("network_rx_bytes", "network_tx_bytes"):
        assert report[key] is None and "network namespace" in report["unmeasured"][key]
    if not delay_accounting_on():
        assert report["io_wait_seconds"] is None
        assert "kernel.task_delayacct is off" in report["unmeasured"]["io_wait_seconds"]
    assert all(key not in sample["values"] for sample in report["samples"] for key in REPORT_KEYS)  # totals: the report's


def test_the_samples_carry_the_stages_bandwidth_and_storage(tmp_path, cgroups_available):
    """Per sample: bytes/s since the previous sample, so the rates summed over their intervals
    give back the bytes written; the working directory's size as ``ephemeral_storage``."""
    proc, report = run_cli(tmp_path, """
        import time
        time.sleep(0.6)  # a few samples first: the first rate needs a previous sample
        write('a.bin', 16)
        time.sleep(0.4)
        write('b.bin', 16)
        time.sleep(1.2)  # sampled after the writes, and walked (every 5th sample)
    """)
    samples = report["samples"]
    rated = [(b["time"] - a["time"], b["values"]["disk_write"]) for a, b in zip(samples, samples[1:])
             if "disk_write" in b["values"]]
    assert len(rated) >= len(samples) - 2, samples  # all but the first (and the reaper's own)
    written = sum(dt * rate for dt, rate in rated)
    assert 32 * MIB <= written <= 32 * MIB + SLACK, (written, report["disk_write_bytes"])
    assert max(rate for _, rate in rated) > 16 * MIB  # 16 MiB within one 0.2 s interval, at least
    assert max(s["values"].get("ephemeral_storage", 0) for s in samples) >= 32 * MIB
    assert not any("network_rx" in s["values"] for s in samples)  # the host's namespace: not the stage's


def test_a_read_that_misses_the_page_cache_is_counted(tmp_path, cgroups_available):
    proc, report = run_cli(tmp_path, """
        write('data.bin', 32)
        fd = os.open('data.bin', os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # written back by the fsync: now dropped
        while os.read(fd, MIB):
            pass
    """)
    assert 32 * MIB <= report["disk_read_bytes"] <= 32 * MIB + SLACK, report
    assert report["disk_read_ops"] >= 32


def test_storage_peak_counts_a_file_deleted_before_the_end(tmp_path, cgroups_available):
    """Walks every 5th sample (1 s at 0.2 s): a file kept 2.5 s is seen; the last walk is not."""
    proc, report = run_cli(tmp_path, """
        import time
        write('scratch.bin', 32)
        time.sleep(2.5)
        os.unlink('scratch.bin')
    """)
    assert report["ephemeral_storage_peak_bytes"] >= 32 * MIB, report
    assert not (tmp_path / "scratch.bin").exists()


def test_a_stage_in_its_own_network_namespace_has_its_traffic_counted(tmp_path, cgroups_available):
    """As root: ``unshare -n`` gives the stage a namespace (gone when it exits) with a veth pair
    of its own; 200 raw 1000-byte frames out of one end arrive at the other."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        pytest.skip("needs root, unshare and ip to give the stage a network namespace")
    frames = """
        import socket, subprocess, time
        for cmd in ('ip link add va type veth peer name vb', 'ip link set va up', 'ip link set vb up'):
            subprocess.run(cmd.split(), check=True)
        for _ in range(100):  # frames sent before the link is up are dropped uncounted
            if 'state UP' in subprocess.run('ip -o link show va'.split(), capture_output=True, text=True).stdout:
                break
            time.sleep(0.02)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(('va', 0))
        frame = b'\\xff' * 6 + b'\\x02\\x00\\x00\\x00\\x00\\x01' + b'\\x88\\xb5' + b'x' * 986  # local experimental EtherType
        for _ in range(200):
            s.send(frame)
        time.sleep(0.8)  # sampled while the namespace lives: its counters go with it
    """
    out = tmp_path / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0"}
    proc = subprocess.run([*CLI, "run", "--cpu", "1", "--memory", "256Mi", "--interval", "0.2", "--json", str(out), "--",
                           "unshare", "-n", sys.executable, "-c", textwrap.dedent(frames)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert 200 * 1000 <= report["network_tx_bytes"] <= 200 * 1000 + 64 * 1024, report
    assert 200 * 1000 <= report["network_rx_bytes"] <= 200 * 1000 + 64 * 1024, report
    assert "network_tx_bytes" not in report["unmeasured"]


def test_the_meter_on_a_process_tree_without_cgroups(tmp_path):
    """Monitor-only mode's path (psutil's process tree), driven directly: the exit code comes
    through ``reap`` as ``Popen.wait`` gives it, and a reaped child is counted once."""
    script = WRITE + PARENT_AND_CHILD + "import time\ntime.sleep(0.3)\nsys.exit(3)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    meter = StageIoMeter(proc.pid, ProcfsSampler(proc.pid).pids, workdir=str(tmp_path))
    try:
        while not exited(proc):
            meter.sample()
            time.sleep(0.05)
    finally:
        code = meter.reap(proc)
    assert code == 3 == proc.returncode
    report = meter.report().to_dict()
    assert 32 * MIB <= report["disk_write_bytes"] <= 32 * MIB + SLACK, report
    assert report["ephemeral_storage_peak_bytes"] >= 32 * MIB


def test_a_report_built_without_the_meter_still_has_every_key():
    from airflow_adaptive.runtime.local_runner import RunReport

    report = RunReport(exit_code=0, oom_killed=False, resizes=[], peak_memory_bytes=0.0, reserved_memory_byte_seconds=0.0,
                       reserved_cpu_core_seconds=0.0, samples=[], mode="monitor-only", duration_seconds=0.0,
                       final_allocation={}).to_dict()
    assert_every_key_present_and_each_null_explained(report)
    assert "io" not in report

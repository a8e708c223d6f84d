"""The cgroup adapter against the real kernel: limits bite, usage counts what the OOM killer
counts, resizes apply to a running process, the kernel's warnings arrive.

Runs on cgroup v1 on this machine type (v2 has no memory/cpu controller here); the same tests
exercise v2 where the runner's cgroup offers them.
"""

import os
import select
import subprocess
import time

import psutil
import pytest

from airflow_adaptive.adapters.cgroups import MemoryPressureWatch

MIB = 2**20
pytestmark = pytest.mark.integration


@pytest.fixture
def start(workload_cmd):
    def _start(group, *args):
        return subprocess.Popen(workload_cmd(*args), preexec_fn=group.join_current_process,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return _start


def test_memory_limit_oom_kills_and_the_counter_says_so(managed_cgroup, start):
    managed_cgroup.set_memory_limit(96 * MIB)
    proc = start(managed_cgroup, "grow", "--to-mib", "300", "--rate-mib-s", "1000")
    assert proc.wait(timeout=60) == -9
    assert managed_cgroup.reader.oom_kills() == 1
    assert managed_cgroup.reader.memory_peak_bytes() <= 96 * MIB


def test_memory_usage_counts_tmpfs_that_rss_misses(managed_cgroup, start):
    proc = start(managed_cgroup, "tmpfs", "--mib", "64", "--hold-s", "3")
    deadline = time.monotonic() + 30
    usage = rss = 0
    while time.monotonic() < deadline:
        usage = managed_cgroup.reader.memory_bytes()
        rss = psutil.Process(proc.pid).memory_info().rss
        if usage >= 64 * MIB:
            break
        time.sleep(0.1)
    assert usage >= 64 * MIB
    assert rss < 40 * MIB  # the process itself holds little: the tmpfs pages are the cgroup's
    assert proc.wait(timeout=30) == 0


def test_cpu_quota_caps_cores_in_use(managed_cgroup, start):
    managed_cgroup.set_cpu_limit(0.5)
    before = managed_cgroup.reader.cpu_seconds()
    t0 = time.monotonic()
    proc = start(managed_cgroup, "spin", "--seconds", "2", "--processes", "2")
    assert proc.wait(timeout=60) == 0
    wall = time.monotonic() - t0
    used = managed_cgroup.reader.cpu_seconds() - before
    # Two busy processes would use ~4 core-seconds unthrottled; half a core allows ~1.
    assert used <= 0.5 * wall + 0.3
    assert used >= 0.5


def test_paused_at_the_limit_then_resumed_by_a_raise(managed_cgroup, start):
    if managed_cgroup.version != "v1":
        pytest.skip("oom_kill_disable pausing is cgroup v1 behaviour; v2 uses memory.high")
    managed_cgroup.set_memory_limit(96 * MIB)
    assert managed_cgroup.set_oom_kill_disable(True)
    proc = start(managed_cgroup, "grow", "--to-mib", "160", "--rate-mib-s", "1000", "--hold-s", "0")
    deadline = time.monotonic() + 30
    while not managed_cgroup.reader.under_oom():
        assert time.monotonic() < deadline, "the workload never reached its limit"
        assert proc.poll() is None, "the workload died instead of pausing"
        time.sleep(0.05)
    managed_cgroup.set_memory_limit(400 * MIB)  # in place, while it runs
    assert proc.wait(timeout=30) == 0
    assert managed_cgroup.reader.oom_kills() == 0
    assert managed_cgroup.memory_limit() == 400 * MIB


def test_decrease_below_unreclaimable_usage_is_refused(managed_cgroup, start):
    managed_cgroup.set_memory_limit(400 * MIB)
    proc = start(managed_cgroup, "steady", "--mib", "150", "--seconds", "5")
    try:
        deadline = time.monotonic() + 30
        while managed_cgroup.reader.memory_bytes() < 150 * MIB:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if managed_cgroup.version == "v1":
            with pytest.raises(OSError):  # EBUSY: anonymous memory, no swap to push it to
                managed_cgroup.set_memory_limit(64 * MIB)
            assert managed_cgroup.memory_limit() == 400 * MIB
    finally:
        proc.kill()
        proc.wait()


def test_kernel_warns_before_the_limit(managed_cgroup, start):
    managed_cgroup.set_memory_limit(200 * MIB)
    managed_cgroup.set_oom_kill_disable(True)
    watch = MemoryPressureWatch(managed_cgroup)
    watch.arm(200 * MIB)
    poller = select.poll()
    fds = watch.register(poller)
    proc = start(managed_cgroup, "grow", "--to-mib", "190", "--rate-mib-s", "500", "--hold-s", "1")
    try:
        events = poller.poll(20_000)
        assert events, "no kernel notification within 20 s"
        assert {fd for fd, _ in events} <= set(fds)
        kinds = {watch.drain(fd) for fd, _ in events}
        assert kinds & {"threshold", "events", "oom"}
        # It fired near the threshold (90% of the limit), not at the start.
        assert managed_cgroup.reader.memory_bytes() >= 0.8 * 200 * MIB
    finally:
        watch.close()
        managed_cgroup.set_memory_limit(400 * MIB)
        proc.wait(timeout=30)


def test_remove_kills_leftover_tasks_and_deletes_every_directory(start):
    from airflow_adaptive.adapters.cgroups import CgroupUnavailable, ManagedCgroup

    try:
        group = ManagedCgroup.create()
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    proc = start(group, "steady", "--mib", "10", "--seconds", "60")
    time.sleep(0.3)
    group.remove()
    assert proc.wait(timeout=10) == -9
    assert not any(os.path.exists(d) for d in group.paths.dirs.values())

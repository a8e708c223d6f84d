"""Disk bandwidth limits on real cgroups: a limit is read back and bites, a raise in place speeds
a running reader up, a partition is refused and resolved to its disk, teardown removes it all.

The reader and the writer use ``O_DIRECT``: v1 throttling sees only bios the stage's tasks
submit, so page-cache hits and buffered writes (written back later by the kernel's flusher) pass
it. The last test measures that a buffered write indeed does.
"""

import os
import shutil
import struct
import subprocess
import sys
import time

import pytest

from airflow_adaptive.adapters.cgroups import BlockDevice, NoBlockDevice, block_device_of
from airflow_adaptive.adapters.cgroups.blockdev import whole_disk

pytestmark = pytest.mark.integration
MIB = 2**20
CHUNK = 256 * 1024

# Reads (or with "write", writes) the file with O_DIRECT in CHUNK pieces; one line per chunk:
# "<seconds since the first I/O> <bytes so far>", then "done <seconds> <bytes>".
IO_STAGE = r"""
import mmap, os, sys, time
mode, path, chunk, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
flags = os.O_RDONLY if mode == "read" else os.O_WRONLY | os.O_CREAT
fd = os.open(path, flags | os.O_DIRECT)
buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
buf.write(b"x" * chunk)
done, t0 = 0, time.monotonic()
while done < size:
    n = os.preadv(fd, [buf], done) if mode == "read" else os.pwritev(fd, [buf], done)
    if n <= 0:
        break
    done += n
    print(f"{time.monotonic() - t0:.4f} {done}", flush=True)
print(f"done {time.monotonic() - t0:.4f} {done}", flush=True)
"""


@pytest.fixture
def limited(managed_cgroup):
    """The test's cgroup and the disk under the test's files; skips where there is no blkio."""
    why = managed_cgroup.disk_limits_unavailable()
    if why:
        pytest.skip(f"no disk limits here: {why}")
    return managed_cgroup


@pytest.fixture
def dataset(tmp_path):
    def make(mib: int):
        path = tmp_path / f"data-{mib}.bin"
        block = os.urandom(MIB)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        return path
    return make


def start_stage(group, mode: str, path, size: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", IO_STAGE, mode, str(path), str(CHUNK), str(size)],
                            preexec_fn=group.join_current_process, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[float, int]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    _, seconds, done = out.strip().splitlines()[-1].split()
    return float(seconds), int(done)


def test_a_read_limit_is_read_back_and_enforced(limited, dataset, tmp_path):
    disk = block_device_of(str(tmp_path))
    assert limited.set_disk_limit(disk, "read", 4 * MIB) == 4 * MIB
    assert limited.disk_limit(disk, "read") == 4 * MIB
    assert limited.disk_limit(disk, "write") is None
    seconds, done = finish(start_stage(limited, "read", dataset(8), 8 * MIB))
    assert done == 8 * MIB
    # 8 MiB at 4 MiB/s: 2 s, less the throttle's first slice (100 ms of budget at once).
    print(f"8 MiB at 4 MiB/s: {seconds:.2f} s")
    assert 1.6 <= seconds <= 3.0, seconds


def test_a_write_limit_binds_direct_writes(limited, tmp_path):
    disk = block_device_of(str(tmp_path))
    assert limited.set_disk_limit(disk, "write", 4 * MIB) == 4 * MIB
    seconds, done = finish(start_stage(limited, "write", tmp_path / "out.bin", 6 * MIB))
    assert done == 6 * MIB
    assert 1.1 <= seconds <= 2.5, seconds  # 6 MiB at 4 MiB/s: 1.5 s


def test_raising_the_limit_in_place_speeds_the_running_reader_up(limited, dataset, tmp_path):
    disk = block_device_of(str(tmp_path))
    path = dataset(16)
    limited.set_disk_limit(disk, "read", 2 * MIB)
    proc = start_stage(limited, "read", path, 16 * MIB)
    progress = []
    try:
        while True:  # about 1 s at 2 MiB/s
            line = proc.stdout.readline()
            assert line and not line.startswith("done"), "the reader finished before the raise"
            seconds, done = map(float, line.split())
            progress.append((seconds, done))
            if done >= 2 * MIB:
                break
        before = (progress[-1][1] - progress[0][1]) / (progress[-1][0] - progress[0][0])
        assert limited.set_disk_limit(disk, "read", 64 * MIB) == 64 * MIB  # while it reads
        raised_at, raised_done = progress[-1]
        seconds, done = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    after = (done - raised_done) / (seconds - raised_at)
    assert done == 16 * MIB
    assert 1.2 * MIB <= before <= 3 * MIB, before / MIB
    # The other 14 MiB would take 7 s at the old limit; at 64 MiB/s a quarter of a second.
    assert seconds - raised_at < 2.0
    print(f"before {before / MIB:.2f} MiB/s, after {after / MIB:.1f} MiB/s, rest {seconds - raised_at:.2f} s")
    assert after >= 5 * before, (after / MIB, before / MIB)


def test_teardown_removes_the_rules_and_the_cgroup(dataset, tmp_path):
    from airflow_adaptive.adapters.cgroups import CgroupUnavailable, ManagedCgroup

    try:
        group = ManagedCgroup.create()
    except CgroupUnavailable as exc:
        pytest.skip(str(exc))
    try:
        if group.disk_limits_unavailable():
            pytest.skip(group.disk_limits_unavailable())
        root = os.path.dirname(group.paths.dir("blkio")) if group.version == "v1" else None
        before = _root_rules(root)
        disk = block_device_of(str(tmp_path))
        group.set_disk_limit(disk, "read", 1 * MIB)
        group.set_disk_limit(disk, "write", 1 * MIB)
        proc = start_stage(group, "read", dataset(4), 4 * MIB)  # still throttled when the cgroup goes
        time.sleep(0.3)
    finally:
        group.remove()
    assert proc.wait(timeout=10) == -9
    assert not any(os.path.exists(d) for d in group.paths.dirs.values())
    assert _root_rules(root) == before  # the parent's rules (none here) are untouched


def _root_rules(blkio_parent):
    if blkio_parent is None:
        return None
    return {name: open(os.path.join(blkio_parent, name)).read()
            for name in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device")}


def test_a_tmpfs_directory_has_no_block_device_and_says_so():
    if os.path.ismount("/dev/shm") is False or os.major(os.stat("/dev/shm").st_dev) != 0:
        pytest.skip("/dev/shm is not a tmpfs here")
    with pytest.raises(NoBlockDevice, match="tmpfs"):
        block_device_of("/dev/shm")


@pytest.fixture
def partitioned_loop_disk(tmp_path):
    """A 16 MiB loop device with one partition (added with partx: this kernel has no partition
    table parsers built in); detached and deleted afterwards, whatever happens."""
    if os.geteuid() != 0 or not (shutil.which("losetup") and shutil.which("partx")):
        pytest.skip("needs root, losetup and partx")
    image = tmp_path / "disk.img"
    size = 16 * MIB
    with open(image, "wb") as f:
        f.truncate(size)
        mbr = bytearray(512)
        mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x83, b"\0\0\0", 2048, size // 512 - 2048)
        mbr[510:512] = b"\x55\xaa"
        f.write(mbr)
    made = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no loop device: {made.stderr.strip()}")
    loop = made.stdout.strip()
    try:
        subprocess.run(["partx", "--add", loop], check=True, capture_output=True)
        part = f"/sys/class/block/{os.path.basename(loop)}p1/dev"
        deadline = time.monotonic() + 5
        while not os.path.exists(part):
            assert time.monotonic() < deadline, f"{part} did not appear"
            time.sleep(0.05)
        yield loop, tuple(map(int, open(part).read().split(":")))
    finally:
        subprocess.run(["partx", "--delete", loop], capture_output=True)
        subprocess.run(["losetup", "--detach", loop], capture_output=True)


def test_the_kernel_refuses_a_partition_and_the_limit_goes_on_its_disk(limited, partitioned_loop_disk):
    loop, (major, minor) = partitioned_loop_disk
    partition = BlockDevice(major, minor, "partition")
    with pytest.raises(OSError) as refused:
        limited.set_disk_limit(partition, "read", MIB)
    assert refused.value.errno == 19  # ENODEV
    disk = whole_disk(major, minor)
    assert disk.name == os.path.basename(loop) and disk.partition == f"{disk.name}p1"
    assert limited.set_disk_limit(disk, "read", MIB) == MIB
    limited.clear_disk_limits()
    assert limited.disk_limits("read") == {}


def test_on_v1_a_buffered_write_passes_the_write_limit(limited, tmp_path):
    """What cannot be enforced on v1: the flusher writes the dirty pages back, outside the cgroup."""
    if limited.version != "v1":
        pytest.skip("v2 charges writeback to the page's owner: buffered writes are throttled there")
    disk = block_device_of(str(tmp_path))
    limited.set_disk_limit(disk, "write", 1 * MIB)
    script = ("import os, time; t0 = time.monotonic(); f = open(os.environ['OUT'], 'wb')\n"
              "for _ in range(8): f.write(b'x' * 2**20)\n"
              "f.close(); print(time.monotonic() - t0)")
    proc = subprocess.run([sys.executable, "-c", script], preexec_fn=limited.join_current_process, capture_output=True,
                          text=True, timeout=30, env={**os.environ, "OUT": str(tmp_path / "buffered.bin")})
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout) < 2.0  # 8 MiB at 1 MiB/s would take 8 s


# -- the local runner: `airflow-adaptive run --disk-read-limit` ------------------------------

def run_cli(cwd, *args, timeout=120):
    out = cwd / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("AIRFLOW_ADAPTIVE_REQUIRE_CGROUPS", None)
    proc = subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", "-v", "run", "--json", str(out), *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    import json

    return proc, json.loads(out.read_text()) if out.exists() else None


def test_the_runner_raises_the_read_limit_of_an_io_bound_stage_in_place(limited, dataset, tmp_path):
    path = dataset(24)
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "256Mi", "--interval", "0.5", "--disk-read-limit", "2Mi",
                           "--max-disk-read", "16Mi", "--", sys.executable, "-c", IO_STAGE, "read", str(path), str(CHUNK),
                           str(24 * MIB))
    assert proc.returncode == 0, proc.stderr
    assert report["mode"] == "cgroup-v1" or report["mode"] == "cgroup-v2"
    assert report["disk_limits"]["disk_read"] == 2 * MIB and report["disk_limits"]["device"]
    disk = [r for r in report["resizes"] if r["resource"] == "disk_read"]
    steps = [(r["old"] / MIB, r["new"] / MIB) for r in disk]
    assert steps[0] == (2, 4) and all(new == 2 * old or new == 16 for old, new in steps), steps
    assert all("I/O-bound at the disk read limit" in r["reason"] for r in disk)
    assert report["final_allocation"]["disk_read"] == steps[-1][1] * MIB <= 16 * MIB
    assert report["disk_read_bytes"] >= 24 * MIB
    # 24 MiB at the starting 2 MiB/s would take 12 s; raised every 4 samples (2 s): about 5.5 s.
    assert float(proc.stdout.strip().splitlines()[-1].split()[1]) < 8.0
    assert not [r for r in report["resizes"] if r["resource"] == "cpu"]  # not CPU-bound


def test_a_working_directory_on_tmpfs_runs_without_disk_limits_and_says_so(cgroups_available, tmp_path):
    import tempfile

    if not os.path.isdir("/dev/shm") or os.major(os.stat("/dev/shm").st_dev) != 0:
        pytest.skip("/dev/shm is not a tmpfs here")
    from pathlib import Path

    with tempfile.TemporaryDirectory(dir="/dev/shm") as shm:
        proc, report = run_cli(Path(shm), "--cpu", "1", "--memory", "64Mi", "--disk-read-limit", "8Mi", "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert "tmpfs" in report["disk_limits"]["not_enforced"]
    assert "disk_read" not in report["final_allocation"]
    assert proc.stderr.count("cannot set the disk bandwidth limits") == 1

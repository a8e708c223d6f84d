"""Benchmark: a disk bandwidth limit raised in place for an I/O-bound stage, and a CPU-bound loader
that gets CPU instead.

Runs real stages through ``airflow-adaptive run`` on real cgroups (v1 blkio here):

- ``io-bound, raise``: a stage reads a generated 96 MiB dataset (buffered 1 MiB reads after
  ``posix_fadvise(DONTNEED)``, so every byte comes from the disk through readahead, which the
  throttle sees) under ``--disk-read-limit 4Mi --max-disk-read 64Mi``;
- ``io-bound, --no-resize``: the same at a fixed 4 MiB/s;
- ``cpu-bound loader``: the same reads with 40 rounds of SHA-256 per MiB under ``--cpu 0.25``
  and a 32 MiB/s read limit it never reaches: the runner raises CPU and leaves the disk alone.

Writes ``benchmarks/results/io-throttle.json`` and prints the cases and the resize timeline.
Host state: the runner removes its cgroups (and so their throttle rules); the dataset's
directory is deleted and its pages dropped from the page cache; after each case the script
checks that the runner left no cgroup in the blkio and cpu hierarchies. About 50 s here.
Run: ``.venv/bin/python benchmarks/io_throttle.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from airflow_adaptive.adapters.cgroups import NoBlockDevice, block_device_of  # noqa: E402

MIB = 2**20
DATASET_MIB = 96
BLKIO = "/sys/fs/cgroup/blkio"
CPU = "/sys/fs/cgroup/cpu"

# The stage: drop the file's cached pages, read it in 1 MiB pieces (``rounds`` SHA-256 passes over
# each: a decompress/parse stand-in), print "done <seconds> <bytes>".
STAGE = r"""
import hashlib, os, sys, time
path, rounds = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
done, t0 = 0, time.monotonic()
while block := os.read(fd, 2**20):
    for _ in range(rounds):
        hashlib.sha256(block).digest()
    done += len(block)
print(f"done {time.monotonic() - t0:.3f} {done}", flush=True)
"""

CASES = {
    "io-bound, raise": (["--cpu", "1", "--disk-read-limit", "4Mi", "--max-disk-read", "64Mi"], 0),
    "io-bound, --no-resize": (["--cpu", "1", "--disk-read-limit", "4Mi", "--no-resize"], 0),
    "cpu-bound loader": (["--cpu", "0.25", "--max-cpu", "1", "--disk-read-limit", "32Mi", "--max-disk-read", "64Mi"], 40),
}


def workdir() -> tempfile.TemporaryDirectory:
    """A directory on a real disk (the limit needs one): the system's temp dir, else under the repo."""
    for base in (None, str(REPO)):
        tmp = tempfile.TemporaryDirectory(prefix="io-throttle-", dir=base)
        try:
            block_device_of(tmp.name)
            return tmp
        except NoBlockDevice:
            tmp.cleanup()
    raise SystemExit("no directory on a block device to put the dataset on")


def make_dataset(path: Path) -> None:
    block = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(DATASET_MIB):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run_case(cwd: Path, dataset: Path, flags: list[str], rounds: int) -> dict:
    out = cwd / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "airflow_adaptive.cli.main", "run", "--json", str(out), "--memory", "512Mi",
                             "--interval", "1", *flags, "--", sys.executable, "-c", STAGE, str(dataset), str(rounds)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    try:
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.terminate()  # the runner passes it on to the stage and removes its cgroup
            proc.communicate(timeout=30)
    wall = time.perf_counter() - t0
    left = leftover_cgroups(proc.pid)
    assert not left, f"the runner left cgroups behind: {left}"
    report = json.loads(out.read_text())
    out.unlink()
    samples = report.pop("samples")
    start = samples[0]["time"] if samples else 0.0
    last = stdout.strip().splitlines()[-1].split() if stdout.strip() else []
    return {
        "flags": flags, "sha256_rounds_per_mib": rounds, "exit_code": report["exit_code"], "mode": report["mode"],
        "wall_seconds": round(wall, 2), "stage_seconds": float(last[1]) if last[:1] == ["done"] else None,
        "bytes_read": int(last[2]) if last[:1] == ["done"] else None, "disk_read_bytes": report["disk_read_bytes"],
        "disk_limits": report["disk_limits"], "final_allocation": report["final_allocation"],
        "resizes": [{"time": round(r["time"] - start, 2), "resource": r["resource"], "old": r["old"], "new": r["new"],
                     "reason": r["reason"]} for r in report["resizes"]],
        "disk_read_per_sample_mib_s": [round(s["values"].get("disk_read", 0) / MIB, 2) for s in samples],
        "cpu_per_sample": [round(s["values"].get("cpu", 0), 2) for s in samples],
        "runner_stderr_tail": stderr[-400:],
    }


def leftover_cgroups(runner_pid: int) -> list[str]:
    """The cgroups a runner (named ``airflow-adaptive-<its pid>-<hex>``) left in the v1 blkio and cpu
    hierarchies (other users' cgroups on this machine are not ours to judge)."""
    prefix = f"airflow-adaptive-{runner_pid}-"
    return sorted(os.path.join(root, d) for root in (BLKIO, CPU) if os.path.isdir(root)
                  for d in os.listdir(root) if d.startswith(prefix))


def fmt(resource: str, value: float) -> str:
    return f"{value / MIB:g} MiB/s" if resource.startswith("disk") else f"{value:g} cores"


def main() -> int:
    results: dict = {}
    with workdir() as tmp:
        cwd = Path(tmp)
        dataset = cwd / "dataset.bin"
        make_dataset(dataset)
        device = block_device_of(str(dataset)).describe()
        try:
            for name, (flags, rounds) in CASES.items():
                drop_cache(dataset)
                results[name] = run_case(cwd, dataset, flags, rounds)
        finally:
            drop_cache(dataset)
    out = REPO / "benchmarks" / "results" / "io-throttle.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset_mib": DATASET_MIB, "device": device, "cases": results}, indent=1))

    print(f"dataset {DATASET_MIB} MiB on {device}")
    print(f"{'case':<24} {'exit':>4} {'stage s':>8} {'wall s':>7} {'read MiB':>8} {'disk read limit':>18} {'cpu':>12} {'resizes':>7}")
    for name, r in results.items():
        disk = f"{r['disk_limits'].get('disk_read', 0) / MIB:g}→{r['final_allocation'].get('disk_read', 0) / MIB:g} MiB/s"
        cpu_start = float(r["flags"][r["flags"].index("--cpu") + 1])
        cpu = f"{cpu_start:g}→{r['final_allocation']['cpu']:g}"
        print(f"{name:<24} {r['exit_code']:>4} {r['stage_seconds']:>8.2f} {r['wall_seconds']:>7.2f} "
              f"{(r['bytes_read'] or 0) / MIB:>8.0f} {disk:>18} {cpu:>12} {len(r['resizes']):>7}")
    for name, r in results.items():
        if r["resizes"]:
            print(f"\n{name}: resize timeline (seconds after the first sample)")
            for z in r["resizes"]:
                print(f"  {z['time']:>6.2f} s  {z['resource']:<10} {fmt(z['resource'], z['old']):>12} -> "
                      f"{fmt(z['resource'], z['new']):<12} {z['reason'][:110]}")
    print(f"\nwrote {out.relative_to(REPO)}; every runner's cgroups (and so its throttle rules) were removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())

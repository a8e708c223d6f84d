"""Real workloads for runtime tests and benchmarks: they allocate, write and burn for real.

    python -m airflow_adaptive.examples.workloads grow --to-mib 600 --rate-mib-s 200 [--hold-s 1] [--scratch-mib 64]
    python -m airflow_adaptive.examples.workloads tmpfs --mib 64 --dir /dev/shm [--hold-s 2]
    python -m airflow_adaptive.examples.workloads spin --seconds 2 [--processes 2]
    python -m airflow_adaptive.examples.workloads steady --mib 100 --seconds 3 [--spike-mib 300 --spike-at 1.5]
    python -m airflow_adaptive.examples.workloads phases --plan 40:4,240:4,100:3
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time

MIB = 2**20


def touch(n_mib: int) -> bytearray:
    block = bytearray(n_mib * MIB)
    for i in range(0, len(block), 4096):  # fault every page in: the cgroup charges touched pages
        block[i] = 1
    return block


def scratch(n_mib: int) -> None:
    """``n_mib`` MiB written and fsync'd to a file in the temporary directory (``TMPDIR``), left
    there: what a stage spills to its scratch space (on Kubernetes, its ephemeral storage)."""
    import tempfile

    fd, _ = tempfile.mkstemp(prefix="spill-")
    chunk = os.urandom(MIB)
    for _ in range(n_mib):
        os.write(fd, chunk)
    os.fsync(fd)
    os.close(fd)


def grow(args) -> None:
    if args.scratch_mib:
        scratch(args.scratch_mib)
    held, step = [], 16
    t0 = time.monotonic()
    while len(held) * step < args.to_mib:
        held.append(touch(step))
        target = len(held) * step / args.rate_mib_s
        time.sleep(max(0.0, target - (time.monotonic() - t0)))
    time.sleep(args.hold_s)
    print(f"grew to {len(held) * step} MiB", flush=True)


def tmpfs(args) -> None:
    path = os.path.join(args.dir, f"aa-workload-{os.getpid()}")
    try:
        with open(path, "wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MIB))
        time.sleep(args.hold_s)
    finally:
        os.unlink(path)


def _burn(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def spin(args) -> None:
    procs = [multiprocessing.Process(target=_burn, args=(args.seconds,)) for _ in range(args.processes - 1)]
    for p in procs:
        p.start()
    _burn(args.seconds)
    for p in procs:
        p.join()


def steady(args) -> None:
    base = touch(args.mib)
    t0 = time.monotonic()
    spiked = False
    while time.monotonic() - t0 < args.seconds:
        if args.spike_mib and not spiked and time.monotonic() - t0 >= args.spike_at:
            spike = touch(args.spike_mib)
            time.sleep(args.spike_s)
            del spike
            spiked = True
        time.sleep(0.05)
    del base


def phases(args) -> None:
    """Hold MiB for seconds, phase after phase, each reached at once (a dataset loaded, a model
    built): what a stage that loads, trains and evaluates in one process does to its memory."""
    t0 = time.monotonic()
    for i, step in enumerate(args.plan.split(",")):
        mib, seconds = (float(x) for x in step.split(":"))
        held = touch(int(mib))
        print(f"phase {i}: {mib:g} MiB at {time.monotonic() - t0:.2f} s", flush=True)
        time.sleep(seconds)
        del held


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("grow")
    p.add_argument("--to-mib", type=int, required=True)
    p.add_argument("--rate-mib-s", type=float, default=200.0)
    p.add_argument("--hold-s", type=float, default=0.5)
    p.add_argument("--scratch-mib", type=int, default=0, help="first write this much to a file in TMPDIR, and keep it")
    p = sub.add_parser("tmpfs")
    p.add_argument("--mib", type=int, required=True)
    p.add_argument("--dir", default="/dev/shm")
    p.add_argument("--hold-s", type=float, default=2.0)
    p = sub.add_parser("spin")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--processes", type=int, default=1)
    p = sub.add_parser("steady")
    p.add_argument("--mib", type=int, default=50)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--spike-mib", type=int, default=0)
    p.add_argument("--spike-at", type=float, default=1.0)
    p.add_argument("--spike-s", type=float, default=0.3)
    p = sub.add_parser("phases")
    p.add_argument("--plan", required=True, help="MiB:seconds per phase, comma-separated")
    args = parser.parse_args()
    {"grow": grow, "tmpfs": tmpfs, "spin": spin, "steady": steady, "phases": phases}[args.kind](args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()

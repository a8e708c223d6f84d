"""Samplers of the workload's usage, composed into one ``UsageSample`` per tick.

| source | cpu | memory | gpu, gpu_memory | blind spots |
|---|---|---|---|---|
| cgroup (v1 or v2) | CPU time delta / wall delta | the cgroup's charge (what the OOM killer counts) | - | none for cpu/memory |
| procfs (psutil) | CPU time delta of the process tree | sum of RSS of the process tree | - | page cache, tmpfs, shared pages double-counted; processes that left the tree |
| NVML | - | - | per-process (or per-device) use | see ``adapters/nvml`` |

Every sampler measures the workload only: the cgroup is the workload's own, the process tree
starts at the workload's root process, and NVML is filtered to the workload's PIDs or devices.
A sampler that fails leaves its resources out of the sample (absent, never 0) and says so once
per kind of failure.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

from airflow_adaptive.adapters.cgroups.reader import CgroupReader
from airflow_adaptive.domain.observation import UsageSample

log = logging.getLogger(__name__)


class Sampler(Protocol):
    source: str

    def read(self, now: float) -> dict[str, float]: ...

    def pids(self) -> list[int]: ...


#: A CPU rate over less wall time than this is not taken (the baseline is kept): the sampler's
#: first reading comes milliseconds after its creation's, and a rate over a few milliseconds read
#: 0.4 to 3 cores for a stage held at 0.25 (scheduler ticks), enough to start the CPU rule's streak.
MIN_RATE_INTERVAL_S = 0.1


class _CpuRate:
    """Cores in use from a cumulative CPU-seconds counter: delta CPU time / delta wall time."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def update(self, now: float, cpu_seconds: float) -> float | None:
        last = self._last
        if last is not None and 0 < now - last[0] < MIN_RATE_INTERVAL_S:
            return None  # too short to be a rate: measure the next one from the same baseline
        self._last = (now, cpu_seconds)
        if last is None or now <= last[0]:
            return None
        return max(0.0, (cpu_seconds - last[1]) / (now - last[0]))


class CgroupSampler:
    def __init__(self, reader: CgroupReader) -> None:
        self.reader = reader
        self.source = f"cgroup-{reader.version}"
        self._cpu = _CpuRate()
        self._cpu.update(time.time(), reader.cpu_seconds())

    def read(self, now: float) -> dict[str, float]:
        out = {"memory": self.reader.memory_bytes()}
        cores = self._cpu.update(now, self.reader.cpu_seconds())
        if cores is not None:
            out["cpu"] = cores
        return out

    def pids(self) -> list[int]:
        return self.reader.pids()


class ProcfsSampler:
    """Fallback without cgroup access: the workload's process tree through psutil.

    Blind to page cache and tmpfs (which a cgroup limit counts) and double-counts shared pages,
    so a workload can be OOM-killed by its container while this reads well under the limit.
    """

    source = "procfs"

    def __init__(self, root_pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(root_pid)
        self._cpu = _CpuRate()
        self._gone_cpu = 0.0  # CPU time of children that exited, so the counter never drops
        self._seen: dict[int, float] = {}

    def _tree(self) -> list:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except self._psutil.NoSuchProcess:
            return []

    def read(self, now: float) -> dict[str, float]:
        rss, cpu_now = 0.0, {}
        for proc in self._tree():
            try:
                with proc.oneshot():
                    rss += proc.memory_info().rss
                    t = proc.cpu_times()
                    cpu_now[proc.pid] = t.user + t.system
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
        self._gone_cpu += sum(v for pid, v in self._seen.items() if pid not in cpu_now)
        self._seen = cpu_now
        out = {"memory": rss} if cpu_now else {}
        cores = self._cpu.update(now, self._gone_cpu + sum(cpu_now.values()))
        if cores is not None and cpu_now:
            out["cpu"] = cores
        return out

    def pids(self) -> list[int]:
        return [p.pid for p in self._tree()]


GpuReader = Callable[[list[int]], dict[str, float]]


class WorkloadSampler:
    """One primary sampler (cgroup or procfs) plus an optional GPU reader; numbers the samples."""

    def __init__(self, primary: Sampler, gpu: GpuReader | None = None, clock: Callable[[], float] = time.time) -> None:
        self.primary = primary
        self.gpu = gpu
        self.clock = clock
        self.step = 0
        self._failures: set[str] = set()

    def sample(self) -> UsageSample:
        now = self.clock()
        values: dict[str, float] = {}
        values.update(self._guard(self.primary.source, lambda: self.primary.read(now)))
        if self.gpu is not None:
            values.update(self._guard("nvml", lambda: self.gpu(self.primary.pids())))
        sample = UsageSample(time=now, values=values, step=self.step, source=self.primary.source)
        self.step += 1
        return sample

    def _guard(self, source: str, read: Callable[[], dict[str, float]]) -> dict[str, float]:
        try:
            return read()
        except (OSError, ValueError) as exc:
            kind = f"{source}:{type(exc).__name__}"
            if kind not in self._failures:  # once per kind: a broken file must not flood the log
                self._failures.add(kind)
                log.warning("sampler %s failed (%s); its resources are left out of the samples", source, exc)
            return {}

"""The local Resource Manager, the embedded default: run a stage's command in its own cgroup
with the predicted limits, and resize them in place while it runs.

One thread, sleeping on file descriptors: the child's pidfd (it exited), the kernel's memory
warnings (``adapters/cgroups/notify``) and the sampling timer. A kernel warning runs an urgent
monitor step at once, so memory that grows faster than the sampling interval still gets its
limit raised before the OOM killer acts. On cgroup v1 the runner also disables the cgroup's OOM
killer while resizing is on: tasks that reach the limit pause until the limit is raised, and the
killer is switched back on when the policy cannot give more (at the bound).

Without permission to create cgroups it runs monitor-only (procfs sampling, resizes only
recommended) and says so once.

Disk bandwidth (``RunSpec.disk_read_bps`` / ``disk_write_bps``, ``--disk-read-limit``): the
stage's cgroup gets a throttle rule on the disk that holds the working directory (v1 blkio, v2
io; the whole disk, as the kernel throttles no partition: ``adapters/cgroups/blockdev``), and the
deviation policy raises it in place when the stage is held at it (``logic/io_bottleneck``),
bounded by ``Bounds.maximum["disk_read"]``. What cannot be enforced here: buffered writes on
cgroup v1 (the kernel's flusher writes them back outside the stage's cgroup), page-cache hits
(no I/O at all), and network bandwidth (a stage in the runner's network namespace shares the
host's interfaces; shaping it would need a namespace and a qdisc of its own). Where the limit
cannot be set (no blkio/io controller, a working directory on tmpfs or overlayfs, monitor-only)
the runner says so once and runs without it (``require_cgroups``: fails instead).

GPUs: unless told otherwise (``gpu=``), the runner opens NVML itself for the run
(``runtime/gpu.local_gpu_reader``) and samples the GPU memory and SM utilisation of the
workload's own processes (its cgroup's, else its process tree's), which become ``gpu`` and
``gpu_memory`` in the samples and the summary's peaks. Without NVML (no driver, no
libnvidia-ml, ``AIRFLOW_ADAPTIVE_NVML=0``) it says so once and records no GPU usage.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import threading
import subprocess
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from airflow_adaptive.adapters.cgroups import (BlockDevice, CgroupUnavailable, ManagedCgroup, MemoryPressureWatch,
                                               NoBlockDevice, block_device_of)
from airflow_adaptive.adapters.io_counters import IoReport, StageIoMeter, exited
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.quantities import format_bandwidth, format_cpu, format_memory
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.domain.stage_run import OomEvent
from airflow_adaptive.logic.deviation import Bounds, DeviationConfig
from airflow_adaptive.runtime.channels import InProcessChannel, RecommendOnlyChannel
from airflow_adaptive.runtime.gpu import close_reader, local_gpu_reader
from airflow_adaptive.runtime.monitor import Monitor, UsageLog
from airflow_adaptive.runtime.sampling import CgroupSampler, GpuReader, ProcfsSampler, WorkloadSampler

log = logging.getLogger(__name__)

RESIZABLE = ("cpu", "memory", "disk_read", "disk_write")
#: disk resource -> the throttle rule's direction
DISK_DIRECTIONS = {"disk_read": "read", "disk_write": "write"}
#: ``LocalRunner(gpu=AUTO)``, the default: open NVML for the run (PID mode) and close it after.
AUTO = "auto"
#: A kernel wake-up acts only when usage is this close to the limit (just under the 90% at
#: which the kernel warns, so a warning on the way up always qualifies) ...
URGENT_FRACTION = 0.85
#: ... and at most this often unless tasks are paused at the limit (v2 can wake ~100 times/s).
URGENT_MIN_GAP_S = 0.25


def wake_is_urgent(paused: bool, woken: bool, memory_share: float | None, since_last_s: float) -> bool:
    """Whether a kernel wake-up calls for an urgent resize.

    Tasks paused at the limit always do. Otherwise only when memory really is near the limit
    (v1 thresholds also fire on the way down; v2's memory.events moves on every memory.high
    event) and not more often than ``URGENT_MIN_GAP_S``. An unknown share counts as near.
    """
    if paused:
        return True
    near = memory_share is None or memory_share >= URGENT_FRACTION
    return woken and near and since_last_s >= URGENT_MIN_GAP_S


class _ForwardSignals:
    """SIGTERM/SIGINT to the runner (Airflow stopping the task, Ctrl-C) go to the workload, with
    the OOM killer re-enabled, so it can exit its own way and the run report is still written."""

    def __init__(self, proc: subprocess.Popen, group: ManagedCgroup | None) -> None:
        self.proc, self.group, self._old = proc, group, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._forward)

    def _forward(self, signum, frame) -> None:
        log.warning("received %s: passing it to the workload", signal.Signals(signum).name)
        if self.group:
            self.group.set_oom_kill_disable(False)
        try:
            self.proc.send_signal(signum)
        except ProcessLookupError:
            pass

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


@dataclass(frozen=True)
class RunSpec:
    command: list[str]
    cpu: float  # cores
    memory: float  # bytes
    profile: PredictedProfile | None = None
    resize: bool = True
    interval_s: float = 1.0
    bounds: Bounds = field(default_factory=lambda: Bounds(minimum={}, maximum={}))
    config: DeviationConfig = field(default_factory=DeviationConfig)
    require_cgroups: bool = False  # fail instead of falling back to monitor-only
    container: str = "workload"
    try_number: int = 1
    #: disk bandwidth limits at start, bytes/s, on the disk holding the working directory (None: none)
    disk_read_bps: float | None = None
    disk_write_bps: float | None = None
    #: the stage's working directory (None: the runner's own): its cwd, the directory whose size
    #: is its ephemeral storage, and where the disk limits' disk is looked for
    workdir: str | None = None

    def __post_init__(self) -> None:
        if not self.command:
            raise UserError("no command to run: put it after `--`, e.g. `airflow-adaptive run --cpu 1 --memory 1Gi -- python train.py`")
        for name in ("cpu", "memory"):
            value = getattr(self, name)
            if not value > 0:
                raise UserError(f"--{name} must be greater than 0, got {value}")
        for name, flag in (("disk_read_bps", "--disk-read-limit"), ("disk_write_bps", "--disk-write-limit")):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise UserError(f"{flag} must be at least 1 byte/s, got {value}")
        if not self.interval_s > 0:
            raise UserError(f"--interval must be greater than 0 seconds, got {self.interval_s}")


@dataclass
class RunReport:
    exit_code: int
    oom_killed: bool
    resizes: list[dict[str, Any]]
    peak_memory_bytes: float
    reserved_memory_byte_seconds: float
    reserved_cpu_core_seconds: float
    samples: list[dict[str, Any]]
    mode: str  # "cgroup-v1", "cgroup-v2" or "monitor-only"
    duration_seconds: float
    final_allocation: dict[str, float]
    oom_kills: int = 0
    loop_seconds: dict[str, float] = field(default_factory=dict)
    #: disk, network and working-directory storage: top-level keys of ``to_dict`` (adapters/io_counters)
    io: IoReport = field(default_factory=IoReport.not_sampled)
    #: the disk bandwidth limits asked for: {"device", "disk_read", "disk_write"} as set at start,
    #: or {"not_enforced": why}; empty when none was asked for (the final ones: ``final_allocation``)
    disk_limits: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "io"}
        return {**out, **self.io.to_dict()}


class _Reservation:
    """Integral of an allocation over time (core-seconds, byte-seconds)."""

    def __init__(self, value: float, now: float) -> None:
        self.value, self.since, self.total = value, now, 0.0

    def change(self, value: float, now: float) -> None:
        self.total += self.value * (now - self.since)
        self.value, self.since = value, now

    def close(self, now: float) -> float:
        self.change(self.value, now)
        return self.total


class LocalRunner:
    def __init__(self, spec: RunSpec, *, usage_log: UsageLog | None = None, gpu: GpuReader | None | str = AUTO,
                 stdout=None, stderr=None, env: dict[str, str] | None = None) -> None:
        """``gpu``: ``AUTO`` (NVML for the workload's processes, when available), a reader of
        the caller's (it stays the caller's to close), or None (no GPU sampling)."""
        self.spec = spec
        self.usage_log = usage_log
        self.gpu = gpu
        self.stdout, self.stderr, self.env = stdout, stderr, env
        self.group: ManagedCgroup | None = None
        self.watch: MemoryPressureWatch | None = None
        self._rearm = False
        self._resizes: list[dict[str, Any]] = []
        self._reserved: dict[str, _Reservation] = {}
        self.disk: BlockDevice | None = None  # where the disk limits are in force
        self._disk_report: dict[str, Any] = {}

    # -- setup --------------------------------------------------------------------------
    def _make_cgroup(self) -> None:
        try:
            group = ManagedCgroup.create()
        except CgroupUnavailable as exc:
            return self._no_cgroup(str(exc))
        try:
            group.set_memory_limit(self.spec.memory)
            group.set_cpu_limit(self.spec.cpu)
        except OSError as exc:
            group.remove()
            return self._no_cgroup(f"the kernel refused the starting limits ({exc.strerror} on {exc.filename})")
        self.group = group
        self._limit_disk(group)
        if self.spec.resize:
            group.set_oom_kill_disable(True)
            self._arm(self.spec.memory)

    def _no_cgroup(self, why: str) -> None:
        if self.spec.require_cgroups:
            raise UserError(f"cannot create a cgroup and cgroups are required: {why}")
        log.warning("cannot create a cgroup (%s): running monitor-only, no limits enforced, resizes only recommended", why)
        self._no_disk_limits("monitor-only: there is no cgroup to hold them")

    def _workdir(self) -> str:
        return self.spec.workdir or os.getcwd()

    def _disk_asked(self) -> dict[str, float]:
        return {r: v for r, v in (("disk_read", self.spec.disk_read_bps), ("disk_write", self.spec.disk_write_bps))
                if v is not None}

    def _limit_disk(self, group: ManagedCgroup) -> None:
        """The starting disk bandwidth limits, on the disk that holds the working directory."""
        asked = self._disk_asked()
        if not asked:
            return
        why = group.disk_limits_unavailable()
        disk = None
        if why is None:
            try:
                disk = block_device_of(self._workdir())
            except (NoBlockDevice, OSError) as exc:
                why = f"the working directory {self._workdir()}: {exc}"
        if disk is not None:
            try:
                for r, bps in asked.items():
                    group.set_disk_limit(disk, DISK_DIRECTIONS[r], bps)
            except (OSError, ValueError) as exc:
                why = f"the kernel refused a limit on {disk.describe()} ({getattr(exc, 'strerror', None) or exc})"
                try:
                    group.clear_disk_limits()
                except (OSError, ValueError):
                    pass
        if why is not None:
            if self.spec.require_cgroups:
                group.remove()
                raise UserError(f"cannot set the disk bandwidth limits and cgroups are required: {why}")
            return self._no_disk_limits(why)
        self.disk = disk
        self._disk_report = {"device": disk.describe(), **asked}
        log.info("disk bandwidth limits on %s: %s", disk.describe(),
                 ", ".join(f"{DISK_DIRECTIONS[r]} {v / 2**20:g} MiB/s" for r, v in asked.items()))
        if "disk_write" in asked and group.version == "v1":
            log.warning("cgroup v1 throttles only the writes the stage itself sends to the disk (O_DIRECT, fsync, "
                        "O_SYNC): buffered writes that the kernel's flusher writes back are not limited")

    def _no_disk_limits(self, why: str) -> None:
        if self._disk_asked():
            log.warning("cannot set the disk bandwidth limits (%s): running without them", why)
            self._disk_report = {"not_enforced": why}

    def _arm(self, limit: float) -> None:
        """(Re)register the kernel's memory warnings; without them the runner still polls."""
        try:
            self.watch = self.watch or MemoryPressureWatch(self.group)
            self.watch.arm(limit)
        except OSError as exc:
            log.warning("cannot register kernel memory warnings (%s); relying on sampling alone", exc)
            if self.watch:
                self.watch.close()
            self.watch = None
        self._rearm = True

    def _start(self) -> subprocess.Popen:
        preexec: Callable[[], None] | None = self.group.join_current_process if self.group else None
        try:
            return subprocess.Popen(self.spec.command, preexec_fn=preexec, stdout=self.stdout, stderr=self.stderr, env=self.env,
                                    cwd=self.spec.workdir)
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            raise UserError(f"cannot start {self.spec.command[0]!r}: {exc.strerror}") from exc
        except subprocess.SubprocessError as exc:  # the child could not join the cgroup
            raise UserError(f"cannot put {self.spec.command[0]!r} into cgroup {self.group.paths.dir('memory')}: {exc}") from exc

    # -- the Resource Manager's side of the in-process channel --------------------------
    def _apply(self, sig: ResizeSignal) -> float | None:
        if self.group is None or sig.resource not in RESIZABLE:
            return None
        if sig.resource in DISK_DIRECTIONS and (self.disk is None or sig.resource not in self._reserved):
            return None
        try:
            if sig.resource == "memory":
                in_force = self.group.set_memory_limit(sig.new)
                if self.watch:
                    self._arm(in_force)
            elif sig.resource in DISK_DIRECTIONS:
                in_force = self.group.set_disk_limit(self.disk, DISK_DIRECTIONS[sig.resource], sig.new)
            else:
                in_force = self.group.set_cpu_limit(sig.new)
        except OSError as exc:
            # v1 refuses (EBUSY) a memory decrease below what it cannot reclaim: keep the old size.
            log.warning("resize %s %s -> %s refused by the kernel (%s); keeping %s", sig.resource, sig.old, sig.new, exc.strerror, sig.old)
            return None
        now = time.time()
        self._reserved[sig.resource].change(in_force, now)
        self._resizes.append({"time": sig.time, "resource": sig.resource, "old": sig.old, "new": in_force, "reason": sig.reason})
        log.info("resized %s %s -> %s: %s", sig.resource, _fmt(sig.resource, sig.old), _fmt(sig.resource, in_force), sig.reason)
        return in_force

    # -- the run ------------------------------------------------------------------------
    def run(self) -> RunReport:
        opened = None
        if self.gpu == AUTO:
            self.gpu = opened = local_gpu_reader()
        try:
            self._make_cgroup()
            try:
                return self._run()
            finally:
                if self.watch:
                    self.watch.close()
                if self.group:
                    self.group.remove()
        finally:
            if opened is not None:
                close_reader(opened)
                self.gpu = AUTO

    def _run(self) -> RunReport:
        spec = self.spec
        proc = self._start()
        start = time.time()
        self._reserved = {"memory": _Reservation(spec.memory, start), "cpu": _Reservation(spec.cpu, start)}
        disk = {r: v for r, v in self._disk_asked().items() if self.disk is not None}
        self._reserved.update({r: _Reservation(v, start) for r, v in disk.items()})
        config = spec.config
        if disk:  # the deviation policy judges the limits in force, with CPU (logic/io_bottleneck)
            config = replace(config, resizable=(*config.resizable, *(r for r in disk if r not in config.resizable)))
        if self.group:
            primary = CgroupSampler(self.group.reader)
            channel = InProcessChannel(self._apply) if spec.resize else RecommendOnlyChannel()
        else:
            primary = ProcfsSampler(proc.pid)
            channel = RecommendOnlyChannel()
        v2_dir = self.group.paths.dirs.get("unified") if self.group else None
        io = StageIoMeter(proc.pid, primary.pids, workdir=self._workdir(), cgroup_v2_dir=v2_dir)
        monitor = Monitor(
            WorkloadSampler(io.alongside(primary), self.gpu), channel, {"cpu": spec.cpu, "memory": spec.memory, **disk},
            profile=spec.profile, config=config, bounds=spec.bounds, usage_log=self.usage_log,
            container=spec.container, keep_samples=True, started=start, interval_s=spec.interval_s,
        )
        self._loop(proc, monitor)
        returncode = io.reap(proc)  # not proc.wait(): takes the root's final I/O counters first
        end = time.time()
        return self._report(proc, returncode, monitor, start, end, io.report())

    def _loop(self, proc: subprocess.Popen, monitor: Monitor) -> None:
        """Sample on the timer, react at once to the kernel, stop when the child exits.

        A fault in here is logged and the runner just waits for the workload: a monitor fault
        never kills the workload.
        """
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except OSError as exc:  # seccomp or an old kernel: poll the child instead
            log.info("no pidfd (%s); checking the workload every 100 ms", exc)
            pidfd = None
        forward = _ForwardSignals(proc, self.group)
        try:
            poller = self._poller(pidfd)
            next_tick = time.monotonic()
            last_urgent = -math.inf
            while not exited(proc):  # unlike proc.poll(), leaves the child for io.reap
                if self._rearm:
                    poller, self._rearm = self._poller(pidfd), False
                timeout_ms = max(0.0, next_tick - time.monotonic()) * 1000
                events = poller.poll(timeout_ms if pidfd is not None else min(timeout_ms, 100.0))
                if pidfd is not None and any(fd == pidfd for fd, _ in events):
                    return
                woken = self._drain(events)
                paused = self._paused()
                if wake_is_urgent(paused, bool(woken), self._memory_share(), time.monotonic() - last_urgent):
                    last_urgent = time.monotonic()
                    log.info("kernel memory warning (%s): urgent monitor step", ", ".join(woken) or "under_oom")
                    monitor.step(urgent=("memory",))
                    self._release_if_stuck()
                elif woken:
                    log.debug("kernel memory event (%s) below the limit; no action", ", ".join(woken))
                if time.monotonic() >= next_tick:
                    monitor.step()
                    next_tick = max(next_tick + self.spec.interval_s, time.monotonic())
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("the runner's monitor loop failed; waiting for the workload without monitoring")
            if self.group:
                self.group.set_oom_kill_disable(False)  # nobody will raise the limit any more
        finally:
            forward.restore()
            if pidfd is not None:
                os.close(pidfd)

    def _drain(self, events) -> list[str]:
        woken = []
        for fd, mask in events:
            if self.watch is None or mask & select.POLLNVAL:
                continue
            try:
                woken.append(self.watch.drain(fd))
            except OSError as exc:
                log.debug("kernel memory warning fd %d: %s", fd, exc)
        return woken

    def _memory_share(self) -> float | None:
        """Memory in use over the limit in force (which the runner itself set), or None if unknown."""
        try:
            return self.group.reader.memory_bytes() / self._reserved["memory"].value if self.group else None
        except OSError:
            return None

    def _poller(self, pidfd: int | None) -> "select.poll":
        poller = select.poll()
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        if self.watch:
            self.watch.register(poller)
        return poller

    def _paused(self) -> bool:
        try:
            return bool(self.group) and self.group.reader.under_oom()
        except OSError:
            return False

    def _release_if_stuck(self) -> None:
        """Tasks paused at the limit that the policy could not raise: let the OOM killer act,
        as it would have without us, rather than leave the workload hanging."""
        if self._paused():
            time.sleep(0.05)  # a just-raised limit takes a moment to wake the tasks
            if self._paused():
                log.warning("workload is paused at its memory limit and the limit cannot be raised: enabling the OOM killer")
                self.group.set_oom_kill_disable(False)

    def _report(self, proc, returncode: int, monitor: Monitor, start: float, end: float, io: IoReport) -> RunReport:
        oom_kills, kernel_peak = 0, None
        if self.group:
            try:
                oom_kills = self.group.reader.oom_kills()
                kernel_peak = self.group.reader.memory_peak_bytes()
            except OSError as exc:
                log.warning("cannot read the cgroup's final counters: %s", exc)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        oom_killed = oom_kills > 0
        events = [OomEvent(end, self.spec.container, self._reserved["memory"].value, self.spec.try_number)] if oom_killed else []
        outcome = "oom_killed" if oom_killed else ("success" if returncode == 0 else "failed")
        extra = {"memory": kernel_peak} if kernel_peak else {}
        if io.ephemeral_storage_peak_bytes is not None:  # the walks between samples and the one after the exit
            extra["ephemeral_storage"] = float(io.ephemeral_storage_peak_bytes)
        summary = monitor.summary(outcome, events, extra_peak=extra, io=io.measured())
        monitor.finish(summary)
        return RunReport(
            exit_code=exit_code,
            oom_killed=oom_killed,
            resizes=list(self._resizes),
            peak_memory_bytes=summary.peak.get("memory", 0.0),
            reserved_memory_byte_seconds=self._reserved["memory"].close(end),
            reserved_cpu_core_seconds=self._reserved["cpu"].close(end),
            samples=[s.to_dict() for s in monitor.samples or []],
            mode=f"cgroup-{self.group.version}" if self.group else "monitor-only",
            duration_seconds=end - start,
            final_allocation={r: res.value for r, res in self._reserved.items()},
            oom_kills=oom_kills,
            loop_seconds=dict(monitor.times.total),
            io=io,
            disk_limits=dict(self._disk_report),
        )


def _fmt(resource: str, value: float) -> str:
    if resource in DISK_DIRECTIONS:
        return format_bandwidth(value)
    return format_memory(value) if resource == "memory" else format_cpu(value)


def run_local(spec: RunSpec, **kwargs) -> RunReport:
    return LocalRunner(spec, **kwargs).run()


__all__ = ["LocalRunner", "RunReport", "RunSpec", "run_local"]

"""The monitor as a Kubernetes native sidecar: find the workload, read its cgroup, loop, exit.

How the sidecar reaches the workload container's cgroup (it sees only its own, because each
container has its own cgroup namespace):

1. The pod sets ``shareProcessNamespace: true``, so the workload's processes are visible in the
   sidecar's ``/proc``. The operator marks the workload container with an environment variable
   (``AIRFLOW_ADAPTIVE_WORKLOAD=<container>``); the sidecar finds the process whose
   ``/proc/<pid>/environ`` carries it.
2. ``/proc/<pid>/root`` is the workload's own root filesystem, in its mount and cgroup
   namespaces: its ``/sys/fs/cgroup`` is the workload container's cgroup (v2: one directory;
   v1: one per controller). The sidecar reads ``memory.current`` / ``cpu.stat`` /
   ``memory.events`` there (v1: ``memory.usage_in_bytes`` / ``cpuacct.usage`` /
   ``memory.oom_control``).
3. Reading ``/proc/<pid>/environ`` and ``/proc/<pid>/root`` passes the kernel's ptrace access
   check: the sidecar must run as the **same UID** as the workload (the pod-level
   ``runAsUser``), or hold ``CAP_SYS_PTRACE``, which we do not ask for. No Kubernetes API
   rights, no privileged mode, no hostPID.

When that fails (another UID, no shared process namespace), the sidecar falls back to procfs
sampling of the workload's process tree through psutil, and says so: it misses page cache and
tmpfs, which the container's limit counts.

GPUs (``gpu_for``, the CLI's ``runtime/gpu.workload_gpu_reader``): which GPUs the workload
container has is read the same way, from ``/proc/<pid>/environ`` (``NVIDIA_VISIBLE_DEVICES``)
and ``/proc/<pid>/root`` (its ``/dev/nvidia<N>`` nodes, the volume-mounts directory); the
sidecar reads them through its own NVML, which needs those GPUs in its own container: the
operator gives it ``NVIDIA_VISIBLE_DEVICES=all`` (``operators/kubernetes.monitor_gpu_env``), and
the NVIDIA runtime must accept that from an unprivileged container. NVML reports host PIDs,
which mean nothing in the pod's PID namespace, so all use of those GPUs counts as the
workload's (the device plugin gives a GPU to one container only). Where any of this fails,
the log says so once and no GPU usage is recorded.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from airflow_adaptive.adapters.cgroups.layout import CgroupUnavailable, cgroup_of
from airflow_adaptive.adapters.cgroups.reader import CgroupReader, parse_flat_keyed
from airflow_adaptive.adapters.io_counters import StageIoMeter
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.monitor_protocol import WORKLOAD_ENV, status_line
from airflow_adaptive.domain.signals import UNAVAILABLE, MonitorStatus
from airflow_adaptive.logic.deviation import Bounds, DeviationConfig
from airflow_adaptive.runtime.channels import SignalChannel
from airflow_adaptive.runtime.gpu import close_reader
from airflow_adaptive.runtime.monitor import Monitor, UsageLog
from airflow_adaptive.runtime.sampling import CgroupSampler, GpuReader, ProcfsSampler, Sampler, WorkloadSampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SidecarSpec:
    allocation: dict[str, float]
    profile: PredictedProfile | None = None
    target_pid: int | None = None
    workload_marker: str | None = None  # "KEY=VALUE" in the workload's environment
    interval_s: float = 1.0
    wait_s: float = 120.0  # how long to wait for the workload to appear
    # How long another user's processes may be all there is before the monitor gives up on
    # reading the workload: the workload container starts after the sidecar, within seconds.
    unreadable_grace_s: float = 10.0
    container: str = ""
    config: DeviationConfig = DeviationConfig()
    bounds: Bounds = Bounds(minimum={}, maximum={})


def find_workload(marker: str | None, target_pid: int | None = None) -> int | None:
    """The workload's root process: the given PID, or the lowest PID whose environment has ``marker``."""
    if target_pid is not None:
        return target_pid if _alive(target_pid) else None
    needle = (marker or "").encode() + b"\0"
    me = os.getpid()
    for entry in sorted((int(p) for p in os.listdir("/proc") if p.isdigit())):
        if entry == me:
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:  # gone, or another user's process
            continue
        if env.startswith(needle) or (b"\0" + needle) in env:  # a whole variable, not a suffix of another
            if _alive(entry):
                return entry
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")  # a zombie has exited


def process_start_time(pid: int) -> float | None:
    """When ``pid`` started, in Unix seconds: its ``/proc/<pid>/stat`` starttime (clock ticks since
    boot) placed on the wall clock through CLOCK_BOOTTIME (``/proc/stat``'s btime is whole seconds).
    The workload's phases count from there, not from the monitor's first sample, which comes
    seconds later (the sidecar's own start-up). None when unreadable (logged)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
        since_boot = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return time.time() - (time.clock_gettime(time.CLOCK_BOOTTIME) - since_boot)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("cannot read when workload pid %d started (%s); its phases count from the first sample", pid, exc)
        return None


def workload_sampler(pid: int) -> Sampler:
    """The workload container's cgroup through ``/proc/<pid>/root``, else procfs (logged)."""
    try:
        reader = CgroupReader(cgroup_of(pid, through_root=True))
        reader.check()
        reader.memory_bytes()
        return CgroupSampler(reader)
    except (OSError, CgroupUnavailable, ValueError) as exc:
        log.warning("cannot read the workload's cgroup through /proc/%d/root (%s); falling back to procfs "
                    "sampling, which misses page cache and tmpfs", pid, exc)
        return ProcfsSampler(pid)


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:  # kubelet sends SIGTERM once the workload is done
        self.requested = True


def unreadable_processes() -> dict[int, int]:
    """PID -> UID of the processes this monitor may not inspect (another user's, without the
    capabilities to trace it): a workload among them can never be found or read."""
    me, out = os.getpid(), {}
    for entry in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if entry in (me, 1):  # 1: the pod's pause process (the sandbox), never the workload
            continue
        try:
            Path(f"/proc/{entry}/environ").read_bytes()
        except PermissionError:
            try:
                status = Path(f"/proc/{entry}/status").read_text()
                out[entry] = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))
            except (OSError, StopIteration, ValueError):
                continue
        except OSError:
            continue
    return out


def unavailable_reason(spec: SidecarSpec, unreadable: dict[int, int], waited_s: float, me: int) -> str | None:
    """Why the monitor (UID ``me``) cannot read the workload, once that is certain; None while it
    may still appear. Pure: the process table and the clock are read by the caller."""
    if unreadable and waited_s >= spec.unreadable_grace_s:
        uids = sorted(set(unreadable.values()))
        return (f"the workload's processes run as UID {', '.join(map(str, uids))} and the monitor as UID {me}: "
                "it may not read them (/proc/<pid>/environ and /root need the same UID and at least the "
                "workload's capabilities); set runAsUser on the pod or the workload container so the "
                "monitor runs as the same user")
    if waited_s >= spec.wait_s:
        what = f"process {spec.target_pid}" if spec.target_pid else f"a process with {spec.workload_marker} in its environment"
        return (f"no workload found after {spec.wait_s:.0f} s: looked for {what}; the pod needs "
                "shareProcessNamespace: true and the same runAsUser for both containers")
    return None


def stay_unavailable(reason: str, stop: "_Stop", emit: Callable[[str], None], boot: str = "") -> int:
    """Say once that the monitor cannot read the workload, then idle until the kubelet stops it.

    Exiting would not help: a native sidecar (``restartPolicy: Always``) that exits is restarted,
    and would fail the same way in a loop. The stage runs at its planned size without in-place
    resizes; the operator reads this line, warns in the task log and tags the stage run.
    """
    log.warning("monitor unavailable: %s", reason)
    emit(status_line(MonitorStatus(UNAVAILABLE, reason, time.time()), boot))
    while not stop.requested:
        time.sleep(0.2)
    return 0


def _print_line(line: str) -> None:
    print(line, flush=True)


def run_sidecar(spec: SidecarSpec, channel: SignalChannel, *, usage_log: UsageLog | None = None,
                gpu_for: Callable[[int], GpuReader | None] | None = None,
                emit: Callable[[str], None] = _print_line, boot: str = "") -> int:
    """Monitor the workload until it ends; ``gpu_for(pid)`` builds the GPU reader once it is found.

    When the workload cannot be read, says so once (``emit``, the stdout the operator follows)
    and idles until stopped instead of failing.
    """
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    pid = find_workload(spec.workload_marker, spec.target_pid)
    while pid is None and not stop.requested:
        reason = unavailable_reason(spec, unreadable_processes(), time.monotonic() - started, os.getuid())
        if reason:
            return stay_unavailable(reason, stop, emit, boot)
        time.sleep(min(spec.interval_s, 0.5))
        pid = find_workload(spec.workload_marker, spec.target_pid)
    if pid is None:
        return 0
    sampler = workload_sampler(pid)
    log.info("monitoring workload pid %d through %s every %.1f s", pid, sampler.source, spec.interval_s)
    oom_before = _oom_kills(sampler)
    # Keep the OOM counter's file open: once the workload is dead, /proc/<pid>/root is gone.
    oom_fd = _open_oom_counter(sampler)
    try:
        gpu = gpu_for(pid) if gpu_for else None
    except Exception:  # noqa: BLE001 - the GPUs are extra: never lose cpu/memory monitoring over them
        log.exception("cannot set up GPU sampling for workload pid %d; its GPU usage is not recorded", pid)
        gpu = None
    # Disk and network I/O beside cpu and memory: in a pod (the workload found by its marker) the
    # network namespace is the stage's own; a --pid target shares the host's, so it is not counted.
    io = StageIoMeter(pid, sampler.pids, in_pod=spec.target_pid is None)
    monitor = Monitor(WorkloadSampler(io.alongside(sampler), gpu), channel, dict(spec.allocation), profile=spec.profile,
                      config=spec.config, bounds=spec.bounds, usage_log=usage_log, container=spec.container,
                      started=process_start_time(pid), interval_s=spec.interval_s)
    next_tick = time.monotonic()
    while not stop.requested and _alive(pid):
        monitor.step()
        next_tick = max(next_tick + spec.interval_s, time.monotonic())
        while not stop.requested and _alive(pid) and time.monotonic() < next_tick:
            time.sleep(min(0.2, max(0.0, next_tick - time.monotonic())))
    # The sidecar cannot see the exit code; the operator records the real outcome of the try.
    ooms = max(0, _read_oom_counter(oom_fd, sampler) - oom_before)
    report = io.report()  # the workload is gone: its last sampled counters are the totals
    for key, why in report.unmeasured.items():
        log.info("%s not measured: %s", key, why)
    monitor.finish(monitor.summary("oom_killed" if ooms else "success", io=report.measured()))
    close_reader(gpu)
    log.info("workload pid %d ended; monitor exits after %d samples and %d resize signals", pid, monitor.usage.count, len(monitor.signals))
    return 0


def _oom_kills(sampler: Sampler) -> int:
    reader = getattr(sampler, "reader", None)
    try:
        return reader.oom_kills() if reader else 0
    except OSError:
        return 0


def _open_oom_counter(sampler: Sampler) -> int | None:
    reader = getattr(sampler, "reader", None)
    try:
        return os.open(reader.events_path, os.O_RDONLY) if reader else None
    except OSError:
        return None


def _read_oom_counter(fd: int | None, sampler: Sampler) -> int:
    if fd is None:
        return _oom_kills(sampler)
    try:
        text = os.pread(fd, 4096, 0).decode()
    except OSError:
        return _oom_kills(sampler)
    finally:
        os.close(fd)
    return parse_flat_keyed(text).get("oom_kill", 0)

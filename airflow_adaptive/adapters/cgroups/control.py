"""A cgroup the local Resource Manager owns: create it, put the workload in it, set and rewrite
its limits while the workload runs, and remove it afterwards.

Created below the runner's own cgroup in every hierarchy (v2: one directory; v1: one directory
in each of the memory, cpu and cpuacct hierarchies, and in blkio where that is mounted), so it
stays inside whatever limits the runner itself was given. Disk bandwidth limits (``throttle.py``)
need blkio on v1, the io controller on v2; without them the cgroup is made all the same and
``disk_limits_unavailable`` says why.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
import uuid

from airflow_adaptive.adapters.cgroups import throttle
from airflow_adaptive.adapters.cgroups.blockdev import BlockDevice
from airflow_adaptive.adapters.cgroups.layout import (V1_CONTROLLERS, V1_OPTIONAL, V2_OPTIONAL, CgroupPaths,
                                                     CgroupUnavailable, cgroup_of)
from airflow_adaptive.adapters.cgroups.reader import CgroupReader

log = logging.getLogger(__name__)

#: CFS period: the kernel default (100 ms); quota = cores * period.
CFS_PERIOD_US = 100_000
#: v2 ``memory.high`` as a share of ``memory.max``: the kernel reclaims and throttles there and
#: counts a ``high`` event, which wakes the runner before ``memory.max`` would OOM-kill.
MEMORY_HIGH_FRACTION = 0.9
#: v1 ``memory.limit_in_bytes`` is rounded down to whole pages by the kernel.
PAGE = 4096
#: v2 leaf the runner moves itself into when its own cgroup must delegate controllers.
RUNNER_LEAF = "airflow-adaptive-runner"


class ManagedCgroup:
    def __init__(self, paths: CgroupPaths) -> None:
        self.paths = paths
        self.version = paths.version
        self.reader = CgroupReader(paths)

    @classmethod
    def create(cls, name: str | None = None, parent: CgroupPaths | None = None) -> "ManagedCgroup":
        """Create a child cgroup; CgroupUnavailable (with the reason) when that is not possible."""
        name = name or f"airflow-adaptive-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            parent = parent or cgroup_of("self")
        except (OSError, CgroupUnavailable) as exc:
            raise CgroupUnavailable(f"cannot find this process's cgroup: {exc}") from exc
        if parent.version == "v2" and os.path.basename(parent.dirs["unified"]) == RUNNER_LEAF:
            parent = CgroupPaths("v2", {"unified": os.path.dirname(parent.dirs["unified"])})  # moved there earlier
        dirs = {key: os.path.join(d, name) for key, d in parent.dirs.items()}
        optional = {key: d for key, d in dirs.items() if key in V1_OPTIONAL}
        made: list[str] = []
        try:
            if parent.version == "v2":
                _enable_v2_controllers(parent.dirs["unified"])
            for d in dict.fromkeys(d for key, d in dirs.items() if key not in optional):  # cpu and cpuacct may share one
                os.mkdir(d)
                made.append(d)
        except OSError as exc:
            for d in reversed(made):
                _rmdir(d)
            raise CgroupUnavailable(f"cannot create cgroup {name} ({parent.version}): {exc.strerror} on {exc.filename}") from exc
        for key, d in optional.items():  # blkio: disk limits only; the stage runs without them
            try:
                if d not in made:
                    os.mkdir(d)
                    made.append(d)
            except OSError as exc:
                log.warning("cannot create cgroup %s in the %s hierarchy (%s): no disk limits for it", name, key, exc.strerror)
                del dirs[key]
        group = cls(CgroupPaths(parent.version, dirs))
        try:
            group.reader.check()
        except FileNotFoundError as exc:  # a controller that is mounted but not enabled here
            for d in reversed(made):
                _rmdir(d)
            raise CgroupUnavailable(f"cgroup {name} lacks a file the runner needs: {exc}") from exc
        oom_group = os.path.join(dirs.get("unified", ""), "memory.oom.group")
        if parent.version == "v2" and os.path.exists(oom_group):
            try:
                _write(oom_group, 1)  # an OOM kill takes the whole workload, as the kubelet sets it
            except OSError as exc:
                log.warning("cannot set %s (%s); an OOM kill may leave part of the workload running", oom_group, exc)
        return group

    # -- membership ---------------------------------------------------------------------
    def procs_files(self) -> list[str]:
        keys = ("unified",) if self.version == "v2" else [*V1_CONTROLLERS, *(c for c in V1_OPTIONAL if c in self.paths.dirs)]
        return list(dict.fromkeys(os.path.join(self.paths.dirs[k], "cgroup.procs") for k in keys))

    def join_current_process(self) -> None:
        """Move the calling process into the cgroup; safe in a ``preexec_fn`` (no allocation-heavy work)."""
        for path in self.procs_files():
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0" means the writer itself
            finally:
                os.close(fd)

    def add(self, pid: int) -> None:
        for path in self.procs_files():
            with open(path, "w") as f:
                f.write(str(pid))

    # -- limits -------------------------------------------------------------------------
    def set_memory_limit(self, limit_bytes: float) -> float:
        """Set the memory limit; returns what the kernel holds. OSError(EBUSY) when a decrease
        is below what the workload uses and cannot be reclaimed."""
        limit = _page_round(limit_bytes)
        mem = self.paths.dir("memory")
        if self.version == "v2":
            old_max = _read_int(os.path.join(mem, "memory.max"))
            high = _page_round(limit * MEMORY_HIGH_FRACTION)
            if old_max is not None and limit < old_max and self.reader.memory_bytes() > limit:
                # v2 does not refuse: memory.max below what cannot be reclaimed OOM-kills. Refuse here.
                raise OSError(errno.EBUSY, "memory in use is above the requested limit", os.path.join(mem, "memory.max"))
            # Order keeps high <= max at every moment.
            if old_max is not None and limit < old_max:
                _write(os.path.join(mem, "memory.high"), high)
                _write(os.path.join(mem, "memory.max"), limit)
            else:
                _write(os.path.join(mem, "memory.max"), limit)
                _write(os.path.join(mem, "memory.high"), high)
            return float(_read_int(os.path.join(mem, "memory.max")) or limit)
        limit_file = os.path.join(mem, "memory.limit_in_bytes")
        memsw = os.path.join(mem, "memory.memsw.limit_in_bytes")
        has_memsw = os.path.exists(memsw)
        # memsw (memory+swap) must stay >= the memory limit: raise it first, lower it last.
        old = _read_int(limit_file) or 0
        if has_memsw and limit > old:
            _write(memsw, limit)
        _write(limit_file, limit)
        if has_memsw and limit <= old:
            try:
                _write(memsw, limit)
            except OSError:
                _write(limit_file, old)  # keep memory and memsw consistent: the decrease did not happen
                raise
        return float(_read_int(limit_file) or limit)

    def memory_limit(self) -> float | None:
        name = "memory.max" if self.version == "v2" else "memory.limit_in_bytes"
        return _read_int(os.path.join(self.paths.dir("memory"), name))

    def set_cpu_limit(self, cores: float) -> float:
        quota = max(1000, int(round(cores * CFS_PERIOD_US)))  # the kernel's minimum quota is 1 ms
        cpu = self.paths.dir("cpu")
        if self.version == "v2":
            _write(os.path.join(cpu, "cpu.max"), f"{quota} {CFS_PERIOD_US}")
        else:
            _write(os.path.join(cpu, "cpu.cfs_period_us"), CFS_PERIOD_US)
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), quota)
        return quota / CFS_PERIOD_US

    def set_oom_kill_disable(self, disabled: bool) -> bool:
        """v1 only: with the OOM killer disabled, tasks at the limit pause instead of dying, until
        the runner raises the limit (or re-enables the killer). Returns whether it took effect."""
        if self.version != "v1":
            return False
        try:
            _write(os.path.join(self.paths.dir("memory"), "memory.oom_control"), 1 if disabled else 0)
            return True
        except OSError as exc:
            log.warning("cannot %s the OOM killer of %s: %s", "disable" if disabled else "enable", self.paths.dir("memory"), exc)
            return False

    # -- disk bandwidth (throttle.py) ----------------------------------------------------
    def disk_limits_unavailable(self) -> str | None:
        """Why this cgroup cannot hold disk bandwidth limits, or None when it can."""
        if self.version == "v1":
            if "blkio" not in self.paths.dirs:
                return "the cgroup v1 blkio hierarchy is not mounted here (or the runner may not create a cgroup in it)"
            missing = [f for f in throttle.V1_FILES.values() if not os.path.exists(os.path.join(self.paths.dirs["blkio"], f))]
            return f"blkio lacks {missing} (kernel built without CONFIG_BLK_DEV_THROTTLING?)" if missing else None
        if not os.path.exists(os.path.join(self.paths.dirs["unified"], throttle.V2_FILE)):
            return "the cgroup v2 io controller is not enabled for this cgroup (io.max is missing)"
        return None

    def set_disk_limit(self, device: BlockDevice, direction: throttle.Direction, bps: float | None) -> float | None:
        """Set (raise, lower) or with None remove the ``direction`` ("read"/"write") bandwidth
        limit on ``device``, in bytes/s, in place: tasks waiting in the throttle are re-timed to
        the new rate. Returns what the kernel holds afterwards. OSError from the kernel (ENODEV:
        not a whole disk, or a device without a queue to throttle)."""
        value = None if bps is None else throttle.bytes_per_second(bps)
        if self.version == "v1":
            _write(os.path.join(self.paths.dir("blkio"), throttle.V1_FILES[direction]), throttle.v1_rule(device.id, value))
        else:
            _write(os.path.join(self.paths.dirs["unified"], throttle.V2_FILE), throttle.v2_rule(device.id, direction, value))
        return self.disk_limit(device, direction)

    def disk_limit(self, device: BlockDevice, direction: throttle.Direction) -> float | None:
        """The ``direction`` limit on ``device`` in force (bytes/s), None when there is none."""
        return self.disk_limits(direction).get(device.id)

    def disk_limits(self, direction: throttle.Direction) -> dict[str, float]:
        """Every ``direction`` limit of this cgroup: {"MAJ:MIN": bytes/s}."""
        if self.version == "v1":
            path = os.path.join(self.paths.dir("blkio"), throttle.V1_FILES[direction])
            rules = throttle.parse_v1_rules(_read_text(path), path)
            return {dev: float(v) for dev, v in rules.items() if 0 < v < throttle.UNLIMITED}
        path = os.path.join(self.paths.dirs["unified"], throttle.V2_FILE)
        key = throttle.V2_KEYS[direction]
        return {dev: float(limits[key]) for dev, limits in throttle.parse_io_max(_read_text(path), path).items()
                if limits.get(key) is not None}

    def clear_disk_limits(self) -> None:
        """Remove every disk bandwidth rule of this cgroup (removing the cgroup does too)."""
        if self.disk_limits_unavailable() is not None:
            return
        for direction in throttle.DIRECTIONS:
            for dev in self.disk_limits(direction):
                major, _, minor = dev.partition(":")
                self.set_disk_limit(BlockDevice(int(major), int(minor), dev), direction, None)

    # -- teardown -----------------------------------------------------------------------
    def kill_all(self, timeout_s: float = 5.0) -> None:
        if self.version == "v2" and os.path.exists(os.path.join(self.paths.dirs["unified"], "cgroup.kill")):
            _write(os.path.join(self.paths.dirs["unified"], "cgroup.kill"), 1)
        deadline = time.monotonic() + timeout_s
        while (pids := self.reader.pids()) and time.monotonic() < deadline:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            # Paused tasks (v1 under OOM) only die once the killer may act or memory frees up.
            self.set_oom_kill_disable(False)
            time.sleep(0.02)

    def remove(self) -> None:
        try:
            self.clear_disk_limits()
        except (OSError, ValueError) as exc:  # rmdir below removes the rules with the cgroup anyway
            log.warning("cannot clear the disk limits of %s: %s", self.paths.dirs, exc)
        self.kill_all()
        for d in dict.fromkeys(self.paths.dirs.values()):
            _rmdir(d)


def _enable_v2_controllers(parent: str) -> None:
    """Delegate memory and cpu to the parent's children (and io where the parent has it).

    v2's "no internal processes" rule refuses (EBUSY) to enable controllers for the children of
    a non-root cgroup that holds processes, such as the runner's own. The runner then moves
    itself into a leaf ``runner`` child first, as container runtimes do.
    """
    path = os.path.join(parent, "cgroup.subtree_control")
    missing = [c for c in ("memory", "cpu") if c not in open(path).read().split()]
    if not missing:
        return _enable_v2_optional(parent)
    try:
        _write(path, " ".join(f"+{c}" for c in missing))
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        leaf = os.path.join(parent, RUNNER_LEAF)
        os.makedirs(leaf, exist_ok=True)
        _write(os.path.join(leaf, "cgroup.procs"), os.getpid())
        _write(path, " ".join(f"+{c}" for c in missing))
    _enable_v2_optional(parent)


def _enable_v2_optional(parent: str) -> None:
    """io where the parent offers it; a refusal costs the disk limits only."""
    offered = set(open(os.path.join(parent, "cgroup.controllers")).read().split())
    enabled = set(open(os.path.join(parent, "cgroup.subtree_control")).read().split())
    for c in V2_OPTIONAL:
        if c in offered and c not in enabled:
            try:
                _write(os.path.join(parent, "cgroup.subtree_control"), f"+{c}")
            except OSError as exc:
                log.warning("cannot enable the v2 %s controller below %s (%s): no disk limits", c, parent, exc.strerror)


def _page_round(value: float) -> int:
    return max(PAGE, int(value) // PAGE * PAGE)


def _write(path: str, value: object) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _read_int(path: str) -> int | None:
    try:
        text = open(path).read().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _rmdir(path: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                log.warning("cannot remove cgroup %s: %s", path, exc)
                return
            time.sleep(0.02)  # tasks are still exiting
    log.warning("cgroup %s still busy; left in place", path)

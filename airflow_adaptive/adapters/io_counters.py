"""Disk I/O, I/O wait, network traffic and working-directory storage of a running stage, read
from the kernel's counters. Reads only: what to do with the figures is the callers'.

Checked on this machine (Linux 6.18, cgroup v1 with each controller on its own hierarchy, ext4
on a virtio disk, root), with a child that writes 32 MiB and fsyncs, writes 32 MiB with
``O_DIRECT``, or reads back 32 MiB after ``posix_fadvise(DONTNEED)``:

| source | what it counts | measured here | blind spots |
|---|---|---|---|
| ``/proc/<pid>/io`` (per task) | ``read_bytes``: bytes fetched from storage; ``write_bytes``: bytes sent to storage, charged when a page is dirtied; ``syscr``/``syscw``: read/write system calls; a reaped child's counters are folded into its parent's | 32 MiB fsync'd: write_bytes 33,558,528 (32 MiB + one 4 KiB metadata block); O_DIRECT: 33,554,432; the read-back: read_bytes 33,554,432 | processes that exit between two samples and whose parent is outside the workload (reparented orphans); a file dirtied then deleted before writeback counts in ``cancelled_write_bytes`` (subtracted here); mmap'd file writes are charged to whoever dirtied the page |
| ``wait4`` rusage of the stage's root (``ru_inblock``/``ru_oublock``, 512-byte blocks) | the same counters as the root's ``/proc/<pid>/io``, final, with every reaped descendant | 32 MiB fsync'd: ``ru_oublock`` x 512 = the root's write_bytes | only when the runner itself reaps the root |
| cgroup v1 ``blkio.throttle.io_service_bytes`` / ``io_serviced`` | bytes and requests the block layer dispatched for the cgroup, per device | **all zero, for every cgroup, root included ("Total 0"), until a throttle rule was first written on the device**; after one rule (even one since removed, and in another cgroup) every cgroup counted: fsync'd 32 MiB -> 33,566,720, O_DIRECT -> 33,554,432 | recent kernels set blk-throttle up per disk only at its first rule (this one is 6.18): before that the counters are not kept at all, and nothing in a cgroup's own files says so (the hierarchy root lists no device: ``v1_blkio_counting``); dirty pages written back by the kernel's flusher rather than by the stage's own fsync are charged to the flusher's cgroup on v1 |
| cgroup v2 ``io.stat`` (``rbytes``/``wbytes``/``rios``/``wios``) | the same per device, kept by the io controller whether or not a limit is set; writeback charged to the page's owner | not testable here: no v2 io controller on this machine | present only where the ``io`` controller is enabled for the cgroup |
| ``/proc/<pid>/stat`` field 42 ``delayacct_blkio_ticks`` | clock ticks the process's main thread waited for block I/O | 0 here: ``kernel.task_delayacct`` = 0 (delay accounting off) | off unless the host turns it on (a host-wide sysctl, never changed from here); other threads of a process are not in the main thread's field |
| ``/proc/<pid>/net/dev`` | rx/tx bytes of every interface of the **network namespace** the process is in (``lo`` left out) | a local stage shares the runner's namespace: it shows the host's counters, so nothing is reported; in a namespace of its own (``unshare -n``, a veth pair), 200 raw 1000-byte frames -> rx and tx 200,532 (with IPv6 neighbour discovery) | counters are the namespace's since it was created, not one process's; gone once the namespace is (the last reading is kept) |
| ``os.scandir`` walk of the working directory (``st_blocks`` x 512) | space allocated to the files under the stage's working directory (one filesystem, no symlinks followed, hard links once) | 32 MiB fsync'd file: 33,558,528 bytes | a file written and deleted between two walks; anything outside the directory (``/tmp``); a tree too large to walk within the time bound |

So the local runner takes disk figures per task (``/proc/<pid>/io`` summed over the workload's
live processes, plus the totals of those that exited, plus the root's final counters from
``wait4``), not from the v1 blkio cgroup: the stage's v1 cgroup joins the blkio hierarchy only
for its bandwidth limits (``adapters/cgroups/throttle``), and its counters there are blind until
some throttle rule exists on the disk and charge buffered writeback to the kernel's flusher. Where the stage has a v2 cgroup of its own with ``io.stat``, the larger of the two
is taken (the cgroup also sees I/O by processes that came and went between samples).

``disk_read_ops``/``disk_write_ops`` are the read and write system calls (``syscr``/``syscw``)
of the workload's processes: on any file, pipe or socket, page-cache hits included; they are
not block-layer requests (the v1 ``io_serviced`` or v2 ``rios``/``wios`` counters are, where
they can be trusted).

A value that cannot be measured is ``None`` with the reason, never 0.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Iterable, Mapping

log = logging.getLogger(__name__)

#: ``ru_inblock``/``ru_oublock`` are in these units (the kernel shifts bytes right by 9).
RUSAGE_BLOCK = 512
#: ``st_blocks`` unit, whatever the filesystem's block size.
STAT_BLOCK = 512
#: The working-directory walk stops after this long or this many entries ...
WALK_SECONDS = 0.05
WALK_ENTRIES = 200_000
#: ... runs on every this-many-th sample and at most at this share of wall time (so a walk that
#: costs 50 ms waits at least 10 s), and stops being tried after this many cut-short walks.
WALK_EVERY_SAMPLES = 5
WALK_TIME_SHARE = 0.005
WALK_GIVE_UP_AFTER = 3
#: The walk after the stage exited may take longer: the workload no longer competes for CPU.
FINAL_WALK_SECONDS = 2.0

#: ``NamespaceTraffic(own_namespace=POD_NAMESPACE)``: no namespace is the runner's, every one read is the stage's.
POD_NAMESPACE = "pod: the stage's own"
#: The report's keys, always present (``None`` where unmeasured, with the reason in ``unmeasured``).
REPORT_KEYS = ("disk_read_bytes", "disk_write_bytes", "disk_read_ops", "disk_write_ops", "io_wait_seconds",
               "network_rx_bytes", "network_tx_bytes", "ephemeral_storage_peak_bytes")
DELAYACCT_SYSCTL = "/proc/sys/kernel/task_delayacct"


# -- parsing (pure: text in, numbers out, ValueError naming the file) --------------------------

def _count(token: str, where: str) -> int:
    """A kernel counter: ASCII digits only (``int`` would also take "1_0", "-1" or "١")."""
    if not (token.isascii() and token.isdigit() and len(token) <= 20):  # 20 digits: a u64
        raise ValueError(f"{where}: expected a non-negative integer counter, got {token[:40]!r}")
    return int(token)


@dataclass(frozen=True)
class TaskIo:
    """One process's ``/proc/<pid>/io`` counters that matter here (bytes, system calls)."""

    read_bytes: int = 0
    write_bytes: int = 0
    cancelled_write_bytes: int = 0
    syscr: int = 0
    syscw: int = 0

    def plus(self, other: "TaskIo") -> "TaskIo":
        return TaskIo(*(a + b for a, b in zip(self._values(), other._values())))

    def at_least(self, other: "TaskIo") -> "TaskIo":
        """Field by field the larger: counters never go down."""
        return TaskIo(*(max(a, b) for a, b in zip(self._values(), other._values())))

    def _values(self) -> tuple[int, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))


def parse_proc_io(text: str, where: str = "/proc/<pid>/io") -> TaskIo:
    """``/proc/<pid>/io`` ("name: value" lines); ``cancelled_write_bytes`` may be absent."""
    values: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"{where}: line {number} is not 'name: value': {line[:60]!r}")
        values[name.strip()] = _count(value.strip(), f"{where} line {number}")
    missing = [n for n in ("read_bytes", "write_bytes", "syscr", "syscw") if n not in values]
    if missing:
        raise ValueError(f"{where}: missing {', '.join(missing)}; is the kernel built with task I/O accounting?")
    return TaskIo(values["read_bytes"], values["write_bytes"], values.get("cancelled_write_bytes", 0),
                  values["syscr"], values["syscw"])


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    blkio_ticks: int  # field 42, delayacct_blkio_ticks (0 unless delay accounting is on)


def parse_proc_stat(text: str, where: str = "/proc/<pid>/stat") -> ProcStat:
    """``/proc/<pid>/stat``: the parent's pid and field 42. The command name (field 2) is in
    parentheses and may itself hold spaces and ')', so the fields start after the last ')'."""
    head, sep, rest = text.rpartition(")")
    if not sep or "(" not in head:
        raise ValueError(f"{where}: no '(command)' field; is this a /proc/<pid>/stat file?")
    after = rest.split()  # after[0] is field 3 (state), so field n is after[n - 3]
    if len(after) < 40:
        raise ValueError(f"{where}: {len(after) + 2} fields, field 42 (delayacct_blkio_ticks) needs 42")
    return ProcStat(ppid=_count(after[1], f"{where} field 4"), blkio_ticks=_count(after[39], f"{where} field 42"))


def parse_blkio_throttle(text: str, where: str = "blkio.throttle.io_service_bytes") -> dict[str, dict[str, int]]:
    """cgroup v1 ``blkio.throttle.io_service_bytes`` or ``io_serviced``: device -> {"Read": n,
    "Write": n, ...}; the closing "Total n" line is checked for shape and left out."""
    devices: dict[str, dict[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 2 and parts[0] == "Total":
            _count(parts[1], f"{where} line {number}")
        elif len(parts) == 3 and _is_device(parts[0]):
            devices.setdefault(parts[0], {})[parts[1]] = _count(parts[2], f"{where} line {number}")
        else:
            raise ValueError(f"{where}: line {number} is not 'MAJ:MIN Op count' or 'Total count': {line[:60]!r}")
    return devices


def parse_io_stat(text: str, where: str = "io.stat") -> dict[str, dict[str, int]]:
    """cgroup v2 ``io.stat``: device -> {"rbytes": n, "wbytes": n, "rios": n, "wios": n, ...}.
    Keys other than those four (iocost's, "dbytes"...) must have the key=value shape only."""
    devices: dict[str, dict[str, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if not _is_device(parts[0]):
            raise ValueError(f"{where}: line {number} does not start with a MAJ:MIN device: {line[:60]!r}")
        entry = devices.setdefault(parts[0], {})
        for pair in parts[1:]:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"{where}: line {number}: {pair[:40]!r} is not key=value")
            if key in ("rbytes", "wbytes", "rios", "wios"):
                entry[key] = _count(value, f"{where} line {number} {key}")
    return devices


def parse_net_dev(text: str, where: str = "/proc/<pid>/net/dev") -> dict[str, tuple[int, int]]:
    """``/proc/<pid>/net/dev``: interface -> (rx bytes, tx bytes). The two header lines hold '|'."""
    interfaces: dict[str, tuple[int, int]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or "|" in line:
            continue
        name, sep, counters = line.partition(":")
        numbers = counters.split()
        if not sep or not name.strip() or len(numbers) != 16:
            raise ValueError(f"{where}: line {number} is not 'interface: 16 counters': {line[:60]!r}")
        interfaces[name.strip()] = (_count(numbers[0], f"{where} line {number} rx bytes"),
                                    _count(numbers[8], f"{where} line {number} tx bytes"))
    return interfaces


def _is_device(token: str) -> bool:
    major, sep, minor = token.partition(":")
    return bool(sep) and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()


# -- readers (one file each; OSError when it is gone, ValueError when it is not what we expect) -

def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def read_task_io(pid: int) -> TaskIo:
    path = f"/proc/{pid}/io"
    return parse_proc_io(_read(path), path)


def read_proc_stat(pid: int) -> ProcStat:
    path = f"/proc/{pid}/stat"
    return parse_proc_stat(_read(path), path)


def delay_accounting_on(path: str = DELAYACCT_SYSCTL) -> bool:
    """Whether the kernel counts I/O wait per task (``kernel.task_delayacct``; Linux 5.14+)."""
    try:
        return _read(path).strip() == "1"
    except OSError:
        return False


def net_namespace(pid: int | str = "self") -> str:
    """The network namespace's identity, e.g. "net:[4026531833]"."""
    return os.readlink(f"/proc/{pid}/ns/net")


def read_net_traffic(pid: int) -> tuple[int, int]:
    """(rx, tx) bytes over the interfaces of ``pid``'s network namespace, ``lo`` left out
    (traffic a stage has with itself is not network bandwidth)."""
    path = f"/proc/{pid}/net/dev"
    return traffic_outside_lo(parse_net_dev(_read(path), path))


def traffic_outside_lo(interfaces: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """(rx, tx) summed over the interfaces other than the loopback."""
    outside = [counters for name, counters in interfaces.items() if name != "lo"]
    return sum(rx for rx, _ in outside), sum(tx for _, tx in outside)


@dataclass(frozen=True)
class CgroupIo:
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


def read_v1_blkio(directory: str) -> CgroupIo:
    """A v1 blkio cgroup's totals over its devices. Zero until blk-throttle is set up on the
    disk (see the module's table: check :func:`v1_blkio_counting` before trusting it)."""
    def totals(name: str) -> tuple[int, int]:
        path = os.path.join(directory, name)
        devices = parse_blkio_throttle(_read(path), path)
        return sum(d.get("Read", 0) for d in devices.values()), sum(d.get("Write", 0) for d in devices.values())

    (rb, wb), (ro, wo) = totals("blkio.throttle.io_service_bytes"), totals("blkio.throttle.io_serviced")
    return CgroupIo(rb, wb, ro, wo)


def v1_blkio_counting(hierarchy_root: str = "/sys/fs/cgroup/blkio") -> bool:
    """Whether v1 blkio counters are kept at all: the hierarchy's root lists a device only once
    blk-throttle was set up on it (the first throttle rule since boot); before that every cgroup
    reads "Total 0" whatever the disk did."""
    path = os.path.join(hierarchy_root, "blkio.throttle.io_service_bytes")
    try:
        return bool(parse_blkio_throttle(_read(path), path))
    except (OSError, ValueError):
        return False


def read_v2_io_stat(directory: str) -> CgroupIo:
    """A v2 cgroup's ``io.stat`` totals over its devices (FileNotFoundError without the io controller)."""
    path = os.path.join(directory, "io.stat")
    devices = parse_io_stat(_read(path), path).values()
    return CgroupIo(*(sum(d.get(k, 0) for d in devices) for k in ("rbytes", "wbytes", "rios", "wios")))


@dataclass(frozen=True)
class DirectoryUsage:
    bytes: int
    entries: int
    complete: bool  # False: the walk stopped at its time or entry bound (bytes is a lower bound)


def directory_usage(path: str, max_seconds: float = WALK_SECONDS, max_entries: int = WALK_ENTRIES,
                    clock: Callable[[], float] = time.monotonic) -> DirectoryUsage:
    """Space allocated to the files under ``path``: ``st_blocks`` x 512 (sparse files count what
    they hold, not their size), symlinks not followed, one filesystem (like ``du -x``), each hard
    link once. Entries that vanish mid-walk are skipped."""
    deadline = clock() + max_seconds
    root_dev = os.lstat(path).st_dev
    total, entries, seen_links = 0, 0, set()
    pending = [path]
    while pending:
        try:
            scan = os.scandir(pending.pop())
        except OSError:  # removed or unreadable since it was listed
            continue
        with scan:
            for entry in scan:
                entries += 1
                if entries > max_entries or (entries % 256 == 0 and clock() > deadline):
                    return DirectoryUsage(total, entries, complete=False)
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if info.st_dev != root_dev:
                    continue
                if stat.S_ISDIR(info.st_mode):
                    pending.append(entry.path)
                if info.st_nlink > 1 and not stat.S_ISDIR(info.st_mode):
                    if (info.st_dev, info.st_ino) in seen_links:
                        continue
                    seen_links.add((info.st_dev, info.st_ino))
                total += info.st_blocks * STAT_BLOCK
    return DirectoryUsage(total, entries, complete=True)


# -- accumulators: counters of a changing set of processes that never go down -----------------

class ProcessTreeIo:
    """Disk I/O of the workload's processes: the live ones' counters plus what exited ones did.

    The kernel folds a reaped child's counters into its parent's, so a process that vanished
    while its parent is still in the workload is already in the parent's figure (counting it
    again would double it); one whose parent is gone too (an orphan reaped by init) is kept
    from its last reading. The total is held at its highest, so a sample taken between a
    child's exit and its parent's reaping does not make it go down.
    """

    def __init__(self) -> None:
        self.gone = TaskIo()
        self.total = TaskIo()
        self._last: dict[int, tuple[int, TaskIo]] = {}  # pid -> (ppid, counters)
        self.readings = 0  # successful /proc/<pid>/io reads
        self.error: str | None = None  # why the last failed read failed

    def update(self, pids: Iterable[int]) -> TaskIo:
        now: dict[int, tuple[int, TaskIo]] = {}
        for pid in pids:
            try:
                now[pid] = (read_proc_stat(pid).ppid, read_task_io(pid))
            except (OSError, ValueError) as exc:  # exited since it was listed, or unreadable
                self.error = str(exc)
        for pid, (ppid, counters) in self._last.items():
            if pid not in now and ppid not in now:
                self.gone = self.gone.plus(counters)
        self._last = now
        self.readings += len(now)
        live = TaskIo()
        for _, counters in now.values():
            live = live.plus(counters)
        self.total = self.total.at_least(self.gone.plus(live))
        return self.total

    def include_final(self, counters: TaskIo) -> None:
        """The stage root's final counters (its zombie's /proc/<pid>/io, or wait4's rusage):
        they hold every descendant it reaped."""
        self.total = self.total.at_least(counters)


class NamespaceTraffic:
    """rx/tx bytes of the network namespaces the workload is in, other than the runner's own."""

    def __init__(self, own_namespace: str | None = None) -> None:
        self.latest: dict[str, tuple[int, int]] = {}  # namespace -> highest (rx, tx) read
        self.shared_with_runner = False
        self.error: str | None = None
        try:
            self.own: str | None = own_namespace or net_namespace()
        except OSError as exc:
            self.own, self.error = None, f"cannot read the runner's own network namespace ({exc.strerror or exc})"

    def update(self, pids: Iterable[int]) -> None:
        if self.own is None:  # nothing to tell the stage's namespace from the host's
            return
        read_already: set[str] = set()
        for pid in pids:
            try:
                namespace = net_namespace(pid)
                if namespace == self.own:
                    self.shared_with_runner = True
                    continue
                if namespace in read_already:
                    continue
                rx, tx = read_net_traffic(pid)
            except (OSError, ValueError) as exc:  # exited since it was listed, or unreadable
                self.error = str(exc)
                continue
            read_already.add(namespace)
            old_rx, old_tx = self.latest.get(namespace, (0, 0))
            self.latest[namespace] = (max(old_rx, rx), max(old_tx, tx))

    def totals(self) -> tuple[int, int] | None:
        if not self.latest:
            return None
        return sum(rx for rx, _ in self.latest.values()), sum(tx for _, tx in self.latest.values())


class BlockIoWait:
    """Seconds the workload's processes waited for block I/O, from delay accounting: the main
    thread's field 42 per process, kept for processes that exited (the kernel does not fold it
    into the parent's)."""

    def __init__(self) -> None:
        self.ticks_per_second = os.sysconf("SC_CLK_TCK")
        self._gone = 0
        self._last: dict[int, int] = {}

    def update(self, pids: Iterable[int]) -> None:
        now: dict[int, int] = {}
        for pid in pids:
            try:
                now[pid] = read_proc_stat(pid).blkio_ticks
            except (OSError, ValueError):
                continue
        self._gone += sum(ticks for pid, ticks in self._last.items() if pid not in now)
        self._last = now

    def seconds(self) -> float:
        return (self._gone + sum(self._last.values())) / self.ticks_per_second


class WorkingDirectoryPeak:
    """Highest space used under a directory, walked every few samples within a CPU budget."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.peak = 0
        self.latest: int | None = None  # the size at the last complete walk
        self.complete_walks = 0
        self.cut_short = 0
        self.error: str | None = None
        self._samples = 0
        self._next_allowed = 0.0

    def maybe_walk(self) -> None:
        due = self._samples % WALK_EVERY_SAMPLES == 0
        self._samples += 1
        if due and self.cut_short < WALK_GIVE_UP_AFTER and self.clock() >= self._next_allowed:
            started = self.clock()
            self.walk(WALK_SECONDS)
            self._next_allowed = started + (self.clock() - started) / WALK_TIME_SHARE

    def walk(self, max_seconds: float, max_entries: int = WALK_ENTRIES) -> None:
        try:
            usage = directory_usage(self.path, max_seconds=max_seconds, max_entries=max_entries)
        except OSError as exc:
            self.error = f"cannot read the working directory {self.path}: {exc.strerror or exc}"
            return
        self.peak = max(self.peak, usage.bytes)  # a cut-short walk is still a lower bound of the peak
        if usage.complete:
            self.complete_walks += 1
            self.latest = usage.bytes
        else:
            self.cut_short += 1
            if self.cut_short == WALK_GIVE_UP_AFTER:
                log.warning("the working directory %s holds more than %d entries or %.0f ms of walking; "
                            "its storage use is not measured", self.path, usage.entries, max_seconds * 1000)


# -- the stage's meter and its report --------------------------------------------------------

@dataclass(frozen=True)
class IoReport:
    """The run's I/O totals and storage peak; ``None`` where unmeasured, reason in ``unmeasured``."""

    disk_read_bytes: int | None = None
    disk_write_bytes: int | None = None
    disk_read_ops: int | None = None
    disk_write_ops: int | None = None
    io_wait_seconds: float | None = None
    network_rx_bytes: int | None = None
    network_tx_bytes: int | None = None
    ephemeral_storage_peak_bytes: int | None = None
    unmeasured: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def not_sampled(cls, why: str = "the run was not sampled") -> "IoReport":
        return cls(unmeasured={key: why for key in REPORT_KEYS})

    def measured(self) -> dict[str, float]:
        """The figures that were measured (the stage run's ``observed.<name>`` metrics)."""
        return {key: float(getattr(self, key)) for key in REPORT_KEYS if getattr(self, key) is not None}

    def to_dict(self) -> dict:
        out = {key: getattr(self, key) for key in REPORT_KEYS}
        out["unmeasured"] = {key: self.unmeasured[key] for key in REPORT_KEYS if out[key] is None and key in self.unmeasured}
        return out


class StageIoMeter:
    """Samples one stage's disk, network and working-directory storage alongside its CPU and
    memory (``alongside``), takes the root's final counters when it reaps it (``reap``), and
    reports the run's totals (``report``). Never raises from sampling: a source that fails is
    reported as unmeasured, with the reason."""

    def __init__(self, root_pid: int, pids: Callable[[], list[int]], workdir: str | None = None,
                 cgroup_v2_dir: str | None = None, *, in_pod: bool = False) -> None:
        """``in_pod``: the meter runs in the stage's pod (the monitor sidecar): the pod's network
        namespace is the stage's own, so its counters are measured although the meter shares it;
        the working-directory walk is off (a pod's ephemeral storage is its writable layer and
        emptyDirs, which the sidecar does not see)."""
        self.root = root_pid
        self.pids = pids
        self.cgroup_v2_dir = cgroup_v2_dir
        self.in_pod = in_pod
        self.disk = ProcessTreeIo()
        self.network = NamespaceTraffic(own_namespace=POD_NAMESPACE if in_pod else None)
        self.io_wait = BlockIoWait() if delay_accounting_on() else None
        self.storage = WorkingDirectoryPeak(workdir or os.getcwd())
        self.rusage: TaskIo | None = None
        self._failures: set[str] = set()
        self._last_counters: tuple[float, dict[str, float]] | None = None

    def alongside(self, primary):
        """``primary`` (a sampler of ``runtime/sampling``) that also samples I/O on each read."""
        return _SamplingAlongside(primary, self)

    def sample(self) -> None:
        # Any exception is caught here, not only OSError/ValueError: this runs inside the CPU and
        # memory sampler's read, and a fault of the I/O figures must not cost those samples.
        try:
            pids = sorted(set(self.pids()) | {self.root})
        except Exception as exc:  # noqa: BLE001 - see above (psutil's errors are not OSErrors)
            pids = [self.root]
            self._once("pids", exc)
        for name, step in (("disk", lambda: self.disk.update(pids)), ("network", lambda: self.network.update(pids)),
                           ("io wait", lambda: self.io_wait and self.io_wait.update(pids)),
                           ("storage", lambda: None if self.in_pod else self.storage.maybe_walk())):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - see above
                self._once(name, exc)

    def rates(self, now: float) -> dict[str, float]:
        """The latest sample's I/O as resources (``BANDWIDTH_RESOURCES`` in bytes/s since the
        previous call, ``ephemeral_storage`` the working directory's size at its last complete
        walk). A figure that is not measured, and every bandwidth on the first call, is absent.
        Never raises (as ``sample``): a fault costs only these figures."""
        try:
            counters = self._counters()
        except Exception as exc:  # noqa: BLE001 - see sample()
            self._once("rates", exc)
            return {}
        last, self._last_counters = self._last_counters, (now, counters)
        out: dict[str, float] = {}
        if last is not None and now > last[0]:
            dt = now - last[0]
            for name, value in counters.items():
                if name in last[1]:  # counters never go down; max() guards a cancelled write
                    out[name] = max(0.0, value - last[1][name]) / dt
        if not self.in_pod and self.storage.latest is not None:
            out["ephemeral_storage"] = float(self.storage.latest)
        return out

    def _counters(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.disk.readings or self.rusage is not None:
            total = self.disk.total
            out["disk_read"] = float(total.read_bytes)
            out["disk_write"] = float(max(0, total.write_bytes - total.cancelled_write_bytes))
        traffic = self.network.totals()
        if traffic is not None:
            out["network_rx"], out["network_tx"] = float(traffic[0]), float(traffic[1])
        return out

    def reap(self, proc: subprocess.Popen) -> int:
        """Wait for the stage's root and return its exit code as ``Popen.wait`` would, taking its
        final counters first (its zombie's /proc/<pid>/io, then wait4's rusage)."""
        if proc.returncode is None:
            self.sample()  # the root is a zombie now (or about to be): its counters are final
            try:
                _, status, usage = os.wait4(proc.pid, 0)
            except ChildProcessError:  # reaped meanwhile (Popen.poll in a signal handler)
                pass
            else:
                proc.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = TaskIo(read_bytes=usage.ru_inblock * RUSAGE_BLOCK, write_bytes=usage.ru_oublock * RUSAGE_BLOCK)
                self.disk.include_final(self.rusage)
        return proc.wait()

    def report(self) -> IoReport:
        """The run's figures, after one more walk of the working directory (call it once the
        stage has ended: what it left behind counts, and a short stage may never have been walked)."""
        if self.storage.cut_short < WALK_GIVE_UP_AFTER and not self.in_pod:
            self.storage.walk(FINAL_WALK_SECONDS)
        unmeasured: dict[str, str] = {}
        values: dict[str, float | int | None] = {}
        values.update(self._disk_figures(unmeasured))
        values.update(self._network_figures(unmeasured))
        if self.io_wait is None:
            unmeasured["io_wait_seconds"] = ("kernel.task_delayacct is off: the kernel does not count time spent "
                                             "waiting for I/O (turning it on is a host-wide sysctl, left to the host)")
        else:
            values["io_wait_seconds"] = self.io_wait.seconds()
        if self.in_pod:
            unmeasured["ephemeral_storage_peak_bytes"] = (
                "in a pod, ephemeral storage is the container's writable layer and its emptyDir volumes, which the "
                "monitor sidecar does not see (the kubelet's stats summary would need nodes/proxy)")
        elif self.storage.complete_walks:
            values["ephemeral_storage_peak_bytes"] = self.storage.peak
        else:
            unmeasured["ephemeral_storage_peak_bytes"] = self.storage.error or (
                f"the working directory {self.storage.path} is too large to walk within "
                f"{WALK_SECONDS * 1000:.0f} ms ({WALK_ENTRIES} entries at most)")
        return IoReport(**values, unmeasured=unmeasured)

    def _disk_figures(self, unmeasured: dict[str, str]) -> dict[str, int]:
        total = self.disk.total
        cgroup = self._cgroup_io()
        if not self.disk.readings and self.rusage is None and cgroup is None:
            why = f"no /proc/<pid>/io of the workload could be read ({self.disk.error or 'no process seen'})"
            unmeasured.update(dict.fromkeys(("disk_read_bytes", "disk_write_bytes", "disk_read_ops", "disk_write_ops"), why))
            return {}
        written = max(0, total.write_bytes - total.cancelled_write_bytes)  # dirtied, then deleted before writeback
        out = {"disk_read_bytes": total.read_bytes, "disk_write_bytes": written}
        if self.disk.readings:
            out.update(disk_read_ops=total.syscr, disk_write_ops=total.syscw)
        else:
            unmeasured.update(dict.fromkeys(("disk_read_ops", "disk_write_ops"),
                                            f"only wait4's rusage was available ({self.disk.error})"))
        if cgroup is not None:  # the stage's own v2 cgroup also saw processes between samples
            out["disk_read_bytes"] = max(out["disk_read_bytes"], cgroup.read_bytes)
            out["disk_write_bytes"] = max(out["disk_write_bytes"], cgroup.write_bytes)
        return out

    def _cgroup_io(self) -> CgroupIo | None:
        if self.cgroup_v2_dir is None:
            return None
        try:
            return read_v2_io_stat(self.cgroup_v2_dir)
        except (OSError, ValueError):  # no io controller there (or the cgroup is already gone)
            return None

    def _network_figures(self, unmeasured: dict[str, str]) -> dict[str, int]:
        totals = self.network.totals()
        if totals is not None:
            return {"network_rx_bytes": totals[0], "network_tx_bytes": totals[1]}
        why = ("the stage shares the runner's network namespace: /proc/<pid>/net/dev there counts the whole "
               "host's traffic, not the stage's (give the stage a network namespace of its own to measure it)")
        if not self.network.shared_with_runner:
            why = f"the stage's network namespace could not be read ({self.network.error or 'no process seen'})"
        unmeasured.update(network_rx_bytes=why, network_tx_bytes=why)
        return {}

    def _once(self, name: str, exc: Exception) -> None:
        kind = f"{name}:{type(exc).__name__}"
        if kind not in self._failures:  # once per kind: a broken file must not flood the log
            self._failures.add(kind)
            log.warning("I/O sampling (%s) failed: %s", name, exc)


class _SamplingAlongside:
    """A sampler (``runtime/sampling.Sampler``) that also takes an I/O sample on each read and
    adds it to the sample: disk and network bandwidth, working-directory storage. Neither I/O
    step raises, so an I/O fault never costs the CPU and memory figures; the counters are taken
    even when the primary's read fails (the next rate then spans both intervals)."""

    def __init__(self, primary, meter: StageIoMeter) -> None:
        self.primary, self.meter = primary, meter
        self.source = primary.source

    def read(self, now: float) -> dict[str, float]:
        self.meter.sample()
        values = self.primary.read(now)
        return {**self.meter.rates(now), **values}

    def pids(self) -> list[int]:
        return self.primary.pids()


def exited(proc: subprocess.Popen) -> bool:
    """Whether the child has exited, without reaping it, so that its final counters (its
    zombie's /proc/<pid>/io, wait4's rusage) are still there to take (``Popen.poll`` reaps)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere: let Popen find out its exit code
        return proc.poll() is not None


__all__ = ["CgroupIo", "DirectoryUsage", "IoReport", "ProcessTreeIo", "REPORT_KEYS", "StageIoMeter", "TaskIo",
           "delay_accounting_on", "directory_usage", "exited", "net_namespace", "parse_blkio_throttle", "parse_io_stat",
           "parse_net_dev", "parse_proc_io", "parse_proc_stat", "read_net_traffic", "read_task_io", "read_v1_blkio",
           "read_v2_io_stat", "traffic_outside_lo", "v1_blkio_counting"]

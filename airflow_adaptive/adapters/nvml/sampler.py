"""GPU usage of the workload through NVML (nvidia-ml-py, module ``pynvml``).

Values follow ``airflow_adaptive.domain.observation``: ``gpu`` in GPUs busy (sum of
utilisation / 100), ``gpu_memory`` in bytes. A resource whose NVML call failed this time is
left out of the sample (absent, never 0); ``sample`` never raises.

Two ways to attribute GPU use to the workload:

(a) **PID mode** (``NvmlSampler.open()``; the local runner). The runner shares the host PID
    namespace with the workload, so the PIDs NVML reports are the ones passed to ``sample``.
    ``gpu_memory`` is the sum of ``usedGpuMemory`` over the running compute and graphics
    processes whose PID is in ``pids`` (other processes on the same GPU are ignored). ``gpu``
    is the sum of those PIDs' SM utilisation from ``nvmlDeviceGetProcessUtilization`` (no
    sample since the last call, NVML_ERROR_NOT_FOUND, means no process ran kernels there: 0);
    on a device where that is not available (not supported, error) it falls back to the
    device's utilisation, counted only if a workload PID runs there (so it over-counts when
    other processes share that GPU).

(b) **Device mode** (``NvmlSampler.open(workload_gpus(pid))``; the Kubernetes sidecar). NVML
    reports HOST PIDs, which a container cannot map into its own PID namespace, so PIDs are
    useless there. Instead everything on the workload container's GPUs is attributed to the
    workload: ``gpu`` = sum of device utilisation, ``gpu_memory`` = device memory used (the
    ``used`` of ``nvmlDeviceGetMemoryInfo_v2``, which includes the CUDA contexts but not the
    driver/firmware reservation; on drivers without the v2 call, v1's ``used``, which counts
    that reservation too, a few hundred MiB). The GPUs are the workload container's
    (``workload_gpus(pid)``, table below), which the sidecar must be able to open itself: it is
    given ``NVIDIA_VISIBLE_DEVICES=all`` (every GPU of the node, accepted from an unprivileged
    container only where the NVIDIA runtime allows it) and keeps only the workload's. This is valid
    because the NVIDIA device plugin allocates whole GPUs exclusively to one container. It
    is NOT valid with GPU sharing: under time-slicing or MPS several pods get the same
    physical GPU, and device mode then charges all of their use to this workload (and MIG
    instances are not separated either: device-level counters are for the whole GPU).
    Where ``workload_gpus`` returns None the sidecar should not sample GPUs at all
    rather than fall back to PID mode, whose container PIDs would never match NVML's.

Which GPUs are the workload container's (``workload_gpus(pid)``, read through the pod's shared
process namespace, so the sidecar needs the workload's UID like the rest of its reading):

| what the workload container holds | set by | read as |
|---|---|---|
| ``NVIDIA_VISIBLE_DEVICES=GPU-<uuid>,...`` (or host indices) | the NVIDIA device plugin, ``DEVICE_LIST_STRATEGY=envvar`` (its default) | those UUIDs (indices: only when this monitor enumerates every GPU of the node, i.e. its own ``NVIDIA_VISIBLE_DEVICES=all``) |
| ``NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices`` | the device plugin's ``volume-mounts`` strategy | the names of the entries of that directory in the workload's root (``/proc/<pid>/root``) |
| ``/dev/nvidia<N>`` device nodes in its root | every runtime that gives a container a GPU (toolkit, CDI, GKE) | the GPUs whose ``nvmlDeviceGetMinorNumber`` is N: the selection when the variable is unset, ``void``/``none`` (CDI) or ``all``; otherwise a cross-check (a UUID whose node is missing is dropped) |
| ``MIG-...`` entries | MIG partitioning | refused: device counters are the whole GPU's, so they would not be this workload's |

Everything read there was written by (or for) the workload, which may re-exec itself with
another environment: values are parsed strictly (``parse_visible_devices``), and a malformed one
is one log line and no GPU sampling, never an exception. The worst a lying workload can do is
have another GPU's use recorded as its own, in its own stage runs; NVML values are bounded by the
hardware (utilisation <= 1 per GPU, memory <= the GPU's).

PID mode checks that NVML's PIDs are this process's: the driver does not know PID namespaces and
always reports host PIDs, so a runner inside a container with its own PID namespace (a Docker
worker without ``--pid=host``) would never find its workload among them and would read 0. When
NVML lists processes and none of them exists in this ``/proc``, the GPU resources are left out
of the sample (and, after a few such samples, that is said once) instead of being read as 0.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Collection, Iterable

log = logging.getLogger(__name__)

#: NVML return codes (nvml.h) the sampler treats specially.
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
#: nvml.h NVML_STRUCT_VERSION(Memory, 2): sizeof(nvmlMemory_v2_t) | 2 << 24 (pynvml.nvmlMemory_v2).
_NVML_MEMORY_V2 = 0x02000028
#: Answers of nvmlDeviceGetMemoryInfo_v2 meaning "this driver has no v2": use v1 from then on.
_NO_MEMORY_V2 = (NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND, NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
#: ``usedGpuMemory`` when NVML cannot tell (pynvml turns it into None).
_NOT_AVAILABLE = (1 << 64) - 1


#: The value the device plugin's ``volume-mounts`` strategy puts in NVIDIA_VISIBLE_DEVICES: the
#: devices are then the names of the entries of this directory in the container.
VOLUME_MOUNTS_DIR = "/var/run/nvidia-container-devices"
_ENV_NAME = b"NVIDIA_VISIBLE_DEVICES="
#: Bounds on what is parsed (a node has at most 16 GPUs today; a UUID is 40 characters).
MAX_VALUE_CHARS = 4096
MAX_DEVICES = 64
_UUID = re.compile(r"GPU-[0-9A-Fa-f-]{1,64}")
_INDEX = re.compile(r"[0-9]{1,4}")
_MIG = re.compile(r"MIG-[0-9A-Za-z/-]{1,128}|[0-9]{1,4}:[0-9]{1,4}")
_DEVICE_NODE = re.compile(r"nvidia([0-9]{1,4})")  # not nvidiactl, nvidia-uvm, nvidia-modeset, nvidia-caps


class MalformedDevices(ValueError):
    """A device list that is not one NVIDIA's runtime would accept, or one this sampler cannot attribute."""


@dataclass(frozen=True)
class GpuSelection:
    """The workload's GPUs, as far as its container tells: ``uuids`` and host ``indices`` (from
    NVIDIA_VISIBLE_DEVICES), ``every`` GPU (``all``), and the minor numbers of its ``/dev/nvidia<N>``
    nodes (None: no nodes seen, no cross-check). ``source`` says where it came from, for the log."""

    uuids: frozenset[str] = frozenset()
    indices: frozenset[int] = frozenset()
    every: bool = False
    minors: frozenset[int] | None = None
    source: str = ""

    @property
    def named(self) -> bool:
        """Whether the variable named devices (UUIDs or indices), as opposed to all or none."""
        return bool(self.uuids or self.indices)

    def describe(self) -> str:
        parts = sorted(self.uuids) + [f"index {i}" for i in sorted(self.indices)]
        if self.every:
            parts.append("all")
        if self.minors is not None:
            parts.append("device nodes " + ",".join(f"/dev/nvidia{m}" for m in sorted(self.minors)))
        return f"{'; '.join(parts) or 'none'} (from {self.source or '?'})"

    @classmethod
    def of(cls, entries: Iterable[str], source: str = "") -> "GpuSelection":
        """From device names (``all``, UUIDs, indices), as ``NvmlSampler.open`` accepts them."""
        return parse_visible_devices(",".join(str(e) for e in entries), source)


def parse_visible_devices(value: bytes | str, source: str = "NVIDIA_VISIBLE_DEVICES") -> GpuSelection:
    """``NVIDIA_VISIBLE_DEVICES`` (or a list of device names), strictly: ASCII, at most
    ``MAX_VALUE_CHARS``, ``all`` | ``none`` | ``void`` | empty | up to ``MAX_DEVICES`` comma-separated
    GPU UUIDs or indices. MIG devices and anything else raise :class:`MalformedDevices`; the
    volume-mounts marker is :data:`VOLUME_MOUNTS_DIR`, for the caller (``workload_gpus``)."""
    if isinstance(value, bytes):
        if len(value) > MAX_VALUE_CHARS:
            raise MalformedDevices(f"{len(value)} bytes long, more than {MAX_VALUE_CHARS}")
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedDevices("not ASCII") from None
    if len(value) > MAX_VALUE_CHARS:
        raise MalformedDevices(f"{len(value)} characters long, more than {MAX_VALUE_CHARS}")
    text = value.strip()
    if text in ("", "none", "void"):
        return GpuSelection(source=source)
    if text == "all":
        return GpuSelection(every=True, source=source)
    tokens = [t.strip() for t in text.split(",")]
    if len(tokens) > MAX_DEVICES:
        raise MalformedDevices(f"{len(tokens)} entries, more than {MAX_DEVICES}")
    uuids, indices = set(), set()
    for t in tokens:
        if _UUID.fullmatch(t):
            uuids.add(t)
        elif _INDEX.fullmatch(t):
            indices.add(int(t))
        elif _MIG.fullmatch(t):
            raise MalformedDevices(f"MIG device {t!r}: NVML's device counters are the whole GPU's, shared with "
                                   "the other MIG instances, so they cannot be attributed to this workload")
        else:
            raise MalformedDevices(f"entry {t[:48]!r} is neither all/none/void, a GPU UUID (GPU-...) nor an index")
    return GpuSelection(frozenset(uuids), frozenset(indices), source=source)


def _environ_value(pid: int, proc: str) -> bytes | None:
    """The raw NVIDIA_VISIBLE_DEVICES of ``pid`` (None: not set). Raises OSError, or
    MalformedDevices when it is set twice with different values (glibc would take the first; the
    runtime that acted on it is not asked)."""
    with open(f"{proc}/{pid}/environ", "rb") as f:
        raw = f.read()
    values = {entry[len(_ENV_NAME):] for entry in raw.split(b"\0") if entry.startswith(_ENV_NAME)}
    if len(values) > 1:
        raise MalformedDevices("set more than once, with different values")
    return values.pop() if values else None


def _device_minors(pid: int, proc: str) -> frozenset[int] | None:
    """Minor numbers of the ``/dev/nvidia<N>`` nodes in the workload's root; None when there are
    none or ``/dev`` cannot be listed (then nothing is cross-checked)."""
    try:
        names = os.listdir(f"{proc}/{pid}/root/dev")
    except OSError as e:
        log.debug("cannot list the workload's /dev (%s); its GPU device nodes are not cross-checked", e)
        return None
    minors = frozenset(int(m.group(1)) for m in map(_DEVICE_NODE.fullmatch, names) if m)
    return minors or None


def workload_gpus(pid: int, proc: str = "/proc") -> GpuSelection | None:
    """The GPUs of the workload container whose process is ``pid``, read through ``proc`` (see the
    module's table). None, with one log line, when it has none, they cannot be read, or what its
    container holds is malformed; never raises."""
    try:
        raw = _environ_value(pid, proc)
        minors = _device_minors(pid, proc)
        if raw is None:
            selection = GpuSelection(source="device nodes")
        elif raw.strip() == VOLUME_MOUNTS_DIR.encode():
            where = f"{proc}/{pid}/root{VOLUME_MOUNTS_DIR}"
            entries = sorted(os.listdir(where))
            selection = parse_visible_devices(",".join(entries), f"the entries of {VOLUME_MOUNTS_DIR}") if entries \
                else GpuSelection(source=VOLUME_MOUNTS_DIR)
        else:
            selection = parse_visible_devices(raw)
    except MalformedDevices as e:
        log.warning("the workload's GPU list (process %s, NVIDIA_VISIBLE_DEVICES) is malformed: %s; "
                    "its GPU usage is not recorded", pid, e)
        return None
    except OSError as e:
        log.warning("cannot read which GPUs process %s has (%s); its GPU usage is not recorded", pid, e)
        return None
    if minors is not None:
        selection = GpuSelection(selection.uuids, selection.indices, selection.every, minors,
                                 selection.source if selection.named or selection.every else "device nodes")
    if not (selection.named or selection.every or selection.minors):
        log.info("process %s has no GPU (no NVIDIA_VISIBLE_DEVICES naming one, no /dev/nvidia<N> node): "
                 "no GPU usage to record", pid)
        return None
    return selection


def visible_devices_of(pid: int) -> list[str] | None:
    """``NVIDIA_VISIBLE_DEVICES`` of process ``pid`` as a list (UUIDs, indices, or ``["all"]``;
    ``[]`` for ``none``/``void``). None, with one log line, when /proc/<pid>/environ cannot be
    read, the variable is not set, or its value is malformed (``parse_visible_devices``)."""
    path = f"/proc/{pid}/environ"
    try:
        raw = _environ_value(pid, "/proc")
        if raw is None:
            log.info("process %s has no NVIDIA_VISIBLE_DEVICES in its environment; its GPUs are unknown", pid)
            return None
        selection = parse_visible_devices(raw)
    except OSError as e:
        log.warning("cannot read the GPUs of process %s from %s: %s", pid, path, e)
        return None
    except MalformedDevices as e:
        log.warning("NVIDIA_VISIBLE_DEVICES of process %s is malformed: %s; its GPUs are unknown", pid, e)
        return None
    if selection.every:
        return ["all"]
    return sorted(selection.uuids) + [str(i) for i in sorted(selection.indices)]


class NvmlSampler:
    """Reads the workload's GPU usage; build it with ``open``, release it with ``close``."""

    def __init__(self, nvml: Any, devices: list[tuple[str, Any]], device_mode: bool) -> None:
        self._nvml = nvml
        self._devices = devices  # (uuid, handle)
        self.device_mode = device_mode
        self._last_seen: dict[str, int] = {}  # uuid -> last process-utilisation timestamp (us)
        self._logged: set[tuple[str, int]] = set()
        self._memory_v1: set[str] = set()  # devices whose driver has no nvmlDeviceGetMemoryInfo_v2
        self._closed = False
        # PID mode: whether NVML's (host) PIDs are in this process's PID namespace; None: not known yet.
        self._same_pid_namespace: bool | None = None
        self._foreign_samples = 0

    @property
    def device_uuids(self) -> list[str]:
        return [u for u, _ in self._devices]

    @classmethod
    def open(cls, devices: "GpuSelection | Collection[str] | None" = None, *,
             monitor_sees_all: bool | None = None) -> "NvmlSampler | None":
        """Initialise NVML. ``devices`` given (a :class:`GpuSelection`, or device names such as
        ``["GPU-..."]`` or ``["all"]``): device mode on those GPUs; None: PID mode on every GPU.

        Host indices in a selection count only when this process enumerates every GPU of the node
        (``monitor_sees_all``; default: its own ``NVIDIA_VISIBLE_DEVICES`` is ``all``), since an
        index is a position in the host's enumeration. Returns None, with one log line, when NVML
        cannot be loaded or initialised, or when device mode finds none of the workload's GPUs
        here (never a sampler that would read 0 for GPUs it cannot see)."""
        selection: GpuSelection | None
        if devices is None or isinstance(devices, GpuSelection):
            selection = devices
        else:
            try:
                selection = GpuSelection.of(devices, "the caller")
            except MalformedDevices as e:
                log.warning("GPU usage not sampled: device list %s: %s", list(devices)[:8], e)
                return None
        try:
            import pynvml
        except Exception as e:  # noqa: BLE001 - not installed or broken: no GPU sampling
            log.info("GPU usage not sampled: nvidia-ml-py (pynvml) cannot be imported: %s", e)
            return None
        try:
            pynvml.nvmlInit()
        except Exception as e:  # noqa: BLE001 - NVMLError (library missing, driver not loaded, ...)
            log.info("GPU usage not sampled: NVML cannot be initialised: %s", e)
            return None
        try:
            found = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                found.append((_text(pynvml.nvmlDeviceGetUUID(handle)), handle))
            try:  # only for the log line
                driver = _text(pynvml.nvmlSystemGetDriverVersion())
                names = {u: _text(pynvml.nvmlDeviceGetName(h)) for u, h in found}
            except pynvml.NVMLError:
                driver, names = "?", {}
            devices_here = found if selection is None else _select(pynvml, found, selection, monitor_sees_all)
        except Exception as e:  # noqa: BLE001
            log.info("GPU usage not sampled: NVML cannot list the GPUs: %s", e)
            _shutdown(pynvml)
            return None
        if selection is not None and not devices_here:
            log.warning("GPU usage not sampled: none of the workload's GPUs (%s) is visible to this monitor, "
                        "which sees %s; in a pod the monitor needs NVIDIA_VISIBLE_DEVICES=all accepted by the "
                        "NVIDIA runtime (README: GPU monitoring)", selection.describe(),
                        ", ".join(u for u, _ in found) or "no GPU")
            _shutdown(pynvml)
            return None
        log.info(
            "NVML sampler (driver %s, %s mode): %s",
            driver, "device" if selection is not None else "PID",
            ", ".join(f"{u} ({names.get(u, '?')})" for u, _ in devices_here) or "no GPUs",
        )
        return cls(pynvml, devices_here, selection is not None)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _shutdown(self._nvml)

    def __enter__(self) -> "NvmlSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sampling -------------------------------------------------------------------------

    def __call__(self, pids: Collection[int] = ()) -> dict[str, float]:
        """A ``GpuReader`` (``runtime/sampling.py``): the same as :meth:`sample`."""
        return self.sample(pids)

    def sample(self, pids: Collection[int] = ()) -> dict[str, float]:
        """``{"gpu": ..., "gpu_memory": ...}``; a resource NVML could not read is left out."""
        try:
            if self.device_mode:
                return self._sample_devices()
            return self._sample_pids({int(p) for p in pids})
        except Exception as e:  # noqa: BLE001 - never let a sampler bug stop the monitor
            self._log_once("sample", -1, e)
            return {}

    def _sample_devices(self) -> dict[str, float]:
        gpu: float | None = 0.0
        memory: float | None = 0.0
        for uuid, handle in self._devices:
            util = self._call("nvmlDeviceGetUtilizationRates", handle)
            gpu = None if util is None or gpu is None else gpu + util.gpu / 100.0
            used = self._device_memory_used(uuid, handle)
            memory = None if used is None or memory is None else memory + used
        return _present(gpu=gpu, gpu_memory=memory)

    def _device_memory_used(self, uuid: str, handle: Any) -> float | None:
        """Device memory in use: v2's ``used`` (without the driver's reservation) where the
        driver has it, else v1's; None (logged once) on error."""
        nvml = self._nvml
        if uuid not in self._memory_v1:
            try:
                info = nvml.nvmlDeviceGetMemoryInfo(handle, version=getattr(nvml, "nvmlMemory_v2", _NVML_MEMORY_V2))
                return float(info.used)
            except nvml.NVMLError as e:
                if e.value not in _NO_MEMORY_V2:
                    self._log_once("nvmlDeviceGetMemoryInfo_v2", e.value, e)
                    return None
                log.debug("GPU %s: no nvmlDeviceGetMemoryInfo_v2 (%s); using v1", uuid, e)
                self._memory_v1.add(uuid)
            except Exception as e:  # noqa: BLE001
                self._log_once("nvmlDeviceGetMemoryInfo_v2", -1, e)
                return None
        mem = self._call("nvmlDeviceGetMemoryInfo", handle)
        return None if mem is None else float(mem.used)

    def _sample_pids(self, pids: set[int]) -> dict[str, float]:
        gpu: float | None = 0.0
        memory: float | None = 0.0
        listed: set[int] = set()  # every process NVML lists, the workload's or not
        for uuid, handle in self._devices:
            # Memory: the workload's compute and graphics processes on this device.
            procs = self._call("nvmlDeviceGetComputeRunningProcesses", handle)
            graphics = self._call("nvmlDeviceGetGraphicsRunningProcesses", handle, optional=True)
            used: dict[int, int | None] = {}
            for p in (procs or []) + (graphics or []):
                listed.add(p.pid)
                if p.pid in pids:
                    # A process using compute and graphics is listed twice, with the same memory.
                    m = p.usedGpuMemory
                    m = None if m is None or m == _NOT_AVAILABLE else int(m)
                    prev = used.get(p.pid)
                    used[p.pid] = m if prev is None else max(prev, m or 0)
            runs_here: bool | None = bool(used) if procs is not None else None
            if procs is None or graphics is None or any(m is None for m in used.values()):
                memory = None
            elif memory is not None:
                memory += float(sum(used.values()))

            # Utilisation: per-process SM samples, else the device's, if the workload runs here.
            busy = self._process_utilisation(uuid, handle, pids)
            if busy is not None:
                if gpu is not None:
                    gpu += busy
                continue
            if runs_here is None:
                gpu = None  # cannot tell whether the workload uses this GPU
            elif runs_here:
                util = self._call("nvmlDeviceGetUtilizationRates", handle)
                gpu = None if util is None or gpu is None else gpu + util.gpu / 100.0
        if not self._pids_are_ours(listed, pids):
            return {}
        return _present(gpu=gpu, gpu_memory=memory)

    #: Samples in a row in which NVML listed processes and none of them existed here, before that
    #: is said in the log (one such sample can be processes that just exited).
    FOREIGN_SAMPLES_BEFORE_LOG = 3

    def _pids_are_ours(self, listed: set[int], pids: set[int]) -> bool:
        """Whether the PIDs NVML reports live in this process's PID namespace (see the module's
        docstring). No process listed: nothing uses the GPUs, 0 is true in any namespace. Once a
        listed PID is the workload's or exists in /proc, that is settled."""
        if self._same_pid_namespace or not listed:
            return True
        if listed & pids or any(os.path.exists(f"/proc/{p}") for p in sorted(listed)[:16]):
            self._same_pid_namespace = True
            return True
        self._foreign_samples += 1
        if self._foreign_samples == self.FOREIGN_SAMPLES_BEFORE_LOG:
            log.warning("NVML lists GPU processes %s, none of which exists in this PID namespace: NVML reports "
                        "host PIDs, so this runner (in a container without the host's PID namespace?) cannot "
                        "tell the workload's; GPU usage is left out until one of them is found here",
                        sorted(listed)[:8])
        return False

    def _process_utilisation(self, uuid: str, handle: Any, pids: set[int]) -> float | None:
        """The workload's SM utilisation on one device, in GPUs (mean over the samples NVML
        returns per PID since the last call); None where per-process utilisation is unavailable."""
        nvml = self._nvml
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_seen.get(uuid, 0))
        except nvml.NVMLError as e:
            if e.value == NVML_ERROR_NOT_FOUND:  # no process ran kernels since the last call
                return 0.0
            self._log_once("nvmlDeviceGetProcessUtilization", e.value, e, fallback=True)
            return None
        except Exception as e:  # noqa: BLE001
            self._log_once("nvmlDeviceGetProcessUtilization", -1, e, fallback=True)
            return None
        per_pid: dict[int, list[int]] = {}
        for s in samples:
            self._last_seen[uuid] = max(self._last_seen.get(uuid, 0), int(s.timeStamp))
            if s.pid in pids:
                per_pid.setdefault(s.pid, []).append(min(100, max(0, int(s.smUtil))))
        return sum(sum(v) / len(v) for v in per_pid.values()) / 100.0

    def _call(self, name: str, handle: Any, optional: bool = False) -> Any:
        """``pynvml.<name>(handle)``; None (logged once per function and error code) on error.
        ``optional``: NOT_SUPPORTED means "none" (an empty list), not an error."""
        nvml = self._nvml
        try:
            return getattr(nvml, name)(handle)
        except nvml.NVMLError as e:
            if optional and e.value == NVML_ERROR_NOT_SUPPORTED:
                return []
            self._log_once(name, e.value, e)
        except Exception as e:  # noqa: BLE001
            self._log_once(name, -1, e)
        return None

    def _log_once(self, name: str, code: int, error: BaseException, fallback: bool = False) -> None:
        if (name, code) in self._logged:
            return
        self._logged.add((name, code))
        what = "falling back to device utilisation" if fallback else "that resource is left out of the sample"
        log.warning("NVML %s failed (%s); %s (logged once per error kind)", name, error, what)


def _select(nvml: Any, found: list[tuple[str, Any]], selection: GpuSelection,
            monitor_sees_all: bool | None) -> list[tuple[str, Any]]:
    """The devices of ``found`` (this process's NVML enumeration) that ``selection`` names; a
    named device whose ``/dev/nvidia<N>`` node the workload lacks is dropped (logged)."""
    if monitor_sees_all is None:
        monitor_sees_all = os.environ.get("NVIDIA_VISIBLE_DEVICES", "").strip() == "all"
    if selection.indices and not monitor_sees_all:
        log.warning("the workload names its GPUs by host index (%s), which match this monitor's GPUs only when "
                    "it sees every GPU of the node (NVIDIA_VISIBLE_DEVICES=all); those are not sampled",
                    sorted(selection.indices))
    known = {u for u, _ in found}
    missing = sorted(selection.uuids - known)
    if missing:
        log.warning("GPUs %s are not visible to NVML here; they are not sampled", missing)
    minor_of: dict[str, int | None] = {}
    if selection.minors is not None:
        for u, h in found:
            try:
                minor_of[u] = int(nvml.nvmlDeviceGetMinorNumber(h))
            except Exception as e:  # noqa: BLE001 - NOT_SUPPORTED on some platforms: no cross-check there
                log.debug("nvmlDeviceGetMinorNumber(%s) failed: %s", u, e)
                minor_of[u] = None
    chosen = []
    for i, (u, h) in enumerate(found):
        if selection.named:
            named = u in selection.uuids or (monitor_sees_all and i in selection.indices)
        elif selection.every:
            named = True
        else:  # only device nodes: the GPUs behind them
            named = minor_of.get(u) is not None and minor_of[u] in selection.minors
        if named and selection.minors is not None and minor_of.get(u) is not None and minor_of[u] not in selection.minors:
            log.warning("GPU %s is named by the workload's NVIDIA_VISIBLE_DEVICES but its device node /dev/nvidia%d "
                        "is not in the workload's container; it is not sampled", u, minor_of[u])
            named = False
        if named:
            chosen.append((u, h))
    return chosen


def _present(**values: float | None) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001
        log.debug("nvmlShutdown failed: %s", e)


__all__ = ["GpuSelection", "MalformedDevices", "NvmlSampler", "parse_visible_devices", "visible_devices_of", "workload_gpus"]

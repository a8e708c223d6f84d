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

(b) **Device mode** (``NvmlSampler.open(device_uuids)``; the Kubernetes sidecar). NVML
    reports HOST PIDs, which a container cannot map into its own PID namespace, so PIDs are
    useless there. Instead everything on the workload container's GPUs is attributed to the
    workload: ``gpu`` = sum of device utilisation, ``gpu_memory`` = device memory used (the
    ``used`` of ``nvmlDeviceGetMemoryInfo_v2``, which includes the CUDA contexts but not the
    driver/firmware reservation; on drivers without the v2 call, v1's ``used``, which counts
    that reservation too, a few hundred MiB). The GPUs are those in ``NVIDIA_VISIBLE_DEVICES``
    of the workload process (``visible_devices_of(pid)``), and the sidecar is given the same
    devices. This is valid
    because the NVIDIA device plugin allocates whole GPUs exclusively to one container. It
    is NOT valid with GPU sharing: under time-slicing or MPS several pods get the same
    physical GPU, and device mode then charges all of their use to this workload (and MIG
    instances are not separated either: device-level counters are for the whole GPU).
    Where ``visible_devices_of`` returns None the sidecar should not sample GPUs at all
    rather than fall back to PID mode, whose container PIDs would never match NVML's.
"""

from __future__ import annotations

import logging
from typing import Any, Collection

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


def visible_devices_of(pid: int) -> list[str] | None:
    """``NVIDIA_VISIBLE_DEVICES`` of process ``pid`` as a list (UUIDs, indices, or ``["all"]``;
    ``[]`` for ``none``/``void``). None, with one log line, when /proc/<pid>/environ cannot be
    read or the variable is not set."""
    path = f"/proc/{pid}/environ"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        log.warning("cannot read the GPUs of process %s from %s: %s", pid, path, e)
        return None
    for entry in raw.split(b"\0"):
        if entry.startswith(b"NVIDIA_VISIBLE_DEVICES="):
            value = entry.split(b"=", 1)[1].decode("utf-8", "replace").strip()
            if value in ("", "none", "void"):
                return []
            return [v.strip() for v in value.split(",") if v.strip()]
    log.info("process %s has no NVIDIA_VISIBLE_DEVICES in its environment; its GPUs are unknown", pid)
    return None


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

    @property
    def device_uuids(self) -> list[str]:
        return [u for u, _ in self._devices]

    @classmethod
    def open(cls, device_uuids: Collection[str] | None = None) -> "NvmlSampler | None":
        """Initialise NVML. ``device_uuids`` given: device mode on those GPUs (``"all"`` or
        indices: every GPU this process sees); None: PID mode on every GPU. Returns None, with
        one log line, when NVML cannot be loaded or initialised."""
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
            devices = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                devices.append((_text(pynvml.nvmlDeviceGetUUID(handle)), handle))
            try:  # only for the log line
                driver = _text(pynvml.nvmlSystemGetDriverVersion())
                names = {u: _text(pynvml.nvmlDeviceGetName(h)) for u, h in devices}
            except pynvml.NVMLError:
                driver, names = "?", {}
        except Exception as e:  # noqa: BLE001
            log.info("GPU usage not sampled: NVML cannot list the GPUs: %s", e)
            _shutdown(pynvml)
            return None
        device_mode = device_uuids is not None
        if device_mode:
            wanted = [str(u) for u in device_uuids]
            if not any(u == "all" or u.isdigit() for u in wanted):
                known = {u for u, _ in devices}
                missing = [u for u in wanted if u not in known]
                if missing:
                    log.warning("GPUs %s are not visible to NVML here; they are not sampled", missing)
                devices = [(u, h) for u, h in devices if u in wanted]
            # "all" or host indices: the sidecar is given the same devices as the workload, so
            # every GPU it sees is one of the workload's.
        log.info(
            "NVML sampler (driver %s, %s mode): %s",
            driver, "device" if device_mode else "PID",
            ", ".join(f"{u} ({names.get(u, '?')})" for u, _ in devices) or "no GPUs",
        )
        return cls(pynvml, devices, device_mode)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _shutdown(self._nvml)

    def __enter__(self) -> "NvmlSampler":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sampling -------------------------------------------------------------------------

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
        for uuid, handle in self._devices:
            # Memory: the workload's compute and graphics processes on this device.
            procs = self._call("nvmlDeviceGetComputeRunningProcesses", handle)
            graphics = self._call("nvmlDeviceGetGraphicsRunningProcesses", handle, optional=True)
            used: dict[int, int | None] = {}
            for p in (procs or []) + (graphics or []):
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
        return _present(gpu=gpu, gpu_memory=memory)

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


def _present(**values: float | None) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shutdown(nvml: Any) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception as e:  # noqa: BLE001
        log.debug("nvmlShutdown failed: %s", e)


__all__ = ["NvmlSampler", "visible_devices_of"]

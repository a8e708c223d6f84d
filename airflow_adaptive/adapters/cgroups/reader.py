"""Read a cgroup's usage the way the kernel counts it (what its OOM killer sees).

Memory is the cgroup's charge (``memory.current`` on v2, ``memory.usage_in_bytes`` on v1):
anonymous memory plus page cache, tmpfs and kernel memory charged to it, which is what a limit
is enforced against; a process's RSS misses the page cache and tmpfs.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow_adaptive.adapters.cgroups.layout import CgroupPaths


class CgroupReader:
    def __init__(self, paths: CgroupPaths) -> None:
        self.paths = paths
        self.version = paths.version
        mem, cpu = paths.dir("memory"), paths.dir("cpuacct" if paths.version == "v1" else "cpu")
        if self.version == "v2":
            self._memory = os.path.join(mem, "memory.current")
            self._peak = os.path.join(mem, "memory.peak")  # Linux 5.19+
            self._events = os.path.join(mem, "memory.events")
            self._cpu = os.path.join(cpu, "cpu.stat")
        else:
            self._memory = os.path.join(mem, "memory.usage_in_bytes")
            self._peak = os.path.join(mem, "memory.max_usage_in_bytes")
            self._events = os.path.join(mem, "memory.oom_control")
            self._cpu = os.path.join(cpu, "cpuacct.usage")
        self._procs = os.path.join(mem, "cgroup.procs")

    @property
    def events_path(self) -> str:
        """The file holding the OOM-kill counter (v2 ``memory.events``, v1 ``memory.oom_control``)."""
        return self._events

    def check(self) -> None:
        """Raise FileNotFoundError naming the first file that is missing."""
        for path in (self._memory, self._cpu, self._events, self._procs):
            if not os.path.exists(path):
                raise FileNotFoundError(f"cgroup file {path} does not exist")

    def memory_bytes(self) -> float:
        return float(_read(self._memory))

    def memory_peak_bytes(self) -> float | None:
        try:
            return float(_read(self._peak))
        except (OSError, ValueError):
            return None

    def cpu_seconds(self) -> float:
        """Cumulative CPU time of every task in the cgroup, in seconds."""
        if self.version == "v2":
            return parse_flat_keyed(_read(self._cpu))["usage_usec"] / 1e6
        return int(_read(self._cpu)) / 1e9

    def oom_kills(self) -> int:
        return int(parse_flat_keyed(_read(self._events)).get("oom_kill", 0))

    def memory_events(self) -> dict[str, int]:
        """v2 ``memory.events`` (high, max, oom, oom_kill); v1 ``memory.oom_control``."""
        return parse_flat_keyed(_read(self._events))

    def under_oom(self) -> bool:
        """v1 with ``oom_kill_disable``: tasks are paused at the limit, waiting for more memory."""
        return self.version == "v1" and parse_flat_keyed(_read(self._events)).get("under_oom", 0) == 1

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(self._procs).split()]
        except OSError:
            return []


def _read(path: str) -> str:
    return Path(path).read_text()


def parse_flat_keyed(text: str) -> dict[str, int]:
    """The kernel's "key value" lines (memory.events, memory.oom_control, cpu.stat)."""
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out

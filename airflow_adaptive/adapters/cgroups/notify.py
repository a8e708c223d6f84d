"""The kernel's own early warnings that a cgroup's memory is about to hit its limit.

Polling once a second loses to memory that grows hundreds of MiB a second, so the runner also
sleeps on file descriptors the kernel wakes:

- v1: an eventfd registered through ``cgroup.event_control`` for a usage threshold below the
  limit (fires when usage crosses it), and one for ``memory.oom_control`` (fires when tasks hit
  the limit; with ``oom_kill_disable`` they pause there instead of dying).
- v2: ``memory.events`` raises POLLPRI whenever a counter changes; ``memory.high``, set below
  ``memory.max``, makes the ``high`` counter move (and throttles the workload) first.
"""

from __future__ import annotations

import logging
import os
import select

from airflow_adaptive.adapters.cgroups.control import ManagedCgroup

log = logging.getLogger(__name__)

#: v1 usage threshold as a share of the limit: the same point v2 uses for memory.high.
THRESHOLD_FRACTION = 0.9


class MemoryPressureWatch:
    """File descriptors to poll, re-armed at every limit change."""

    def __init__(self, group: ManagedCgroup) -> None:
        self.group = group
        self._mem_dir = group.paths.dir("memory")
        self._fds: list[int] = []  # eventfds (v1) or the memory.events fd (v2)
        self._files: list[int] = []  # v1: files whose fds the registration names
        self._oom_efd: int | None = None

    def arm(self, limit_bytes: float) -> None:
        self.close()
        if self.group.version == "v2":
            fd = os.open(os.path.join(self._mem_dir, "memory.events"), os.O_RDONLY)
            self._fds.append(fd)
            return
        usage_fd = os.open(os.path.join(self._mem_dir, "memory.usage_in_bytes"), os.O_RDONLY)
        oom_fd = os.open(os.path.join(self._mem_dir, "memory.oom_control"), os.O_RDONLY)
        self._files += [usage_fd, oom_fd]
        threshold_efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._oom_efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._fds += [threshold_efd, self._oom_efd]
        control = os.path.join(self._mem_dir, "cgroup.event_control")
        with open(control, "w") as f:
            f.write(f"{threshold_efd} {usage_fd} {int(limit_bytes * THRESHOLD_FRACTION)}")
        with open(control, "w") as f:
            f.write(f"{self._oom_efd} {oom_fd}")

    def register(self, poller: "select.poll") -> list[int]:
        mask = select.POLLPRI | select.POLLERR if self.group.version == "v2" else select.POLLIN
        for fd in self._fds:
            poller.register(fd, mask)
        return list(self._fds)

    def drain(self, fd: int) -> str:
        """Consume one wake-up; returns what it was: "threshold", "oom" or "events"."""
        if self.group.version == "v2":
            os.lseek(fd, 0, os.SEEK_SET)
            os.read(fd, 4096)  # reading clears the POLLPRI condition
            return "events"
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            pass
        return "oom" if fd == self._oom_efd else "threshold"

    def close(self) -> None:
        # Closing a v1 eventfd unregisters it from the cgroup.
        for fd in self._fds + self._files:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds, self._files, self._oom_efd = [], [], None

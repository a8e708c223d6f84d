"""Disk bandwidth limits of a cgroup: the rule files, what they hold, and what they bind.

| | cgroup v1 (``blkio`` hierarchy) | cgroup v2 (``io`` controller) |
|---|---|---|
| set | ``blkio.throttle.read_bps_device`` / ``write_bps_device``: ``"MAJ:MIN BYTES"`` | ``io.max``: ``"MAJ:MIN rbps=N"`` / ``"MAJ:MIN wbps=N"`` (other keys kept) |
| remove | ``"MAJ:MIN 0"`` | ``"MAJ:MIN rbps=max"`` |
| read back | one ``"MAJ:MIN BYTES"`` line per device with a rule | ``"MAJ:MIN rbps=N wbps=max riops=max wiops=max"`` |
| binds | bios the cgroup's tasks submit: ``O_DIRECT``, reads that miss the page cache (readahead included), writes the tasks themselves push out (``fsync``, ``O_SYNC``) | the same, plus buffered writes written back by the kernel's flusher (cgroup writeback charges the page's owner) |
| does not bind | page-cache hits; **buffered writes** the flusher writes back (v1 charges them to the flusher, not to the stage) | page-cache hits |

Rules are per whole disk (``blockdev.py``: the kernel refuses a partition) and belong to the
cgroup: removing the cgroup removes them. A rule changed while the cgroup's requests wait in the
throttle applies to them at once: measured here, an ``O_DIRECT`` reader held at 2 MiB/s read its
remaining 14 MiB at 64.7 MiB/s (0.22 s) after a raise to 64 MiB/s
(``tests/integration/test_blkio_throttle.py``).

Rates are counted as requests are *submitted*, before the throttle delays them (the per-task
``/proc/<pid>/io`` and the cgroup's own ``blkio.throttle.io_service_bytes`` alike, checked
side by side), and buffered reads are submitted a readahead window at a time (``read_ahead_kb``,
8192 on this virtio disk): a reader held at 4 MiB/s shows 8, 0, 8, 0 MiB/s at 1 s samples. The
deviation policy judges the mean over 4 samples for that reason (``logic/io_bottleneck.py``).

One host-wide effect cannot be undone: on recent kernels (6.18 here) the first rule written on
a disk sets up blk-throttle for that disk, and from then on the kernel keeps the v1
``blkio.throttle.io_service_bytes`` counters for every cgroup on it (``adapters/io_counters``),
until the disk goes away. The rules themselves are all removed.
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["read", "write"]
DIRECTIONS: tuple[Direction, ...] = ("read", "write")
V1_FILES: dict[str, str] = {"read": "blkio.throttle.read_bps_device", "write": "blkio.throttle.write_bps_device"}
V2_FILE = "io.max"
V2_KEYS: dict[str, str] = {"read": "rbps", "write": "wbps"}
#: v1 reads a rule of this value or more as "no limit" (the kernel's U64_MAX).
UNLIMITED = 2**64 - 1


def parse_v1_rules(text: str, where: str = "blkio.throttle.*_bps_device") -> dict[str, int]:
    """``"MAJ:MIN BYTES"`` lines -> {"MAJ:MIN": bytes/s}."""
    rules: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not _is_device(parts[0]) or not (parts[1].isascii() and parts[1].isdigit()):
            raise ValueError(f"{where}: line {number} is not 'MAJ:MIN BYTES': {line[:60]!r}")
        rules[parts[0]] = int(parts[1])
    return rules


def parse_io_max(text: str, where: str = V2_FILE) -> dict[str, dict[str, int | None]]:
    """v2 ``io.max`` -> {"MAJ:MIN": {"rbps": n or None (max), "wbps": ..., ...}}."""
    rules: dict[str, dict[str, int | None]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if not _is_device(parts[0]):
            raise ValueError(f"{where}: line {number} does not start with MAJ:MIN: {line[:60]!r}")
        limits: dict[str, int | None] = {}
        for item in parts[1:]:
            key, sep, value = item.partition("=")
            if not sep or not (value == "max" or (value.isascii() and value.isdigit())):
                raise ValueError(f"{where}: line {number}: {item[:40]!r} is not key=N or key=max")
            limits[key] = None if value == "max" else int(value)
        rules[parts[0]] = limits
    return rules


def v1_rule(device: str, bps: int | None) -> str:
    """The line that sets (or with None, removes) a v1 rule."""
    return f"{device} {0 if bps is None else bps}"


def v2_rule(device: str, direction: Direction, bps: int | None) -> str:
    return f"{device} {V2_KEYS[direction]}={'max' if bps is None else bps}"


def bytes_per_second(value: float) -> int:
    """A limit as the kernel takes it: whole bytes/s, at least 1 (0 would remove the rule)."""
    if not value > 0 or value != value:
        raise ValueError(f"a disk bandwidth limit must be greater than 0 bytes/s, got {value!r}")
    return min(UNLIMITED - 1, max(1, int(value)))


def _is_device(token: str) -> bool:
    major, sep, minor = token.partition(":")
    return bool(sep) and major.isascii() and major.isdigit() and minor.isascii() and minor.isdigit()


__all__ = ["DIRECTIONS", "Direction", "UNLIMITED", "V1_FILES", "V2_FILE", "V2_KEYS", "bytes_per_second",
           "parse_io_max", "parse_v1_rules", "v1_rule", "v2_rule"]

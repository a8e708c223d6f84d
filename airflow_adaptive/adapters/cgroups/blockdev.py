"""Which block device holds a directory: the device a stage's disk bandwidth limit is set on.

cgroup throttling is per **whole disk**. Checked on this machine (Linux 6.18, cgroup v1): a
partition's ``MAJ:MIN`` written to ``blkio.throttle.read_bps_device`` is refused with ENODEV
("No such device"; a loop device with one partition, 259:0, against its disk 7:0, which is
accepted), as the kernel's ``blkcg_conf_open_bdev`` refuses every partition since 5.x. So a
directory's ``st_dev`` is followed through sysfs (``/sys/dev/block/MAJ:MIN``: a partition has a
``partition`` file, its disk is the parent directory) to its disk, and the limit is set there:
it then covers every partition of that disk, which is what the kernel can enforce.

Filesystems without a block device of their own report an anonymous ``st_dev`` (major 0):
tmpfs, overlayfs, NFS and FUSE have none to throttle (``NoBlockDevice``, with the filesystem
named); btrfs has one, found through the mount's source in ``/proc/self/mountinfo`` (the first
device of a multi-device btrfs only). A device-mapper or md device is a disk of its own (no
``partition`` file), and bios are throttled there, before it splits them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


class NoBlockDevice(RuntimeError):
    """The directory is not on a block device that a cgroup can throttle; the text says why."""


@dataclass(frozen=True)
class BlockDevice:
    """A whole disk, as the cgroup rule files name it; ``partition``: the partition the directory
    is on, if it is on one (the limit covers the whole disk all the same)."""

    major: int
    minor: int
    name: str
    partition: str | None = None

    @property
    def id(self) -> str:
        """``MAJ:MIN``, as ``blkio.throttle.*`` and ``io.max`` lines begin."""
        return f"{self.major}:{self.minor}"

    def describe(self) -> str:
        where = f" (holds {self.partition})" if self.partition else ""
        return f"{self.name} {self.id}{where}"


def whole_disk(major: int, minor: int, sysfs: str = "/sys") -> BlockDevice:
    """The disk of a block device number: itself, or the disk its partition belongs to."""
    link = os.path.join(sysfs, "dev", "block", f"{major}:{minor}")
    if not os.path.exists(link):
        raise NoBlockDevice(f"device {major}:{minor} is not a block device ({link} does not exist)")
    real = os.path.realpath(link)
    if not os.path.exists(os.path.join(real, "partition")):
        return BlockDevice(major, minor, os.path.basename(real))
    disk = os.path.dirname(real)
    try:
        text = Path(disk, "dev").read_text().strip()
        disk_major, _, disk_minor = text.partition(":")
        return BlockDevice(int(disk_major), int(disk_minor), os.path.basename(disk), os.path.basename(real))
    except (OSError, ValueError) as exc:
        raise NoBlockDevice(f"partition {major}:{minor} ({os.path.basename(real)}): cannot read its disk's "
                            f"number from {disk}/dev: {exc}") from exc


def block_device_of(path: str, sysfs: str = "/sys", mountinfo: str | None = None) -> BlockDevice:
    """The disk that holds ``path`` (a file or directory); NoBlockDevice when there is none."""
    st_dev = os.stat(path).st_dev
    major, minor = os.major(st_dev), os.minor(st_dev)
    if major == 0:  # anonymous device numbers: the filesystem has no block device of its own
        major, minor = _mount_source_device(path, st_dev, mountinfo)
    return whole_disk(major, minor, sysfs)


def _mount_source_device(path: str, st_dev: int, mountinfo: str | None) -> tuple[int, int]:
    """For a filesystem with an anonymous ``st_dev`` (btrfs), the block device its mount names."""
    text = mountinfo if mountinfo is not None else Path("/proc/self/mountinfo").read_text()
    want = f"{os.major(st_dev)}:{os.minor(st_dev)}"
    found = None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and len(tail) >= 2 and fields[2] == want:
            found = (tail[0], tail[1].replace("\\040", " "))
    if found is None:
        raise NoBlockDevice(f"{path} is on device {want}, which no mount in /proc/self/mountinfo lists")
    fstype, source = found
    try:
        st = os.stat(source) if source.startswith("/dev/") else None
    except OSError:
        st = None
    if st is None or not stat.S_ISBLK(st.st_mode):
        raise NoBlockDevice(f"{path} is on a filesystem of type {fstype} ({source}), which has no block device to throttle")
    return os.major(st.st_rdev), os.minor(st.st_rdev)


__all__ = ["BlockDevice", "NoBlockDevice", "block_device_of", "whole_disk"]

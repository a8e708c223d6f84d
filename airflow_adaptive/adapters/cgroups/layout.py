"""Where the cgroup controllers live on this machine, and which cgroup a process is in.

Two layouts exist in the wild and this machine type shows why both matter: cgroup v1 with the
``memory``, ``cpu`` and ``cpuacct`` controllers on separate hierarchies, and a cgroup2 mount
beside them that carries none of them. v2 is used only where its ``cgroup.controllers`` lists
both ``memory`` and ``cpu``; otherwise v1, joining every hierarchy the runner needs.

Everything here reads text handed to it, or files under a ``root`` (``/`` for this machine,
``/proc/<pid>/root`` to see through a workload process's mount namespace from a sidecar).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

Version = Literal["v1", "v2"]

#: v1 controllers the runner needs: limits (memory, cpu) and CPU accounting (cpuacct).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct")
#: v1 controllers the runner uses where they are mounted, and goes without where not: blkio
#: (disk bandwidth limits, ``blkio.throttle.*``).
V1_OPTIONAL = ("blkio",)
V2_CONTROLLERS = ("memory", "cpu")
#: v2 controllers the runner enables for its cgroups where the parent offers them: io (``io.max``).
V2_OPTIONAL = ("io",)


class CgroupUnavailable(RuntimeError):
    """No usable cgroup hierarchy (not Linux, controllers missing, or not permitted)."""


@dataclass(frozen=True)
class Mounts:
    """Mount points of cgroup hierarchies: v1 controller -> mount point, and the cgroup2 mount."""

    v1: Mapping[str, str]
    v2: str | None
    #: mount point -> the cgroup path mounted there (mountinfo's "root"; not "/" inside a
    #: container without a cgroup namespace, e.g. "/docker/<id>").
    roots: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, mountinfo: str) -> "Mounts":
        v1: dict[str, str] = {}
        v2 = None
        roots: dict[str, str] = {}
        for line in mountinfo.splitlines():
            # "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
            left, sep, right = line.partition(" - ")
            if not sep:
                continue
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            mount_point, fstype = _unescape(fields[4]), tail[0]
            if fstype in ("cgroup", "cgroup2"):
                roots.setdefault(mount_point, _unescape(fields[3]))
            if fstype == "cgroup2":
                v2 = v2 or mount_point
            elif fstype == "cgroup":
                for opt in tail[2].split(","):
                    if opt in V1_CONTROLLERS or opt in V1_OPTIONAL:
                        v1.setdefault(opt, mount_point)
        return cls(v1=v1, v2=v2, roots=roots)

    @classmethod
    def read(cls) -> "Mounts":
        return cls.parse(Path("/proc/self/mountinfo").read_text())


def parse_proc_cgroup(text: str) -> tuple[dict[str, str], str | None]:
    """``/proc/<pid>/cgroup`` -> (v1 controller -> path, v2 path)."""
    v1: dict[str, str] = {}
    v2 = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            if c in V1_CONTROLLERS or c in V1_OPTIONAL:
                v1[c] = path
    return v1, v2


def v2_controllers(directory: str) -> set[str]:
    try:
        return set(Path(directory, "cgroup.controllers").read_text().split())
    except OSError:
        return set()


@dataclass(frozen=True)
class CgroupPaths:
    """The directories of one cgroup: v2 -> {"unified": dir}; v1 -> one dir per controller (the
    optional ones, such as blkio, only where their hierarchy is mounted)."""

    version: Version
    dirs: Mapping[str, str]

    def dir(self, controller: str) -> str:
        return self.dirs["unified"] if self.version == "v2" else self.dirs[controller]

    def has(self, controller: str) -> bool:
        """v1: whether the controller's hierarchy is part of this cgroup (v2: always a directory)."""
        return self.version == "v2" or controller in self.dirs


def detect_version(mounts: Mounts, v2_path: str | None = None) -> Version:
    """v2 if its mount (at the process's own cgroup) offers memory and cpu, else v1 if complete."""
    if mounts.v2:
        here = os.path.join(mounts.v2, (v2_path or "/").lstrip("/"))
        if set(V2_CONTROLLERS) <= v2_controllers(here) or set(V2_CONTROLLERS) <= v2_controllers(mounts.v2):
            return "v2"
    missing = [c for c in V1_CONTROLLERS if c not in mounts.v1]
    if not missing:
        return "v1"
    raise CgroupUnavailable(
        "no usable cgroup hierarchy: cgroup2 "
        + (f"at {mounts.v2} lacks the memory/cpu controllers" if mounts.v2 else "is not mounted")
        + f", and cgroup v1 lacks {missing}"
    )


def cgroup_of(pid: int | str = "self", *, through_root: bool = False) -> CgroupPaths:
    """The cgroup directories of a process.

    With ``through_root`` the directories are reached through ``/proc/<pid>/root`` (the
    process's own mount namespace): that is how a sidecar, which sees its own cgroup and not the
    workload's, reaches the workload container's cgroup files. Inside a cgroup namespace the
    workload's ``/sys/fs/cgroup`` is its own cgroup, so when ``/proc/<pid>/cgroup`` shows a
    path outside the reader's namespace (``/..``) the mount root itself is the workload's cgroup.
    """
    proc = f"/proc/{pid}"
    mounts = Mounts.parse(Path(proc, "mountinfo").read_text()) if through_root else Mounts.read()
    v1_paths, v2_path = parse_proc_cgroup(Path(proc, "cgroup").read_text())
    prefix = f"{proc}/root" if through_root else ""
    version = detect_version(_prefixed(mounts, prefix), v2_path)

    def place(mount_point: str, path: str) -> str:
        root = mounts.roots.get(mount_point, "/")
        if root != "/" and (path == root or path.startswith(root.rstrip("/") + "/")):
            path = path[len(root):] or "/"  # the mount already starts at that cgroup
        inside = os.path.normpath(prefix + os.path.join(mount_point, path.lstrip("/")))
        if through_root and (path.startswith("/..") or not os.path.isdir(inside)):
            return os.path.normpath(prefix + mount_point)
        return inside

    if version == "v2":
        return CgroupPaths("v2", {"unified": place(mounts.v2 or "/sys/fs/cgroup", v2_path or "/")})
    controllers = [*V1_CONTROLLERS, *(c for c in V1_OPTIONAL if c in mounts.v1)]
    return CgroupPaths("v1", {c: place(mounts.v1[c], v1_paths.get(c, "/")) for c in controllers})


def _prefixed(mounts: Mounts, prefix: str) -> Mounts:
    if not prefix:
        return mounts
    return Mounts(v1={c: prefix + m for c, m in mounts.v1.items()}, v2=prefix + mounts.v2 if mounts.v2 else None,
                  roots={prefix + m: r for m, r in mounts.roots.items()})


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")

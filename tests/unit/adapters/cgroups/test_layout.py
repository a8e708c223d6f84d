"""Parsing of mountinfo and /proc/<pid>/cgroup text (pure), plus layout detection on this machine."""

import pytest

from airflow_adaptive.adapters.cgroups.layout import CgroupUnavailable, Mounts, cgroup_of, detect_version, parse_proc_cgroup

V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
COMOUNTED = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct\n" \
            "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
V2_ONLY = "30 23 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


@pytest.mark.parametrize(
    "text, v1, v2",
    [
        (V1_MOUNTINFO, {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct", "memory": "/sys/fs/cgroup/memory"}, "/sys/fs/cgroup/unified"),
        (COMOUNTED, {"cpu": "/sys/fs/cgroup/cpu,cpuacct", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "memory": "/sys/fs/cgroup/memory"}, None),
        (V2_ONLY, {}, "/sys/fs/cgroup"),
        ("garbage line\n", {}, None),
    ],
)
def test_mounts_parse(text, v1, v2):
    mounts = Mounts.parse(text)
    assert dict(mounts.v1) == v1
    assert mounts.v2 == v2


def test_proc_cgroup_parse_separates_v1_controllers_and_v2_path():
    v1, v2 = parse_proc_cgroup("4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n9:name=systemd:/\n0::/user.slice\n")
    assert v1 == {"memory": "/process_api/abc", "cpuacct": "/", "cpu": "/"}
    assert v2 == "/user.slice"


def test_v2_without_memory_controller_is_not_used_and_missing_v1_is_a_clear_error(tmp_path):
    unified = tmp_path / "unified"
    unified.mkdir()
    (unified / "cgroup.controllers").write_text("hugetlb\n")  # this machine type's cgroup2 mount
    assert detect_version(Mounts(v1={"memory": "m", "cpu": "c", "cpuacct": "a"}, v2=str(unified))) == "v1"
    (unified / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    assert detect_version(Mounts(v1={}, v2=str(unified))) == "v2"
    (unified / "cgroup.controllers").write_text("hugetlb\n")
    with pytest.raises(CgroupUnavailable, match=r"lacks \['cpu', 'cpuacct'\]"):
        detect_version(Mounts(v1={"memory": "m"}, v2=str(unified)))


def test_own_cgroup_on_this_machine_points_at_existing_directories():
    paths = cgroup_of("self")
    for d in paths.dirs.values():
        assert d.startswith("/sys/fs/cgroup"), d
        assert not d.endswith("/"), d
    import os

    assert all(os.path.isdir(d) for d in paths.dirs.values())


def test_mount_root_is_kept_for_containers_without_a_cgroup_namespace():
    text = "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    assert Mounts.parse(text).roots == {"/sys/fs/cgroup/memory": "/docker/abc"}

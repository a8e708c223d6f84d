"""CgroupReader on a directory that lacks the kernel's files: a clear error naming the file."""

import pytest

from airflow_adaptive.adapters.cgroups.layout import CgroupPaths
from airflow_adaptive.adapters.cgroups.reader import CgroupReader


def test_missing_cgroup_file_is_named(tmp_path):
    reader = CgroupReader(CgroupPaths("v2", {"unified": str(tmp_path)}))
    with pytest.raises(FileNotFoundError, match="memory.current"):
        reader.check()


def test_v2_files_are_parsed_as_the_kernel_writes_them(tmp_path):
    """Text written here in the v2 formats, because this machine type has no v2 memory controller."""
    (tmp_path / "memory.current").write_text("104857600\n")
    (tmp_path / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (tmp_path / "memory.events").write_text("low 0\nhigh 12\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    (tmp_path / "cgroup.procs").write_text("12\n34\n")
    reader = CgroupReader(CgroupPaths("v2", {"unified": str(tmp_path)}))
    reader.check()
    assert reader.memory_bytes() == 100 * 2**20
    assert reader.cpu_seconds() == 2.5
    assert reader.oom_kills() == 1
    assert reader.memory_events()["high"] == 12
    assert reader.pids() == [12, 34]
    assert reader.under_oom() is False
    assert reader.memory_peak_bytes() is None  # memory.peak only from Linux 5.19

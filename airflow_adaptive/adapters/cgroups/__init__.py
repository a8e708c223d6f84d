"""cgroup v1/v2: find, create, limit, read and watch the workload's cgroup."""

from airflow_adaptive.adapters.cgroups.blockdev import BlockDevice, NoBlockDevice, block_device_of
from airflow_adaptive.adapters.cgroups.control import ManagedCgroup
from airflow_adaptive.adapters.cgroups.layout import CgroupPaths, CgroupUnavailable, cgroup_of
from airflow_adaptive.adapters.cgroups.notify import MemoryPressureWatch
from airflow_adaptive.adapters.cgroups.reader import CgroupReader

__all__ = ["BlockDevice", "CgroupPaths", "CgroupReader", "CgroupUnavailable", "ManagedCgroup", "MemoryPressureWatch",
           "NoBlockDevice", "block_device_of", "cgroup_of"]

"""Disk limit rule files and the disk under a directory (``adapters/cgroups/throttle.py``, ``blockdev.py``)."""

import os

import pytest

from airflow_adaptive.adapters.cgroups.blockdev import NoBlockDevice, _mount_source_device, whole_disk
from airflow_adaptive.adapters.cgroups.throttle import bytes_per_second, parse_io_max, parse_v1_rules, v1_rule, v2_rule


def test_v1_rules_parse_and_bad_lines_are_named():
    assert parse_v1_rules("254:0 4194304\n8:16 1\n\n") == {"254:0": 4194304, "8:16": 1}
    assert parse_v1_rules("") == {}
    with pytest.raises(ValueError, match="line 1 is not 'MAJ:MIN BYTES'"):
        parse_v1_rules("vda 4194304")


def test_io_max_parses_max_as_none():
    text = "8:0 rbps=1048576 wbps=max riops=max wiops=max\n"
    assert parse_io_max(text) == {"8:0": {"rbps": 1048576, "wbps": None, "riops": None, "wiops": None}}
    with pytest.raises(ValueError, match="not key=N or key=max"):
        parse_io_max("8:0 rbps=-1")


def test_rule_lines_set_and_remove():
    assert v1_rule("254:0", 4096) == "254:0 4096" and v1_rule("254:0", None) == "254:0 0"
    assert v2_rule("8:0", "read", 10) == "8:0 rbps=10" and v2_rule("8:0", "write", None) == "8:0 wbps=max"
    assert bytes_per_second(0.4) == 1 and bytes_per_second(8.9) == 8
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="greater than 0"):
            bytes_per_second(bad)


def fake_sysfs(tmp_path):
    """/sys/dev/block links as the kernel lays them out: a disk, its partition, a dm device."""
    disk = tmp_path / "devices" / "pci" / "block" / "sda"
    part = disk / "sda2"
    dm = tmp_path / "devices" / "virtual" / "block" / "dm-0"
    for d, dev in ((disk, "8:0"), (part, "8:2"), (dm, "253:0")):
        d.mkdir(parents=True)
        (d / "dev").write_text(dev + "\n")
    (part / "partition").write_text("2\n")
    links = tmp_path / "dev" / "block"
    links.mkdir(parents=True)
    for dev, target in (("8:0", disk), ("8:2", part), ("253:0", dm)):
        os.symlink(os.path.relpath(target, links), links / dev)
    return str(tmp_path)


def test_a_partition_resolves_to_its_disk_and_a_disk_to_itself(tmp_path):
    sysfs = fake_sysfs(tmp_path)
    d = whole_disk(8, 2, sysfs)
    assert (d.id, d.name, d.partition) == ("8:0", "sda", "sda2")
    assert d.describe() == "sda 8:0 (holds sda2)"
    assert whole_disk(8, 0, sysfs).partition is None
    assert whole_disk(253, 0, sysfs).id == "253:0"  # device-mapper: a disk of its own
    with pytest.raises(NoBlockDevice, match="9:9 is not a block device"):
        whole_disk(9, 9, sysfs)


def test_a_filesystem_without_a_block_device_is_named():
    mountinfo = "60 1 0:52 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw,lowerdir=a\n"
    with pytest.raises(NoBlockDevice, match="of type overlay \\(overlay\\)"):
        _mount_source_device("/x", os.makedev(0, 52), mountinfo)
    with pytest.raises(NoBlockDevice, match="which no mount"):
        _mount_source_device("/x", os.makedev(0, 53), mountinfo)

"""Which GPUs are the workload's: NVIDIA_VISIBLE_DEVICES parsed strictly, and the workload
container's device nodes and volume mounts read through a stand-in /proc (no NVML, no GPU)."""

from __future__ import annotations

import logging

import pytest

from airflow_adaptive.adapters.nvml.sampler import (
    MAX_DEVICES,
    GpuSelection,
    MalformedDevices,
    parse_visible_devices,
    workload_gpus,
)

UUID_A = "GPU-5f3c9a7e-1b2d-4c3e-8f9a-0b1c2d3e4f50"
UUID_B = "GPU-0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"


@pytest.mark.parametrize("value,expected", [
    ("", GpuSelection()),
    ("none", GpuSelection()),
    ("void", GpuSelection()),
    ("  all ", GpuSelection(every=True)),
    (UUID_A, GpuSelection(frozenset({UUID_A}))),
    (f"{UUID_A},{UUID_B}", GpuSelection(frozenset({UUID_A, UUID_B}))),
    (f"{UUID_A}, {UUID_A}", GpuSelection(frozenset({UUID_A}))),  # a repeat is the same GPU
    ("0,3", GpuSelection(indices=frozenset({0, 3}))),
    (f"1,{UUID_B}".encode(), GpuSelection(frozenset({UUID_B}), frozenset({1}))),
])
def test_parse_visible_devices_accepts_what_the_runtime_accepts(value, expected):
    got = parse_visible_devices(value, source="")
    assert got == expected


@pytest.mark.parametrize("value,why", [
    ("all,0", "neither"),
    (f"{UUID_A},", "neither"),
    ("GPU-zz", "neither"),
    ("0x1", "neither"),
    ("12345", "neither"),  # no node has 10000 GPUs
    (f"{UUID_A}\n{UUID_B}", "neither"),
    ("$(reboot)", "neither"),
    ("MIG-5f3c9a7e-1b2d-4c3e-8f9a-0b1c2d3e4f50", "MIG"),
    (f"MIG-{UUID_A}/1/0", "MIG"),
    ("0:1", "MIG"),
    ("GPU-é".encode(), "not ASCII"),
    ("x" * 4097, "more than 4096"),
    (",".join(["0"] * (MAX_DEVICES + 1)), "entries"),
])
def test_parse_visible_devices_refuses_anything_else(value, why):
    with pytest.raises(MalformedDevices, match=why):
        parse_visible_devices(value)


def make_proc(tmp_path, environ: bytes | None, dev=(), mounts=None, pid=77):
    proc = tmp_path / "proc"
    root = proc / str(pid) / "root"
    (root / "dev").mkdir(parents=True)
    if environ is not None:
        (proc / str(pid) / "environ").write_bytes(environ)
    for name in dev:
        (root / "dev" / name).touch()
    if mounts is not None:
        where = root / "var/run/nvidia-container-devices"
        where.mkdir(parents=True)
        for name in mounts:
            (where / name).touch()
    return str(proc)


@pytest.mark.parametrize("environ,dev,mounts,expected", [
    # the device plugin's envvar strategy; nodes as the toolkit creates them (not nvidiactl & co)
    (f"A=1\0NVIDIA_VISIBLE_DEVICES={UUID_A}\0".encode(), ["nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia2"], None,
     GpuSelection(frozenset({UUID_A}), minors=frozenset({2}), source="NVIDIA_VISIBLE_DEVICES")),
    # no device nodes (a node without the runtime, or this test's own /dev): no cross-check
    (f"NVIDIA_VISIBLE_DEVICES={UUID_A}".encode(), [], None, GpuSelection(frozenset({UUID_A}), source="NVIDIA_VISIBLE_DEVICES")),
    # volume-mounts strategy: the directory's entries
    (b"NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices\0", [], [UUID_B, UUID_A],
     GpuSelection(frozenset({UUID_A, UUID_B}), source="the entries of /var/run/nvidia-container-devices")),
    # CDI (void) and GKE (unset): the device nodes
    (b"NVIDIA_VISIBLE_DEVICES=void\0", ["nvidia0", "nvidia1", "nvidia-caps"], None,
     GpuSelection(minors=frozenset({0, 1}), source="device nodes")),
    (b"PATH=/bin\0", ["nvidia3"], None, GpuSelection(minors=frozenset({3}), source="device nodes")),
    (b"NVIDIA_VISIBLE_DEVICES=all\0", ["nvidia3"], None,
     GpuSelection(every=True, minors=frozenset({3}), source="NVIDIA_VISIBLE_DEVICES")),
])
def test_workload_gpus(tmp_path, environ, dev, mounts, expected):
    assert workload_gpus(77, make_proc(tmp_path, environ, dev, mounts)) == expected


@pytest.mark.parametrize("environ,dev,mounts,message", [
    (b"PATH=/bin\0", [], None, "has no GPU"),  # a CPU stage
    (b"NVIDIA_VISIBLE_DEVICES=void\0", [], None, "has no GPU"),
    (b"NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices\0", [], [], "has no GPU"),
    (b"NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices\0", [], ["GPU-1 ; reboot"], "malformed"),
    (b"NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices\0", [], None, "cannot read"),  # no directory
    (b"NVIDIA_VISIBLE_DEVICES=GPU-1\0NVIDIA_VISIBLE_DEVICES=GPU-2\0", [], None, "malformed"),
    (b"NVIDIA_VISIBLE_DEVICES=GPU-1;id\0", ["nvidia0"], None, "malformed"),
    (b"NVIDIA_VISIBLE_DEVICES=\xff\xfe\0", [], None, "malformed"),
    (None, [], None, "cannot read"),  # gone, or another user's
])
def test_workload_gpus_none_is_one_log_line(tmp_path, caplog, environ, dev, mounts, message):
    proc = make_proc(tmp_path, environ, dev, mounts)
    with caplog.at_level(logging.DEBUG, logger="airflow_adaptive.adapters.nvml"):
        assert workload_gpus(77, proc) is None
    said = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 1 and message in said[0].getMessage(), [r.getMessage() for r in said]


def test_the_same_value_twice_is_not_a_conflict(tmp_path):
    environ = f"NVIDIA_VISIBLE_DEVICES={UUID_A}\0NVIDIA_VISIBLE_DEVICES={UUID_A}\0".encode()
    assert workload_gpus(77, make_proc(tmp_path, environ)).uuids == {UUID_A}

"""The I/O readers (``adapters/io_counters``): the kernel's text formats as this machine writes
them, malformed text (a ValueError naming the file), and the readers on real files of this
process and of a real directory tree."""

from __future__ import annotations

import os

import pytest

from airflow_adaptive.adapters.io_counters import (
    REPORT_KEYS, WALK_GIVE_UP_AFTER, IoReport, ProcessTreeIo, StageIoMeter, TaskIo, delay_accounting_on, directory_usage,
    net_namespace, parse_blkio_throttle, parse_io_stat, parse_net_dev, parse_proc_io, parse_proc_stat, read_net_traffic,
    read_proc_stat, read_task_io, read_v1_blkio, read_v2_io_stat, traffic_outside_lo, v1_blkio_counting,
)

MIB = 2**20

PROC_IO = """rchar: 34908432
wchar: 33554437
syscr: 169
syscw: 33
read_bytes: 33554432
write_bytes: 33558528
cancelled_write_bytes: 4096
"""
# Field 2 holds spaces and ')' (a command may name itself anything).
PROC_STAT = ("23657 (a b) c) R 23653 23653 15736 0 -1 4194304 101 0 0 0 0 0 0 0 20 0 1 0 100360 3133440 383 "
             "18446744073709551615 94432291827712 94432291847593 140734322632336 0 0 0 0 0 0 0 0 0 17 0 0 0 77 0 0 "
             "94432291863600 94432291865216 94433016692736 140734322637498 140734322637518 140734322637518 "
             "140734322638827 0\n")
BLKIO = """254:0 Read 1142784
254:0 Write 94113792
254:0 Sync 168923136
254:0 Async 0
254:0 Discard 0
254:0 Total 95256576
8:16 Read 10
8:16 Write 20
Total 95256606
"""
IO_STAT = "254:0 rbytes=1142784 wbytes=94113792 rios=13 wios=12 dbytes=0 dios=0\n8:16 rbytes=5 wbytes=6 rios=1 wios=2 cost.usage=7\n"
NET_DEV = """Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3245      30    0    0    0     0          0         0     3245      30    0    0    0     0       0          0
  eth0:4028046276  185289    0    0    0     0          0         0  4953936   56220    0    0    0     0       0          0
"""


@pytest.mark.parametrize("parse, text, expected", [
    (parse_proc_io, PROC_IO, TaskIo(read_bytes=33554432, write_bytes=33558528, cancelled_write_bytes=4096, syscr=169, syscw=33)),
    (parse_proc_io, "read_bytes: 1\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\n", TaskIo(1, 2, 0, 3, 4)),  # no cancelled_write_bytes
    (parse_proc_io, "syscr: 3\n\nsyscw: 4\nread_bytes: 1\nwrite_bytes: 2\nfuture_field: 9\n", TaskIo(1, 2, 0, 3, 4)),
    (parse_proc_stat, PROC_STAT, (23653, 77)),
    (parse_blkio_throttle, BLKIO, {"254:0": {"Read": 1142784, "Write": 94113792, "Sync": 168923136, "Async": 0, "Discard": 0,
                                             "Total": 95256576}, "8:16": {"Read": 10, "Write": 20}}),
    (parse_blkio_throttle, "Total 0\n", {}),  # no device: blk-throttle not set up (the machine's state before a rule)
    (parse_io_stat, IO_STAT, {"254:0": {"rbytes": 1142784, "wbytes": 94113792, "rios": 13, "wios": 12},
                              "8:16": {"rbytes": 5, "wbytes": 6, "rios": 1, "wios": 2}}),
    (parse_io_stat, "", {}),
    (parse_net_dev, NET_DEV, {"lo": (3245, 3245), "eth0": (4028046276, 4953936)}),
])
def test_parses_the_kernels_text(parse, text, expected):
    got = parse(text, "the-file")
    assert (tuple(vars(got).values()) if parse is parse_proc_stat else got) == expected


@pytest.mark.parametrize("parse, text, complaint", [
    (parse_proc_io, "read_bytes 1\n", "not 'name: value'"),
    (parse_proc_io, "read_bytes: 1\nwrite_bytes: 2\nsyscr: 3\n", "missing syscw"),
    (parse_proc_io, "", "missing read_bytes"),
    (parse_proc_io, "read_bytes: -1\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\n", "non-negative integer"),
    (parse_proc_io, "read_bytes: 1_000\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\n", "non-negative integer"),
    (parse_proc_io, "read_bytes: \u0661\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\n", "non-negative integer"),
    (parse_proc_io, "read_bytes: " + "9" * 5000 + "\nwrite_bytes: 2\nsyscr: 3\nsyscw: 4\n", "non-negative integer"),
    (parse_proc_stat, "23657 cat R 1 2\n", "no '(command)'"),
    (parse_proc_stat, "23657 (cat) R 1 2 3\n", "field 42"),
    (parse_proc_stat, PROC_STAT.replace(" 77 ", " x "), "field 42"),
    (parse_blkio_throttle, "254:0 Read\n", "not 'MAJ:MIN Op count'"),
    (parse_blkio_throttle, "sda Read 5\n", "not 'MAJ:MIN Op count'"),
    (parse_blkio_throttle, "Total lots\n", "non-negative integer"),
    (parse_io_stat, "rbytes=5\n", "MAJ:MIN device"),
    (parse_io_stat, "8:0 rbytes\n", "not key=value"),
    (parse_io_stat, "8:0 wbytes=1.5\n", "non-negative integer"),
    (parse_net_dev, "  eth0: 1 2 3\n", "16 counters"),
    (parse_net_dev, "eth0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n", "16 counters"),
    (parse_net_dev, "  eth0: 1 2 3 4 5 6 7 8 x 10 11 12 13 14 15 16\n", "tx bytes"),
])
def test_malformed_text_is_a_value_error_naming_the_file(parse, text, complaint):
    with pytest.raises(ValueError, match="^the-file") as raised:
        parse(text, "the-file")
    assert complaint in str(raised.value)


def test_this_process_counters_are_readable_and_grow(tmp_path):
    before = read_task_io(os.getpid())
    path = tmp_path / "data.bin"
    with open(path, "wb") as f:
        f.write(os.urandom(4 * MIB))
        f.flush()
        os.fsync(f.fileno())
    after = read_task_io(os.getpid())
    assert after.write_bytes - before.write_bytes >= 4 * MIB
    assert after.syscw > before.syscw
    assert read_proc_stat(os.getpid()).ppid == os.getppid()


def test_the_hosts_network_counters_parse_and_lo_is_left_out():
    with open("/proc/self/net/dev") as f:
        everything = parse_net_dev(f.read())
    rx, tx = read_net_traffic(os.getpid())  # read second: the host's counters only grow meanwhile
    assert rx >= sum(r for n, (r, _) in everything.items() if n != "lo")
    assert tx >= sum(t for n, (_, t) in everything.items() if n != "lo")
    assert net_namespace(os.getpid()) == net_namespace() and net_namespace().startswith("net:[")


def test_loopback_traffic_is_not_network_traffic():
    assert traffic_outside_lo(parse_net_dev(NET_DEV)) == (4028046276, 4953936)
    assert traffic_outside_lo({"lo": (5, 5)}) == (0, 0)


def test_delay_accounting_reads_the_sysctl(tmp_path):
    (tmp_path / "on").write_text("1\n")
    (tmp_path / "off").write_text("0\n")
    assert delay_accounting_on(str(tmp_path / "on")) and not delay_accounting_on(str(tmp_path / "off"))
    assert not delay_accounting_on(str(tmp_path / "missing"))  # before Linux 5.14: no sysctl, no per-task figure


def test_cgroup_files_are_read_and_summed_over_devices(tmp_path):
    (tmp_path / "io.stat").write_text(IO_STAT)
    (tmp_path / "blkio.throttle.io_service_bytes").write_text(BLKIO)
    (tmp_path / "blkio.throttle.io_serviced").write_text("254:0 Read 13\n254:0 Write 12\nTotal 25\n")
    v2, v1 = read_v2_io_stat(str(tmp_path)), read_v1_blkio(str(tmp_path))
    assert (v2.read_bytes, v2.write_bytes, v2.read_ops, v2.write_ops) == (1142789, 94113798, 14, 14)
    assert (v1.read_bytes, v1.write_bytes, v1.read_ops, v1.write_ops) == (1142794, 94113812, 13, 12)
    assert v1_blkio_counting(str(tmp_path))
    (tmp_path / "blkio.throttle.io_service_bytes").write_text("Total 0\n")  # blk-throttle never set up
    assert not v1_blkio_counting(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        read_v2_io_stat(str(tmp_path / "no-io-controller"))


def test_directory_usage_counts_allocated_blocks_once_and_follows_no_symlink(tmp_path):
    tree = tmp_path / "work"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "sub" / "deeper" / "a.bin").write_bytes(os.urandom(MIB))
    os.link(tree / "sub" / "deeper" / "a.bin", tree / "hardlink.bin")  # same blocks: counted once
    with open(tree / "sparse.bin", "wb") as f:
        f.truncate(64 * MIB)  # a 64 MiB hole holds no blocks
    outside = tmp_path / "outside.bin"
    outside.write_bytes(os.urandom(2 * MIB))
    (tree / "link").symlink_to(outside)  # not followed
    usage = directory_usage(str(tree))
    assert usage.complete and usage.entries == 6
    expected = sum(os.lstat(p).st_blocks * 512 for p in (tree / "sub", tree / "sub" / "deeper", tree / "sub" / "deeper" / "a.bin",
                                                          tree / "sparse.bin", tree / "link"))
    assert usage.bytes == expected and MIB <= usage.bytes < 2 * MIB


def test_directory_usage_stops_at_its_bound_and_says_it_is_a_lower_bound(tmp_path):
    for i in range(50):
        (tmp_path / f"f{i}").write_bytes(b"x")
    cut = directory_usage(str(tmp_path), max_entries=10)
    assert not cut.complete and cut.entries == 11
    assert cut.bytes <= directory_usage(str(tmp_path)).bytes


def test_a_directory_too_large_to_walk_is_reported_unmeasured_not_zero(tmp_path):
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"x")
    meter = StageIoMeter(os.getpid(), lambda: [os.getpid()], workdir=str(tmp_path))
    for _ in range(WALK_GIVE_UP_AFTER):
        meter.storage.walk(1.0, max_entries=5)
    report = meter.report().to_dict()  # no final walk either: it gave up
    assert report["ephemeral_storage_peak_bytes"] is None
    assert "too large to walk" in report["unmeasured"]["ephemeral_storage_peak_bytes"]
    missing = StageIoMeter(os.getpid(), lambda: [os.getpid()], workdir=str(tmp_path / "gone")).report().to_dict()
    assert missing["ephemeral_storage_peak_bytes"] is None
    assert "cannot read the working directory" in missing["unmeasured"]["ephemeral_storage_peak_bytes"]


def test_process_tree_totals_never_go_down():
    """This process's real counters; a pid that exited (or never was) is skipped, not fatal."""
    tree = ProcessTreeIo()
    me = os.getpid()
    first = tree.update([me])
    assert tree.readings == 1 and first.syscr > 0
    again = tree.update([me, 2**22 + 12345])  # a pid that does not exist: skipped, its error kept
    assert again.at_least(first) == again and "No such file" in tree.error
    tree.include_final(TaskIo(write_bytes=10**15))
    assert tree.update([me]).write_bytes == 10**15  # the highest total is kept


def test_the_report_always_has_every_key_and_a_reason_for_each_null():
    report = IoReport.not_sampled("no run").to_dict()
    assert set(report) == {*REPORT_KEYS, "unmeasured"}
    assert all(report[k] is None for k in REPORT_KEYS) and set(report["unmeasured"]) == set(REPORT_KEYS)
    measured = IoReport(disk_read_bytes=0, disk_write_bytes=5, unmeasured={"disk_write_bytes": "stale", "io_wait_seconds": "off"})
    assert measured.to_dict()["unmeasured"] == {"io_wait_seconds": "off"}  # a reason only where the value is null


def test_a_failing_process_list_costs_only_the_io_figures_it_cannot_get(tmp_path, caplog):
    """The meter runs inside the CPU/memory sampler's read: whatever the process list raises
    (psutil's errors are not OSErrors) must not escape; the root alone is still read."""
    def broken_pids():
        raise RuntimeError("process table unreadable")

    meter = StageIoMeter(os.getpid(), broken_pids, workdir=str(tmp_path))
    meter.sample()
    meter.sample()
    assert meter.disk.readings == 2
    assert "process table unreadable" in caplog.text and caplog.text.count("process table unreadable") == 1
    report = meter.report().to_dict()
    assert report["disk_write_ops"] > 0 and report["ephemeral_storage_peak_bytes"] == 0


def test_rates_are_bytes_per_second_since_the_previous_call(tmp_path):
    """This process as the stage: a 4 MiB fsync'd write between two calls two (clock) seconds
    apart is ~2 MiB/s; the first call has no rate; storage is the last complete walk's size."""
    meter = StageIoMeter(os.getpid(), lambda: [], workdir=str(tmp_path))
    meter.sample()  # the first sample walks the directory (empty)
    first = meter.rates(100.0)
    assert "disk_write" not in first and first["ephemeral_storage"] == 0
    with open(tmp_path / "data.bin", "wb") as f:
        f.write(os.urandom(4 << 20))
        f.flush()
        os.fsync(f.fileno())
    meter.sample()
    second = meter.rates(102.0)
    assert 2 << 20 <= second["disk_write"] <= (2 << 20) + (1 << 20), second
    assert second["ephemeral_storage"] == 0  # not walked on this sample (every fifth)
    assert "network_rx" not in second  # this process shares the runner's namespace
    assert meter.rates(102.0).get("disk_write") is None  # no time passed: no rate, never a division by zero

"""The I/O-bound vs CPU-bound verdict (``logic/io_bottleneck.py``), table-driven."""

import pytest

from airflow_adaptive.logic.io_bottleneck import IoBottleneckConfig, IoLimits, IoSample, classify

MiB = 2**20


def reads(*pairs, wait=None):
    """Samples of (cpu cores, disk read MiB/s)."""
    return [IoSample(cpu=c, disk_read=None if r is None else r * MiB, io_wait=wait) for c, r in pairs]


def writes(*pairs):
    return [IoSample(cpu=c, disk_write=w * MiB) for c, w in pairs]


# (name, samples, limits, maximum, bottleneck, raises {resource: new}, at_maximum, words in the reason)
CASES = [
    ("reading at its limit, cpu has room: raise the read limit x2",
     reads((0.2, 3.98), (0.25, 4.0)), IoLimits(cpu=1, disk_read=4 * MiB), {"disk_read": 64 * MiB},
     "disk", {"disk_read": 8 * MiB}, (),
     ["I/O-bound at the disk read limit", "4 MiB/s (100%)", "cpu 0.23 of 1.00 cores (22%)", "not CPU, which has room",
      "4 MiB/s -> 8 MiB/s", "maximum 64 MiB/s"]),
    ("the raise is capped at the user's maximum",
     reads((0.2, 8.0), (0.2, 8.1)), IoLimits(cpu=1, disk_read=8 * MiB), {"disk_read": 12 * MiB},
     "disk", {"disk_read": 12 * MiB}, (), ["capped at the maximum 12 MiB/s"]),
    ("already at the maximum: the verdict stands, nothing to raise",
     reads((0.2, 8.0), (0.2, 8.0)), IoLimits(cpu=1, disk_read=8 * MiB), {"disk_read": 8 * MiB},
     "disk", {}, ("disk_read",), ["disk_read is already at its maximum 8 MiB/s"]),
    ("no maximum: the limit doubles",
     reads((0.2, 8.0), (0.2, 8.0)), IoLimits(cpu=1, disk_read=8 * MiB), {},
     "disk", {"disk_read": 16 * MiB}, (), ["no maximum"]),
    ("writing at its limit raises the write limit only",
     writes((0.1, 1.95), (0.1, 2.0)), IoLimits(cpu=1, disk_read=8 * MiB, disk_write=2 * MiB), {},
     "disk", {"disk_write": 4 * MiB}, (), ["disk write limit", "disk write 1.98 MiB/s of its limit 2 MiB/s (99%)"]),
    ("both directions at their limits: both raised",
     [IoSample(cpu=0.3, disk_read=4 * MiB, disk_write=2 * MiB)] * 2,
     IoLimits(cpu=1, disk_read=4 * MiB, disk_write=2 * MiB), {}, "disk", {"disk_read": 8 * MiB, "disk_write": 4 * MiB}, (),
     ["disk read and write limit"]),
    ("CPU-bound loader: cpu at its limit, disk below its limit: raise cpu, not disk",
     reads((0.99, 2.0), (0.97, 2.2)), IoLimits(cpu=1, disk_read=8 * MiB), {"cpu": 2, "disk_read": 64 * MiB},
     "cpu", {"cpu": 1.5}, (),
     ["CPU-bound loader", "cpu 0.98 of 1.00 cores (98%)", "disk read 2.1 MiB/s of its limit 8 MiB/s (26%)",
      "more bandwidth would sit idle", "1 cores -> 1.5 cores"]),
    ("CPU-bound without a disk limit",
     reads((1.9, 30.0), (2.0, 31.0)), IoLimits(cpu=2), {"cpu": 2.5},
     "cpu", {"cpu": 2.5}, (), ["as no disk limit is set", "disk read 30.5 MiB/s (no limit)", "capped at the maximum 2.5 cores"]),
    ("CPU and disk both at their limits: both raised",
     reads((1.0, 4.0), (0.95, 3.9)), IoLimits(cpu=1, disk_read=4 * MiB), {"cpu": 4},
     "both", {"disk_read": 8 * MiB, "cpu": 1.5}, (), ["both CPU and disk at their limits", "would leave the other binding"]),
    ("neither at its limit",
     reads((0.5, 2.0), (0.4, 2.5)), IoLimits(cpu=1, disk_read=8 * MiB), {}, "none", {}, (), ["no bottleneck at a limit"]),
    ("one sample at the limit is a burst, not a bottleneck",
     reads((0.2, 2.0), (0.2, 4.0)), IoLimits(cpu=1, disk_read=4 * MiB), {}, "none", {}, (), []),
    ("only the latest samples count",
     reads((0.2, 4.0), (0.2, 4.0), (0.2, 1.0), (0.2, 1.0)), IoLimits(cpu=1, disk_read=4 * MiB), {}, "none", {}, (), []),
    ("too few samples for a verdict",
     reads((0.2, 4.0)), IoLimits(cpu=1, disk_read=4 * MiB), {}, "none", {}, (), ["1 of 2 samples"]),
    ("disk rate not measured: no disk verdict",
     reads((0.2, None), (0.2, None)), IoLimits(cpu=1, disk_read=4 * MiB), {}, "none", {}, (), ["not measured"]),
    ("at the limit but hardly waiting on I/O: reads at the limit's pace by itself",
     reads((0.3, 4.0), (0.3, 4.0), wait=0.02), IoLimits(cpu=1, disk_read=4 * MiB), {}, "none", {}, (),
     ["not I/O-bound", "waiting on I/O 2% of the time", "not holding it back"]),
    ("at the limit and waiting on I/O: I/O-bound",
     reads((0.3, 4.0), (0.3, 4.0), wait=0.8), IoLimits(cpu=1, disk_read=4 * MiB), {}, "disk", {"disk_read": 8 * MiB}, (),
     ["waiting on I/O 80% of the time"]),
    ("waiting on a slow device, under every limit: nothing to raise",
     reads((0.1, 1.0), (0.1, 1.1), wait=0.7), IoLimits(cpu=1, disk_read=16 * MiB), {}, "device", {}, (),
     ["the device (or other users of it) is the bottleneck"]),
]


#: The table judges both over 2 samples, for short rows; the default disk window is tested below.
TWO = IoBottleneckConfig(cpu_samples=2, disk_samples=2)


@pytest.mark.parametrize("name, samples, limits, maximum, bottleneck, raises, at_maximum, words", CASES,
                         ids=[c[0] for c in CASES])
def test_verdict(name, samples, limits, maximum, bottleneck, raises, at_maximum, words):
    verdict = classify(samples, limits, maximum, TWO)
    assert verdict.bottleneck == bottleneck, verdict.reason
    assert {r.resource: r.new for r in verdict.raises} == pytest.approx(raises)
    assert verdict.at_maximum == at_maximum
    for word in words:
        assert word in verdict.reason or any(word in r.reason for r in verdict.raises), (word, verdict.reason)
    for r in verdict.raises:  # every raise says what was seen and why this resource
        assert r.reason.startswith(verdict.reason) and r.new > r.old == (getattr(limits, r.resource))


def test_the_thresholds_are_the_config():
    samples = reads((0.2, 3.0), (0.2, 3.0))
    assert classify(samples, IoLimits(cpu=1, disk_read=4 * MiB), config=TWO).bottleneck == "none"  # 75% of the limit
    loose = IoBottleneckConfig(at_limit=0.7, disk_samples=2, disk_step=1.5)
    verdict = classify(samples, IoLimits(cpu=1, disk_read=4 * MiB), config=loose)
    assert verdict.bottleneck == "disk" and verdict.raises[0].new == 6 * MiB


@pytest.mark.parametrize("bad", [dict(at_limit=0), dict(at_limit=1.5), dict(cpu_samples=0), dict(disk_samples=0), dict(disk_step=1.0),
                                 dict(cpu_step=0.5), dict(min_io_wait=-1)])
def test_a_bad_config_is_refused_naming_the_knob(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        IoBottleneckConfig(**bad)


def test_a_request_that_lands_in_the_next_interval_does_not_break_the_verdict():
    # 2 MiB/s in 256 KiB requests, sampled every 0.5 s: 3 requests, then 5 (75%, 125% of the limit).
    samples = reads((0.1, 1.5), (0.1, 2.5))
    verdict = classify(samples, IoLimits(cpu=1, disk_read=2 * MiB), config=TWO)
    assert verdict.bottleneck == "disk" and verdict.raises[0].new == 4 * MiB


def test_readahead_lumps_under_the_default_window():
    """Buffered reads arrive a readahead window (8 MiB here) at a time: 8, 0, 8, 0 MiB/s at 1 s
    samples under a 4 MiB/s limit is a reader held at it; one 8 MiB window in 4 s is a reader
    that needs 2 MiB/s, which a 2-sample window would have called I/O-bound."""
    limits = IoLimits(cpu=1, disk_read=4 * MiB)
    held = reads((0.05, 8), (0.05, 0), (0.05, 8), (0.05, 0))
    assert classify(held, limits).bottleneck == "disk"
    light = reads((0.05, 0), (0.05, 0), (0.05, 8), (0.05, 0))
    assert classify(light, limits).bottleneck == "none"
    assert classify(light, limits, config=TWO).bottleneck == "disk"  # what the 4-sample window avoids
    assert classify(held[:3], limits).bottleneck == "none"  # 3 of 4 disk samples: no disk verdict yet


def test_cpu_is_judged_over_its_own_shorter_window():
    samples = reads((0.2, 1), (0.2, 1), (0.98, 1), (0.99, 1))
    verdict = classify(samples, IoLimits(cpu=1, disk_read=8 * MiB))
    assert verdict.bottleneck == "cpu" and "over 4 samples" in verdict.reason
    assert classify(samples[-2:], IoLimits(cpu=1, disk_read=8 * MiB)).bottleneck == "cpu"

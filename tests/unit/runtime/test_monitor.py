"""The monitor loop with scripted samples: what it sends, what it keeps, and that its faults stay its own.

The sampler and channel here are scripted stand-ins (plain objects, no I/O): the real samplers
and channels are exercised against real cgroups in tests/integration.
"""

import io
import logging

from airflow_adaptive.domain.signals import parse_signal_line
from airflow_adaptive.runtime.channels import LogLineChannel
from airflow_adaptive.runtime.monitor import Monitor
from airflow_adaptive.runtime.sampling import WorkloadSampler

MIB = 2**20


class Scripted:
    source = "scripted"

    def __init__(self, values):
        self.values = list(values)

    def read(self, now):
        value = self.values.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    def pids(self):
        return []


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        self.t += 1.0
        return self.t


class Refusing:
    name = "refusing"

    def __init__(self):
        self.sent = []

    def send(self, signal):
        self.sent.append(signal)
        return None


class Recorder:
    def __init__(self, fail=False):
        self.samples, self.fail = [], fail

    def log_sample(self, sample):
        if self.fail:
            raise OSError("disk full")
        self.samples.append(sample)

    def maybe_flush(self):
        return True


def monitor(values, channel, **kw):
    return Monitor(WorkloadSampler(Scripted(values), clock=Clock()), channel, {"memory": 1024 * MIB}, **kw)


def test_signals_go_out_as_json_lines_with_increasing_sequence():
    out = io.StringIO()
    m = monitor([{"memory": 1000 * MIB}] * 8, LogLineChannel(out), container="base")
    for _ in range(8):
        m.step()
    signals = [parse_signal_line(line) for line in out.getvalue().splitlines()]
    assert signals and all(s is not None for s in signals)
    assert [s.sequence for s in signals] == list(range(len(signals)))
    assert signals[0].old == 1024 * MIB and signals[0].new > signals[0].old and signals[0].container == "base"
    assert m.allocation("memory") == signals[-1].new


def test_a_refused_resize_keeps_the_old_allocation_and_is_asked_again_later():
    channel = Refusing()
    m = monitor([{"memory": 1000 * MIB}] * 10, channel)
    for _ in range(10):
        m.step()
    assert len(channel.sent) >= 2  # asked again once the streak re-forms
    assert m.allocation("memory") == 1024 * MIB
    assert m.signals == []


def test_a_sampler_fault_skips_that_resource_once_logged_and_the_loop_goes_on(caplog):
    m = monitor([{"memory": 10 * MIB}, OSError("memory.current vanished"), OSError("memory.current vanished"), {"memory": 12 * MIB}], Refusing())
    with caplog.at_level(logging.WARNING):
        for _ in range(4):
            m.step()
    assert m.usage.count == 4
    assert m.usage.peak["memory"] == 12 * MIB
    assert sum("memory.current vanished" in r.getMessage() for r in caplog.records) == 1


def test_a_usage_log_fault_never_stops_the_loop(caplog):
    m = monitor([{"memory": 10 * MIB}] * 3, Refusing(), usage_log=Recorder(fail=True))
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            m.step()
    assert m.usage.count == 3
    assert any("monitor step 'log' failed" in r.getMessage() for r in caplog.records)


def test_every_sample_goes_to_the_usage_log_in_order():
    log = Recorder()
    m = monitor([{"memory": v * MIB} for v in (1, 2, 3, 4)], Refusing(), usage_log=log)
    for _ in range(4):
        m.step()
    assert [s.step for s in log.samples] == [0, 1, 2, 3]
    assert [s.values["memory"] for s in log.samples] == [v * MIB for v in (1, 2, 3, 4)]


def test_summary_has_peak_mean_and_outcome():
    m = monitor([{"memory": v * MIB} for v in (10, 30, 20)], Refusing())
    for _ in range(3):
        m.step()
    summary = m.summary("success", extra_peak={"memory": 35 * MIB})
    assert summary.peak["memory"] == 35 * MIB
    assert summary.mean["memory"] == (10 + 30) / 2 * MIB / 2 + (30 + 20) / 2 * MIB / 2
    assert summary.outcome == "success"

"""The trust rules for the monitor's lines: a forging workload can write into the monitor's stdout."""

from __future__ import annotations

import json

import pytest

from airflow_adaptive.domain.monitor_protocol import PROTOCOL_VERSION, parse_line, summary_line, usage_line
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.monitor_trust import MonitorLines, TrustConfig

MIB = 2**20
NOW = 1_800_000_000.0
MAXIMUM = {"memory": 1024 * MIB, "cpu": 2.0}


def resize(seq, new=512 * MIB, resource="memory", at=NOW, reason="near the limit"):
    return ResizeSignal(resource=resource, old=256 * MIB if resource == "memory" else 1.0, new=new, reason=reason,
                        time=at, sequence=seq, container="base").to_line()


def usage(seq, at=NOW, memory=100 * MIB):
    return usage_line(seq, UsageSample(time=at, values={"memory": memory, "cpu": 0.5}, source="cgroup-v1"))


def read_all(lines, *, step_s=1.0, config=TrustConfig(maximum=MAXIMUM), last_sequence=None):
    monitor = MonitorLines(config=config, last_sequence=last_sequence)
    accepted = [s for i, line in enumerate(lines) if (s := monitor.read(line, NOW + i * step_s)) is not None]
    return monitor, accepted


@pytest.mark.parametrize("name, lines, accepted, rejected", [
    ("the monitor's own lines", [resize(0), usage(0), "plain log text", usage(1), resize(1, 700 * MIB)], [0, 1], {}),
    ("a reconnect repeats lines identically", [resize(0), usage(0), resize(0), usage(0), resize(1, 700 * MIB)], [0, 1], {}),
    ("a forged line under a sequence already seen", [resize(0), resize(0, new=900 * MIB)], [0], {"conflict": 1}),
    ("a gap in the sequence", [resize(0), resize(5)], [0], {"out_of_sequence": 1}),
    ("above the user's maximum", [resize(0, new=64 * 1024 * MIB)], [], {"above_maximum": 1}),
    ("cpu above the maximum", [resize(0, new=8.0, resource="cpu")], [], {"above_maximum": 1}),
    ("not JSON", ['{"kind": "airflow-adaptive/resize", "new": '], [], {"malformed": 1}),
    ("a bad line re-read after a reconnect counts once", ['{"kind": "airflow-adaptive/resize", "new": '] * 3, [], {"malformed": 1}),
    ("wrong types", ['{"kind":"airflow-adaptive/usage","seq":"x","time":1,"values":{}}'], [], {"malformed": 1}),
    ("an unknown resource", [json.dumps({"kind": "airflow-adaptive/usage", "seq": 0, "time": NOW, "values": {"disk": 1}})],
     [], {"malformed": 1}),
    ("a negative amount", [json.dumps({"kind": "airflow-adaptive/usage", "seq": 0, "time": NOW, "values": {"memory": -1}})],
     [], {"malformed": 1}),
    ("an over-long line", ['{"kind":"airflow-adaptive/usage","pad":"' + "x" * 9000 + '"}'], [], {"malformed": 1}),
    ("a newer protocol", [json.dumps({"kind": "airflow-adaptive/resize", "v": PROTOCOL_VERSION + 1})], [], {"unknown_version": 1}),
    ("a resize dated next week", [resize(0, at=NOW + 7 * 86400)], [], {"bad_time": 1}),
    ("JSON that only mentions a kind", ['{"msg": "airflow-adaptive/resize is what the monitor prints"}'], [], {}),
])
def test_lines_are_believed_or_dropped_and_counted(name, lines, accepted, rejected):
    monitor, got = read_all(lines)
    assert [s.sequence for s in got] == accepted, name
    assert dict(monitor.rejected) == rejected, name
    assert monitor.untrusted is bool(rejected)


def test_a_flood_of_resizes_is_rate_limited_and_never_passes_the_maximum():
    """A forger writing 1000 well-formed, in-sequence resizes in 10 s: 12 a minute get through."""
    lines = [resize(i, new=(300 + i % 600) * MIB) for i in range(1000)]
    monitor, got = read_all(lines, step_s=0.01)
    assert len(got) == 12 and monitor.rejected["rate_limited"] == 988
    assert all(s.new <= MAXIMUM["memory"] for s in got)


def test_usage_floods_are_rate_limited_and_samples_are_kept_once_in_order():
    lines = [usage(i) for i in range(300)] + [usage(5)]
    monitor, _ = read_all(lines, step_s=0.01)
    samples = monitor.take_samples()
    assert [u.seq for u in samples] == list(range(240)) and monitor.rejected == {"rate_limited": 60}
    assert monitor.take_samples() == [] and monitor.sample_count == 240


def test_one_summary_a_second_different_one_is_a_conflict():
    first = summary_line(NOW, NOW + 5, {"memory": 200 * MIB}, {"memory": 150 * MIB}, 0)
    forged = summary_line(NOW, NOW + 5, {"memory": 1 * MIB}, {"memory": 1 * MIB}, 0)
    monitor, _ = read_all([first, first, forged])
    assert monitor.summary.peak == {"memory": 200 * MIB} and monitor.rejected == {"conflict": 1}


def test_a_resumed_reader_starts_after_the_sequence_already_handled():
    monitor, got = read_all([resize(3), resize(4), resize(5, 700 * MIB)], last_sequence=4)
    assert [s.sequence for s in got] == [5] and not monitor.untrusted


def test_every_line_the_monitor_writes_parses_back():
    sample = UsageSample(time=NOW, values={"memory": 1.0, "cpu": 0.25, "gpu": 1.0}, step=7, source="cgroup-v2")
    assert parse_line(usage_line(7, sample)).sample == sample
    assert parse_line(resize(3)).sequence == 3
    assert json.loads(resize(3))["v"] == PROTOCOL_VERSION
    from airflow_adaptive.domain.monitor_protocol import summary_metrics

    summary = parse_line(summary_line(NOW, NOW + 9, {"memory": 3.0}, {"memory": 2.0}, 0))
    assert summary_metrics(summary) == {"stage.start_time": NOW, "stage.end_time": NOW + 9,
                                        "observed.memory.peak": 3.0, "observed.memory.mean": 2.0}
    assert summary_metrics(None) is None


def test_a_restarted_monitor_starts_its_sequences_again_under_a_new_boot():
    """The kubelet restarts a native sidecar that dies; the new process numbers from 0 again. Its
    lines are believed; the dead process's are not, and a crash loop is bounded."""
    from airflow_adaptive.domain.monitor_protocol import signal_line

    def line(seq, boot, new=512 * MIB):
        return signal_line(ResizeSignal("memory", 256 * MIB, new, "r", NOW, seq, "base"), boot)

    monitor, got = read_all([line(0, "a"), line(1, "a", 600 * MIB), line(0, "b", 700 * MIB), line(1, "b", 800 * MIB),
                             line(2, "a", 900 * MIB)])
    assert [(s.sequence, s.new / MIB) for s in got] == [(0, 512), (1, 600), (0, 700), (1, 800)]
    assert monitor.rejected == {"stale_boot": 1}
    monitor, got = read_all([line(0, f"boot{i}") for i in range(12)], step_s=10)
    assert len(got) == 8 and monitor.rejected == {"too_many_boots": 4}

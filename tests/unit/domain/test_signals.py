import json

import pytest

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.signals import ResizeSignal, parse_signal_line


def signal(**kw):
    base = dict(resource="memory", old=2**30, new=2**31, reason="usage 95% of limit for 3 samples", time=1.7e9, sequence=4)
    return ResizeSignal(**(base | kw))


def test_line_round_trip():
    s = signal(container="train")
    line = s.to_line()
    assert "\n" not in line
    assert parse_signal_line(line + "\n") == s
    assert s.direction == "increase" and signal(new=2**29).direction == "decrease"


@pytest.mark.parametrize("line", ["", "epoch 3 loss 0.2", "{not json", json.dumps({"kind": "other", "resource": "memory"})])
def test_other_log_lines_are_not_signals(line):
    assert parse_signal_line(line) is None


def test_malformed_signal_is_a_clear_error():
    with pytest.raises(UserError, match="malformed resize signal"):
        parse_signal_line(json.dumps({"kind": "airflow-adaptive/resize", "resource": "memory"}))


@pytest.mark.parametrize(
    "kw, match",
    [({"resource": "disk"}, "unknown resource"), ({"new": 2**30}, "must change"), ({"old": -1}, "non-negative"), ({"sequence": -1}, "sequence")],
)
def test_invalid_signals(kw, match):
    with pytest.raises(ValueError, match=match):
        signal(**kw)


def test_a_request_travels_only_when_set_and_never_above_the_new_size():
    with_request = ResizeSignal("memory", 1.0, 4.0, "phase", 1.0, 3, "base", 2.0)
    assert parse_signal_line(with_request.to_line()) == with_request
    plain = ResizeSignal("memory", 1.0, 4.0, "reactive", 1.0, 3, "base")
    assert "request" not in plain.to_line()  # the line of a monitor without phases is unchanged
    with pytest.raises(ValueError, match="request must be a number in"):
        ResizeSignal("memory", 1.0, 4.0, "x", 1.0, 3, "base", 5.0)
    with pytest.raises(UserError, match="malformed resize signal"):  # untrusted: a line asking a request above its limit
        parse_signal_line(with_request.to_line().replace('"request":2.0', '"request":9.0'))

"""The monitor's log lines under arbitrary input (the workload can write into that log): a line
is ordinary text (None), a message, or MalformedLine / UnknownVersion; never another exception.
What the monitor writes parses back to what it meant."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.domain.features import RESOURCES
from airflow_adaptive.domain.monitor_protocol import (
    KINDS,
    MAX_LINE_CHARS,
    MalformedLine,
    SummaryLine,
    UnknownVersion,
    UsageLine,
    parse_with_boot,
    signal_line,
    status_line,
    summary_line,
    usage_line,
)
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.signals import MonitorStatus, ResizeSignal, parse_signal_line

from ...support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

BIG = 10**400  # JSON allows it; float() of it raises OverflowError
FIELDS = ["kind", "v", "boot", "seq", "time", "source", "values", "start_time", "end_time", "peak", "mean",
          "oom_kills", "event", "reason", "resource", "old", "new", "sequence", "container", "request"]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([BIG, -BIG, 2**63, -1]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12), st.sampled_from(list(RESOURCES)),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from([*RESOURCES, "x"]), inner, max_size=3)), max_leaves=8)
#: Objects that name a protocol kind, with the protocol's field names and any JSON values.
messages = st.builds(
    lambda kind, fields: {"kind": kind, **fields},
    st.sampled_from(KINDS), st.dictionaries(st.sampled_from(FIELDS[1:]), json_values, max_size=10),
)


def _check(line: str) -> None:
    try:
        parsed = parse_with_boot(line)
    except (MalformedLine, UnknownVersion) as err:
        assert str(err) and "\n" not in str(err)
        return
    if parsed is not None:
        message, boot = parsed
        assert isinstance(boot, str) and len(boot) <= 64
        assert isinstance(message, (ResizeSignal, UsageLine, SummaryLine, MonitorStatus))


@given(st.text(max_size=200))
@example('{"kind":"airflow-adaptive/usage"')
@example('{"kind":"airflow-adaptive/usage","x":' + "[" * 4000 + "]" * 4000 + "}")  # regression: RecursionError
@example('{"kind":"airflow-adaptive/usage","seq":0,"time":%s,"values":{}}' % ("1" * 5000))  # regression: ValueError (int digits)
@fuzz(300)
def test_any_text_is_text_a_message_or_a_malformed_line(line):
    _check(line)


@given(messages)
@example({"kind": "airflow-adaptive/usage", "seq": 0, "time": BIG, "values": {}})  # regression: OverflowError
@example({"kind": "airflow-adaptive/resize", "resource": "cpu", "old": BIG, "new": 1, "time": 1, "sequence": 0,
          "reason": ""})  # regression: OverflowError
@example({"kind": "airflow-adaptive/resize", "resource": "cpu", "old": 2, "new": 1, "time": 1, "sequence": 0,
          "reason": "", "request": BIG})  # regression: OverflowError
@example({"kind": "airflow-adaptive/summary", "start_time": 1, "end_time": 2, "peak": {"memory": BIG}})
@fuzz(250)
def test_objects_naming_a_kind_parse_or_are_malformed(data):
    line = json.dumps(data)
    _check(line)
    _check(line[: len(line) // 2])  # a line cut short (the stream broke mid-line)
    try:  # the resize-only reader of older operators returns None or raises UserError, nothing else
        parse_signal_line(line)
    except Exception as err:  # noqa: BLE001: the property is about which exception
        from airflow_adaptive.domain.errors import UserError

        assert isinstance(err, UserError), repr(err)


@given(st.text(max_size=20))
@fuzz(50)
def test_overlong_lines_are_malformed_not_parsed(filler):
    line = json.dumps({"kind": KINDS[1], "pad": "x" * MAX_LINE_CHARS + filler})
    with pytest.raises(MalformedLine):
        parse_with_boot(line)


amounts = st.floats(0, 1e15, allow_nan=False)
values = st.dictionaries(st.sampled_from(RESOURCES), amounts, max_size=4)
boots = st.text("0123456789abcdef", max_size=12)


@given(st.integers(0, 2**40), st.floats(0, 4e9), values, st.text(max_size=32), boots)
@fuzz()
def test_usage_line_round_trip(seq, time, vals, source, boot):
    sample = UsageSample(time=time, values=vals, step=seq, source=source)
    assert parse_with_boot(usage_line(seq, sample, boot)) == (UsageLine(seq, sample), boot)


@given(st.floats(0, 4e9), st.floats(0, 4e9), values, values, st.integers(0, 1000), boots)
@fuzz()
def test_summary_line_round_trip(start, end, peak, mean, kills, boot):
    assert parse_with_boot(summary_line(start, end, peak, mean, kills, boot)) == (
        SummaryLine(start, end, peak, mean, kills), boot)


@given(st.sampled_from(RESOURCES), amounts, amounts, st.text(max_size=50), st.floats(0, 4e9), st.integers(0, 2**40),
       st.text(max_size=20), st.one_of(st.none(), st.floats(0, 1)), boots)
@fuzz()
def test_signal_line_round_trip(resource, old, new, reason, time, sequence, container, request_share, boot):
    if old == new:
        new = old + 1
    request = None if request_share is None else new * request_share
    signal = ResizeSignal(resource, old, new, reason, time, sequence, container, request)
    assert parse_with_boot(signal_line(signal, boot)) == (signal, boot)


@given(st.text(max_size=64), st.text(max_size=1000), st.floats(0, 4e9), boots)
@fuzz()
def test_status_line_round_trip(event, reason, time, boot):
    status = MonitorStatus(event, reason, time)
    assert parse_with_boot(status_line(status, boot)) == (status, boot)

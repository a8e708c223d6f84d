"""The monitor's log as the operator reads it (bytes in chunks -> LineSplitter -> SignalCursor ->
MonitorLines), with arbitrary bad lines among the monitor's own: each bad line is skipped and
counted once, and every good line before and after it is kept, in order; nothing raises."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.adapters.kubernetes.signal_follower import LineSplitter, SignalCursor
from airflow_adaptive.domain.monitor_protocol import (
    KINDS,
    MalformedLine,
    UnknownVersion,
    parse_with_boot,
    signal_line,
    summary_line,
    usage_line,
)
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.signals import ResizeSignal

from ....support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

NOW = 1.7e9
BOOT = "b00t"
BIG = 10**400

#: Bad lines: ordinary text, broken JSON naming a kind, and well-formed JSON with wrong types.
bad_json = st.builds(
    lambda kind, key, value: json.dumps({"kind": kind, key: value}),
    st.sampled_from(KINDS), st.sampled_from(["seq", "time", "values", "old", "v", "boot", "peak"]),
    st.one_of(st.text(max_size=5), st.sampled_from([BIG, -1, None, [], {"x": 1}, True, 2**70])),
)
bad_lines = st.one_of(
    st.binary(max_size=60).filter(lambda b: b"\n" not in b),
    st.text(max_size=60).map(lambda s: s.replace("\n", " ").encode("utf-8", "surrogatepass")),
    bad_json.map(str.encode),
    bad_json.map(lambda line: line[: len(line) // 2].encode()),  # cut short
    st.sampled_from([b'{"kind":"airflow-adaptive/usage","x":' + b"[" * 3000 + b"]" * 3000 + b"}",
                     b'{"kind":"airflow-adaptive/usage","seq":0,"time":' + b"9" * 5000 + b',"values":{}}',
                     b'{"kind":"airflow-adaptive/usage","v":99,"seq":0,"time":1,"values":{}}',
                     b'{"kind":"airflow-adaptive/resize"' + b"\xff\xfe" + b"}"]),
)


def _is_bad(raw: bytes) -> bool | None:
    """True: the reader refuses it (counted); False: ordinary text (ignored); None: it parses as a
    message (a forgery, out of this property: monitor_trust's tests cover those)."""
    try:
        return None if parse_with_boot(raw.decode("utf-8", errors="replace")) is not None else False
    except (MalformedLine, UnknownVersion):
        return True


def _good_lines(n: int) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        sample = UsageSample(time=NOW + i, values={"memory": float(2**20 * (i + 1))}, step=i, source="cgroup-v2")
        out.append(("usage", usage_line(i, sample, BOOT).encode()))
    signal = ResizeSignal("memory", 2.0**30, 2.0**31, "rising", NOW, 0)
    out.append(("resize", signal_line(signal, BOOT).encode()))
    out.append(("summary", summary_line(NOW, NOW + n, {"memory": 2.0**21}, {"memory": 2.0**20}, 0, BOOT).encode()))
    return out


@given(
    st.integers(1, 12),
    st.lists(st.tuples(st.integers(0, 20), bad_lines), max_size=8),
    st.lists(st.integers(1, 200), max_size=10),
)
@example(3, [(1, b'{"kind":"airflow-adaptive/usage","seq":0,"time":' + str(BIG).encode() + b',"values":{}}')], [7])
@example(2, [(0, b'{"kind":"airflow-adaptive/resize","x":' + b"[" * 3000 + b"]" * 3000 + b"}")], [])
@fuzz(200)
def test_bad_lines_are_counted_and_good_lines_kept(n_good, bad, cuts):
    good = _good_lines(n_good)
    stream: list[tuple[str, bytes]] = list(good)
    for where, raw in bad:
        stream.insert(min(where, len(stream)), ("bad", raw))
    data = b"".join(raw + b"\n" for _, raw in stream)
    # The stream arrives in arbitrary chunks (a line may be split anywhere, even inside a UTF-8 character).
    splitter, cursor, signals = LineSplitter(), SignalCursor(), []
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(bounds, bounds[1:]):
        signals += cursor.signals_in(splitter.feed(data[start:end]), NOW)
    signals += cursor.signals_in(splitter.flush(), NOW)

    refused = {_is_bad(raw) for _, raw in stream if _ == "bad"}
    if None in refused:
        return  # a random line that happens to be a valid message: not this property's case
    monitor = cursor.monitor
    # Every good line is kept, in order.
    assert [u.seq for u in monitor.take_samples()] == list(range(n_good))
    assert [s.sequence for s in signals] == [0]
    assert monitor.summary is not None
    # Each distinct bad line is counted once (a reconnect re-reads lines; the count is by content).
    distinct = {raw.decode("utf-8", errors="replace").strip() for _, raw in stream if _ == "bad" and _is_bad(raw)}
    counted = monitor.rejected["malformed"] + monitor.rejected["unknown_version"]
    assert counted == len(distinct)
    assert set(monitor.rejected) <= {"malformed", "unknown_version"}
    assert monitor.untrusted == bool(distinct)

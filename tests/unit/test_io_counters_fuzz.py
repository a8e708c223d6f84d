"""The kernel-file parsers of ``adapters/io_counters`` under arbitrary text: a result, or a
ValueError whose message starts with the file's name and is one line; never another exception
(the monitor's guard catches OSError and ValueError only, so anything else would stop sampling)."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.adapters.io_counters import parse_blkio_throttle, parse_io_stat, parse_net_dev, parse_proc_io, parse_proc_stat

from ..support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

PARSERS = [parse_proc_io, parse_proc_stat, parse_blkio_throttle, parse_io_stat, parse_net_dev]
# Pieces of the real formats, so that generated text gets past the first line often.
pieces = st.sampled_from(["read_bytes", "write_bytes", "syscr", "syscw", ":", " ", "\n", "=", "(", ")", "|", "8:0",
                          "Read", "Write", "Total", "rbytes", "wbytes", "lo", "eth0", "0", "1", "-1", "18446744073709551616",
                          "9" * 30, "1_0", "\u0661", "\x00", "\t", "\r", "\x85", "1e3", "nan"])
kernelish = st.lists(st.one_of(pieces, st.text(max_size=8)), max_size=60).map("".join)


@given(st.sampled_from(PARSERS), st.one_of(kernelish, st.text(max_size=300)))
@example(parse_proc_io, "read_bytes: " + "9" * 5000)  # int() refuses over 4300 digits: still ours
@example(parse_net_dev, "eth0:" + " 1" * 16 + "\x85x: 1")
@example(parse_proc_stat, "1 (x) " + "0 " * 39 + "\u0661")
@fuzz(300)
def test_any_text_parses_or_is_a_value_error_naming_the_file(parse, text):
    try:
        parse(text, "/proc/42/the-file")
    except ValueError as exc:
        assert str(exc).startswith("/proc/42/the-file") and "\n" not in str(exc)

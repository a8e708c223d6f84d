"""The SWF loader under arbitrary files: a LoadedTrace whose report accounts for every job line,
or a TraceFormatError naming the file; never another exception (nan, inf, binary, a corrupt gzip)."""

from __future__ import annotations

import gzip
import warnings

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.adapters.traces import guess_format, load_trace
from airflow_adaptive.adapters.traces.swf import N_FIELDS, load_swf
from airflow_adaptive.domain.errors import TraceFormatError

from ....support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

tokens = st.one_of(
    st.integers(-1, 10**6).map(str),
    st.sampled_from(["-1", "0", "1.5", "nan", "NaN", "inf", "-inf", "1e999", "1e300", "x", "1_000", "0x10", "", "\u0661"]),
)
job_lines = st.lists(tokens, min_size=N_FIELDS - 2, max_size=N_FIELDS + 2).map(" ".join)
other_lines = st.one_of(st.just(""), st.text(max_size=30).map(lambda s: "; " + s), st.text(max_size=40))
swf_text = st.lists(st.one_of(job_lines, job_lines, other_lines), max_size=12).map(lambda ls: "\n".join(ls) + "\n")


def _check(path, content_lines=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in arithmetic on 1e300-sized fields
        try:
            loaded = load_swf(path)
        except TraceFormatError as err:
            assert str(err).startswith(str(path)) and "\n" not in str(err)
            return None
    report = loaded.report
    assert report.kept == len(loaded.table) > 0
    # Every job line is kept or counted; a file that ends early (a cut gzip) adds one count, line -1.
    assert report.lines <= report.kept + report.malformed <= report.lines + 1
    if content_lines is not None:
        assert report.lines == content_lines
    assert np.all(np.isfinite(loaded.table.submit))
    return loaded


@given(swf_text, st.booleans())
@example(" ".join(["1"] * N_FIELDS) + "\n" + " ".join(["nan"] * N_FIELDS) + "\n", False)  # regression: int(nan) ValueError
@example(" ".join(["inf"] * N_FIELDS) + "\n", False)  # regression: int(inf) OverflowError
@example(" ".join(["1e999"] * N_FIELDS) + "\n", True)
@example("; \x1e0\n" + " ".join(["0"] * N_FIELDS) + "\n", False)
@fuzz(200)
def test_any_swf_text_loads_or_is_a_trace_format_error(tmp_path_factory, text, compressed):
    path = tmp_path_factory.mktemp("swf") / ("t.swf.gz" if compressed else "t.swf")
    data = text.encode("utf-8", "surrogatepass")
    path.write_bytes(gzip.compress(data, mtime=0) if compressed else data)
    # The lines as the loader sees them: ASCII (others replaced), split on \n, \r, \r\n only
    # (str.splitlines would also split on \x1e, \x85, ...).
    seen = data.decode("ascii", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in seen.split("\n")]
    _check(path, sum(1 for line in lines if line and not line.startswith(";")))


@given(st.binary(max_size=300))
@fuzz(100)
def test_any_bytes_load_or_are_a_trace_format_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("swf") / "t.swf"
    path.write_bytes(data)
    _check(path)


GOOD = "".join(" ".join(str(i * 10 + j) for j in range(N_FIELDS)) + "\n" for i in range(40)).encode()


@given(st.integers(0, 10**6), st.integers(1, 255), st.integers(0, 60))
@example(20, 0xFF, 0)  # regression: zlib.error ("invalid literal/length code") escaped the loader
@fuzz(150)
def test_a_corrupt_or_cut_gzip_is_read_up_to_the_damage_or_refused(tmp_path_factory, at, flip, cut):
    raw = bytearray(gzip.compress(GOOD, mtime=0))
    raw[at % len(raw)] ^= flip
    path = tmp_path_factory.mktemp("swf") / "t.swf.gz"
    path.write_bytes(bytes(raw[: len(raw) - cut]))
    loaded = _check(path)
    if loaded is not None:
        assert len(loaded.table) <= 40


@given(st.text(max_size=400))
@example("a" * 300 + ".swf")  # regression: Path.is_file raised OSError (file name too long)
@example("x\x00y.swf")
@fuzz(100)
def test_a_trace_path_that_names_nothing_is_a_trace_format_error(name):
    try:
        fmt = guess_format(name)
        load_trace(name, fmt) if fmt == "swf" else None
    except TraceFormatError as err:
        assert "\n" not in str(err)


def test_valid_fields_are_all_kept(tmp_path):
    path = tmp_path / "t.swf"
    path.write_bytes(GOOD)
    loaded = _check(path, 40)
    assert list(loaded.table.job_id) == [str(i * 10) for i in range(40)]

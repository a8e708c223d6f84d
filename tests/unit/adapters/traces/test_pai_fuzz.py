"""The PAI loader with arbitrary lines in its tables: a LoadedTrace (bad lines counted) or a
TraceFormatError naming the file; never a pandas or decoding exception."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.adapters.traces.pai import REQUIRED, load_pai
from airflow_adaptive.domain.errors import TraceFormatError

from ....support.fuzz import TIMEOUT_S, fuzz

sys.path.insert(0, str(Path(__file__).parent))
import pai_fixture as fx  # noqa: E402

pytestmark = pytest.mark.timeout(TIMEOUT_S)

lines = st.one_of(
    st.binary(max_size=40).filter(lambda b: b"\n" not in b),
    st.lists(st.sampled_from(["", "x", "1", "-1", "nan", "1e999", "Terminated", "worker", "j1", '"', "\x1f"]),
             max_size=17).map(lambda fs: ",".join(fs).encode()),
)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pai")
    fx.write_pai_fixture(d, n_jobs=6, seed=1)
    return d


@given(st.sampled_from(REQUIRED), st.lists(lines, max_size=5), st.booleans())
@example("pai_task_table", [b"a\x1fb,c"], False)  # regression: pandas ParserError escaped the loader
@fuzz(30)  # pandas makes each example ~0.2 s
def test_any_lines_in_a_table_load_or_are_a_trace_format_error(tmp_path_factory, fixture_dir, table, extra, replace):
    d = tmp_path_factory.mktemp("pai")
    for name in REQUIRED:
        (d / f"{name}.csv").write_bytes((fixture_dir / f"{name}.csv").read_bytes())
    path = d / f"{table}.csv"
    added = b"".join(line + b"\n" for line in extra)
    path.write_bytes(added if replace else path.read_bytes() + added)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            loaded = load_pai(d)
        except TraceFormatError as err:
            assert str(err).startswith(str(d)) and "\n" not in str(err)
            return
    assert loaded.report.kept == len(loaded.table) > 0

import gzip

import numpy as np
import pytest

from airflow_adaptive.adapters.traces import guess_format, load_trace
from airflow_adaptive.adapters.traces.swf import load_swf
from airflow_adaptive.domain.errors import TraceFormatError

GOOD = "    2      465      5   3362   32 489.00   988   32    900  1024  1   3   3   3  1 -1 -1 -1\n"
UNKNOWN_MEM = "    3     1906     12    626  512 516.00   -1  512    900   -1  1   1   1   1  4 -1 -1 -1\n"


def test_lanl_units_and_counts(lanl):
    t, r = lanl.table, lanl.report
    assert r.lines == 122060 and r.malformed == 0 and len(t) == 122060
    both = (t.used["memory"] > 0) & (t.requested["memory"] > 0)
    assert both.sum() == 94336  # the README: 77% of jobs have both
    # Job 2: 988 KB per processor x 32 processors; request 1024 KB x 32.
    i = int(np.flatnonzero(t.job_id == "2")[0])
    assert t.used["memory"][i] == 988 * 32 * 1024 and t.requested["memory"][i] == 1024 * 32 * 1024
    assert t.used["cpu"][i] == pytest.approx(32 * 489.0 / 3362)
    assert t.end[i] == 465 + 5 + 3362


def test_unknown_is_nan_never_multiplied(tmp_path):
    path = tmp_path / "t.swf"
    path.write_text("; header\n" + GOOD + UNKNOWN_MEM)
    t = load_swf(path).table
    assert np.isnan(t.used["memory"][1]) and np.isnan(t.requested["memory"][1])


def test_malformed_lines_are_counted(tmp_path):
    path = tmp_path / "t.swf"
    path.write_text(GOOD + "1 2 3\n" + GOOD.replace("489.00", "abc") + GOOD)
    loaded = load_swf(path)
    assert len(loaded.table) == 2 and loaded.report.malformed == 2
    assert "line 2: 3 fields" in loaded.report.malformed_examples[0]


def test_hpc2n_copied_memory_is_dropped(tmp_path):
    path = tmp_path / "copy.swf"
    path.write_text("".join(GOOD.replace(" 988 ", " 1024 ") for _ in range(10)))
    loaded = load_swf(path)
    assert np.isnan(loaded.table.used["memory"]).all()
    assert any("copy" in k for k in loaded.report.excluded)


@pytest.mark.parametrize(
    "content, match",
    [(b"", "no job lines"), (b"; only a header\n", "no job lines"),
     (gzip.compress(GOOD.encode() * 50, mtime=0)[:40], "cannot read")],
    ids=["empty", "header-only", "truncated-gzip"],  # ids the same in every xdist worker
)
def test_empty_or_truncated(tmp_path, content, match):
    path = tmp_path / "bad.swf.gz" if content[:2] == b"\x1f\x8b" else tmp_path / "bad.swf"
    path.write_bytes(content)
    with pytest.raises(TraceFormatError, match=match):
        load_swf(path)


def test_truncated_after_some_jobs_keeps_them_and_says_so(tmp_path):
    full = gzip.compress(("; h\n" + GOOD * 5000).encode())
    path = tmp_path / "cut.swf.gz"
    path.write_bytes(full[: len(full) - 20])
    loaded = load_swf(path)
    assert 0 < len(loaded.table) <= 5000 and loaded.report.malformed >= 1


def test_format_dispatch(tmp_path):
    with pytest.raises(TraceFormatError, match="unknown trace format 'csv'"):
        load_trace("x", "csv")
    with pytest.raises(TraceFormatError, match="no such trace file"):
        load_trace(str(tmp_path / "missing.swf"), "swf")
    assert guess_format("a/b.swf.gz") == "swf"
    with pytest.raises(TraceFormatError, match="--format"):
        guess_format("data.bin")


@pytest.mark.parametrize("drop", [False, True])
def test_drop_requests_loads_a_usage_only_log(tmp_path, drop):
    path = tmp_path / "t.swf"
    # Job 2 asked for 32 processors and got 16 (field 5): without its request, procs is what it ran on.
    path.write_text(GOOD.replace("3362   32 489.00", "3362   16 489.00"))
    loaded = load_swf(path, drop_requests=drop)
    t = loaded.table
    assert t.used["memory"][0] == 988 * 16 * 1024 and t.used["cpu"][0] == pytest.approx(16 * 489.0 / 3362)
    if drop:
        for column in (t.requested["memory"], t.requested["cpu"], t.features["requested_memory"], t.features["requested_time"]):
            assert np.isnan(column).all()
        assert t.features["procs"][0] == 16
        assert any("requests dropped" in k for k in loaded.report.excluded)
    else:
        assert t.requested["memory"][0] == 1024 * 32 * 1024 and t.requested["cpu"][0] == 32 and t.features["procs"][0] == 32


def test_drop_requests_does_not_turn_a_copied_memory_into_usage(tmp_path):
    path = tmp_path / "copy.swf"
    path.write_text("".join(GOOD.replace(" 988 ", " 1024 ") for _ in range(10)))
    assert np.isnan(load_swf(path, drop_requests=True).table.used["memory"]).all()

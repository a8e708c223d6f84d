"""Usage-series loaders under arbitrary files: a SeriesSet or a TraceFormatError naming the file
(and the line, for the CSV); never another exception. What the writer writes reads back."""

from __future__ import annotations

import gzip
import json
import re

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.adapters.series import load_series
from airflow_adaptive.adapters.series.long_csv import HEADER, load_long_csv, write_long_csv
from airflow_adaptive.adapters.series.prometheus import METRICS, load_prometheus
from airflow_adaptive.domain.errors import TraceFormatError
from airflow_adaptive.domain.series import SERIES_RESOURCES, UsageSeries

from ....support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

BIG = 10**400
names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8)


def _expect_error(err: TraceFormatError, path, line_numbers: bool) -> None:
    text = str(err)
    assert text.startswith(str(path)) and "\n" not in text, text
    if line_numbers and re.match(re.escape(str(path)) + r":\d+:", text):
        assert int(text[len(str(path)) + 1:].split(":")[0]) >= 1


# --- the long CSV --------------------------------------------------------------------------

csv_fields = st.one_of(names, st.sampled_from(SERIES_RESOURCES), st.floats().map(repr),
                       st.sampled_from(["-1", "1e400", "nan", "", "0", "7", '"', "a,b", "\r"]))
csv_rows = st.lists(st.lists(csv_fields, min_size=3, max_size=6).map(lambda fs: ",".join(fs)), max_size=10)


@given(st.one_of(st.just(",".join(HEADER)), names), csv_rows, st.booleans())
@example(",".join(HEADER), ["a,b,1,memory,1e400"], False)
@example(",".join(HEADER), ["a,b,1,memory,\x00"], True)
@fuzz(200)
def test_any_long_csv_loads_or_names_the_line(tmp_path_factory, header, rows, compressed):
    path = tmp_path_factory.mktemp("csv") / ("s.csv.gz" if compressed else "s.csv")
    data = "\n".join([header, *rows]).encode("utf-8")
    path.write_bytes(gzip.compress(data, mtime=0) if compressed else data)
    try:
        loaded = load_long_csv(path)
    except TraceFormatError as err:
        _expect_error(err, path, line_numbers=True)
        return
    assert loaded.report.rows + loaded.report.duplicated_timestamps <= len(rows)
    for run in loaded.runs:
        for times, values in run.usage.values():
            assert np.all(np.diff(times) > 0) and np.all(values >= 0) and np.all(np.isfinite(values))


@given(st.binary(max_size=200), st.integers(0, 10**6), st.integers(0, 255))
@example(b"", 20, 0xFF)  # regression: a corrupt .gz raised zlib.error
@fuzz(150)
def test_any_bytes_or_corrupt_gzip_load_or_are_a_trace_format_error(tmp_path_factory, data, at, flip):
    good = (",".join(HEADER) + "\n" + "".join(f"r{i},s,{i},memory,{i}\n" for i in range(50))).encode()
    for name, content in (("raw.csv", data), ("any.csv.gz", data), ("damaged.csv.gz", gzip.compress(good, mtime=0))):
        if name.startswith("damaged"):
            content = bytearray(content)
            content[at % len(content)] ^= flip
        path = tmp_path_factory.mktemp("csv") / name
        path.write_bytes(bytes(content))
        try:
            load_long_csv(path)
        except TraceFormatError as err:
            _expect_error(err, path, line_numbers=True)


@st.composite
def series_sets(draw):
    runs = []
    for i in range(draw(st.integers(1, 4))):
        usage = {}
        for resource in draw(st.lists(st.sampled_from(SERIES_RESOURCES), min_size=1, max_size=4, unique=True)):
            times = sorted(set(draw(st.lists(st.floats(0, 1e9), min_size=1, max_size=6))))
            values = draw(st.lists(st.floats(0, 1e15), min_size=len(times), max_size=len(times)))
            usage[resource] = (np.asarray(times, float), np.asarray(values, float))
        runs.append(UsageSeries(f"{draw(names)}#{i}", draw(names), usage))
    return runs


@given(series_sets(), st.booleans())
@example([UsageSeries("#0", "\r", {"cpu": (np.zeros(1), np.zeros(1))})], False)  # regression: a lone \r was written unquoted
@fuzz(100)
def test_long_csv_round_trip(tmp_path_factory, runs, compressed):
    path = tmp_path_factory.mktemp("csv") / ("s.csv.gz" if compressed else "s.csv")
    stage_of = {}
    runs = [r for r in runs if stage_of.setdefault(r.series, r.stage) == r.stage]
    write_long_csv(runs, path)
    loaded = {r.series: r for r in load_long_csv(path).runs}
    assert set(loaded) == {r.series for r in runs}
    for run in runs:
        back = loaded[run.series]
        assert back.stage == run.stage and set(back.usage) == set(run.usage)
        for resource, (times, values) in run.usage.items():
            np.testing.assert_array_equal(back.usage[resource][0], times)
            np.testing.assert_array_equal(back.usage[resource][1], values)


# --- Prometheus range-query JSON -----------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.just(BIG), st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=6), st.sampled_from([*METRICS, "matrix", "success", "pod-x7k2p9", "c"]))
json_any = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["status", "data", "resultType", "result", "metric", "values", "__name__", "pod",
                                     "container", "namespace", "error"]), inner, max_size=4)), max_leaves=15)
metric = {"__name__": "container_memory_working_set_bytes", "pod": "train-x7k2p9qa", "container": "base"}


def _response(result):
    return {"status": "success", "data": {"resultType": "matrix", "result": result}}


@given(json_any)
@example(_response([1]))  # regression: AttributeError ('int' has no .get)
@example(_response("abc"))  # regression: AttributeError
@example(_response([{"metric": {"__name__": ["x"]}}]))  # regression: TypeError (unhashable)
@example(_response([{"metric": {**metric, "pod": ["p"]}, "values": [[1, "1"]]}]))  # regression: TypeError in re.sub
@example(_response([{"metric": metric, "values": [{"a": 1}]}]))  # regression: KeyError 0
@example(_response([{"metric": metric, "values": [[BIG, "1"]]}]))  # regression: OverflowError
@example(_response([{"metric": metric, "values": [["nan", "1"], [2, "1"]]}]))  # regression: NaN times kept
@fuzz(300)
def test_any_json_loads_as_series_or_is_a_trace_format_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("prom") / "q.json"
    path.write_text(json.dumps(data))
    try:
        loaded = load_prometheus(path)
    except TraceFormatError as err:
        _expect_error(err, path, line_numbers=False)
        return
    for run in loaded.runs:
        assert np.isfinite(run.start)
        for times, values in run.usage.values():
            assert np.all(np.isfinite(times)) and np.all(np.diff(times) > 0) and np.all(values >= 0)


@given(st.binary(max_size=100))
@example(b"[" * 100_000)  # regression: RecursionError
@example(b"1" * 5000)  # regression: ValueError (int digits) was reported, but by chance; now by design
@example(b"\xff\xfe")
@fuzz(100)
def test_any_bytes_are_json_or_a_trace_format_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("prom") / "q.json"
    path.write_bytes(data)
    with pytest.raises(TraceFormatError) as err:
        load_prometheus(path)
    _expect_error(err.value, path, line_numbers=False)


@given(st.lists(st.tuples(st.floats(1e9, 2e9), st.floats(0, 1e15)), min_size=1, max_size=10, unique_by=lambda p: p[0]))
@fuzz(100)
def test_prometheus_memory_round_trip(samples):
    samples = sorted(samples)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "q.json"
        path.write_text(json.dumps(_response([{"metric": metric, "values": [[t, repr(v)] for t, v in samples]}])))
        (run,) = load_prometheus(path).runs
    assert run.start == samples[0][0] and run.stage == "train/base"
    times, values = run.usage["memory"]
    np.testing.assert_allclose(times + run.start, [t for t, _ in samples], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(values, [v for _, v in samples])


@given(st.text(max_size=300), st.sampled_from(["csv", "prometheus"]))
@example("a" * 300, "prometheus")  # regression: Path.is_file raised OSError (file name too long)
@fuzz(50)
def test_a_series_path_that_names_nothing_is_a_trace_format_error(name, fmt):
    with pytest.raises(TraceFormatError):
        load_series(name or "missing", fmt)

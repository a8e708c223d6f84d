"""``write_long_csv``: what it writes, ``load_long_csv`` reads back exactly (plain and gzip)."""

import gzip

import numpy as np
import pytest

from airflow_adaptive.adapters.series import load_series
from airflow_adaptive.adapters.series.long_csv import HEADER, write_long_csv
from airflow_adaptive.domain.series import SeriesLoadReport, SeriesSet, UsageSeries


def run(name, stage, start, memory, cpu=None):
    usage = {"memory": (np.arange(len(memory)) * 0.25 + 0.1, np.asarray(memory, float))}
    if cpu is not None:
        usage["cpu"] = (np.asarray([0.0, 1.0 / 3]), np.asarray(cpu, float))
    return UsageSeries(name, stage, usage, start)


# In start order: the stages interleave, as the demo's pipeline runs do.
RUNS = (run("r1", "dag.load", 100.0, [1.5e8, 2.25e8], cpu=[1.0, 1.7]), run("r2", "dag.train", 103.0, [3e8, 4.123456789e8, 2e8]),
        run("r3", "dag.load", 110.0, [1.6e8], cpu=[0.5, 0.25]), run("r4", "dag.train", 114.0, [3.1e8]))


@pytest.mark.parametrize("name", ["s.csv", "s.csv.gz"])
def test_written_series_read_back_the_same_with_each_stages_runs_in_start_order(tmp_path, name):
    path = tmp_path / name
    rows = write_long_csv(SeriesSet(RUNS, SeriesLoadReport("test")), path)
    assert rows == sum(len(t) for r in RUNS for t, _ in r.usage.values()) == 11
    loaded = load_series(str(path))
    assert [(r.series, r.stage) for r in loaded.runs] == [("r1", "dag.load"), ("r3", "dag.load"),
                                                          ("r2", "dag.train"), ("r4", "dag.train")]
    by_name = {r.series: r for r in RUNS}
    for got in loaded.runs:
        want = by_name[got.series]
        assert set(got.usage) == set(want.usage)
        for resource, (times, values) in want.usage.items():
            assert np.array_equal(got.usage[resource][0], times) and np.array_equal(got.usage[resource][1], values)
    assert loaded.report.rows == rows and loaded.report.duplicated_timestamps == 0


def test_the_gzip_file_has_the_header_and_the_same_bytes_every_time(tmp_path):
    write_long_csv(RUNS, tmp_path / "a.csv.gz")
    write_long_csv(list(RUNS), tmp_path / "b.csv.gz")
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()
    text = gzip.decompress((tmp_path / "a.csv.gz").read_bytes()).decode()
    assert text.splitlines()[0] == ",".join(HEADER)
    assert text.splitlines()[1:3] == ["r1,dag.load,0.0,cpu,1.0", "r1,dag.load,0.3333333333333333,cpu,1.7"]

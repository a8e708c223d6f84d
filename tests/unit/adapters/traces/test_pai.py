"""The PAI (cluster-trace-gpu-v2020) loader, on a small trace in the published layout."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pai_fixture as fx  # noqa: E402

from airflow_adaptive.adapters.traces.pai import PAI_SCHEMA, load_pai  # noqa: E402
from airflow_adaptive.domain.errors import TraceFormatError  # noqa: E402

GIB = 2**30
N_JOBS = 12


@pytest.fixture
def trace_dir(tmp_path: Path) -> Path:
    fx.write_pai_fixture(tmp_path / "pai", n_jobs=N_JOBS, seed=3)
    return tmp_path / "pai"


@pytest.fixture
def loaded(trace_dir):
    return load_pai(trace_dir)


def _row(loaded, job_id: str) -> int:
    (index,) = np.flatnonzero(loaded.table.job_id == job_id)
    return int(index)


def test_units_are_converted_to_cores_bytes_and_gpus(loaded):
    t = loaded.table
    i = _row(loaded, f"{fx.KNOWN_JOB}/worker")
    # plan_cpu 600 = 6 cores, plan_gpu 50 = half a GPU, plan_mem 29.296875 GiB (= 30000 MiB).
    assert t.requested["cpu"][i] == pytest.approx(6.0)
    assert t.requested["gpu"][i] == pytest.approx(0.5)
    assert t.requested["memory"][i] == pytest.approx(29.296875 * GIB)
    assert t.requested["memory"][i] == 30000 * 2**20
    assert np.isnan(t.requested["gpu_memory"][i])
    assert (t.features["plan_cpu"][i], t.features["plan_gpu"][i]) == (6.0, 0.5)
    assert t.features["plan_mem"][i] == 30000 * 2**20
    assert (t.submit[i], t.end[i], t.run_time[i]) == (fx.KNOWN_START, fx.KNOWN_END, 38.0)


def test_used_is_the_maximum_over_a_tasks_instances(loaded):
    t = loaded.table
    i = _row(loaded, f"{fx.KNOWN_JOB}/worker")
    cpu, gpu, mem, gmem = (max(col) for col in zip(*fx.KNOWN_WORKER_SENSORS))
    assert t.features["inst_num"][i] == 2
    assert t.used["cpu"][i] == pytest.approx(cpu / 100)  # 420% -> 4.2 cores
    assert t.used["gpu"][i] == pytest.approx(gpu / 100)  # 45.5% -> 0.455 GPU
    assert t.used["memory"][i] == pytest.approx(mem * GIB)  # from the *other* instance
    assert t.used["gpu_memory"][i] == pytest.approx(gmem * GIB)
    # A CPU-only task: GPU usage is unknown, not zero.
    ps = _row(loaded, f"{fx.KNOWN_JOB}/ps")
    assert t.used["cpu"][ps] == pytest.approx(fx.KNOWN_PS_SENSOR[0] / 100)
    assert t.used["memory"][ps] == pytest.approx(fx.KNOWN_PS_SENSOR[1] * GIB)
    assert np.isnan(t.used["gpu"][ps]) and np.isnan(t.used["gpu_memory"][ps])


def test_network_columns_are_bytes_per_second_maximum_over_instances(loaded):
    """sensor ``read``/``write`` are the README's "Bytes of network input/output", lifetime
    averages (not totals): kept as bytes/s, never divided by the run time (38 s here)."""
    t = loaded.table
    i = _row(loaded, f"{fx.KNOWN_JOB}/worker")
    # Instance 0 reads 21271328.38 B/s and writes 16376189.82; instance 1 reads 35e6 and writes
    # 900000.5: the task needs the faster of each, from different instances.
    assert t.used["network_rx"][i] == 35_000_000.0
    assert t.used["network_tx"][i] == pytest.approx(16_376_189.815384615, rel=1e-12)
    assert t.used["network_rx"][i] != pytest.approx(35e6 / 38)  # not a total over the run
    # The ps received nothing: a measured zero, which is not unknown.
    ps = _row(loaded, f"{fx.KNOWN_JOB}/ps")
    assert (t.used["network_rx"][ps], t.used["network_tx"][ps]) == (0.0, 123456.75)
    # The trace has no bandwidth request, and no disk columns at all.
    assert np.isnan(t.requested["network_rx"]).all() and np.isnan(t.requested["network_tx"]).all()
    assert "disk_read" not in t.used and "disk_write" not in t.used


def test_random_jobs_network_is_near_their_groups_rate(loaded):
    t = loaded.table
    random_jobs = ~np.char.startswith(t.job_id.astype(str), fx.KNOWN_JOB)
    rx, tx = t.used["network_rx"][random_jobs], t.used["network_tx"][random_jobs]
    assert len(rx) == N_JOBS
    # Each value is one of the groups' rates give or take 10% (the loader neither scales nor sums).
    for values, rates in ((rx, fx.GROUP_RX), (tx, fx.GROUP_TX)):
        ratio = values[:, None] / np.array(rates)[None, :]
        assert np.all(np.any((ratio >= 0.9) & (ratio <= 1.1), axis=1)), values


def test_bad_network_values_are_unknown_and_counted_row_kept(loaded):
    t, r = loaded.table, loaded.report
    i = _row(loaded, f"{fx.KNOWN_JOB}/evaluator")
    # read: "", "-3.0", "750000.0", "null" -> only 750000 is known; write: "1500000.0", "12MB",
    # "inf", "-0.5" -> only 1.5e6 is.
    assert t.used["network_rx"][i] == 750_000.0
    assert t.used["network_tx"][i] == 1_500_000.0
    assert t.used["cpu"][i] == pytest.approx(0.9)  # the rows' other usage is kept
    for reason, n in fx.EXPECTED_NET_UNKNOWN.items():
        assert r.excluded[reason] == n, reason
    assert r.malformed == fx.N_MALFORMED  # a bad bandwidth does not make a bad line


def test_a_task_with_no_known_bandwidth_is_kept_with_nan(trace_dir):
    path = trace_dir / "pai_sensor_table.csv"
    rows = [line.split(",") for line in path.read_text().splitlines()]
    n_rows = 0
    for fields in rows:
        if len(fields) == 16:
            fields[12], fields[13] = "", "NaN"  # read, write
            n_rows += 1
    path.write_text("".join(",".join(f) + "\n" for f in rows))
    loaded = load_pai(trace_dir)
    t, r = loaded.table, loaded.report
    assert len(t) == fx.expected_kept(N_JOBS)
    assert np.isnan(t.used["network_rx"]).all() and np.isnan(t.used["network_tx"]).all()
    assert np.all(t.used["cpu"] > 0)
    assert r.excluded["pai_sensor_table.read (network_rx) missing: taken as unknown, row kept"] == n_rows
    assert r.excluded["pai_sensor_table.write (network_tx) missing: taken as unknown, row kept"] == n_rows
    assert r.malformed == fx.N_MALFORMED


def test_unparsable_cpu_still_makes_a_bad_line_even_with_good_network(trace_dir):
    """The strict columns stay strict: only the network columns are read leniently."""
    path = trace_dir / "pai_sensor_table.csv"
    lines = path.read_text().splitlines()
    fields = lines[0].split(",")
    fields[9] = "2GB"  # max_mem
    path.write_text("\n".join([",".join(fields)] + lines[1:]) + "\n")
    assert load_pai(trace_dir).report.malformed == fx.N_MALFORMED + 1


def test_features_come_from_job_and_group_tag_tables(loaded):
    t = loaded.table
    i = _row(loaded, f"{fx.KNOWN_JOB}/worker")
    assert t.features["user"][i] == fx.KNOWN_USER
    assert t.features["group"][i] == fx.KNOWN_GROUP
    assert t.features["workload"][i] == "bert"
    assert t.features["gpu_type_spec"][i] == "V100M32"
    assert t.features["task_name"][i] == "worker"
    # Jobs without a group tag (every 5th random job) fall back to group = user.
    assert int(np.sum(t.features["group"] == t.features["user"])) == N_JOBS // 5


def test_malformed_lines_are_counted_not_fatal(loaded):
    r = loaded.report
    assert r.malformed == fx.N_MALFORMED
    text = " ".join(r.malformed_examples)
    for name in ("pai_task_table.csv", "pai_sensor_table.csv", "pai_job_table.csv"):
        assert name in text
    assert "unparsable number" in text and "11 fields, expected 10" in text


@pytest.mark.parametrize("table", ["pai_task_table", "pai_sensor_table", "pai_group_tag_table"])
def test_each_added_bad_line_is_one_more_malformed(trace_dir, table):
    with open(trace_dir / f"{table}.csv", "a") as f:
        f.write("only,three,fields\n\n")
    r = load_pai(trace_dir).report
    assert r.malformed == fx.N_MALFORMED + 2  # the short line and the blank one


def test_unparsable_sensor_value_is_a_bad_line(trace_dir):
    path = trace_dir / "pai_sensor_table.csv"
    lines = path.read_text().splitlines()
    fields = lines[0].split(",")
    fields[6] = "12.5%"  # cpu_usage
    path.write_text("\n".join([",".join(fields)] + lines[1:]) + "\n")
    r = load_pai(trace_dir).report
    assert r.malformed == fx.N_MALFORMED + 1
    assert any(e.startswith("line 1: pai_sensor_table.csv") for e in r.malformed_examples)


def test_exclusions_are_counted_with_reasons(loaded):
    r = loaded.report
    assert dict(r.excluded) == {**fx.EXPECTED_EXCLUDED, **fx.EXPECTED_NET_UNKNOWN}
    assert r.kept == len(loaded.table) == fx.expected_kept(N_JOBS)
    assert r.to_dict()["kept"] == r.kept


def test_schema_key_and_resources():
    assert PAI_SCHEMA.id == "pai/1"
    assert PAI_SCHEMA.key == ("user", "group")
    assert PAI_SCHEMA.resources == ("cpu", "memory", "gpu", "gpu_memory", "network_rx", "network_tx")
    numeric = {f.name for f in PAI_SCHEMA.features if f.kind == "numeric"}
    assert numeric == {"inst_num", "plan_cpu", "plan_mem", "plan_gpu"}
    assert set(PAI_SCHEMA.names) - numeric == {"user", "group", "workload", "task_name", "gpu_type_spec"}


def test_job_table_is_consistent(loaded):
    t = loaded.table
    n = len(t)
    assert t.schema is PAI_SCHEMA
    assert len(set(t.job_id)) == n
    for col in (t.submit, t.end, t.run_time, *t.features.values(), *t.used.values(), *t.requested.values()):
        assert len(col) == n
    assert set(t.used) == set(t.requested) == set(PAI_SCHEMA.resources)
    assert np.all(t.end >= t.submit)
    np.testing.assert_allclose(t.run_time, t.end - t.submit)
    for f in PAI_SCHEMA.features:
        col = t.features[f.name]
        if f.kind == "numeric":
            assert col.dtype == np.float64
        else:
            assert all(isinstance(v, str) for v in col)
    assert np.all(t.used["cpu"] > 0) and np.all(t.used["memory"] > 0)
    assert len(t.key_codes()) == n


def test_instance_table_is_not_needed(trace_dir):
    (trace_dir / "pai_instance_table.csv").unlink()
    assert len(load_pai(trace_dir).table) == fx.expected_kept(N_JOBS)


def test_missing_file_names_path_and_expected_files(trace_dir):
    (trace_dir / "pai_sensor_table.csv").unlink()
    with pytest.raises(TraceFormatError) as err:
        load_pai(trace_dir)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(trace_dir) in msg and "missing pai_sensor_table.csv" in msg
    assert "pai_task_table.csv" in msg and "pai_group_tag_table.csv" in msg


def test_missing_directory(tmp_path):
    with pytest.raises(TraceFormatError, match="no such PAI trace directory.*pai_task_table.csv"):
        load_pai(tmp_path / "nope")


def test_no_usable_task_says_why(trace_dir):
    (trace_dir / "pai_sensor_table.csv").write_text("")  # empty file: no task has sensor rows
    with pytest.raises(TraceFormatError) as err:
        load_pai(trace_dir)
    msg = str(err.value)
    assert "no usable task" in msg
    assert f"task has no sensor rows: {fx.expected_kept(N_JOBS) + 1}" in msg
    assert "task status Running, not Terminated: 2" in msg

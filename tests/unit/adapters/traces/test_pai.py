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
    assert dict(r.excluded) == fx.EXPECTED_EXCLUDED
    assert r.kept == len(loaded.table) == fx.expected_kept(N_JOBS)
    assert r.to_dict()["kept"] == r.kept


def test_schema_key_and_resources():
    assert PAI_SCHEMA.id == "pai/1"
    assert PAI_SCHEMA.key == ("user", "group")
    assert PAI_SCHEMA.resources == ("cpu", "memory", "gpu", "gpu_memory")
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

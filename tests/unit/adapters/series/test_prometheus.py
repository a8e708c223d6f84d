"""Prometheus range-query JSON as a user exports it: memory and CPU of two runs (pods) of one
stage, with the noise real exports carry (pod-level series, NaN, other metrics, a counter reset)."""

import json

import pytest

from airflow_adaptive.adapters.series import load_series
from airflow_adaptive.adapters.series.prometheus import stage_of
from airflow_adaptive.domain.errors import TraceFormatError


def matrix(*results):
    return {"status": "success", "data": {"resultType": "matrix", "result": list(results)}}


def result(name, pod, container, values, **labels):
    return {"metric": {"__name__": name, "namespace": "ml", "pod": pod, "container": container, **labels},
            "values": [[t, str(v)] for t, v in values]}


def write(tmp_path, data):
    path = tmp_path / "prom.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_two_runs_of_a_stage_with_memory_and_cpu(tmp_path):
    memory = matrix(
        result("container_memory_working_set_bytes", "train-model-x7k2p9qa", "base", [(1000, 100), (1015, 200), (1030, "NaN")]),
        result("container_memory_working_set_bytes", "train-model-q81bz0ka", "base", [(5000, 150), (5015, 160)]),
        result("container_memory_working_set_bytes", "train-model-x7k2p9qa", "", [(1000, 999)]),  # the pod's cgroup
        result("kube_pod_info", "train-model-x7k2p9qa", "base", [(1000, 1)]),
    )
    cpu = matrix(result("container_cpu_usage_seconds_total", "train-model-x7k2p9qa", "base",
                        [(1000, 10), (1015, 40), (1030, 70), (1045, 15)]))  # 2 cores, 2 cores, then a restart
    loaded = load_series(write(tmp_path, [memory, cpu]), "prometheus")
    assert [r.stage for r in loaded.runs] == ["train-model/base", "train-model/base"]
    first = loaded.runs[0]
    assert first.start == 1000 and list(first.usage["memory"][0]) == [0, 15] and list(first.usage["memory"][1]) == [100, 200]
    times, cores = first.usage["cpu"]
    assert list(times) == [15, 30, 45] and list(cores) == pytest.approx([2.0, 2.0, 1.0])
    assert loaded.report.skipped == {"NaN or infinite samples": 1, "pod-level series (container '' or POD)": 1,
                                     "metric kube_pod_info": 1, "counter resets (the container restarted)": 1}


@pytest.mark.parametrize("pod, stage", [("train-model-x7k2p9qa", "train-model/c"), ("web-7d4b9c8f6-abcde", "web/c"),
                                        ("etl", "etl/c")])
def test_the_stage_is_the_pod_name_without_its_random_suffix(pod, stage):
    assert stage_of(pod, "c") == stage


@pytest.mark.parametrize("data, message", [
    (matrix({"metric": {"pod": "p", "container": "c"}, "values": [[1, "1"]]}), "no __name__ label"),
    ({"status": "success", "data": {"resultType": "vector", "result": []}}, "expected 'matrix'"),
    ({"status": "error", "error": "bad query", "data": {}}, "the query failed \\(bad query\\)"),
    (matrix(result("container_memory_working_set_bytes", "p-abcde", "c", [(2, 1), (1, 1)])), "is not after"),
    (matrix(result("kube_pod_info", "p", "c", [(1, 1)])), "no usable series"),
    ([1, 2], "not a Prometheus query response"),
])
def test_wrong_exports_are_clear_errors(tmp_path, data, message):
    with pytest.raises(TraceFormatError, match=message):
        load_series(write(tmp_path, data), "prometheus")

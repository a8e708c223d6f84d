"""The stage-run log's records that a retry reads back, against a real ``mlflow server``."""

import pytest

from airflow_adaptive.adapters.mlflow.stage_run_log import StageRunLog
from airflow_adaptive.domain.stage_run import StageIdentity

pytestmark = [pytest.mark.integration]
GiB = 2**30


def test_a_retry_reads_the_sizes_earlier_tries_could_not_get(mlflow_server):
    log = StageRunLog(mlflow_server, "deferred-sizes-test")
    first = StageIdentity("dag", "train", "manual__1", 1)
    run_1 = log.start(first, {"algorithm": "x"}, None, {"memory": 4 * GiB}, {"memory": 2 * GiB}, sizing="predicted", reason="",
                    model_uri="models:/job-profiler@champion", model_version="1", schema_id="stage/1")
    log.record_deferred_sizes(run_1, {"memory": 6 * GiB, "cpu": 3.0})
    log.record_outcome(run_1, "oom_killed")
    other_dag_run = StageIdentity("dag", "train", "manual__2", 1)
    run_x = log.start(other_dag_run, {"algorithm": "x"}, None, {"memory": GiB}, {"memory": GiB}, sizing="predicted", reason="",
                    model_uri="models:/job-profiler@champion", model_version="1", schema_id="stage/1")
    log.record_deferred_sizes(run_x, {"memory": 99 * GiB})

    assert log.earlier_deferred_sizes(StageIdentity("dag", "train", "manual__1", 2)) == {"memory": 6 * GiB, "cpu": 3.0}
    assert log.earlier_deferred_sizes(first) == {}  # a try never reads its own

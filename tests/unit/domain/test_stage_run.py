from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.domain.stage_run import (
    STAGE_FEATURES,
    ObservedSummary,
    OomEvent,
    StageIdentity,
    record_from_run,
    sizing_params,
)


def test_written_run_reads_back_as_a_record():
    features = {"dag_id": "train_pipeline", "task_id": "fit", "algorithm": "random_forest", "framework": "sklearn",
                "data_rows": 200000, "requested_memory": 4 * 2**30}
    profile = PredictedProfile({"memory": ResourceEstimate(2**30, 1.5 * 2**30)}, coverage=0.99)
    params = sizing_params(features, profile, allocated={"memory": 1.5 * 2**30}, requested={"memory": 4 * 2**30})
    summary = ObservedSummary(100.0, 160.0, "oom_killed", peak={"memory": 1.2 * 2**30}, mean={"memory": 2**30},
                              oom_events=[OomEvent(150.0, "base", 1.5 * 2**30, 1)])
    tags = StageIdentity("train_pipeline", "fit", "manual__1", 1).tags()
    row = record_from_run(STAGE_FEATURES, "run-1", tags, params, summary.metrics())
    assert row["run_time"] == 60.0 and row["used"]["memory"] == 1.2 * 2**30
    assert row["requested"]["memory"] == 4 * 2**30 and row["features"]["data_rows"] == 200000.0
    assert summary.metrics()["oom_kills"] == 1.0
    table = JobTable.from_rows(STAGE_FEATURES, [row])
    assert table.features["task_id"][0] == "fit" and len(table) == 1


def test_unfinished_run_is_not_a_record():
    assert record_from_run(STAGE_FEATURES, "r", {}, {}, {"stage.start_time": 1.0}) is None

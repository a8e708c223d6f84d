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


# ----------------------------------------------------------------------------- open stage features
import math

import numpy as np
import pytest

from airflow_adaptive.domain.errors import FeatureSchemaMismatch, UserError
from airflow_adaptive.domain.stage_run import check_feature_names, infer_feature_kinds, stage_schema


@pytest.mark.parametrize("values, kind", [
    (["8", "16", None], "numeric"),
    (["1e6", "2.5"], "numeric"),
    (["bf16", "16"], "categorical"),  # one value that is not a number: a category
    (["True", "False"], "categorical"),
    (["inf"], "categorical"),
    ([None, ""], "categorical"),  # nothing recorded: nothing to call a number
])
def test_a_declared_feature_kind_is_read_from_what_its_runs_recorded(values, kind):
    assert infer_feature_kinds({"f": values}) == {"f": kind}


def test_the_stage_schema_adds_declared_features_after_the_base_ones():
    schema = stage_schema({"lora_rank": "numeric", "tokenizer": "categorical", "batch_size": "categorical"})
    assert schema.id == "stage/2" and schema.names[-2:] == ("lora_rank", "tokenizer")
    assert schema.feature("batch_size").kind == "numeric"  # a base feature keeps its kind
    assert ("model_family",) in schema.levels
    job = schema.validate_job({"dag_id": "d", "task_id": "t", "lora_rank": 8})
    assert job["lora_rank"] == 8.0 and math.isnan(job["parameters"]) and job["tokenizer"] == ""


@pytest.mark.parametrize("name", ["batch size", "1st", "a.b", "", "x" * 65, 3])
def test_a_feature_name_that_is_not_an_identifier_is_refused_with_its_name(name):
    with pytest.raises(UserError, match="not identifiers"):
        check_feature_names({name: 1}, "task 't' features")


def test_a_feature_that_changed_kind_is_a_clear_mismatch():
    old, new = stage_schema({"tokenizer": "categorical"}), stage_schema({"tokenizer": "numeric"})
    with pytest.raises(FeatureSchemaMismatch, match="tokenizer"):
        old.require_same(new, "the jobs")
    old.require_same(stage_schema({"lora_rank": "numeric"}))  # other features: compatible


def test_a_table_is_projected_onto_a_profiler_schema():
    wide = stage_schema({"lora_rank": "numeric"})
    row = {"job_id": "j", "submit": 1.0, "end": 2.0, "run_time": 1.0,
           "features": {"dag_id": "d", "task_id": "t", "lora_rank": 4.0}, "used": {"memory": 1.0}, "requested": {}}
    table = JobTable.from_rows(wide, [row])
    narrow = table.project(stage_schema({"tokenizer": "categorical"}))
    assert "lora_rank" not in narrow.features and list(narrow.features["tokenizer"]) == [""]
    assert math.isnan(narrow.features["parameters"][0])

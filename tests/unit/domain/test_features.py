import math

import pytest

from airflow_adaptive.domain.errors import FeatureSchemaMismatch
from airflow_adaptive.domain.features import Feature, FeatureSchema
from airflow_adaptive.domain.stage_run import STAGE_FEATURES

SCHEMA = FeatureSchema(
    name="t", version=2, key=("user",), resources=("memory",),
    features=(Feature("user", "categorical"), Feature("rows", "numeric", "rows")),
)


def test_valid_job_is_normalised():
    assert SCHEMA.validate_job({"user": 7, "rows": 3}) == {"user": "7", "rows": 3.0}
    assert math.isnan(SCHEMA.validate_job({"user": "a"})["rows"])


@pytest.mark.parametrize(
    "job, fragment",
    [
        ({"user": "a", "rows": "many"}, "'rows' must be a number, got 'many'"),
        ({"rows": 1}, "'user' is required (a string or integer id): it names the workload"),
        ({"user": "a", "colour": 1}, "unknown feature(s) ['colour']"),
        ({"user": ["a"]}, "'user' must be a string or integer id"),
        ({"user": "a", "rows": True}, "'rows' must be a number"),
    ],
)
def test_mismatch_names_the_field(job, fragment):
    with pytest.raises(FeatureSchemaMismatch) as info:
        SCHEMA.validate_job(job, where="stage 'train'")
    assert fragment in str(info.value)
    assert "stage 'train'" in str(info.value) and "t/2" in str(info.value)


def test_round_trip_and_default_levels():
    again = FeatureSchema.from_dict(SCHEMA.to_dict())
    assert again == SCHEMA and again.levels == (("user",),)
    assert FeatureSchema.from_dict(STAGE_FEATURES.to_dict()).levels == STAGE_FEATURES.levels


def test_require_same_refuses_other_schema():
    with pytest.raises(FeatureSchemaMismatch, match="trained on t/2"):
        SCHEMA.require_same(STAGE_FEATURES, "the jobs")


def test_bad_schema_definitions():
    with pytest.raises(ValueError, match="key names unknown"):
        FeatureSchema("x", 1, (Feature("a", "numeric"),), key=("b",), resources=())
    with pytest.raises(ValueError, match="unknown resources"):
        FeatureSchema("x", 1, (Feature("a", "numeric"),), key=("a",), resources=("disk",))

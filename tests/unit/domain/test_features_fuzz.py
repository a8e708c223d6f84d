"""Declared features, a job's features and the stage-run tags read back from MLflow, under
arbitrary input: a normalised result or the project's error (UserError / FeatureSchemaMismatch)
naming where, never another exception."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.domain.errors import FeatureSchemaMismatch, QuantityError, UserError
from airflow_adaptive.domain.features import FeatureSchema
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.stage_run import (
    FEATURE_NAME,
    STAGE_FEATURES,
    check_feature_names,
    deferred_sizes_from_json,
    infer_feature_kinds,
    oom_events_from_json,
    stage_schema,
)

from ...support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

BIG = 10**400
keys = st.one_of(st.text(max_size=70), st.sampled_from(STAGE_FEATURES.names), st.integers(), st.none(),
                 st.tuples(st.integers()))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.just(BIG), st.floats(), st.text(max_size=10))
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))


@given(st.dictionaries(keys, values, max_size=6))
@example({1: 1, "a": 2})
@example({"9lives": 1})
@example({"x" * 65: 1})
@fuzz()
def test_declared_feature_names_are_identifiers_or_a_user_error(features):
    try:
        check_feature_names(features, "task 't' features")
    except UserError as err:
        assert str(err).startswith("task 't' features: ") and "\n" not in str(err)
        assert any(not isinstance(k, str) or not FEATURE_NAME.match(k) for k in features)
    else:
        assert all(isinstance(k, str) and FEATURE_NAME.match(k) for k in features)


@given(st.dictionaries(keys, values, max_size=8))
@example({1: 1, "dag_id": "d", "task_id": "t"})  # regression: sorting unknown names of mixed types raised TypeError
@example({"dag_id": "d", "task_id": "t", "data_rows": BIG})  # regression: float(10**400) raised OverflowError
@fuzz(300)
def test_validate_job_normalises_or_names_every_problem(job):
    try:
        out = STAGE_FEATURES.validate_job(job, "stage 's'")
    except FeatureSchemaMismatch as err:
        assert str(err).startswith("stage 's' does not match feature schema stage/2")
        return
    for feature in STAGE_FEATURES.features:
        value = out[feature.name]
        assert isinstance(value, float) if feature.kind == "numeric" else isinstance(value, str)


@given(st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
                       st.lists(st.one_of(st.none(), st.text(max_size=8), st.floats().map(repr)), max_size=5),
                       max_size=5))
@fuzz(100)
def test_inferred_kinds_make_a_valid_schema(recorded):
    kinds = infer_feature_kinds(recorded)
    assert set(kinds) == set(recorded) and set(kinds.values()) <= {"numeric", "categorical"}
    schema = stage_schema(kinds)
    assert FeatureSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


@given(st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                     st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=10))
@example({"name": "s", "version": BIG, "key": [], "resources": [], "features": []})
@fuzz()
def test_a_malformed_schema_is_a_schema_mismatch(data):
    try:
        FeatureSchema.from_dict(data)
    except FeatureSchemaMismatch:
        pass
    except (AttributeError, TypeError) as err:  # not a mapping at all: only MLflow gives it, always a dict
        assert not isinstance(data, dict), err


tag_text = st.one_of(
    st.text(max_size=80),
    st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.sampled_from(["cpu", "memory", "time", "container",
                                                                                   "limit_bytes", "try_number", "kind"]),
                                                                  inner, max_size=5)),
                 max_leaves=12).map(json.dumps),
)


@given(tag_text)
@example('{"cpu": %d}' % BIG)  # regression: math.isfinite(10**400) raised OverflowError
@example('[{"time": 1, "container": "a", "limit_bytes": 1, "try_number": 1e999}]')  # regression: int(inf)
@example('[{"time": %d, "container": "a", "limit_bytes": 1, "try_number": 1}]' % BIG)  # regression: float(10**400)
@example("[" * 100_000)  # regression: RecursionError
@fuzz(300)
def test_stage_run_tags_read_back_what_is_well_formed_and_skip_the_rest(text):
    sizes = deferred_sizes_from_json(text)
    assert set(sizes) <= {"cpu", "memory"} and all(math.isfinite(v) and v > 0 for v in sizes.values())
    for event in oom_events_from_json(text):
        assert isinstance(event.time, float) and isinstance(event.try_number, int)


@given(st.dictionaries(st.one_of(st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "ephemeral-storage"]), st.text(max_size=5)),
                       st.one_of(st.text("0123456789.eEkKMGTPimun-+", max_size=12), scalars), max_size=4))
@example({"memory": "1e1000"})
@fuzz()
def test_container_resources_parse_or_name_the_bad_quantity(mapping):
    try:
        vector = ResourceVector.from_kubernetes(mapping, "task 't' container_resources.limits")
    except QuantityError as err:
        assert str(err).startswith("task 't' container_resources.limits")
        return
    assert vector.cpu >= 0 and vector.memory >= 0 and vector.gpu >= 0


@given(st.one_of(st.lists(st.text(max_size=3), max_size=2), st.text(max_size=5), st.integers()))
@example(["cpu"])  # regression: a list for 'limits' raised AttributeError ('list' has no .items)
@fuzz(50)
def test_container_resources_that_are_not_a_mapping_are_a_quantity_error(value):
    with pytest.raises(QuantityError, match="expected a mapping"):
        ResourceVector.from_kubernetes(value, "limits")

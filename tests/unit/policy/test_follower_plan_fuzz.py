"""The follower reads the ``airflow-adaptive/plan`` annotation and the executor's annotations from
pods it lists: whatever they hold (an edited pod, another tool's annotation of the same name), it
refuses the pod with one clear error, never a traceback that would stop it following the others."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client import models as k8s

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.policy.executor import PLAN_ANNOTATION
from airflow_adaptive.policy.follower import FollowPlan

from ...support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                      max_leaves=20)
KEYS = ["mode", "sizing", "reasons", "resizable", "allocated", "start_limits", "requested", "maximum", "features",
        "predicted", "model_uri", "model_version", "experiment"]


def pod(plan: str, annotations: dict) -> k8s.V1Pod:
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="ns", annotations={**annotations, PLAN_ANNOTATION: plan}))


@fuzz(300)
@given(plan=st.dictionaries(st.sampled_from(KEYS), values, max_size=len(KEYS)) | values,
       annotations=st.dictionaries(st.sampled_from(["dag_id", "task_id", "run_id", "try_number"]), st.text(max_size=12)))
def test_any_plan_is_read_or_refused_with_a_clear_error(plan, annotations):
    try:
        read = FollowPlan.from_pod(pod(json.dumps(plan), annotations))
    except UserError as exc:
        assert "pod ns/p" in str(exc)
    else:
        assert read.identity.try_number == int(annotations.get("try_number") or 1)


@fuzz(150)
@given(text=st.text(max_size=300))
def test_any_text_is_read_or_refused_with_a_clear_error(text):
    try:
        FollowPlan.from_pod(pod(text, {"dag_id": "d", "task_id": "t"}))
    except UserError as exc:
        assert PLAN_ANNOTATION in str(exc)

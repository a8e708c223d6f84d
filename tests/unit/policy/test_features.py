"""The features the cluster policy derives for a task, and the settings a task declares."""

import pytest

from airflow_adaptive.policy.features import TaskSettings, derived_features, operator_name, param_features, task_settings
from airflow_adaptive.policy.selection import PolicyConfigError


@pytest.mark.parametrize("params, features, skipped", [
    ({}, {}, []),
    ({"data_rows": 200, "algorithm": "grow", "lr": 0.1}, {"data_rows": 200, "algorithm": "grow", "lr": 0.1}, []),
    ({"use_amp": True}, {"use_amp": "true"}, []),                         # booleans are categories
    ({"paths": ["a", "b"], "cfg": {"x": 1}, "none": None}, {}, ["cfg", "none", "paths"]),
    ({"bad-name": 1, "2x": 1}, {}, ["2x", "bad-name"]),                   # not identifiers (MLflow param names)
    ({"task_id": "other", "requested_memory": 1}, {}, ["requested_memory", "task_id"]),  # filled by the operator
    ({"sql": "x" * 201, "short": "x" * 200}, {"short": "x" * 200}, ["sql"]),
])
def test_param_features(params, features, skipped):
    assert param_features(params) == (features, skipped)


@pytest.mark.parametrize("operator, image, params, declared, expected", [
    ("KubernetesPodOperator", "python:3.11-slim", {}, {}, {"operator": "KubernetesPodOperator", "image": "python:3.11-slim"}),
    ("@task.kubernetes", "{{ var.value.image }}", {}, {}, {"operator": "@task.kubernetes"}),   # unrendered: left out
    ("PythonOperator", None, {"epochs": 3}, {}, {"operator": "PythonOperator", "epochs": 3}),
    ("KubernetesPodOperator", "img:1", {"epochs": 3}, {"epochs": 5, "framework": "pytorch"},
     {"operator": "KubernetesPodOperator", "image": "img:1", "epochs": 5, "framework": "pytorch"}),  # declared wins
])
def test_derived_features(operator, image, params, declared, expected):
    assert derived_features(operator, image, params, declared)[0] == expected


def test_operator_name_is_what_the_author_wrote():
    from airflow.providers.cncf.kubernetes.decorators.kubernetes import _KubernetesDecoratedOperator
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    assert operator_name(KubernetesPodOperator) == "KubernetesPodOperator"
    assert operator_name(_KubernetesDecoratedOperator) == "@task.kubernetes"


@pytest.mark.parametrize("config, expected", [
    (None, TaskSettings()),
    ({}, TaskSettings()),
    ({"pod_override": None}, TaskSettings()),
    ({"airflow_adaptive": {"features": {"epochs": 3}}}, TaskSettings({"epochs": 3}, None)),
    ({"airflow_adaptive": {"sizing_mode": "off"}}, TaskSettings({}, "off")),
])
def test_task_settings(config, expected):
    assert task_settings(config, "task 't'") == expected


@pytest.mark.parametrize("config, message", [
    ({"airflow_adaptive": ["x"]}, "must be a mapping"),
    ({"airflow_adaptive": {"mode": "adaptive"}}, "unknown key(s) ['mode']"),
    ({"airflow_adaptive": {"sizing_mode": "on"}}, "sizing_mode'] must be one of"),
    ({"airflow_adaptive": {"features": [1]}}, "mapping of feature name to value"),
    ({"airflow_adaptive": {"features": {"data rows": 1}}}, "are not identifiers"),
])
def test_bad_task_settings_name_the_task(config, message):
    with pytest.raises(PolicyConfigError) as err:
        task_settings(config, "task 'fit' of DAG 'train'")
    assert message in str(err.value) and "task 'fit' of DAG 'train'" in str(err.value)

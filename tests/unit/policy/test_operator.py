"""``task_policy`` on real DAG objects: KubernetesPodOperator and ``@task.kubernetes`` tasks become
adaptive variants of their own class; the DAG still serializes as the DAG processor does; the pod
each mode builds (KPO's own ``build_pod_request_obj``, dry run); the features derived at run time.

The run-time context is a plain dict with a stand-in task instance (ids and params only); the real
one runs in tests/kubernetes/test_cluster_policy.py."""

from types import SimpleNamespace

import pendulum
import pytest
from airflow.exceptions import AirflowClusterPolicyViolation
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, task
from kubernetes.client import ApiClient

from airflow_adaptive.adapters.kubernetes.pod_spec import resources_from
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.logic.stage_plan import plan_stage
from airflow_adaptive.operators import AdaptiveTrainingOperator
from airflow_adaptive.operators.kubernetes import MONITOR_CONTAINER, AdaptivePodCallbacks
from airflow_adaptive.policy import adaptive_policy
from airflow_adaptive.policy.executor import MARK_ANNOTATION
from airflow_adaptive.policy.operator import UnmonitoredTry, adaptive_variant
from airflow_adaptive.policy.selection import PolicyConfigError

GiB = 2**30
RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "8Gi"}}
PROFILE = PredictedProfile({"cpu": ResourceEstimate(1.5, 1.8), "memory": ResourceEstimate(3 * GiB, 4 * GiB)},
                           coverage=0.99, model_uri="models:/job-profiler@champion", model_version="7")


def dag_with(tags=("ml",), dag_id="train_resnet", **kpo):
    with DAG(dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=list(tags),
             params={"data_rows": 200, "algorithm": "grow"}) as dag:
        KubernetesPodOperator(task_id="kpo", name="kpo", namespace="ml", image="python:3.11-slim",
                              cmds=["python", "-c", "print(1)"], container_resources=RESOURCES, **kpo)

        @task.kubernetes(image="python:3.11-slim", namespace="ml", container_resources=RESOURCES)
        def decorated():
            print("training")

        decorated()
        PythonOperator(task_id="py", python_callable=print)
    return dag


def applied(dag, **policy):
    pol = adaptive_policy(**{"select": {"tags": ["ml"]}, "executor_pods": True, **policy})
    for t in dag.tasks:
        pol.task_policy(t)
    return {t.task_id: t for t in dag.tasks}


def test_kpo_and_decorated_tasks_become_adaptive_variants_of_their_own_class():
    tasks = applied(dag_with())
    kpo, deco = tasks["kpo"], tasks["decorated"]
    assert type(kpo).__name__ == "AdaptiveKubernetesPodOperator"
    assert type(deco).__name__ == "AdaptiveKubernetesDecoratedOperator" and deco.operator_name == "@task.kubernetes"
    for t, own in ((kpo, KubernetesPodOperator), (deco, deco.adaptive_source)):
        assert isinstance(t, AdaptiveTrainingOperator) and isinstance(t, own)
        # the adaptive hooks first, then the task's own class, then KPO's pod lifecycle
        mro = type(t).__mro__
        assert mro.index(AdaptiveTrainingOperator) < mro.index(own) <= mro.index(KubernetesPodOperator)
        assert t.sizing_mode == "shadow" and t.runner == "kubernetes" and AdaptivePodCallbacks in t.callbacks
        assert {"features", "sizing_mode", "follow_phases"} <= set(t.template_fields)
    assert {"op_args", "op_kwargs"} <= set(deco.template_fields) and "cmds" not in deco.template_fields
    assert adaptive_variant(KubernetesPodOperator) is type(kpo)  # made once per class
    assert type(tasks["py"]) is PythonOperator


def test_the_dag_serializes_with_the_variant_as_its_task_type():
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dag_with()
    applied(dag)
    tasks = {t["__var"]["task_id"]: t["__var"] for t in DagSerialization.to_dict(dag)["dag"]["tasks"]}
    assert tasks["kpo"]["task_type"] == "AdaptiveKubernetesPodOperator"
    assert tasks["kpo"]["_task_module"] == "airflow_adaptive.policy.operator"
    assert tasks["kpo"]["sizing_mode"] == "shadow"
    assert tasks["decorated"]["_operator_name"] == "@task.kubernetes"
    assert set(tasks["kpo"]["_operator_extra_links"]) == {"MLflow stage run", "Profiler model version"}


@pytest.mark.parametrize("case", ["not-selected", "excluded", "policy-off", "task-off", "kill-switch", "already-adaptive"])
def test_tasks_the_policy_leaves_as_written(monkeypatch, case):
    kw = {}
    if case == "task-off":
        kw["executor_config"] = {"airflow_adaptive": {"sizing_mode": "off"}}
    dag = dag_with(tags=("etl",) if case == "not-selected" else ("ml",), **kw)
    if case == "already-adaptive":
        dag = DAG("d", schedule=None, tags=["ml"])
        AdaptiveTrainingOperator(task_id="kpo", dag=dag, sizing_mode="adaptive", container_resources=RESOURCES)
    if case == "kill-switch":
        monkeypatch.setenv("AIRFLOW_ADAPTIVE_ENABLED", "false")
    policy = {"mode": "off"} if case == "policy-off" else {"exclude": {"task_ids": ["kpo"]}} if case == "excluded" else {}
    before = type(dag.get_task("kpo"))
    kpo = applied(dag, **policy)["kpo"]
    assert type(kpo) is before
    if case == "already-adaptive":
        assert kpo.sizing_mode == "adaptive"  # the author's own settings stand


def test_a_task_may_opt_in_to_adaptive_and_declare_features():
    kpo = applied(dag_with(executor_config={"airflow_adaptive": {"sizing_mode": "adaptive", "features": {"epochs": 3}}}))["kpo"]
    assert kpo.sizing_mode == "adaptive" and kpo.features == {"epochs": 3}


def test_a_bad_task_setting_is_a_policy_violation_naming_the_task():
    with pytest.raises(AirflowClusterPolicyViolation, match="task 'kpo' of DAG 'train_resnet'.*unknown key"):
        applied(dag_with(executor_config={"airflow_adaptive": {"mode": "adaptive"}}))


def test_a_bad_policy_fails_when_airflow_local_settings_is_imported():
    for kw, message in (({"mode": "on"}, "mode='on'"), ({"max_resources": {"memory": "lots"}}, "max_resources"),
                        ({"executor_pods": "yes"}, "executor_pods"), ({"executor_timeout_s": 0}, "executor_timeout_s")):
        with pytest.raises(PolicyConfigError, match=message):
            adaptive_policy(select={}, **kw)


def built(op, profile, mode):
    requested, limited = resources_from(op.container_resources, "test")
    op._plan = plan_stage(requested, limited, profile, op.policy, mode)
    return ApiClient().sanitize_for_serialization(op.build_pod_request_obj(dry_run=True))


def plain(pod):
    """A pod without what differs between two builds of one task (the random name suffix)."""
    pod["metadata"].pop("name", None)
    return pod


@pytest.mark.parametrize("shadow_monitor", [False, True], ids=["untouched", "monitored"])
def test_shadow_builds_the_tasks_own_pod(shadow_monitor):
    own = dag_with().get_task("kpo")
    expected = plain(ApiClient().sanitize_for_serialization(own.build_pod_request_obj(dry_run=True)))
    kpo = applied(dag_with(), shadow_monitor=shadow_monitor)["kpo"]
    pod = plain(built(kpo, PROFILE, "shadow"))
    (base,) = pod["spec"]["containers"]
    assert base["resources"] == RESOURCES  # the user's request either way
    if not shadow_monitor:
        assert pod == expected
        state = SimpleNamespace(stage_run=None)
        assert isinstance(kpo._kubernetes_try(state), UnmonitoredTry)
    else:
        assert [c["name"] for c in pod["spec"]["initContainers"]] == [MONITOR_CONTAINER]


def test_adaptive_sizes_the_pod_and_adds_the_monitor():
    kpo = applied(dag_with(), mode="adaptive", monitor_image="registry.local/monitor:1")["kpo"]
    pod = built(kpo, PROFILE, "adaptive")
    (base,) = pod["spec"]["containers"]
    assert base["resources"]["requests"] == {"cpu": "1500m", "memory": "3Gi"}
    monitor = next(c for c in pod["spec"]["initContainers"] if c["name"] == MONITOR_CONTAINER)
    assert monitor["image"] == "registry.local/monitor:1"


def test_features_at_run_time_add_operator_image_and_params_to_the_declared_ones():
    tasks = applied(dag_with(executor_config={"airflow_adaptive": {"features": {"algorithm": "resnet"}}}))
    ti = SimpleNamespace(dag_id="train_resnet", task_id="kpo")
    features = tasks["kpo"]._stage_features({"ti": ti, "params": {"data_rows": 400, "algorithm": "grow", "paths": ["a"]}})
    assert features == {"algorithm": "resnet", "data_rows": 400, "operator": "KubernetesPodOperator",
                        "image": "python:3.11-slim", "dag_id": "train_resnet", "task_id": "kpo",
                        "requested_cpu": 1.0, "requested_memory": float(GiB)}
    ti.task_id = "decorated"
    assert tasks["decorated"]._stage_features({"ti": ti, "params": {}})["operator"] == "@task.kubernetes"


def test_other_tasks_are_marked_for_the_executor_pod_hook_without_sharing_default_args():
    from kubernetes.client import models as k8s

    shared = k8s.V1Pod(metadata=k8s.V1ObjectMeta(labels={"team": "ml"}))
    with DAG("train_x", schedule=None, tags=["ml"], params={"epochs": 3},
             default_args={"executor_config": {"pod_override": shared}}) as dag:
        PythonOperator(task_id="py", python_callable=print)
    with DAG("etl_x", schedule=None, tags=["etl"], default_args={"executor_config": {"pod_override": shared}}) as other:
        PythonOperator(task_id="py", python_callable=print)
    applied(dag)
    applied(other)
    pod = dag.get_task("py").executor_config["pod_override"]
    assert pod.metadata.labels == {"team": "ml"}
    import json

    assert json.loads(pod.metadata.annotations[MARK_ANNOTATION]) == {
        "mode": "shadow", "features": {"epochs": 3, "operator": "PythonOperator"}}
    assert shared.metadata.annotations is None and other.get_task("py").executor_config["pod_override"] is shared


def mapped_dag(tags=("ml",)):
    with DAG("sweep", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), tags=list(tags),
             params={"data_rows": 200, "algorithm": "grow"}) as dag:
        KubernetesPodOperator.partial(task_id="train", name="train", namespace="ml", image="python:3.11-slim",
                                      cmds=["python", "-c"], container_resources=RESOURCES
                                      ).expand(arguments=[["print(1)"], ["print(2)"]])
    return dag


@pytest.mark.parametrize("mode", ["adaptive", "shadow"])
def test_a_mapped_kpo_task_builds_adaptive_instances(mode):
    from airflow.serialization.serialized_objects import DagSerialization

    dag = mapped_dag()
    mapped = applied(dag, mode=mode)["train"]
    assert type(mapped).__name__ == "MappedOperator" and mapped.operator_class is adaptive_variant(KubernetesPodOperator)
    # The DAG processor's view: the variant is the task type; the scheduler's copy deserializes.
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("train")
    assert back.task_type == "AdaptiveKubernetesPodOperator"
    # The worker unmaps each instance from the variant, configured as an unmapped task would be.
    instance = mapped.unmap({"arguments": ["print(2)"]})
    assert isinstance(instance, AdaptiveTrainingOperator) and isinstance(instance, KubernetesPodOperator)
    assert instance.sizing_mode == mode and instance.runner == "kubernetes" and instance.arguments == ["print(2)"]
    assert AdaptivePodCallbacks in instance.callbacks
    # Re-applying the policy (the worker parses the file again) changes nothing twice.
    applied(dag, mode=mode)
    assert mapped.operator_class is adaptive_variant(KubernetesPodOperator)


def test_a_mapped_task_the_selection_leaves_out_is_untouched():
    mapped = applied(mapped_dag(tags=("etl",)), mode="adaptive")["train"]
    assert mapped.operator_class is KubernetesPodOperator
    assert "airflow_adaptive_policy" not in mapped.partial_kwargs


def test_a_mapped_instance_is_its_own_stage_in_mlflow_tags_and_searches():
    from airflow_adaptive.adapters.mlflow.stage_run_log import StageRunLog
    from airflow_adaptive.domain.stage_run import TAG_MAP_INDEX, StageIdentity

    plain, first = StageIdentity("d", "t", "r", 2), StageIdentity("d", "t", "r", 2, map_index=0)
    assert TAG_MAP_INDEX not in plain.tags() and first.tags()[TAG_MAP_INDEX] == "0"
    assert TAG_MAP_INDEX not in StageRunLog._same_task(plain)
    assert f"tags.`{TAG_MAP_INDEX}` = '0'" in StageRunLog._same_task(first)

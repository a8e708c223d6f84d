"""ProfilerQualitySensor and ModelQualityTrigger against a real MLflow: a registered version whose
run carries hold-out metrics, an alias on it, then the sensor's poke and the trigger's first
event for a bar that is met, one that is not, a missing alias, and an alias that moves.

Both backends (the ``tracking`` fixture): an ``mlflow server`` (alias resolved over REST) and a
SQLite store (through ``MlflowClient``)."""

import asyncio
import time
import uuid

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from airflow_adaptive.sensors.model_quality import ProfilerQualitySensor
from airflow_adaptive.triggers.model_quality import ModelQualityTrigger

METRICS = {"holdout_allocated_over_used": 1.3, "holdout_under_provisioned_fraction": 0.01, "training_records": 5000.0}


def register(tracking, name, metrics, alias="champion"):
    """A run with ``metrics`` (and a small artifact), a version of ``name`` from it, ``alias`` on it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.create_experiment(f"quality-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    for key, value in metrics.items():
        client.log_metric(run.info.run_id, key, value)
    client.log_text(run.info.run_id, "stand-in profiler", "model/profiler.txt")
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - a second version of the same model
        pass
    version = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version), run.info.run_id


def sensor(name, **bar):
    return ProfilerQualitySensor(task_id="profiler_good_enough", model_uri=f"models:/{name}@champion",
                                 mlflow_conn_id=None, poke_interval=1, timeout=60, **bar)


def first_event(trigger, within=30):
    async def go():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(asyncio.wait_for(go(), within))


def trigger(tracking, name, deadline_s=None, **bar):
    full = {"max_allocated_over_used": None, "max_under_provisioned_fraction": None, "min_training_records": None, **bar}
    return ModelQualityTrigger(model_uri=f"models:/{name}@champion", tracking_uri=tracking, bar=full, poll_interval=0.2,
                               deadline=time.time() + deadline_s if deadline_s else None)


@pytest.fixture
def name():
    return f"job-profiler-{uuid.uuid4().hex[:8]}"


def test_a_met_bar_is_done_and_pushes_version_and_metrics(tracking, name):
    version, run_id = register(tracking, name, METRICS)
    result = sensor(name, max_allocated_over_used=1.5, max_under_provisioned_fraction="0.02",
                    min_training_records="1000").poke({})
    assert isinstance(result, PokeReturnValue) and result.is_done
    assert result.xcom_value == {"model_uri": f"models:/{name}@champion", "version": version, "run_id": run_id,
                                 "metrics": METRICS}
    event = first_event(trigger(tracking, name, max_allocated_over_used=1.5, min_training_records=1000))
    assert event["status"] == "success" and event["version"] == version and event["metrics"] == METRICS
    assert "quality bar met" in event["message"]


def test_an_unmet_bar_pokes_again_and_the_trigger_says_why_at_its_deadline(tracking, name):
    register(tracking, name, METRICS)
    assert sensor(name, max_allocated_over_used=1.2).poke({}) is False
    event = first_event(trigger(tracking, name, deadline_s=0.5, max_allocated_over_used=1.2))
    assert event["status"] == "error"
    assert "holdout_allocated_over_used 1.3 > 1.2" in event["message"] and "version 1" in event["message"]


def test_a_metric_the_run_lacks_is_not_met(tracking, name):
    register(tracking, name, {"holdout_allocated_over_used": 1.1})
    assert sensor(name, min_training_records=10).poke({}) is False
    event = first_event(trigger(tracking, name, deadline_s=0.3, min_training_records=10))
    assert "training_records is missing from the model's run" in event["message"]


def test_a_missing_alias_waits_with_a_clear_message(tracking, name):
    register(tracking, name, METRICS, alias=None)
    assert sensor(name, max_allocated_over_used=2).poke({}) is False
    event = first_event(trigger(tracking, name, deadline_s=0.3, max_allocated_over_used=2))
    assert event["status"] == "error"
    assert f"model '{name}' has no alias 'champion'" in event["message"] and "(yet)" in event["message"]


def test_the_alias_is_resolved_at_every_poke(tracking, name):
    """A promotion while the sensor waits is seen at the next poke (no cached version)."""
    register(tracking, name, {**METRICS, "holdout_allocated_over_used": 2.0})
    s = sensor(name, max_allocated_over_used=1.5)
    assert s.poke({}) is False
    version, _ = register(tracking, name, METRICS)  # a better version becomes champion
    assert s.poke({}).xcom_value["version"] == version == "2"


def test_deferrable_hands_the_bar_to_the_trigger(tracking, name):
    s = ProfilerQualitySensor(task_id="q", model_uri=f"models:/{name}@champion", min_training_records="100",
                              mlflow_conn_id=None, deferrable=True, timeout=60)
    with pytest.raises(TaskDeferred) as deferred:
        s.execute({})
    t = deferred.value.trigger
    assert isinstance(t, ModelQualityTrigger) and t.tracking_uri == tracking and t.bar["min_training_records"] == 100
    with pytest.raises(AirflowFailException, match="no alias"):
        s.execute_complete({}, {"status": "error", "message": "no alias 'champion'"})


def test_a_fixed_version_uri_is_refused(name):
    with pytest.raises(ValueError, match="watches an alias"):
        ProfilerQualitySensor(task_id="q", model_uri=f"models:/{name}/3", mlflow_conn_id=None)


def test_mlflow_not_answering_is_not_met(closed_port, name):
    event = first_event(trigger(f"http://127.0.0.1:{closed_port}", name, deadline_s=0.3, max_allocated_over_used=2))
    assert event["status"] == "error" and "did not answer" in event["message"]

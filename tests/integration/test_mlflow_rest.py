"""The stdlib REST client and the spooling logger against a real ``mlflow server``, read back
with MLflow's own client. One server for the module; the outage test stops and restarts it
(same port, same SQLite store, same artifact folder)."""

import json
import os

import pytest

from airflow_adaptive.adapters.mlflow.local_server import LocalMlflowServer
from airflow_adaptive.adapters.mlflow.rest import MlflowRestClient, MlflowUnavailable, RunNotFound
from airflow_adaptive.adapters.mlflow.spool import SpoolingRunLogger, offset_path, read_offset, upload_pending
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.stage_run import ObservedSummary, OomEvent


pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LocalMlflowServer(tmp_path_factory.mktemp("mlflow-rest"))
    try:
        srv.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def uri(server):
    if server.proc is None:  # an earlier test left it stopped
        server.start()
    return server.uri


@pytest.fixture
def mlflow_client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def new_run(client, name):
    exp = client.get_experiment_by_name(name)
    exp_id = exp["experiment_id"] if exp else client.create_experiment(name)
    assert client.get_experiment_by_name(name)["experiment_id"] == exp_id
    run = client.create_run(exp_id, {"airflow_adaptive.schema": "stage-run/1"})
    return run["info"]["run_id"]


def usage(step):
    return UsageSample(time=T0 + step + 0.123, values={"cpu": 0.25 * step, "memory": 1e8 + 1e6 * step}, step=step)


def history(mlflow_client, run_id, key):
    return sorted((m.step, m.timestamp, m.value) for m in mlflow_client.get_metric_history(run_id, key))


def test_rest_client_round_trip(uri, mlflow_client, tmp_path):
    client = MlflowRestClient(uri)
    run_id = new_run(client, "rest-round-trip")
    metrics = [{"key": "usage.cpu", "value": 0.5 * i, "timestamp": 1000 + i, "step": i} for i in range(2500)]
    params = [{"key": f"feature.f{i}", "value": str(i)} for i in range(150)]
    tags = [{"key": "airflow_adaptive.outcome", "value": "success"}]
    assert client.log_batch(run_id, metrics=metrics, params=params, tags=tags) >= 3  # chunked to the limits
    client.upload_artifact(run_id, "oom_events.json", b'[{"kind": "kernel"}]')
    client.upload_artifact(run_id, "nested/dir/x.txt", b"hello")
    client.set_terminated(run_id, "FINISHED", end_time_ms=int(T0 * 1000))

    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == int(T0 * 1000)
    assert run.data.params == {f"feature.f{i}": str(i) for i in range(150)}
    assert run.data.tags["airflow_adaptive.outcome"] == "success"
    assert history(mlflow_client, run_id, "usage.cpu") == [(i, 1000 + i, 0.5 * i) for i in range(2500)]
    assert {a.path for a in mlflow_client.list_artifacts(run_id)} == {"oom_events.json", "nested"}
    got = mlflow_client.download_artifacts(run_id, "oom_events.json", str(tmp_path))
    assert json.loads(open(got).read()) == [{"kind": "kernel"}]
    got = mlflow_client.download_artifacts(run_id, "nested/dir/x.txt", str(tmp_path))
    assert open(got, "rb").read() == b"hello"
    assert client.get_run(run_id)["info"]["status"] == "FINISHED"


def test_mlflow_ignores_an_identical_metric_row_sent_twice(uri, mlflow_client):
    """What makes re-sending a batch safe: the SQL store keeps one row per (key, timestamp,
    step, value), the primary key; a row differing in value alone is a second row."""
    client = MlflowRestClient(uri)
    run_id = new_run(client, "rest-duplicates")
    batch = [{"key": "usage.memory", "value": 5.0, "timestamp": 2000 + i, "step": i} for i in range(10)]
    client.log_batch(run_id, metrics=batch)
    client.log_batch(run_id, metrics=batch)  # the whole batch again
    client.log_batch(run_id, metrics=batch[:3] + batch[:3])  # and duplicates inside one batch
    assert history(mlflow_client, run_id, "usage.memory") == [(i, 2000 + i, 5.0) for i in range(10)]
    client.log_batch(run_id, metrics=[{"key": "usage.memory", "value": 6.0, "timestamp": 2000, "step": 0}])
    assert len(history(mlflow_client, run_id, "usage.memory")) == 11


def test_logger_logs_samples_summary_and_artifact(uri, mlflow_client, tmp_path):
    client = MlflowRestClient(uri)
    run_id = new_run(client, "rest-logger")
    spool = tmp_path / f"{run_id}.jsonl"
    logger = SpoolingRunLogger(client, run_id, spool, batch_interval_s=0.0)
    logger.check()
    for step in range(12):
        logger.log_sample(usage(step))
        logger.maybe_flush()
    event = OomEvent(time=T0 + 11, container="base", limit_bytes=2.0**30, try_number=2)
    summary = ObservedSummary(start_time=T0, end_time=T0 + 12, outcome="oom_killed",
                              peak={"cpu": 2.75, "memory": 1.11e8}, mean={"cpu": 1.4, "memory": 1.05e8},
                              oom_events=[event])
    assert logger.log_summary(summary) is True
    assert logger.close(timeout_s=5) is True
    assert read_offset(spool) == spool.stat().st_size

    run = mlflow_client.get_run(run_id)
    assert run.data.tags["airflow_adaptive.outcome"] == "oom_killed"
    assert run.data.metrics == {
        "usage.cpu": 2.75, "usage.memory": 1e8 + 11e6,
        "stage.start_time": T0, "stage.end_time": T0 + 12, "oom_kills": 1.0,
        "observed.cpu.peak": 2.75, "observed.memory.peak": 1.11e8,
        "observed.cpu.mean": 1.4, "observed.memory.mean": 1.05e8,
    }
    ts = [int(round((T0 + s + 0.123) * 1000)) for s in range(12)]
    assert history(mlflow_client, run_id, "usage.cpu") == [(s, ts[s], 0.25 * s) for s in range(12)]
    assert history(mlflow_client, run_id, "usage.memory") == [(s, ts[s], 1e8 + 1e6 * s) for s in range(12)]
    assert history(mlflow_client, run_id, "stage.end_time") == [(0, int((T0 + 12) * 1000), T0 + 12)]
    got = mlflow_client.download_artifacts(run_id, "oom_events.json", str(tmp_path / "dl"))
    assert json.loads(open(got).read()) == [event.to_dict()]


def test_unknown_run_id_is_a_clear_run_not_found(uri, tmp_path):
    client = MlflowRestClient(uri)
    bogus = "0" * 32
    with pytest.raises(RunNotFound) as info:
        client.get_run(bogus)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert bogus in message and uri in message and "run id" in message
    with pytest.raises(RunNotFound):
        client.log_batch(bogus, metrics=[{"key": "usage.cpu", "value": 1.0, "timestamp": 1, "step": 0}])
    logger = SpoolingRunLogger(client, bogus, tmp_path / "spool.jsonl")
    with pytest.raises(RunNotFound):
        logger.check()
    logger.log_sample(usage(0))  # the caller falls back to spool-only: samples still land locally
    assert logger.flush() is False
    logger.close(0)
    assert (tmp_path / "spool.jsonl").read_text().count("\n") == 1


def test_non_http_tracking_uri_is_a_user_error():
    with pytest.raises(UserError, match="not an http"):
        MlflowRestClient("sqlite:///mlflow.db")


def test_outage_mid_run_loses_nothing_and_duplicates_nothing(server, uri, tmp_path, caplog):
    """Samples logged while the server is down are spooled and uploaded after it restarts
    (same port and store): every step of every usage metric exactly once, original timestamps."""
    caplog.set_level("INFO", logger="airflow_adaptive.adapters.mlflow.spool")
    client = MlflowRestClient(uri, timeout_s=2)
    run_id = new_run(client, "rest-outage")
    spool = tmp_path / "spool" / f"{run_id}.jsonl"
    logger = SpoolingRunLogger(client, run_id, spool, batch_interval_s=0.0, max_backoff_s=0.0)
    for step in range(10):  # uploaded as they come
        logger.log_sample(usage(step))
        assert logger.maybe_flush() is True
    for step in range(10, 15):  # spooled, not yet uploaded, when the server goes away
        logger.log_sample(usage(step))
    server.stop()
    with pytest.raises(MlflowUnavailable):
        logger.check()
    for step in range(15, 30):
        logger.log_sample(usage(step))
        assert logger.maybe_flush() is False  # never raises
    assert read_offset(spool) < spool.stat().st_size
    server.start()
    assert logger.flush() is True
    assert logger.close(timeout_s=5) is True
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith("spool") and r.levelname == "WARNING"]
    infos = [r.getMessage() for r in caplog.records if r.name.endswith("spool") and r.levelname == "INFO"]
    assert len(warnings) == 1 and "unavailable" in warnings[0]
    assert len(infos) == 1 and "uploaded 20 spooled records (40 metrics)" in infos[0]

    from mlflow.tracking import MlflowClient

    reader = MlflowClient(tracking_uri=uri)
    ts = [int(round((T0 + s + 0.123) * 1000)) for s in range(30)]
    expected = {
        "usage.cpu": [(s, ts[s], 0.25 * s) for s in range(30)],
        "usage.memory": [(s, ts[s], 1e8 + 1e6 * s) for s in range(30)],
    }
    for key, rows in expected.items():
        assert history(reader, run_id, key) == rows

    # A second process that finds no offset file re-sends the whole spool: still exactly once.
    os.unlink(offset_path(spool))
    stats = upload_pending(spool, client)
    assert stats.records == 30
    for key, rows in expected.items():
        assert history(reader, run_id, key) == rows

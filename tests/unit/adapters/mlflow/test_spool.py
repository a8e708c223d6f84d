"""The spooling usage logger without a server: a fake client, and a real client on a closed port."""

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from airflow_adaptive.adapters.mlflow.rest import (
    MlflowRequestError,
    MlflowRestClient,
    MlflowUnavailable,
    RunNotFound,
    iter_batches,
)
from airflow_adaptive.adapters.mlflow.spool import (
    SpoolingRunLogger,
    offset_path,
    read_offset,
    upload_pending,
)
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.stage_run import ObservedSummary, OomEvent

RUN = "0123456789abcdef0123456789abcdef"


class FakeClient:
    tracking_uri = "http://fake:5000"
    timeout_s = 5.0

    def __init__(self):
        self.down = False
        self.missing = False
        self.calls = 0
        self.metrics = []
        self.tags = []
        self.artifacts = {}
        self.refuse_step = None
        self.refuse_all = None

    def _gate(self):
        self.calls += 1
        if self.down:
            raise MlflowUnavailable("connection refused")
        if self.missing:
            raise RunNotFound(RUN, self.tracking_uri)

    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        self._gate()
        if self.refuse_all is not None:
            raise self.refuse_all
        if self.refuse_step is not None and any(m["step"] == self.refuse_step for m in metrics):
            raise MlflowRequestError("INVALID_PARAMETER_VALUE", status=400, error_code="INVALID_PARAMETER_VALUE")
        self.metrics += [(m["key"], m["step"], m["timestamp"], m["value"]) for m in metrics]
        self.tags += list(tags)
        return 1

    def upload_artifact(self, run_id, path, data):
        self._gate()
        self.artifacts[path] = data

    def get_run(self, run_id):
        self._gate()
        return {"info": {"run_id": run_id}}


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def sample(step, t0=1_700_000_000.0):
    return UsageSample(time=t0 + step + 0.25, values={"cpu": 0.5 + step, "memory": 1e8 + step}, step=step)


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "spool" / f"{RUN}.jsonl"


def test_samples_are_spooled_at_once_and_uploaded_in_batches(spool):
    client, clock = FakeClient(), Clock()
    logger = SpoolingRunLogger(client, RUN, spool, batch_interval_s=10, clock=clock)
    for step in range(5):
        logger.log_sample(sample(step))
        assert logger.maybe_flush() is None  # not due yet: no request
    assert client.calls == 0
    lines = spool.read_text().splitlines()
    assert len(lines) == 5
    first = json.loads(lines[0])
    assert first == {"run_id": RUN, "metrics": [
        {"key": "usage.cpu", "value": 0.5, "timestamp": 1_700_000_000_250, "step": 0},
        {"key": "usage.memory", "value": 1e8, "timestamp": 1_700_000_000_250, "step": 0},
    ]}
    clock.t += 10
    assert logger.maybe_flush() is True
    assert client.calls == 1
    assert sorted((k, s) for k, s, _, _ in client.metrics) == sorted(
        (k, s) for s in range(5) for k in ("usage.cpu", "usage.memory"))
    assert read_offset(spool) == spool.stat().st_size == logger.acknowledged_offset
    assert not [p for p in spool.parent.iterdir() if p.name.endswith(".tmp")]
    assert logger.flush() is True and client.calls == 1  # nothing pending: no request


def test_an_outage_logs_one_warning_backs_off_and_one_info_on_recovery(spool, caplog):
    caplog.set_level(logging.INFO, logger="airflow_adaptive.adapters.mlflow.spool")
    client, clock = FakeClient(), Clock()
    logger = SpoolingRunLogger(client, RUN, spool, batch_interval_s=2, clock=clock, max_backoff_s=16)
    logger.log_sample(sample(0))
    assert logger.flush() is True
    client.down = True
    for step in range(1, 61):  # a minute of samples, one a second, against a dead server
        clock.t += 1
        logger.log_sample(sample(step))
        assert logger.maybe_flush() in (None, False)
    # Backoff 2, 4, 8, 16, 16...: a handful of attempts, not one per sample.
    assert 3 <= client.calls <= 7
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage() and str(spool) in warnings[0].getMessage()
    assert read_offset(spool) < spool.stat().st_size
    client.down = False
    assert logger.flush() is True
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "uploaded 60 spooled records (120 metrics)" in infos[0]
    steps = sorted(s for k, s, _, _ in client.metrics if k == "usage.memory")
    assert steps == list(range(61))  # each exactly once
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_a_new_logger_resumes_after_the_acknowledged_offset(spool):
    client = FakeClient()
    logger = SpoolingRunLogger(client, RUN, spool, clock=Clock())
    for step in range(3):
        logger.log_sample(sample(step))
    assert logger.flush()
    client.down = True
    for step in range(3, 6):
        logger.log_sample(sample(step))
    assert logger.close(timeout_s=0) is False
    # A second process (restart) on the same spool uploads only the three pending samples.
    client2 = FakeClient()
    logger2 = SpoolingRunLogger(client2, RUN, spool, clock=Clock())
    assert logger2.flush()
    assert sorted({s for _, s, _, _ in client2.metrics}) == [3, 4, 5]
    logger2.close(0)
    # Without an offset file everything is sent again (MLflow ignores identical metric rows).
    os.unlink(offset_path(spool))
    client3 = FakeClient()
    stats = upload_pending(spool, client3)
    assert stats.records == 6 and len(client3.metrics) == 12


def test_summary_spools_metrics_outcome_tag_and_oom_events_then_flushes(spool):
    client = FakeClient()
    logger = SpoolingRunLogger(client, RUN, spool, clock=Clock())
    event = OomEvent(time=1_700_000_050.0, container="base", limit_bytes=2**30, try_number=1)
    summary = ObservedSummary(start_time=1_700_000_000.0, end_time=1_700_000_060.0, outcome="oom_killed",
                              peak={"memory": 2.0**30}, mean={"memory": 5e8}, oom_events=[event])
    assert logger.log_summary(summary) is True
    got = {k: (v, ts, s) for k, s, ts, v in client.metrics}
    assert got["observed.memory.peak"] == (2.0**30, 1_700_000_060_000, 0)
    assert got["stage.end_time"][0] == 1_700_000_060.0 and got["oom_kills"][0] == 1.0
    assert client.tags == [{"key": "airflow_adaptive.outcome", "value": "oom_killed"}]
    assert json.loads(client.artifacts["oom_events.json"]) == [event.to_dict()]


def test_a_truncated_last_line_is_skipped_not_fatal(spool, caplog):
    spool.parent.mkdir(parents=True)
    good = json.dumps({"run_id": RUN, "metrics": [{"key": "usage.cpu", "value": 1.0, "timestamp": 5, "step": 0}]})
    spool.write_text(good + "\n" + good[:25])  # the writer died mid-line
    client = FakeClient()
    stats = upload_pending(spool, client)
    assert stats.records == 1 and stats.skipped == 1
    assert "cut-off last line" in caplog.text
    assert read_offset(spool) == spool.stat().st_size
    # A logger opening such a spool ends the cut line, so its own records stay readable.
    spool.write_text(good + "\n" + good[:25])
    os.unlink(offset_path(spool))
    caplog.clear()
    client = FakeClient()
    logger = SpoolingRunLogger(client, RUN, spool, clock=Clock())
    logger.log_sample(sample(7))
    assert logger.flush() is True
    assert sorted(s for _, s, _, _ in client.metrics) == [0, 7, 7]
    assert "unreadable line" in caplog.text


def test_a_record_mlflow_refuses_is_passed_over_and_the_rest_uploaded(spool, caplog):
    client = FakeClient()
    client.refuse_step = 1
    logger = SpoolingRunLogger(client, RUN, spool, clock=Clock())
    for step in range(3):
        logger.log_sample(sample(step))
    assert logger.flush() is True
    assert sorted({s for _, s, _, _ in client.metrics}) == [0, 2]
    assert "refused the record" in caplog.text
    assert read_offset(spool) == spool.stat().st_size


def test_a_refusal_that_is_not_about_one_record_keeps_everything_pending(spool, caplog):
    client = FakeClient()
    client.refuse_all = MlflowRequestError("not an MLflow REST endpoint (HTTP 404)", status=404)
    clock = Clock()
    logger = SpoolingRunLogger(client, RUN, spool, batch_interval_s=1, clock=clock)
    for step in range(3):
        logger.log_sample(sample(step))
    assert logger.flush() is False and logger.flush() is False
    assert read_offset(spool) == 0 and client.metrics == []
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "refuses the upload" in errors[0].getMessage()
    client.refuse_all = None
    assert logger.flush() is True and len(client.metrics) == 6


def test_run_not_found_stops_uploads_and_check_raises(spool, caplog):
    client = FakeClient()
    client.missing = True
    logger = SpoolingRunLogger(client, RUN, spool, clock=Clock())
    with pytest.raises(RunNotFound):
        logger.check()
    logger.log_sample(sample(0))
    assert logger.flush() is False
    calls = client.calls
    assert logger.flush() is False and client.calls == calls  # no more requests
    assert spool.read_text().count("\n") == 1


def test_closed_port_everything_stays_spooled(spool, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = MlflowRestClient(f"http://127.0.0.1:{port}", timeout_s=1)
    logger = SpoolingRunLogger(client, RUN, spool, batch_interval_s=1)
    with pytest.raises(MlflowUnavailable):
        logger.check()
    for step in range(20):
        logger.log_sample(sample(step))
        logger.maybe_flush()
    assert logger.flush() is False
    assert logger.close(timeout_s=0.2) is False
    assert len(spool.read_text().splitlines()) == 20
    assert read_offset(spool) == 0
    assert str(spool) in caplog.text and "were not uploaded" in caplog.text


def test_rest_client_rejects_non_http_uris():
    for uri in ("sqlite:///tmp/x.db", "file:///tmp/mlruns", "databricks", ""):
        with pytest.raises(UserError, match="not an http"):
            MlflowRestClient(uri)


def test_batches_respect_server_limits():
    metrics = [{"key": "m", "value": float(i), "timestamp": i, "step": i} for i in range(2500)]
    tags = [{"key": f"t{i}", "value": "v"} for i in range(150)]
    batches = list(iter_batches(metrics, [], tags))
    for b in batches:
        assert len(b["metrics"]) <= 1000 and len(b["tags"]) <= 100 and len(b["params"]) <= 100
        assert len(b["metrics"]) + len(b["tags"]) + len(b["params"]) <= 1000
    assert sum(len(b["metrics"]) for b in batches) == 2500 and sum(len(b["tags"]) for b in batches) == 150


def test_auth_headers(monkeypatch):
    from airflow_adaptive.adapters.mlflow.rest import auth_header

    assert auth_header({"MLFLOW_TRACKING_TOKEN": "tok"}) == "Bearer tok"
    assert auth_header({"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}) == "Basic dTpw"
    assert auth_header({}) is None


def test_modules_import_only_the_standard_library():
    code = (
        "import sys\n"
        "import airflow_adaptive.adapters.mlflow.rest, airflow_adaptive.adapters.mlflow.spool\n"
        "print(sorted(m for m in ('mlflow', 'requests', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_malformed_record_is_passed_over(spool, caplog):
    spool.parent.mkdir(parents=True)
    good = {"run_id": RUN, "metrics": [{"key": "usage.cpu", "value": 1.0, "timestamp": 5, "step": 0}]}
    bad = {"run_id": RUN, "metrics": [{"key": "usage.cpu", "timestamp": 6, "step": 1}]}  # no value
    spool.write_text("".join(json.dumps(r) + "\n" for r in (good, bad, good | {"metrics": [
        {"key": "usage.cpu", "value": 2.0, "timestamp": 7, "step": 2}]})))
    client = FakeClient()
    stats = upload_pending(spool, client)
    assert stats.records == 2 and stats.rejected == 1
    assert [s for _, s, _, _ in client.metrics] == [0, 2]
    assert read_offset(spool) == spool.stat().st_size

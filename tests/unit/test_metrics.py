"""The names, values and tags ``airflow_adaptive/metrics.py`` produces, and that sending them goes
through Airflow's own stats (``airflow.sdk.observability.stats``) and never raises.

The sending tests install a recording backend with Airflow's own ``stats.initialize(factory=...)``
(the hook Airflow's task runner uses to install StatsD/Datadog/OTel); the real StatsD path over
UDP is tests/integration/test_metrics_statsd.py."""

import logging
import re

import pytest

from airflow_adaptive import metrics as m
from airflow_adaptive.domain.features import RESOURCES
from airflow_adaptive.domain.errors import FeatureSchemaMismatch, ModelNotFound, RegistryError, UserError
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.sizing import SizingPolicy
from airflow_adaptive.logic.stage_plan import plan_stage

MiB = 2**20
#: OpenTelemetry's instrument-name limit (Airflow's otel logger refuses longer names), with "airflow." in front.
OTEL_MAX = 63


# ---------------------------------------------------------------- the table
def test_every_name_follows_airflows_conventions():
    names = [x.name for x in m.METRICS]
    assert len(names) == len(set(names))
    for name in names:
        assert re.fullmatch(r"airflow_adaptive(\.[a-z][a-z_]*)+", name), name
        assert len(f"airflow.{name}") <= OTEL_MAX, name


def test_the_table_in_the_docstring_lists_every_metric():
    doc = m.__doc__
    for metric in m.METRICS:
        shown = re.sub(r"\.(" + "|".join(RESOURCES) + ")$", ".<resource>", metric.name)
        assert f"``{shown}``" in doc, shown


def test_the_ratio_gauges_are_named_per_resource():
    assert [x.name for x in m.METRICS if ".ratio." in x.name][:5] == [
        "airflow_adaptive.prediction.ratio.cpu", "airflow_adaptive.prediction.ratio.memory",
        "airflow_adaptive.prediction.ratio.gpu", "airflow_adaptive.prediction.ratio.gpu_memory",
        "airflow_adaptive.prediction.ratio.disk_read"]
    assert "airflow_adaptive.prediction.ratio.ephemeral_storage" in [x.name for x in m.METRICS]
    assert m.prediction_ratio("ephemeral-storage").name == "airflow_adaptive.prediction.ratio.other"


# ---------------------------------------------------------------- labels
@pytest.mark.parametrize("sizing, kwargs, expected", [
    ("predicted", {}, ("adaptive", "predicted")),
    ("predicted", {"escalated": True}, ("adaptive", "oom_escalation")),
    ("shadow", {"escalated": True}, ("shadow", "shadow")),
    ("off", {}, ("off", "mode_off")),
    ("off", {"switched_off": True}, ("off", "kill_switch")),
    ("fallback", {"fallback": "model_not_found"}, ("fallback", "model_not_found")),
    ("fallback", {}, ("fallback", "error")),
    ("fallback", {"fallback": "free text from an exception"}, ("fallback", "error")),
])
def test_decision_labels(sizing, kwargs, expected):
    assert m.decision_labels(sizing, **kwargs) == expected
    assert expected[0] in m.MODE_LABELS and expected[1] in m.REASON_LABELS


def test_an_unknown_sizing_is_an_error():
    with pytest.raises(ValueError, match="unknown sizing 'bogus'"):
        m.decision_labels("bogus")


@pytest.mark.parametrize("exc, label", [
    (FeatureSchemaMismatch("x"), "feature_mismatch"),
    (ModelNotFound("x"), "model_not_found"),
    (RegistryError("x"), "registry_error"),
    (UserError("x"), "invalid_input"),
    (ConnectionError("x"), "error"),
])
def test_fallback_reason(exc, label):
    assert m.fallback_reason(exc) == label


@pytest.mark.parametrize("uri, name", [
    ("models:/job-profiler@champion", "job-profiler"),
    ("models:/job-profiler/3", "job-profiler"),
    ("runs:/abc/model", "other"),
])
def test_model_name(uri, name):
    assert m.model_name(uri) == name


# ---------------------------------------------------------------- builders
def _rows(emissions):
    return [(e.name, e.value, dict(e.tags)) for e in emissions]


def test_a_decision_counts_once_and_an_applied_escalation_counts_too():
    assert _rows(m.sizing_decision("predicted", "d", "t")) == [
        ("airflow_adaptive.sizing.decision", 1.0, {"mode": "adaptive", "reason": "predicted", "dag_id": "d", "task_id": "t"})]
    assert _rows(m.sizing_decision("fallback", "d", "t", escalated=True, fallback="registry_error")) == [
        ("airflow_adaptive.sizing.decision", 1.0, {"mode": "fallback", "reason": "registry_error", "dag_id": "d", "task_id": "t"}),
        ("airflow_adaptive.oom.escalation", 1.0, {"dag_id": "d", "task_id": "t"})]
    assert [e.name for e in m.sizing_decision("shadow", "d", "t", escalated=True)] == ["airflow_adaptive.sizing.decision"]


def _profile(memory_upper=400 * MiB):
    return PredictedProfile({"memory": ResourceEstimate(300 * MiB, memory_upper), "cpu": ResourceEstimate(1.0, 2.0)}, 0.9)


def test_plan_decision_reads_the_stage_plan():
    policy = SizingPolicy()
    requested, limited = ResourceVector(cpu=1, memory=128 * MiB), ResourceVector(cpu=1, memory=2**30)
    predicted = plan_stage(requested, limited, _profile(), policy, "adaptive")
    shadow = plan_stage(requested, limited, _profile(), policy, "shadow")
    fallback = plan_stage(requested, limited, None, policy, "adaptive", fallback="MLflow is down")
    assert _rows(m.plan_decision(predicted, "d", "t"))[0][2]["reason"] == "predicted"
    assert _rows(m.plan_decision(shadow, "d", "t"))[0][2] == {"mode": "shadow", "reason": "shadow", "dag_id": "d", "task_id": "t"}
    assert _rows(m.plan_decision(fallback, "d", "t", fallback="registry_error"))[0][2]["reason"] == "registry_error"


def test_sizing_duration_is_in_milliseconds():
    assert _rows(m.sizing_duration(0.25, True, "d", "t")) == [
        ("airflow_adaptive.sizing.duration", 250.0, {"outcome": "predicted", "dag_id": "d", "task_id": "t"})]
    assert _rows(m.sizing_duration(-1.0, False, "d", "t"))[0][1:] == (0.0, {"outcome": "fallback", "dag_id": "d", "task_id": "t"})


@pytest.mark.parametrize("version, rows", [
    ("7", [("airflow_adaptive.profiler.version", 7.0, {"model": "job-profiler"})]),
    (12, [("airflow_adaptive.profiler.version", 12.0, {"model": "job-profiler"})]),
    ("latest", []),
    (None, []),
])
def test_profiler_version(version, rows):
    assert _rows(m.profiler_version("models:/job-profiler@champion", version)) == rows


def test_ratio_and_under_prediction_per_resource():
    rows = _rows(m.prediction_vs_observed({"memory": 400.0, "cpu": 2.0, "gpu": 0.0}, {"memory": 500.0, "cpu": 1.0, "gpu": 0.5},
                                          "d", "t"))
    tags = {"dag_id": "d", "task_id": "t"}
    assert rows == [
        ("airflow_adaptive.prediction.ratio.cpu", 0.5, tags),
        ("airflow_adaptive.prediction.ratio.memory", 1.25, tags),
        ("airflow_adaptive.prediction.under", 1.0, {"resource": "memory", **tags}),
    ]  # gpu: no predicted upper to divide by


def test_profile_vs_observed_takes_a_profile_its_dict_or_none():
    peak = {"memory": 200 * MiB}
    from_profile = _rows(m.profile_vs_observed(_profile(), peak, "d", "t"))
    assert from_profile == _rows(m.profile_vs_observed(_profile().to_dict(), peak, "d", "t"))
    assert from_profile == [("airflow_adaptive.prediction.ratio.memory", 0.5, {"dag_id": "d", "task_id": "t"})]
    assert m.profile_vs_observed(None, peak, "d", "t") == []
    assert m.profile_vs_observed(_profile(), None, "d", "t") == []


def test_resize_outcomes_are_bounded_labels():
    rows = _rows(m.resize_outcomes([
        {"status": "applied", "resource": "memory"},
        {"status": "deferred", "resource": "cpu"},
        {"status": "forbidden", "message": "RBAC"},  # the trigger's record when RBAC forbids resizing
        {"status": "something new", "resource": "memory"},
        {"resource": "memory", "old": 1, "new": 2},  # the local runner's records: applied
    ]))
    assert [(r[2]["outcome"], r[2]["resource"]) for r in rows] == [
        ("applied", "memory"), ("deferred", "cpu"), ("forbidden", "other"), ("other", "memory"), ("applied", "memory")]
    assert {r[0] for r in rows} == {"airflow_adaptive.resize"}


def test_oom_kill_kind():
    assert _rows(m.oom_kill("gpu", "d", "t")) == [("airflow_adaptive.oom.kill", 1.0, {"kind": "gpu", "dag_id": "d", "task_id": "t"})]


def test_a_builder_refuses_tags_outside_its_metric():
    with pytest.raises(ValueError, match="takes tags"):
        m._one(m.OOM_KILL, 1, kind="kernel")


# ---------------------------------------------------------------- sending through Airflow's stats
class Recorder:
    """A StatsLogger: what Airflow's stats module would hand to StatsD/Datadog/OTel."""

    def __init__(self, fail: bool = False):
        self.calls, self.fail = [], fail

    def _record(self, kind, stat, value, tags):
        if self.fail:
            raise OSError("statsd host unreachable")
        self.calls.append((kind, stat, value, tags))

    def incr(self, stat, count=1, rate=1, *, tags=None):
        self._record("incr", stat, count, tags)

    def gauge(self, stat, value, rate=1, delta=False, *, tags=None):
        self._record("gauge", stat, value, tags)

    def timing(self, stat, dt, *, tags=None):
        self._record("timing", stat, dt, tags)

    def decr(self, stat, count=1, rate=1, *, tags=None):
        self._record("decr", stat, count, tags)

    def timer(self, *args, **kwargs):
        raise NotImplementedError


@pytest.fixture
def backend(monkeypatch):
    """Install a backend through Airflow's own initialize; restore Airflow's default afterwards."""
    from airflow.sdk.observability import stats
    from airflow.sdk._shared.observability.metrics.base_stats_logger import NoStatsLogger

    def install(recorder):
        stats.initialize(factory=lambda: recorder, export_legacy_names=False)
        return recorder

    monkeypatch.setattr(m._EMITTER, "warned", False)
    yield install
    stats.initialize(factory=NoStatsLogger, export_legacy_names=True)


def test_emit_sends_counters_gauges_and_timers_with_tags(backend):
    from datetime import timedelta

    rec = backend(Recorder())
    m.emit([*m.sizing_decision("predicted", "d", "t"), *m.profiler_version("models:/job-profiler@champion", "3"),
            *m.sizing_duration(0.5, True, "d", "t")])
    assert rec.calls == [
        ("incr", "airflow_adaptive.sizing.decision", 1, {"mode": "adaptive", "reason": "predicted", "dag_id": "d", "task_id": "t"}),
        ("gauge", "airflow_adaptive.profiler.version", 3.0, {"model": "job-profiler"}),
        ("timing", "airflow_adaptive.sizing.duration", timedelta(milliseconds=500), {"outcome": "predicted", "dag_id": "d", "task_id": "t"}),
    ]


def test_a_failing_backend_is_logged_once_and_never_raises(backend, caplog):
    backend(Recorder(fail=True))
    with caplog.at_level(logging.WARNING, logger="airflow_adaptive.metrics"):
        m.emit(m.oom_kill("kernel", "d", "t"))
        m.emit(m.oom_kill("kernel", "d", "t"))
        m.record(m.sizing_decision, "bogus", "d", "t")  # a builder's error too
    warnings = [r for r in caplog.records if r.name == "airflow_adaptive.metrics"]
    assert len(warnings) == 1 and "OSError: statsd host unreachable" in warnings[0].getMessage()


def test_record_builds_and_sends(backend):
    rec = backend(Recorder())
    m.record(m.resize_outcomes, [{"status": "deferred", "resource": "memory"}])
    assert rec.calls == [("incr", "airflow_adaptive.resize", 1, {"outcome": "deferred", "resource": "memory"})]


def test_a_process_airflow_did_not_configure_is_configured_from_metrics_config(backend, monkeypatch):
    """A trigger or a script calling the hook: stats are set up from ``[metrics]`` on first use."""
    import sys

    from airflow.sdk.observability import stats

    monkeypatch.setenv("AIRFLOW__METRICS__STATSD_ON", "False")
    stats.initialize(factory=None, export_legacy_names=True)  # as before Airflow's task runner runs
    monkeypatch.setattr(m._EMITTER, "checked", False)
    m.emit(m.oom_kill("kernel", "d", "t"))
    impl = sys.modules[stats.initialize.__module__]
    assert impl._factory is not None and not m._EMITTER.warned


@pytest.mark.parametrize("kind, label", [("kernel", "kernel"), ("gpu", "gpu"), ("ephemeral_storage", "ephemeral_storage"),
                                         ("something else", "kernel")])
def test_an_eviction_for_ephemeral_storage_is_its_own_kind_of_kill(kind, label):
    (emission,) = m.oom_kill(kind, "dag", "task")
    assert emission.metric is m.OOM_KILL and emission.tags["kind"] == label

"""Retraining scores the hold-out runs over time and logs it, against a real MLflow store (SQLite
tracking and registry): the phase rule refuses a challenger whose phases promise less than the
usage needs, even when its peaks win, and the alias stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..support.phase_history import stage_history

pytestmark = [pytest.mark.integration]


@pytest.fixture
def store(sqlite_store, home, monkeypatch):
    Path(sqlite_store[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store)
    return sqlite_store


def test_retraining_logs_the_score_over_time_and_the_phase_rule_refuses_phases_that_promise_too_little(store, monkeypatch):
    from mlflow.tracking import MlflowClient

    from airflow_adaptive.adapters.mlflow.registry import log_profiler, set_alias
    from airflow_adaptive.logic import promotion
    from airflow_adaptive.logic.scaling import ScalingProfiler
    from airflow_adaptive.retraining import retrain_and_promote

    client = MlflowClient(tracking_uri=store, registry_uri=store)  # not the process-wide registry URI an earlier test set
    # Training runs step at half time; the hold-out runs step at 20%: the learned phases are low
    # from 20% to 50% of every hold-out run: 8 of its 26 samples (20, 24 .. 48 s).
    table, series = stage_history(holdout_step_at=0.2)
    first = retrain_and_promote(table, "p", plot=False, series=series)
    metrics = client.get_run(client.get_model_version("p", first.version).run_id).data.metrics
    assert metrics["holdout_phased_runs"] == 4 and metrics["holdout_phased_runs_with_phases"] == 4
    assert metrics["holdout_phased_over_upper_fraction"] == pytest.approx(8 / 26)
    assert metrics["holdout_phased_reserved_over_used"] < metrics["holdout_constant_reserved_over_used"]
    assert "holdout_phased_over_upper_fraction_cpu" not in metrics  # cpu has no series here
    assert first.phase_scores["challenger"]["runs"] == 4 and "hold-out over time" in first.reason
    assert "champion" not in first.phase_scores  # none yet: the phase rule is off

    # A champion whose peaks are twice too high (so the challenger wins on peaks) and which sizes
    # constantly: none of its samples is above its upper, so the challenger's phases lose.
    doubled, _ = stage_history(scale=2.0)
    _, version = log_profiler(ScalingProfiler().fit(doubled), name="p")
    set_alias("p", "champion", version)
    seen = {}
    real_decide = promotion.decide

    def spy(*args, **kwargs):  # the real rule, called as retraining calls it; the peak part recorded
        seen.update(kwargs, peak=real_decide(*args[:3]))
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(promotion, "decide", spy)
    second = retrain_and_promote(table, "p", plot=False, series=series)
    assert seen["peak"].promote, seen["peak"].reason  # the peaks alone would promote it
    assert seen["champion_phases"].over_upper_fraction == 0.0
    assert seen["challenger_phases"].series == seen["champion_phases"].series
    assert not second.promoted and "promise less than the usage needs" in second.reason
    assert second.phase_scores["champion"]["phased_runs"] == 0  # a champion without shapes: constant
    assert str(client.get_model_version_by_alias("p", "champion").version) == str(version)  # the alias stayed

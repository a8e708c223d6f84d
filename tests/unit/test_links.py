"""The extra links' URLs: the configured MLflow UI first, the tracking URI when it is http, none
for a local store; a bad setting is said and does not cost the stage its link."""

import logging

import pytest

from airflow_adaptive.links import UI_URL_ENV, mlflow_ui_url, model_url, run_url


@pytest.fixture(autouse=True)
def no_ui_setting(monkeypatch):
    monkeypatch.delenv(UI_URL_ENV, raising=False)
    monkeypatch.delenv("AIRFLOW__ADAPTIVE__MLFLOW_UI_URL", raising=False)


@pytest.mark.parametrize("setting, tracking, expected", [
    (None, "http://mlflow:5000/", "http://mlflow:5000"),  # the tracking server's own UI
    ("http://127.0.0.1:5000/", "http://127.0.0.1:41234", "http://127.0.0.1:5000"),  # a server gone after the demo
    ("https://mlflow.example.org/ui", "http://mlflow.internal:5000", "https://mlflow.example.org/ui"),
    ("http://127.0.0.1:5000", "sqlite:////tmp/mlflow.db", "http://127.0.0.1:5000"),
    ("  ", "http://mlflow:5000", "http://mlflow:5000"),  # blank: unset
    (None, "sqlite:////tmp/mlflow.db", None),
    (None, "file:///tmp/mlruns", None),
])
def test_the_ui_url(monkeypatch, setting, tracking, expected):
    if setting is not None:
        monkeypatch.setenv(UI_URL_ENV, setting)
    assert mlflow_ui_url(tracking) == expected


def test_the_airflow_option_is_read_when_the_environment_says_nothing(monkeypatch):
    monkeypatch.setenv("AIRFLOW__ADAPTIVE__MLFLOW_UI_URL", "http://ui.example:5000")
    assert mlflow_ui_url("http://tracking:5000") == "http://ui.example:5000"


def test_a_setting_that_is_not_http_is_said_and_the_tracking_uri_used(monkeypatch, caplog):
    monkeypatch.setenv(UI_URL_ENV, "127.0.0.1:5000")
    with caplog.at_level(logging.WARNING, logger="airflow_adaptive.links"):
        assert mlflow_ui_url("http://tracking:5000") == "http://tracking:5000"
    assert f"{UI_URL_ENV} / [adaptive] mlflow_ui_url is '127.0.0.1:5000', not an http(s) URL" in caplog.text


def test_run_and_model_urls(monkeypatch):
    monkeypatch.setenv(UI_URL_ENV, "http://127.0.0.1:5000/")
    assert run_url("http://127.0.0.1:41234", "3", "abc123") == "http://127.0.0.1:5000/#/experiments/3/runs/abc123?workflowType=machine_learning"
    assert model_url("http://127.0.0.1:41234", "job profiler", "7") == "http://127.0.0.1:5000/#/models/job%20profiler/versions/7"


def test_no_ui_no_link():
    assert run_url("sqlite:////tmp/mlflow.db", "1", "r") == ""
    assert model_url("sqlite:////tmp/mlflow.db", "job-profiler", "1") == ""

"""The demo's pure parts: names it shares with the product, and how it tells the user to open
the UIs afterwards."""

from pathlib import Path

from airflow_adaptive import demo


def test_the_names_the_demo_cannot_import_early_match_the_product():
    from airflow_adaptive.inline_executor import EXECUTOR
    from airflow_adaptive.links import UI_URL_ENV

    assert demo.EXECUTOR == EXECUTOR and demo.UI_URL_ENV == UI_URL_ENV


def test_the_ui_commands_open_the_demos_state_where_its_links_point():
    text = demo.ui_commands(Path("/state/demo"), "http://127.0.0.1:5123")
    assert "export AIRFLOW_HOME=/state/demo/airflow " in text
    assert "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS=True" in text
    assert f"api-server --port {demo.AIRFLOW_UI_PORT} &" in text
    assert "server --port 5123 --backend-store-uri sqlite:////state/demo/mlflow/db.sqlite " in text
    assert "--artifacts-destination /state/demo/mlflow/artifacts" in text


def test_the_mlflow_port_defaults_when_the_ui_url_names_none():
    assert f"server --port {demo.MLFLOW_UI_PORT} " in demo.ui_commands(Path("/s"), "https://mlflow.example.org")

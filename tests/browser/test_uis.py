"""What a user sees: the sized stage's task log (its sizing table) and extra links in the Airflow
UI, and the profiler in the MLflow UI (the ``champion`` alias, hold-out metrics, the predicted
against observed plot, why it is champion). Headless Chromium against the real servers of
``ui_state`` (conftest); each page's screenshot is saved (see the ``artifacts`` fixture)."""

from __future__ import annotations

import re
from urllib.parse import quote

from playwright.sync_api import expect


def shot(page, artifacts, name: str) -> None:
    close = page.get_by_role("button", name="Close")  # MLflow's assistant panel: room for the page
    if close.count() == 1 and close.is_visible():
        close.click()
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def task_page(state) -> str:
    return f"{state['airflow']}/dags/{state['dag_id']}/runs/{quote(state['run_id'], safe='')}/tasks/stage"


def test_the_task_log_shows_the_sizing_table(ui_state, page, artifacts):
    """The log the supervisor wrote, read back by the API server: the operator's table of
    predicted, requested and allocated resources (not "Could not read served logs")."""
    page.goto(task_page(ui_state))
    log = page.get_by_text("resources for task 'stage'")
    try:
        expect(log.first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(re.compile(r"sizing: predicted \(adaptive\)")).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"predicted median\s+predicted upper")).first).to_be_visible()
        expect(page.get_by_text("Could not read served logs")).to_have_count(0)
        expect(page.get_by_text("Downloading artifacts")).to_have_count(0)  # MLflow's progress bar, an ERROR line
    finally:
        shot(page, artifacts, "airflow-task-log")


def _link(page, name: str):
    """The extra link's button on the task instance page, once its URL has loaded."""
    link = page.get_by_role("link", name=name)
    expect(link).to_be_visible(timeout=60_000)
    expect(link).to_have_attribute("href", re.compile(r"^http"))
    return link


def test_the_extra_links_land_on_the_stage_run_and_the_profiler_version(ui_state, page, artifacts):
    """On the task instance's Details tab (where Airflow 3 puts extra links), both links carry
    the configured MLflow UI URL and open the stage's run (in MLflow's classic-ML view, with its
    usage charted over seconds) and the profiler version that sized it."""
    page.goto(task_page(ui_state) + "/details")
    try:
        run_href = _link(page, "MLflow stage run").get_attribute("href")
        model_href = _link(page, "Profiler model version").get_attribute("href")
    finally:
        shot(page, artifacts, "airflow-extra-links")
    stage = ui_state["stage_run"]
    assert run_href == (f"{ui_state['mlflow_ui']}/#/experiments/{ui_state['experiment_id']}/runs/{stage.info.run_id}"
                        "?workflowType=machine_learning")
    assert model_href == f"{ui_state['mlflow_ui']}/#/models/job-profiler/versions/{ui_state['version']}"

    page.goto(run_href)
    try:  # the stage run's page: its name, the sizing it got, its usage metrics, the classic view
        expect(page.get_by_role("heading", name=stage.info.run_name)).to_be_visible(timeout=60_000)
        expect(page.get_by_text("allocated.memory").first).to_be_visible()
        expect(page.get_by_text("usage.memory_mib").first).to_be_visible()
        expect(page.get_by_text("Training runs")).to_have_count(0)  # the GenAI view's side bar
    finally:
        shot(page, artifacts, "mlflow-stage-run")
    page.get_by_role("tab", name="Model metrics").click()
    page.get_by_placeholder("Search metric charts").fill("usage.")
    try:  # usage over time: the charts (x axis: Relative time, from the timestamps)
        expect(page.get_by_text("usage.memory_mib").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("final.memory")).to_have_count(0)  # filtered to the usage series
        page.wait_for_timeout(1500)  # the charts draw after their data arrives
    finally:
        shot(page, artifacts, "mlflow-stage-run-charts")

    page.goto(model_href)
    try:
        expect(page.get_by_text(f"Version {ui_state['version']}").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("champion").first).to_be_visible()
    finally:
        shot(page, artifacts, "mlflow-profiler-version-from-link")


def test_the_profiler_shows_champion_metrics_plot_and_why(ui_state, page, artifacts):
    """The registered model's champion: the alias, the description saying why it was promoted,
    and on its source run the hold-out metrics and ``holdout.png``."""
    version, retrained = ui_state["version"], ui_state["retrained"]
    page.goto(f"{ui_state['mlflow']}/#/models/job-profiler")
    try:
        expect(page.get_by_text("champion").first).to_be_visible(timeout=60_000)
    finally:
        shot(page, artifacts, "mlflow-registered-model")

    page.goto(f"{ui_state['mlflow']}/#/models/job-profiler/versions/{version}")
    try:
        expect(page.get_by_text("champion").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text(re.compile("Champion")).first).to_be_visible()
        expect(page.get_by_text(retrained.reason.split(" | ")[0][:60]).first).to_be_visible()
    finally:
        shot(page, artifacts, "mlflow-profiler-version")

    from mlflow.tracking import MlflowClient

    source = MlflowClient(ui_state["mlflow"]).get_model_version("job-profiler", version).run_id
    run = MlflowClient(ui_state["mlflow"]).get_run(source)
    page.goto(f"{ui_state['mlflow']}/#/experiments/{run.info.experiment_id}/runs/{source}?workflowType=machine_learning")
    try:
        expect(page.get_by_text("holdout_allocated_over_used").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("holdout_under_provisioned_fraction").first).to_be_visible()
    finally:
        shot(page, artifacts, "mlflow-profiler-run")

    page.goto(f"{ui_state['mlflow']}/#/experiments/{run.info.experiment_id}/runs/{source}/artifacts/holdout.png"
              "?workflowType=machine_learning")
    try:
        image = page.get_by_role("img", name="holdout.png")
        expect(image).to_be_visible(timeout=60_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 100", arg=image.element_handle())
    finally:
        shot(page, artifacts, "mlflow-holdout-plot")

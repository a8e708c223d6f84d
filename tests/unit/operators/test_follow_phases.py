"""``follow_phases=False``: the operator drops the predicted phases, so the stage is sized for its
peak and the monitor gets the constant profile (the demo's ``reactive`` arm)."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from airflow_adaptive.domain.profile import PhaseNeed, PredictedProfile, ResourceEstimate
from airflow_adaptive.operators import AdaptiveTrainingOperator

GiB, MiB = 2**30, 2**20
PHASES = (PhaseNeed(0, 120, 200 * MiB, 300 * MiB), PhaseNeed(120, 600, 500 * MiB, 800 * MiB))
PROFILE = PredictedProfile({"memory": ResourceEstimate(500 * MiB, 800 * MiB), "cpu": ResourceEstimate(0.8, 1.2)},
                           coverage=0.99, model_version="3", phases={"memory": PHASES})


def planned(follow_phases):
    """A bool as given in the DAG file; text as a template (the DAG param) renders it at execute."""
    given = follow_phases if isinstance(follow_phases, bool) else "{{ params.follow_phases }}"
    op = AdaptiveTrainingOperator(task_id="t", namespace="ml", cmds=["python", "t.py"], follow_phases=given,
                                  container_resources={"requests": {"cpu": "1", "memory": "2Gi"},
                                                       "limits": {"cpu": "2", "memory": "8Gi"}})
    op.follow_phases = follow_phases  # rendered
    op._profiler_hook = SimpleNamespace(tracking_uri="http://127.0.0.1:9", predict=lambda features, where: (PROFILE, "3"))
    return op.plan({"ti": SimpleNamespace(dag_id="d", task_id="t", run_id="r", try_number=1)})


@pytest.mark.parametrize("value", [True, "True", "true"])
def test_by_default_the_stage_starts_at_its_first_phase_and_the_monitor_gets_the_phases(value):
    plan = planned(value)
    assert plan.size.limits.memory == pytest.approx(330 * MiB)  # the first phase's upper + 10%
    assert plan.profile.phases == {"memory": PHASES}
    assert not any("follow_phases" in n for n in plan.profile.notes)


@pytest.mark.parametrize("value", [False, "False", "false"])
def test_without_phases_the_stage_is_sized_for_its_peak_on_the_constant_profile(value):
    plan = planned(value)
    assert plan.size.limits.memory == pytest.approx(880 * MiB)  # the stage's upper + 10%, as before phases
    assert plan.resizable and plan.profile.phases == {}
    assert "phases: off (follow_phases=False)" in plan.profile.notes
    assert "phases" not in plan.to_dict()["predicted"]  # XCom, the monitor's profile and MLflow see none


def test_a_follow_phases_that_is_not_a_boolean_is_refused():
    from airflow_adaptive.domain.errors import UserError

    with pytest.raises(ValueError, match="follow_phases must be true or false, got 'sometimes'"):
        AdaptiveTrainingOperator(task_id="t", namespace="ml", cmds=["python", "t.py"], follow_phases="sometimes")
    # A template is checked once rendered: at plan time, a clear error naming the task.
    with pytest.raises(UserError, match="task 't': follow_phases must be true or false, got 'maybe'"):
        planned("maybe")

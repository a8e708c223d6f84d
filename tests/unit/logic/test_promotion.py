"""The champion/challenger rule and the leak-free holdout split."""

import numpy as np
import pytest

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.features import Feature, FeatureSchema
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic.promotion import Decision, Score, decide, split_holdout

W = "swf/1 memory: 600 jobs submitted 0..100"
TARGET = 0.01


def score(aou, under=0.01, window=W, reached=True):
    return Score(allocated_over_used=aou, under_provisioned_fraction=under, window=window, reached=reached)


@pytest.mark.parametrize(
    "challenger, champion, promote, reason_has",
    [
        (score(1.8), score(2.0), True, "beats"),
        (score(2.0), score(2.0), False, "ties"),
        (score(2.2), score(2.0), False, "worse"),
        (score(1.5), score(2.0, window="swf/1 memory: 10 jobs submitted 5..9"), False, "different windows"),
        (score(1.5, reached=False), score(2.0), False, "never gets down"),
        (score(1.8), score(1.5, reached=False), True, "beats"),
        (score(9.0, under=0.015), None, True, "within"),
        (score(9.0, under=0.005), None, True, "within"),
        (score(1.1, under=0.05), None, False, "outside"),
        (score(1.1, under=0.0), score(1.0), False, "worse"),  # under fraction does not matter vs a champion
    ],
    ids=["beats", "tie", "worse", "other-window", "challenger-unreached", "champion-unreached",
         "first-within-above", "first-within-below", "first-outside", "champion-cheaper"],
)
def test_decide(challenger, champion, promote, reason_has):
    decision = decide(challenger, champion, TARGET, coverage_tolerance=0.01)
    assert isinstance(decision, Decision)
    assert decision.promote is promote
    assert reason_has in decision.reason


def test_decide_tolerance_is_a_parameter():
    assert not decide(score(1.0, under=0.03), None, TARGET, coverage_tolerance=0.01).promote
    assert decide(score(1.0, under=0.03), None, TARGET, coverage_tolerance=0.05).promote


SCHEMA = FeatureSchema(
    name="t", version=1, key=("user",), resources=("memory",), features=(Feature("user", "categorical"),)
)


def table(submit, run_time):
    submit, run_time = np.asarray(submit, float), np.asarray(run_time, float)
    n = len(submit)
    return JobTable(
        schema=SCHEMA,
        job_id=np.array([f"j{i}" for i in range(n)], dtype=object),
        submit=submit,
        end=submit + run_time,
        run_time=run_time,
        features={"user": np.array(["u"] * n, dtype=object)},
        used={"memory": np.ones(n)},
        requested={"memory": np.ones(n)},
    )


@pytest.mark.parametrize("seed", range(5))
def test_split_holdout_never_trains_on_what_the_holdout_could_not_know(seed):
    rng = np.random.default_rng(seed)
    n = 500
    t = table(rng.uniform(0, 1000, n), rng.exponential(50, n))  # unsorted, long jobs overlap
    train, hold = split_holdout(t, fraction=0.2)
    assert len(hold) == 100
    first = hold.submit.min()
    # the holdout is the most recent jobs by submit time
    assert first >= np.sort(t.submit)[-100]
    # every training job ended before the holdout's first submit: no leak
    assert len(train) and (train.end < first).all()
    # and nothing is in both, and every job that qualifies is used
    assert not set(train.job_id) & set(hold.job_id)
    rest = ~np.isin(t.job_id, hold.job_id)
    assert len(train) == int((t.end[rest] < first).sum())


def test_split_holdout_drops_jobs_still_running_at_the_cut():
    # j1 was submitted before the holdout but ends after it starts: it must not train.
    t = table([0, 10, 20, 30, 40], [5, 100, 5, 1, 1])
    train, hold = split_holdout(t, fraction=0.4)
    assert list(hold.job_id) == ["j3", "j4"]
    assert list(train.job_id) == ["j0", "j2"]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_split_holdout_rejects_bad_fractions(fraction):
    with pytest.raises(UserError):
        split_holdout(table([0, 1, 2], [1, 1, 1]), fraction)


# ----------------------------------------------------------------------------- the rule over time
from airflow_adaptive.logic.phase_score import PhaseScore  # noqa: E402

RUNS = ("r1", "r2", "r3")


def phased(over, runs=RUNS, resource="memory"):
    return PhaseScore(resource, 1.1, 1.5, over, len(runs), len(runs), 30 * len(runs), runs)


@pytest.mark.parametrize(
    "challenger, champion, ch_phases, cp_phases, promote, reason_has",
    [
        (score(1.8), score(2.0), phased(0.10), phased(0.08), True, "0.1000 of the memory samples of 3 hold-out run(s)"),
        (score(1.8), score(2.0), phased(0.30), phased(0.25), True, "(champion 0.2500)"),  # exactly the tolerance
        (score(1.8), score(2.0), phased(0.31), phased(0.25), False, "promise less than the usage needs"),
        (score(1.8), score(2.0), phased(0.40), phased(0.0), False, "more than 0.05 more"),
        (score(1.8), score(2.0), phased(0.0), phased(0.40), True, "beats"),  # fewer misses than the champion
        (score(1.8), score(2.0), phased(0.40), phased(0.0, runs=("r1",)), True, "phases not compared"),
        (score(1.8), score(2.0), phased(0.40), phased(0.0, resource="cpu"), True, "phases not compared"),
        (score(1.8), score(2.0), phased(float("nan"), runs=()), phased(float("nan"), runs=()), True,
         "no hold-out run with usage over time"),
        (score(1.8), score(2.0), phased(0.40), None, True, "beats"),  # no phase score for the champion: rule off
        (score(2.2), score(2.0), phased(0.0), phased(0.40), False, "worse"),  # phases never rescue a peak loss
        (score(2.2), score(2.0), phased(0.40), phased(0.0), False, "worse"),
        (score(9.0, under=0.01), None, phased(0.90), None, True, "within"),  # no champion: nothing to compare
    ],
    ids=["close", "at-tolerance", "just-over", "far-over", "fewer-misses", "other-runs", "other-resource", "no-samples",
         "champion-unscored", "peak-loss-good-phases", "peak-loss-bad-phases", "first-model"],
)
def test_decide_over_time(challenger, champion, ch_phases, cp_phases, promote, reason_has):
    decision = decide(challenger, champion, TARGET, challenger_phases=ch_phases, champion_phases=cp_phases)
    assert decision.promote is promote, decision.reason
    assert reason_has in decision.reason


def test_phase_tolerance_is_a_parameter_and_must_be_a_share():
    assert decide(score(1.8), score(2.0), TARGET, challenger_phases=phased(0.4), champion_phases=phased(0.0),
                  phase_tolerance=0.5).promote
    with pytest.raises(ValueError, match="phase_tolerance"):
        decide(score(1.8), score(2.0), TARGET, phase_tolerance=-0.1)

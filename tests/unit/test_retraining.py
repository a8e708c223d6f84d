"""The profiler version's description in the model registry: what it is, its hold-out figures,
and why it is (not) champion."""

from airflow_adaptive.retraining import RetrainResult, version_description


def result(promoted: bool) -> RetrainResult:
    return RetrainResult("job-profiler", "4", promoted, "challenger allocates 1.31x used vs champion 1.52x", "3",
                         "4" if promoted else "3", records=40, holdout_window="last 8 runs", profiler="ScalingProfiler")


METRICS = {"training_records": 32.0, "holdout_allocated_over_used": 1.3149, "holdout_under_provisioned_fraction": 0.0}


def test_a_promoted_version_says_it_is_champion_and_why():
    text = version_description(result(True), METRICS, plotted=True)
    assert text.splitlines()[0] == "ScalingProfiler fitted on 32 of 40 stage runs; hold-out window: last 8 runs."
    assert "allocated/used 1.31, under-provisioned fraction 0.000" in text
    assert "**Champion**: promoted by the champion/challenger rule: challenger allocates 1.31x used vs champion 1.52x" in text
    assert "`holdout.png`" in text


def test_a_version_left_out_names_the_champion_that_stays():
    text = version_description(result(False), METRICS, plotted=False)
    assert "**Not promoted** (champion stays version 3): challenger allocates" in text
    assert "holdout.png" not in text

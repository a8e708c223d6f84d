"""The profiler's quality bar: each bound, missing and broken metrics, and bad bars."""

import math

import pytest

from airflow_adaptive.logic.model_quality import QualityBar, meets

GOOD = {"holdout_allocated_over_used": 1.3, "holdout_under_provisioned_fraction": 0.01, "training_records": 5000.0}

# (case, bar, metrics, met, words in the reason)
CASES = [
    ("every bar met", QualityBar(1.5, 0.02, 1000), GOOD, True, ["quality bar met", "holdout_allocated_over_used 1.3 <= 1.5",
                                                                "training_records 5000 >= 1000"]),
    ("a bound equal to the value is met", QualityBar(1.3, 0.01, 5000), GOOD, True, []),
    ("too much allocated per byte used", QualityBar(max_allocated_over_used=1.2), GOOD, False,
     ["holdout_allocated_over_used 1.3 > 1.2"]),
    ("too many under-provisioned stages", QualityBar(max_under_provisioned_fraction=0.005), GOOD, False,
     ["holdout_under_provisioned_fraction 0.01 > 0.005"]),
    ("too little history", QualityBar(min_training_records=10000), GOOD, False, ["training_records 5000 < 10000"]),
    ("every failure is listed", QualityBar(1.0, 0.0, 10000), GOOD, False,
     ["allocated_over_used 1.3 > 1", "under_provisioned_fraction 0.01 > 0", "training_records 5000 < 10000"]),
    ("a missing metric fails its bar", QualityBar(min_training_records=1), {"holdout_allocated_over_used": 1.0}, False,
     ["training_records is missing from the model's run"]),
    ("a NaN metric fails its bar", QualityBar(max_allocated_over_used=2), {"holdout_allocated_over_used": math.nan}, False,
     ["holdout_allocated_over_used is not a number"]),
    ("an unset bar ignores its metric", QualityBar(max_allocated_over_used=2), {"holdout_allocated_over_used": 1.9}, True, []),
    ("no bar at all is met", QualityBar(), {}, True, ["no quality bar set"]),
]


# ----------------------------------------------------------------------------- the bar over time
PHASED = GOOD | {"holdout_phased_over_upper_fraction": 0.04}
PHASE_CASES = [
    ("phases within the bar", QualityBar(max_phased_over_upper_fraction=0.05), PHASED, True,
     ["holdout_phased_over_upper_fraction 0.04 <= 0.05"]),
    ("phases equal to the bar", QualityBar(max_phased_over_upper_fraction=0.04), PHASED, True, []),
    ("phases exceeded too often", QualityBar(max_phased_over_upper_fraction=0.01), PHASED, False,
     ["holdout_phased_over_upper_fraction 0.04 > 0.01"]),
    ("a model retrained without usage series fails the bar", QualityBar(max_phased_over_upper_fraction=0.05), GOOD,
     False, ["holdout_phased_over_upper_fraction is missing from the model's run"]),
    ("listed with the other failures", QualityBar(1.0, None, None, 0.0), PHASED, False,
     ["allocated_over_used 1.3 > 1", "holdout_phased_over_upper_fraction 0.04 > 0"]),
    ("unset: the metric is ignored", QualityBar(1.5), GOOD, True, []),
]


@pytest.mark.parametrize("case, bar, metrics, met, words", CASES + PHASE_CASES, ids=[c[0] for c in CASES + PHASE_CASES])
def test_meets(case, bar, metrics, met, words):
    ok, reason = meets(bar, metrics)
    assert ok is met, reason
    for w in words:
        assert w in reason, f"{w!r} not in {reason!r}"


@pytest.mark.parametrize("kwargs", [{"max_allocated_over_used": -1}, {"min_training_records": math.inf},
                                    {"max_under_provisioned_fraction": "0.1"}, {"min_training_records": True}])
def test_a_bad_bar_is_refused(kwargs):
    with pytest.raises(ValueError, match="quality bar"):
        QualityBar(**kwargs)


def test_bar_round_trips_as_plain_data():
    bar = QualityBar(1.5, None, 100)
    assert QualityBar(**bar.to_dict()) == bar




@pytest.mark.parametrize("value", [-0.1, math.nan, "0.05", True])
def test_a_bad_phased_bar_is_refused(value):
    with pytest.raises(ValueError, match="quality bar max_phased_over_upper_fraction"):
        QualityBar(max_phased_over_upper_fraction=value)


def test_the_phased_bar_round_trips_as_plain_data():
    bar = QualityBar(max_phased_over_upper_fraction=0.05)
    assert bar.to_dict()["max_phased_over_upper_fraction"] == 0.05 and QualityBar(**bar.to_dict()) == bar
    assert QualityBar(**{k: v for k, v in bar.to_dict().items() if k != "max_phased_over_upper_fraction"}) == QualityBar()

"""The pod's network-bandwidth annotations from the predicted network rates
(``adapters/kubernetes/bandwidth.py``): bits per second, within Kubernetes' [1k, 1P], never above
what the user wrote, and a user value Kubernetes would refuse named before any pod exists."""

import pytest

from airflow_adaptive.adapters.kubernetes.bandwidth import EGRESS, INGRESS, plan_bandwidth, user_bandwidth
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate

MiB = 2**20


def profile(rx=None, tx=None):
    res = {"memory": ResourceEstimate(MiB, 2 * MiB)}
    if rx is not None:
        res["network_rx"] = ResourceEstimate(rx / 2, rx)
    if tx is not None:
        res["network_tx"] = ResourceEstimate(tx / 2, tx)
    return PredictedProfile(res, coverage=0.9)


@pytest.mark.parametrize("rx,tx,user,margin,expected", [
    # 10 MiB/s = 83,886,080 bit/s, + 10% = 92,274,688 -> rounded up to whole kbit/s
    (10 * MiB, None, {}, 0.1, {INGRESS: "92275k"}),
    (None, 1_000_000, {}, 0.0, {EGRESS: "8M"}),
    (10 * MiB, 1_000_000, {}, 0.0, {INGRESS: "83887k", EGRESS: "8M"}),
    # below Kubernetes' 1k: raised to it (a 0 upper predicts nothing: no annotation)
    (10.0, 0.0, {}, 0.0, {INGRESS: "1k"}),
    # above 1P: capped at it
    (10**15, None, {}, 0.0, {INGRESS: "1P"}),
    # the user's value is the bound ...
    (10 * MiB, None, {INGRESS: "50M"}, 0.1, {INGRESS: "50M"}),
    # ... and only a bound: a smaller prediction sets a smaller value
    (1_000_000, None, {INGRESS: "50M"}, 0.0, {INGRESS: "8M"}),
    # a resource not predicted keeps the user's annotation, other annotations are not touched here
    (None, None, {EGRESS: "10M", "team": "ml"}, 0.1, {EGRESS: "10M"}),
    (None, None, {}, 0.1, {}),
])
def test_annotations_from_the_prediction_bounded_by_the_user(rx, tx, user, margin, expected):
    plan = plan_bandwidth(profile(rx, tx), user, margin, "task 'train'")
    assert dict(plan.annotations) == expected
    assert len(plan.reasons) == len(expected)


def test_no_profile_keeps_the_users_own():
    plan = plan_bandwidth(None, {INGRESS: "1G"}, 0.1, "task 'train'")
    assert dict(plan.annotations) == {INGRESS: "1G"} and "not predicted" in plan.reasons[0]


def test_a_capped_value_says_so():
    plan = plan_bandwidth(profile(10 * MiB), {INGRESS: "50M"}, 0.1, "task 'train'")
    assert "the user's 50M (the bound)" in plan.reasons[0]


@pytest.mark.parametrize("value,says", [
    ("500", "below 1k"),
    ("0.5k", "below 1k"),
    ("-10M", "below 1k"),
    ("2P", "above 1P"),
    ("1E", "above 1P"),
    ("10 Mbit", "not a quantity"),
    ("fast", "not a quantity"),
])
def test_a_user_value_kubernetes_refuses_is_a_clear_error(value, says):
    with pytest.raises(UserError) as err:
        plan_bandwidth(profile(10 * MiB), {EGRESS: value}, 0.1, "task 'train'")
    text = str(err.value)
    assert says in text and EGRESS in text and repr(value) in text and "task 'train'" in text
    assert "e.g. '100M'" in text  # what to do


@pytest.mark.parametrize("value,bits", [("1k", 1000), ("1.0001k", 1001), ("100M", 10**8), ("1P", 10**15), ("1Gi", 2**30)])
def test_user_values_read_as_kubernetes_does(value, bits):
    assert user_bandwidth({INGRESS: value}, "t") == {INGRESS: bits}

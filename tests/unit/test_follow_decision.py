"""The executor-pod follower's decision per pod (pure, table-driven)."""

import pytest

from airflow_adaptive.logic.follow_decision import PodFacts, follow_action


@pytest.mark.parametrize("facts, followed, action", [
    (PodFacts(), False, "wait"),  # Pending: nothing runs yet
    (PodFacts(), True, "wait"),
    (PodFacts(workload_running=True), False, "start"),
    (PodFacts(workload_running=True), True, "wait"),  # already followed: the follower thread reads on
    (PodFacts(ended=True), True, "finish"),
    (PodFacts(ended=True), False, "finish"),  # ended before it was seen running: read its log from the start
    (PodFacts(gone=True), True, "finish"),  # the executor deleted it: record from the last state seen
    (PodFacts(gone=True), False, "ignore"),
    (PodFacts(recorded=True, ended=True), False, "ignore"),  # a restarted follower finds it done
    (PodFacts(recorded=True, gone=True), True, "ignore"),
])
def test_follow_action(facts, followed, action):
    assert follow_action(facts, followed) == action

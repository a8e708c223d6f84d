"""What the executor-pod follower does with a pod it listed. Pure.

| the pod | followed by this follower | the action |
|---|---|---|
| its outcome is already recorded (annotation) | any | ``ignore`` |
| gone from the list (the executor deleted it) | yes | ``finish``: stop following, record from the last state seen |
| gone from the list | no | ``ignore`` (it never ran, or another follower had it) |
| ended (phase Succeeded/Failed, or the workload terminated) | any | ``finish`` (not followed yet: follow from the log's start, then record) |
| the workload runs | no | ``start`` |
| anything else (Pending, image pulls) | any | ``wait`` |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Action = Literal["ignore", "wait", "start", "finish"]


@dataclass(frozen=True)
class PodFacts:
    """What the decision needs from a pod (``gone``: not in the latest list)."""

    gone: bool = False
    recorded: bool = False
    ended: bool = False
    workload_running: bool = False


def follow_action(pod: PodFacts, followed: bool) -> Action:
    if pod.recorded:
        return "ignore"
    if pod.gone:
        return "finish" if followed else "ignore"
    if pod.ended:
        return "finish"
    if pod.workload_running and not followed:
        return "start"
    return "wait"

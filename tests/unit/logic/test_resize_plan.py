"""The resize plan, case by case: apply, cap, defer or ignore, each with its reason."""

from dataclasses import replace

import pytest

from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.resize_plan import ResizeCondition, ResizeState, plan_resize

MI = 2**20
GI = 2**30


def sig(resource="memory", old=2 * GI, new=4 * GI, sequence=1, container="", request=None):
    return ResizeSignal(resource, float(old), float(new), "test", 1.0, sequence, container,
                        None if request is None else float(request))


GUARANTEED = ResizeState("base", ResourceVector(1, 2 * GI), ResourceVector(1, 2 * GI), "Guaranteed")
BURSTABLE = ResizeState("base", ResourceVector(0.5, 1 * GI), ResourceVector(1, 2 * GI), "Burstable")
PENDING_INFEASIBLE = (ResizeCondition("PodResizePending", "Infeasible", "Node didn't have enough capacity"),)
PENDING_DEFERRED = (ResizeCondition("PodResizePending", "Deferred", "Node didn't have enough resource"),)


@pytest.mark.parametrize(
    "name, signal, state, decision, requests, limits, reason_has",
    [
        ("guaranteed memory up: both move", sig(), GUARANTEED, "apply",
         ResourceVector(1, 4 * GI), ResourceVector(1, 4 * GI), "Guaranteed"),
        ("guaranteed cpu down: both move", sig("cpu", 1, 0.5), GUARANTEED, "apply",
         ResourceVector(0.5, 2 * GI), ResourceVector(0.5, 2 * GI), "lowered"),
        ("burstable memory up: limit moves, request stays", sig(), BURSTABLE, "apply",
         ResourceVector(0.5, 1 * GI), ResourceVector(1, 4 * GI), "request stays"),
        ("burstable memory down above request: request stays", sig(new=1.5 * GI), BURSTABLE, "apply",
         ResourceVector(0.5, 1 * GI), ResourceVector(1, 1.5 * GI), "limit moves"),
        ("burstable memory down below request: request follows", sig(new=768 * MI), BURSTABLE, "apply",
         ResourceVector(0.5, 768 * MI), ResourceVector(1, 768 * MI), "request lowered"),
        ("burstable with a phase's request: the request follows it up", sig(request=3 * GI), BURSTABLE, "apply",
         ResourceVector(0.5, 3 * GI), ResourceVector(1, 4 * GI), "request follows the phase from 1024Mi to 3072Mi"),
        ("burstable with a phase's request: the request follows it down", sig(new=1.5 * GI, request=512 * MI), BURSTABLE,
         "apply", ResourceVector(0.5, 512 * MI), ResourceVector(1, 1.5 * GI), "request follows the phase"),
        ("guaranteed ignores a phase's request: both move with the limit", sig(request=3 * GI), GUARANTEED, "apply",
         ResourceVector(1, 4 * GI), ResourceVector(1, 4 * GI), "Guaranteed"),
        ("a phase's request past the node's room is capped there", sig(request=3 * GI),
         replace(BURSTABLE, room=ResourceVector(4, 2 * GI)), "cap",
         ResourceVector(0.5, 2 * GI), ResourceVector(1, 4 * GI), "capped to the node's room"),
        ("a phase's request equal to the limit keeps the pod Burstable", sig("cpu", 1, 2, request=2),
         replace(BURSTABLE, requests=ResourceVector(0.5, 2 * GI), limits=ResourceVector(1, 2 * GI)), "apply",
         ResourceVector(1.999, 2 * GI), ResourceVector(2, 2 * GI), "stays Burstable"),
        ("burstable that would turn Guaranteed keeps one step below",
         sig("cpu", 1, 0.5), replace(BURSTABLE, requests=ResourceVector(0.5, 2 * GI)), "apply",
         ResourceVector(0.499, 2 * GI), ResourceVector(0.5, 2 * GI), "stays Burstable"),
        ("burstable without a cpu limit: the request is the allocation",
         sig("cpu", 0.5, 2), replace(BURSTABLE, limits=ResourceVector(0, 2 * GI)), "apply",
         ResourceVector(2, 1 * GI), ResourceVector(0, 2 * GI), "request moves"),
        ("guaranteed up, node has less room: capped", sig(), replace(GUARANTEED, room=ResourceVector(4, 3 * GI)), "cap",
         ResourceVector(1, 3 * GI), ResourceVector(1, 3 * GI), "capped to the node's room"),
        ("guaranteed up, node has room: applied", sig(), replace(GUARANTEED, room=ResourceVector(4, 8 * GI)), "apply",
         ResourceVector(1, 4 * GI), ResourceVector(1, 4 * GI), "raised"),
        ("cpu room rounds down to millicores", sig("cpu", 1, 2), replace(GUARANTEED, room=ResourceVector(1.2345, 8 * GI)), "cap",
         ResourceVector(1.234, 2 * GI), ResourceVector(1.234, 2 * GI), "1234m"),
        ("burstable limit up ignores node room (request unchanged)", sig(), replace(BURSTABLE, room=ResourceVector(0, 0)),
         "apply", ResourceVector(0.5, 1 * GI), ResourceVector(1, 4 * GI), "raised"),
        ("no room left at all: deferred", sig(), replace(GUARANTEED, room=ResourceVector(4, 2 * GI)), "defer",
         None, None, "no room"),
        ("Infeasible pending: increase deferred", sig(), replace(GUARANTEED, conditions=PENDING_INFEASIBLE), "defer",
         None, None, "Infeasible"),
        ("Infeasible pending: decrease still applied", sig(new=1 * GI), replace(GUARANTEED, conditions=PENDING_INFEASIBLE),
         "apply", ResourceVector(1, 1 * GI), ResourceVector(1, 1 * GI), "lowered"),
        ("Deferred pending: a new increase replaces it", sig(), replace(GUARANTEED, conditions=PENDING_DEFERRED), "apply",
         ResourceVector(1, 4 * GI), ResourceVector(1, 4 * GI), "raised"),
        ("memory below current use: deferred", sig(new=1 * GI), replace(GUARANTEED, usage=ResourceVector(0.2, 1.5 * GI)),
         "defer", None, None, "below the current use"),
        ("memory decrease above current use: applied", sig(new=1 * GI), replace(GUARANTEED, usage=ResourceVector(0.2, 0.5 * GI)),
         "apply", ResourceVector(1, 1 * GI), ResourceVector(1, 1 * GI), "lowered"),
        ("gpu never changes in place", sig("gpu", 1, 2), GUARANTEED, "defer", None, None, "cannot change in place"),
        ("gpu memory never changes in place", sig("gpu_memory", GI, 2 * GI), GUARANTEED, "defer", None, None, "GPU"),
        ("BestEffort cannot be resized", sig(), replace(GUARANTEED, qos_class="BestEffort"), "defer", None, None, "BestEffort"),
        ("old sequence ignored", sig(sequence=3), replace(GUARANTEED, last_sequence=3), "ignore", None, None, "already handled"),
        ("next sequence applied", sig(sequence=4), replace(GUARANTEED, last_sequence=3), "apply",
         ResourceVector(1, 4 * GI), ResourceVector(1, 4 * GI), "raised"),
        ("another container's signal ignored", sig(container="sidecar"), GUARANTEED, "ignore", None, None, "'sidecar'"),
        ("already at the size", sig(old=GI, new=2 * GI), GUARANTEED, "ignore", None, None, "already"),
    ],
)
def test_plan_table(name, signal, state, decision, requests, limits, reason_has):
    plan = plan_resize(signal, state)
    assert plan.decision == decision, f"{name}: {plan.reason}"
    assert reason_has in plan.reason, f"{name}: {plan.reason!r}"
    assert plan.sequence == signal.sequence and plan.resource == signal.resource
    if requests is None:
        assert plan.requests is None and plan.limits is None and not plan.changes
    else:
        assert plan.changes
        for got, want in ((plan.requests, requests), (plan.limits, limits)):
            assert got.cpu == pytest.approx(want.cpu, abs=1e-9), name
            assert got.memory == pytest.approx(want.memory), name


def test_every_plan_has_a_reason_and_round_trips_to_kubernetes_quantities():
    plan = plan_resize(sig("cpu", 1, 1.5), GUARANTEED)
    assert plan.to_dict() == {
        "decision": "apply", "reason": plan.reason, "resource": "cpu", "sequence": 1,
        "requests": {"cpu": "1500m", "memory": "2Gi"}, "limits": {"cpu": "1500m", "memory": "2Gi"},
    }
    assert plan.reason.startswith("cpu raised from 1000m to 1500m")


def test_a_deferred_plan_carries_no_size():
    plan = plan_resize(sig("gpu", 1, 2), GUARANTEED)
    assert plan.to_dict() == {"decision": "defer", "reason": plan.reason, "resource": "gpu", "sequence": 1}


def test_a_capped_burstable_request_keeps_its_limit():
    """Burstable without a memory limit: the request is what grows, and the node's room caps it."""
    state = replace(BURSTABLE, limits=ResourceVector(1, 0), room=ResourceVector(4, 1.5 * GI))
    plan = plan_resize(sig(old=GI, new=3 * GI), state)
    assert plan.decision == "cap"
    assert plan.requests.memory == 1.5 * GI and plan.limits.memory == 0


MI = 2**20
DEFERRED_COND = ResizeCondition("PodResizePending", "Deferred", "Node didn't have enough resource: memory")


@pytest.mark.parametrize("desired, actuated, conditions, sizes, why", [
    # the kubelet deferred a memory increase: the next try starts at it, and the log says why
    ((ResourceVector(memory=128 * MI), ResourceVector(memory=512 * MI)), (ResourceVector(memory=128 * MI), ResourceVector(memory=256 * MI)),
     (DEFERRED_COND,), {"memory": 512 * MI}, "PodResizePending/Deferred: Node didn't have enough resource: memory"),
    # actuated: nothing carried
    ((ResourceVector(cpu=1), ResourceVector(cpu=2)), (ResourceVector(cpu=1), ResourceVector(cpu=2)), (), {}, ""),
    # a decrease not yet actuated is not an increase to carry
    ((ResourceVector(memory=128 * MI), ResourceVector(memory=256 * MI)), (ResourceVector(memory=128 * MI), ResourceVector(memory=512 * MI)),
     (ResizeCondition("PodResizeInProgress"),), {}, ""),
    # no limit: the request is the allocation
    ((ResourceVector(cpu=1.5), ResourceVector()), (ResourceVector(cpu=1), ResourceVector()), (), {"cpu": 1.5},
     "the kubelet had not reported it actuated"),
    # a kubelet that reports no resources in status: unknown, nothing carried
    ((ResourceVector(cpu=1.5), ResourceVector()), None, (), {}, ""),
])
def test_increases_the_kubelet_never_actuated_are_carried_to_the_next_try(desired, actuated, conditions, sizes, why):
    from airflow_adaptive.logic.resize_plan import unactuated_increases

    assert unactuated_increases(desired, actuated, conditions) == (sizes, why)

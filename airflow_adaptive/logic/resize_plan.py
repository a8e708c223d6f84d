"""What to do with one resize signal for a running pod: apply it, cap it, defer it, or ignore it.

Pure: the Kubernetes adapter reads the pod (and, when allowed, its node) into a ``ResizeState``;
``plan_resize`` decides; the adapter patches ``pods/resize`` with the plan. The sync resizer,
the deferrable trigger and any sensor share this one decision.

A signal's ``new`` is the container's *allocation*: its limit, or its request where no limit is
set (what the monitor was started with, see ``adapters/kubernetes/pod_spec.py``).

Rules, in order (Kubernetes in-place resize as of 1.35, where it is GA):

| rule | decision | why |
|---|---|---|
| sequence <= the last one handled, or another container's signal | ignore | the monitor numbers its signals; each is applied once, in order |
| gpu / gpu_memory | defer | GPUs are whole devices bound at admission; only cpu and memory resize in place |
| BestEffort pod | defer | no requests or limits to change, and the QoS class is immutable |
| already at the new size | ignore | nothing to patch |
| increase while ``PodResizePending``/``Infeasible`` | defer | the node can never hold the pending resize; asking more cannot help |
| memory decrease below known usage | defer | the kubelet refuses it (its best-effort check) or the kernel OOM-kills |
| Guaranteed | requests = limits = new | the QoS class is immutable: both move together |
| Burstable | limit = new, request kept (lowered with the limit only when it would exceed it) | the request is what the scheduler reserved; keep the node packing |
| Burstable, the signal carries a request (a profile's phases) | limit = new, request = the signal's | the scheduler's reservation follows what the run uses in its phase; the limit protects |
| Burstable whose cpu and memory would end with request == limit | request one step below | otherwise the pod would turn Guaranteed, which the API refuses |
| a request that grows past the node's room | cap at the room, else defer | the kubelet would mark it ``Deferred`` or ``Infeasible`` |

| constant | value | where it comes from |
|---|---|---|
| ``QOS_STEP`` cpu | 1m | Kubernetes' CPU granularity (millicores) |
| ``QOS_STEP`` memory | 1Mi | the smallest step a person reads as intended; any byte would do |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal

Decision = Literal["apply", "cap", "defer", "ignore"]
QosClass = Literal["Guaranteed", "Burstable", "BestEffort"]
RESIZABLE = ("cpu", "memory")
#: The step a Burstable request keeps below its limit so the pod does not turn Guaranteed.
QOS_STEP = {"cpu": 0.001, "memory": float(2**20)}
#: Pod condition types and the reasons the kubelet gives (KEP-1287).
RESIZE_PENDING = "PodResizePending"
RESIZE_IN_PROGRESS = "PodResizeInProgress"
INFEASIBLE = "Infeasible"
DEFERRED = "Deferred"


@dataclass(frozen=True)
class ResizeCondition:
    """One pod condition about resizing (``status: "True"`` ones only)."""

    type: str
    reason: str = ""
    message: str = ""

    def describe(self) -> str:
        text = f"{self.type}/{self.reason}" if self.reason else self.type
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class ResizeState:
    """The container as it stands: the plan's inputs.

    ``room``: what the node can give this container's *requests*: allocatable minus every other
    container's request on the node (other pods and this pod's other containers); None: unknown
    (no permission to read nodes, or not scheduled). ``usage``: the container's current use, if
    known. ``last_sequence``: the highest signal sequence already handled for this container.
    """

    container: str
    requests: ResourceVector
    limits: ResourceVector
    qos_class: QosClass
    room: ResourceVector | None = None
    conditions: tuple[ResizeCondition, ...] = ()
    usage: ResourceVector | None = None
    last_sequence: int | None = None


@dataclass(frozen=True)
class ResizePlan:
    decision: Decision
    reason: str
    resource: str
    sequence: int
    requests: ResourceVector | None = None  # the new ones, for apply and cap
    limits: ResourceVector | None = None

    @property
    def changes(self) -> bool:
        return self.decision in ("apply", "cap")

    def to_dict(self) -> dict:
        out = {"decision": self.decision, "reason": self.reason, "resource": self.resource, "sequence": self.sequence}
        if self.changes:
            out["requests"] = self.requests.to_kubernetes()
            out["limits"] = self.limits.to_kubernetes()
        return out


def plan_resize(signal: ResizeSignal, state: ResizeState) -> ResizePlan:
    """The decision for ``signal``; every plan carries a reason a person can act on."""
    r = signal.resource

    def plan(decision: Decision, reason: str, requests=None, limits=None) -> ResizePlan:
        return ResizePlan(decision, reason, r, signal.sequence, requests, limits)

    skip = _skip_reason(signal, state)
    if skip:
        return plan("ignore", skip)
    if r not in RESIZABLE:
        return plan("defer", f"{r} cannot change in place (GPUs are bound when the pod is admitted); "
                             f"the next attempt is sized for {signal.new:g}")
    if state.qos_class == "BestEffort":
        return plan("defer", "a BestEffort pod has no requests or limits to resize and its QoS class is immutable; "
                             "the next attempt is sized instead")
    current = _allocation(state, r)
    if math.isclose(signal.new, current, rel_tol=1e-9, abs_tol=1e-9):
        return plan("ignore", f"{r} is already {_show(r, current)}")
    increase = signal.new > current
    blocked = _blocked_reason(signal, state, increase)
    if blocked:
        return plan("defer", blocked)
    requests, limits, notes = _resized(state, r, signal.new, signal.request)
    return _fit(plan, state, r, requests, limits, notes, increase, current, signal.new)


def _skip_reason(signal: ResizeSignal, state: ResizeState) -> str | None:
    if signal.container and signal.container != state.container:
        return f"signal is for container {signal.container!r}, not {state.container!r}"
    if state.last_sequence is not None and signal.sequence <= state.last_sequence:
        return f"sequence {signal.sequence} was already handled (last {state.last_sequence})"
    return None


def _blocked_reason(signal: ResizeSignal, state: ResizeState, increase: bool) -> str | None:
    r = signal.resource
    infeasible = next((c for c in state.conditions if c.type == RESIZE_PENDING and c.reason == INFEASIBLE), None)
    if increase and infeasible:
        return (f"the node cannot ever hold the pending resize ({infeasible.describe()}); "
                f"{r} {_show(r, signal.new)} is left to the next attempt")
    if not increase and r == "memory" and state.usage and state.usage.memory > signal.new:
        return (f"memory {_show(r, signal.new)} is below the current use {_show(r, state.usage.memory)}: the kubelet "
                "would refuse it or the kernel would OOM-kill; not lowered")
    return None


def _allocation(state: ResizeState, r: str) -> float:
    """The amount the monitor watches: the limit, else the request."""
    limit = getattr(state.limits, r)
    return limit if limit > 0 else getattr(state.requests, r)


def _resized(state: ResizeState, r: str, new: float, request: float | None = None
             ) -> tuple[ResourceVector, ResourceVector, list[str]]:
    """New requests and limits for ``r`` that keep the pod's QoS class (``request``: where a
    Burstable request should go; None: it stays)."""
    req, lim = getattr(state.requests, r), getattr(state.limits, r)
    if state.qos_class == "Guaranteed":
        return _with(state.requests, r, new), _with(state.limits, r, new), [f"Guaranteed: {r} request and limit move together"]
    if lim <= 0:  # no limit: the request is the allocation
        return _with(state.requests, r, new), state.limits, [f"Burstable without a {r} limit: the request moves"]
    notes = [f"Burstable: {r} limit moves"]
    if request is not None:
        new_req = min(request, new)
        notes.append(f"request follows the phase from {_show(r, req)} to {_show(r, new_req)}")
    else:
        new_req = min(req, new)
        notes.append(f"request lowered with it from {_show(r, req)}" if new_req < req else f"request stays {_show(r, req)}")
    requests, limits = _with(state.requests, r, new_req), _with(state.limits, r, new)
    if _looks_guaranteed(requests, limits):
        requests = _with(requests, r, max(0.0, new - QOS_STEP[r]))
        notes.append(f"request kept {_show(r, QOS_STEP[r])} below the limit so the pod stays Burstable")
    return requests, limits, notes


def _looks_guaranteed(requests: ResourceVector, limits: ResourceVector) -> bool:
    return all(getattr(limits, r) > 0 and math.isclose(getattr(requests, r), getattr(limits, r)) for r in RESIZABLE)


def _fit(plan, state: ResizeState, r: str, requests: ResourceVector, limits: ResourceVector, notes: list[str],
         increase: bool, current: float, wanted: float) -> ResizePlan:
    """Cap a growing request at the node's room (a Guaranteed limit with it), or defer if none is left."""
    base = f"{r} {'raised' if increase else 'lowered'} from {_show(r, current)} to {_show(r, wanted)}; " + "; ".join(notes)
    old_req, new_req = getattr(state.requests, r), getattr(requests, r)
    if state.room is None or new_req <= old_req or new_req <= getattr(state.room, r):
        return plan("apply", base, requests, limits)
    room = _floor_unit(r, getattr(state.room, r))
    if room <= old_req:
        return plan("defer", f"the node has no room to raise the {r} request past {_show(r, old_req)} "
                             f"(room {_show(r, getattr(state.room, r))}, wanted {_show(r, new_req)}); left to the next attempt")
    guaranteed = state.qos_class == "Guaranteed"
    return plan("cap", f"{base}; capped to the node's room: {r} request {_show(r, room)} instead of {_show(r, new_req)}",
                _with(requests, r, room), _with(limits, r, room) if guaranteed else limits)


def _floor_unit(r: str, amount: float) -> float:
    """Round down to what Kubernetes can express exactly: millicores, bytes."""
    return math.floor(amount * 1000 + 1e-6) / 1000 if r == "cpu" else float(math.floor(amount))


def _with(vector: ResourceVector, r: str, value: float) -> ResourceVector:
    return replace(vector, **{r: value})


def _show(r: str, amount: float) -> str:
    if r == "memory":
        return f"{amount / 2**20:.0f}Mi" if amount >= 2**20 else f"{amount:.0f}B"
    if r == "cpu":
        return f"{amount * 1000:.0f}m"
    return f"{amount:g}"


def unactuated_increases(desired: tuple[ResourceVector, ResourceVector], actuated: tuple[ResourceVector, ResourceVector] | None,
                         conditions: tuple[ResizeCondition, ...] = ()) -> tuple[dict[str, float], str]:
    """Increases the API server accepted that the kubelet had not actuated when the try ended, and
    why (the pending condition's reason and message, e.g. ``Deferred: Node didn't have enough
    resource``). ``desired`` and ``actuated`` are (requests, limits) from the pod's spec and from
    its container status; the allocation is the limit, else the request. What is returned is what
    the next try starts at: a real kubelet answers ``Deferred`` while other pods hold the room,
    and the API server still reports the resize as accepted."""
    if actuated is None:
        return {}, ""
    out = {}
    for r in RESIZABLE:
        want = getattr(desired[1], r) or getattr(desired[0], r)
        have = getattr(actuated[1], r) or getattr(actuated[0], r)
        if want > have and not math.isclose(want, have, rel_tol=1e-9):
            out[r] = want
    if not out:
        return {}, ""
    pending = next((c for c in conditions if c.type == RESIZE_PENDING), None) or next(
        (c for c in conditions if c.type == RESIZE_IN_PROGRESS), None)
    why = pending.describe() if pending else "the kubelet had not reported it actuated"
    return out, why

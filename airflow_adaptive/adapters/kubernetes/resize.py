"""Apply a resize signal to a running pod through the ``pods/resize`` subresource.

Thin I/O around ``logic/resize_plan.py``: read the pod (and its node, when allowed), plan, patch.
The steps are one I/O-free ``_Attempt``; the sync client (operator process) and kubernetes_asyncio
(the deferrable trigger) each drive it with their own calls, and neither decides anything.

| API answer | outcome | why |
|---|---|---|
| 200 | ``applied`` / ``capped`` | the desired size is recorded; the kubelet actuates it (watch ``PodResizeInProgress``) |
| 409 | re-read, re-plan, retry; ``conflict`` after ``MAX_ATTEMPTS`` (3) | the patch carries the resourceVersion the plan was made on; the pod changed under us (three tries outlast a kubelet status update) |
| 422 | ``rejected`` with the API's message | the API refused this size (QoS change, limit below request, ...) |
| 404 | ``gone`` | the pod was deleted (the task ended or was killed) |
| 403 with cause ``NodeCapacity`` | ``deferred`` to the next attempt | since 1.35 the API server refuses a resize beyond the node's allocatable |
| 403 | ``ResizeForbidden`` | RBAC: the message names the missing ``patch pods/resize`` rule |
| no answer | retry every second for 30 s, then ``unreachable`` | an API server restart must not lose the signal |

Reading the node needs cluster-scoped ``get nodes`` and ``list pods``; without them the room on
the node is unknown, the plan does not cap, and the kubelet answers ``Deferred``/``Infeasible``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal, Mapping

from airflow_adaptive.adapters.kubernetes.cluster_state import node_capacity
from airflow_adaptive.adapters.kubernetes.pod_spec import pod_requests, resize_patch_body, resize_state
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.resize_plan import ResizePlan, ResizeState, plan_resize

log = logging.getLogger(__name__)

Status = Literal["applied", "capped", "deferred", "ignored", "rejected", "conflict", "gone", "unreachable"]
MAX_ATTEMPTS = 3
#: How long a resize waits out an API server that does not answer (a restart or an upgrade of the
#: control plane takes seconds), retrying every ``UNREACHABLE_RETRY_S``; then ``unreachable``.
UNREACHABLE_WAIT_S = 30.0
UNREACHABLE_RETRY_S = 1.0
#: The Status cause the API server gives when a resize exceeds the node's allocatable (1.35+).
NODE_CAPACITY = "NodeCapacity"
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
_BY_DECISION = {"apply": "applied", "cap": "capped", "defer": "deferred", "ignore": "ignored"}


class ResizeForbidden(UserError):
    """The Airflow identity lacks an RBAC rule the resize needs."""


@dataclass(frozen=True)
class ResizeOutcome:
    status: Status
    message: str
    signal: ResizeSignal
    plan: ResizePlan | None = None
    attempts: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data (for a trigger event or a log line)."""
        out = {"status": self.status, "message": self.message, "resource": self.signal.resource,
               "sequence": self.signal.sequence, "old": self.signal.old, "new": self.signal.new,
               "signal_reason": self.signal.reason, "attempts": self.attempts}
        if self.plan is not None:
            out["plan"] = self.plan.to_dict()
        return out


def forbidden_message(namespace: str, verb: str, resource: str) -> str:
    return (f"the identity Airflow uses may not {verb} {resource} in namespace {namespace}; "
            f'add a Role rule {{apiGroups: [""], resources: ["{resource}"], verbs: ["{verb}"]}} and bind it '
            "to the service account of the Airflow worker/triggerer")


def api_message(exc: Exception) -> str:
    """The API server's own message from an ApiException (its Status body), else its reason."""
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else {}
    except (TypeError, ValueError):
        data = {}
    message = data.get("message") if isinstance(data, dict) else None
    return str(message or getattr(exc, "reason", None) or exc)


def api_status(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return int(status) if isinstance(status, (int, str)) and str(status).isdigit() else None


def api_errors() -> tuple[type[Exception], ...]:
    from kubernetes.client.exceptions import ApiException

    errors: list[type[Exception]] = [ApiException]
    try:
        from kubernetes_asyncio.client.exceptions import ApiException as AsyncApiException

        errors.append(AsyncApiException)
    except ImportError:  # pragma: no cover - the provider brings it
        pass
    return tuple(errors)


def _planned(signal: ResizeSignal, plan: ResizePlan, attempts: int) -> ResizeOutcome:
    return ResizeOutcome(_BY_DECISION[plan.decision], plan.reason, signal, plan, attempts)


def _causes(exc: Exception) -> set[str]:
    """The ``details.causes[].reason`` values of an API error's Status body."""
    try:
        data = json.loads(getattr(exc, "body", None) or "{}")
        return {c.get("reason", "") for c in (data.get("details") or {}).get("causes") or []}
    except (TypeError, ValueError, AttributeError):
        return set()


def _failed(exc: Exception, signal: ResizeSignal, namespace: str, pod_name: str, plan: ResizePlan | None,
            attempts: int, verb: str, resource: str) -> ResizeOutcome:
    """The outcome of an API error other than a retriable 409; an RBAC 403 raises."""
    status = api_status(exc)
    if status == 403 and NODE_CAPACITY in _causes(exc):
        # Since 1.35 the API server itself refuses a resize beyond the node's allocatable (what the
        # kubelet would call Infeasible). Not a permission problem: the size waits for the next try.
        return ResizeOutcome("deferred", f"the node cannot hold it ({api_message(exc)}); "
                             "the new size is left to the next attempt", signal, plan, attempts)
    if status == 403:
        raise ResizeForbidden(forbidden_message(namespace, verb, resource)) from exc
    if status == 404:
        return ResizeOutcome("gone", f"pod {namespace}/{pod_name} no longer exists", signal, plan, attempts)
    if status == 409:
        return ResizeOutcome("conflict", f"the pod kept changing during {attempts} attempts: {api_message(exc)}",
                             signal, plan, attempts)
    if status == 422 or status == 400:
        return ResizeOutcome("rejected", f"the API refused the resize: {api_message(exc)}", signal, plan, attempts)
    raise exc


class _Sequences:
    """The last signal sequence handled per (namespace, pod, container)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str, str], int] = {}

    def get(self, key: tuple[str, str, str]) -> int | None:
        return self._last.get(key)

    def handled(self, key: tuple[str, str, str], signal: ResizeSignal) -> None:
        self._last[key] = max(signal.sequence, self._last.get(key, -1))


class _Attempt:
    """One signal's read -> plan -> patch steps, without I/O: the sync and the async resizer drive
    the same steps and differ only in how they call the API."""

    def __init__(self, namespace: str, pod_name: str, container: str, signal: ResizeSignal, sequences: _Sequences) -> None:
        self.namespace, self.pod_name, self.container, self.signal = namespace, pod_name, container, signal
        self.key = (namespace, pod_name, container)
        self.sequences = sequences
        self.plan: ResizePlan | None = None
        self.attempt = 0
        self._unreachable_since: float | None = None
        self._pod: Any = None
        self._state: ResizeState | None = None

    def unreachable(self, exc: Exception) -> ResizeOutcome | None:
        """None: wait ``UNREACHABLE_RETRY_S`` and start over; else the outcome (waited long enough)."""
        now = time.monotonic()
        self._unreachable_since = self._unreachable_since or now
        if now - self._unreachable_since < UNREACHABLE_WAIT_S:
            log.info("API server did not answer (%s); retrying the resize of %s/%s", exc, self.namespace, self.pod_name)
            return None
        return self.done(ResizeOutcome("unreachable", f"the API server did not answer for {UNREACHABLE_WAIT_S:.0f} s: {exc}",
                                       self.signal, self.plan, self.attempt))

    def plan_without_room(self, pod: Any) -> bool:
        """Plan on the pod as read; True when the plan raises a request, the only case where the
        node's room can change it. A Burstable memory increase moves the limit alone, and reading
        the node costs the Resource Manager most of its CPU per resize."""
        self._pod = pod
        self._state = resize_state(pod, self.container, last_sequence=self.sequences.get(self.key))
        self.plan = plan_resize(self.signal, self._state)
        return self.plan.changes and any(getattr(self.plan.requests, r) > getattr(self._state.requests, r)
                                         for r in ("cpu", "memory"))

    def read_failed(self, exc: Exception) -> ResizeOutcome:
        return _failed(exc, self.signal, self.namespace, self.pod_name, self.plan, self.attempt, "get", "pods")

    def planned(self, room: ResourceVector | None = None) -> ResizeOutcome | dict[str, Any]:
        """The outcome when there is nothing to patch, else the patch body; with ``room``, the plan
        is made again within it."""
        if room is not None:
            self.plan = plan_resize(self.signal, replace(self._state, room=room))
        if not self.plan.changes:
            return self.done(_planned(self.signal, self.plan, self.attempt))
        return resize_patch_body(self.container, self.plan.requests, self.plan.limits,
                                 resource_version=self._pod.metadata.resource_version)

    def patch_failed(self, exc: Exception) -> ResizeOutcome | None:
        """None: re-read and re-plan (a 409 with attempts left); else the outcome."""
        if api_status(exc) == 409 and self.attempt < MAX_ATTEMPTS:
            log.info("resize of %s/%s conflicted (attempt %d); re-reading the pod", self.namespace, self.pod_name,
                     self.attempt)
            return None
        return self.done(_failed(exc, self.signal, self.namespace, self.pod_name, self.plan, self.attempt,
                                 "patch", "pods/resize"))

    def patched(self) -> ResizeOutcome:
        assert self.plan is not None
        return self.done(_planned(self.signal, self.plan, self.attempt))

    def done(self, outcome: ResizeOutcome) -> ResizeOutcome:
        self.sequences.handled(self.key, self.signal)
        return outcome

    def next_attempt(self) -> bool:
        self.attempt += 1
        return True


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """What the clients raise when the API server does not answer (no HTTP status)."""
    import urllib3.exceptions

    errors: list[type[BaseException]] = [urllib3.exceptions.HTTPError, ConnectionError, asyncio.TimeoutError]
    try:
        import aiohttp

        errors.append(aiohttp.ClientConnectionError)
    except ImportError:  # pragma: no cover - the provider brings it
        pass
    return tuple(errors)


def _room_unknown(node_name: str, exc: Exception) -> None:
    log.info("room on node %s unknown (%s); resizes are not capped to it", node_name, api_message(exc))


def room_from_json(node: Mapping[str, Any], pods_on_node: Iterable[Mapping[str, Any]], pod: Any, container: str) -> ResourceVector:
    """Room for ``container``'s requests on its node: what the node has free beside the other pods
    (``node_capacity``, as the fit sensor counts it), less this pod's other containers.

    The node and its pods come as the API server's JSON: decoding them into client objects cost
    4x the CPU (28 ms for 20 pods) and capped one event loop at about 20 resizes a second.
    """
    uid, name = pod.metadata.uid, pod.metadata.name
    others = [p for p in pods_on_node
              if ((p.get("metadata") or {}).get("uid") != uid if uid else (p.get("metadata") or {}).get("name") != name)]
    free = node_capacity(node, others).free.as_dict()
    mine = pod_requests(pod, skip_container=container).as_dict()
    return ResourceVector.from_dict({r: max(0.0, v - mine[r]) for r, v in free.items()})


class PodResizer:
    """Resizes containers of running pods with the sync ``CoreV1Api``."""

    def __init__(self, core_v1_api: Any, *, read_node: bool = True) -> None:
        self._core = core_v1_api
        self._read_node = read_node
        self._sequences = _Sequences()

    def apply(self, namespace: str, pod_name: str, container: str, signal: ResizeSignal) -> ResizeOutcome:
        steps = _Attempt(namespace, pod_name, container, signal, self._sequences)
        unreachable = unreachable_errors()
        while steps.next_attempt():
            try:
                outcome = self._once(steps)
            except unreachable as exc:
                if (outcome := steps.unreachable(exc)) is None:
                    time.sleep(UNREACHABLE_RETRY_S)
                    continue
            if outcome is not None:
                return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, steps: _Attempt) -> ResizeOutcome | None:
        """Read, plan, patch; None after a conflict worth another attempt."""
        errors = api_errors()
        try:
            pod = self._core.read_namespaced_pod(name=steps.pod_name, namespace=steps.namespace)
        except errors as exc:
            return steps.read_failed(exc)
        needs_room = steps.plan_without_room(pod) and self._read_node
        body = steps.planned(self._room(pod, steps.container) if needs_room else None)
        if isinstance(body, ResizeOutcome):
            return body
        try:
            self._core.patch_namespaced_pod_resize(name=steps.pod_name, namespace=steps.namespace, body=body,
                                                   _content_type=STRATEGIC_MERGE)
        except errors as exc:
            return steps.patch_failed(exc)
        return steps.patched()

    def _room(self, pod: Any, container: str) -> ResourceVector | None:
        node_name = pod.spec.node_name
        if not node_name:
            return None
        try:
            node = json.loads(self._core.read_node(name=node_name, _preload_content=False).data)
            pods = json.loads(self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node_name}", _preload_content=False).data)
        except api_errors() as exc:
            return _room_unknown(node_name, exc)
        return room_from_json(node, pods.get("items") or [], pod, container)


class AsyncPodResizer:
    """The same steps with a ``kubernetes_asyncio`` ``CoreV1Api`` (for the deferrable trigger)."""

    def __init__(self, core_v1_api: Any, *, read_node: bool = True) -> None:
        self._core = core_v1_api
        self._read_node = read_node
        self._sequences = _Sequences()

    async def apply(self, namespace: str, pod_name: str, container: str, signal: ResizeSignal) -> ResizeOutcome:
        steps = _Attempt(namespace, pod_name, container, signal, self._sequences)
        unreachable = unreachable_errors()
        while steps.next_attempt():
            try:
                outcome = await self._once(steps)
            except unreachable as exc:
                if (outcome := steps.unreachable(exc)) is None:
                    await asyncio.sleep(UNREACHABLE_RETRY_S)
                    continue
            if outcome is not None:
                return outcome
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(self, steps: _Attempt) -> ResizeOutcome | None:
        errors = api_errors()
        try:
            pod = await self._core.read_namespaced_pod(name=steps.pod_name, namespace=steps.namespace)
        except errors as exc:
            return steps.read_failed(exc)
        needs_room = steps.plan_without_room(pod) and self._read_node
        body = steps.planned(await self._room(pod, steps.container) if needs_room else None)
        if isinstance(body, ResizeOutcome):
            return body
        try:
            await self._core.patch_namespaced_pod_resize(name=steps.pod_name, namespace=steps.namespace, body=body,
                                                         _content_type=STRATEGIC_MERGE)
        except errors as exc:
            return steps.patch_failed(exc)
        return steps.patched()

    async def _room(self, pod: Any, container: str) -> ResourceVector | None:
        node_name = pod.spec.node_name
        if not node_name:
            return None
        try:
            node = await _read_json(await self._core.read_node(name=node_name, _preload_content=False))
            pods = await _read_json(await self._core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node_name}", _preload_content=False))
        except api_errors() as exc:
            return _room_unknown(node_name, exc)
        return room_from_json(node, pods.get("items") or [], pod, container)


async def _read_json(response: Any) -> dict[str, Any]:
    """The body of a kubernetes_asyncio call made with ``_preload_content=False``."""
    try:
        return json.loads(await response.read())
    finally:
        response.release()

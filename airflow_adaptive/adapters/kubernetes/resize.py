"""Apply a resize signal to a running pod through the ``pods/resize`` subresource.

Thin I/O around ``logic/resize_plan.py``: read the pod (and its node, when allowed), plan, patch.
The same steps exist twice, for the sync client (operator process) and for kubernetes_asyncio
(the deferrable trigger); neither decides anything.

| API answer | outcome | why |
|---|---|---|
| 200 | ``applied`` / ``capped`` | the desired size is recorded; the kubelet actuates it (watch ``PodResizeInProgress``) |
| 409 | re-read, re-plan, retry; ``conflict`` after ``MAX_ATTEMPTS`` (3) | the pod changed under us; three tries outlast a kubelet status update |
| 422 | ``rejected`` with the API's message | the API refused this size (QoS change, limit below request, ...) |
| 404 | ``gone`` | the pod was deleted (the task ended or was killed) |
| 403 | ``ResizeForbidden`` | RBAC: the message names the missing ``patch pods/resize`` rule |

Reading the node needs cluster-scoped ``get nodes`` and ``list pods``; without them the room on
the node is unknown, the plan does not cap, and the kubelet answers ``Deferred``/``Infeasible``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

from airflow_adaptive.adapters.kubernetes.pod_spec import node_room, resize_patch_body, resize_state
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.resize_plan import ResizePlan, plan_resize

log = logging.getLogger(__name__)

Status = Literal["applied", "capped", "deferred", "ignored", "rejected", "conflict", "gone"]
MAX_ATTEMPTS = 3
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


def _failed(exc: Exception, signal: ResizeSignal, namespace: str, pod_name: str, plan: ResizePlan | None,
            attempts: int, verb: str, resource: str) -> ResizeOutcome:
    """The outcome of an API error other than a retriable 409; 403 raises."""
    status = api_status(exc)
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


class PodResizer:
    """Resizes containers of running pods with the sync ``CoreV1Api``."""

    def __init__(self, core_v1_api: Any, *, read_node: bool = True) -> None:
        self._core = core_v1_api
        self._read_node = read_node
        self._sequences = _Sequences()

    def apply(self, namespace: str, pod_name: str, container: str, signal: ResizeSignal) -> ResizeOutcome:
        key = (namespace, pod_name, container)
        errors = api_errors()
        plan = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                pod = self._core.read_namespaced_pod(name=pod_name, namespace=namespace)
            except errors as exc:
                return _failed(exc, signal, namespace, pod_name, plan, attempt, "get", "pods")
            room = self._room(pod, container) if self._read_node else None
            plan = plan_resize(signal, resize_state(pod, container, room=room, last_sequence=self._sequences.get(key)))
            if not plan.changes:
                self._sequences.handled(key, signal)
                return _planned(signal, plan, attempt)
            try:
                self._core.patch_namespaced_pod_resize(name=pod_name, namespace=namespace, _content_type=STRATEGIC_MERGE,
                                                       body=resize_patch_body(container, plan.requests, plan.limits))
            except errors as exc:
                if api_status(exc) == 409 and attempt < MAX_ATTEMPTS:
                    log.info("resize of %s/%s conflicted (attempt %d); re-reading the pod", namespace, pod_name, attempt)
                    continue
                self._sequences.handled(key, signal)
                return _failed(exc, signal, namespace, pod_name, plan, attempt, "patch", "pods/resize")
            self._sequences.handled(key, signal)
            return _planned(signal, plan, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _room(self, pod: Any, container: str) -> ResourceVector | None:
        node_name = pod.spec.node_name
        if not node_name:
            return None
        try:
            node = self._core.read_node(name=node_name)
            pods = self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node_name}").items
        except api_errors() as exc:
            log.info("room on node %s unknown (%s); resizes are not capped to it", node_name, api_message(exc))
            return None
        return node_room(node, pods, pod, container)


class AsyncPodResizer:
    """The same steps with a ``kubernetes_asyncio`` ``CoreV1Api`` (for the deferrable trigger)."""

    def __init__(self, core_v1_api: Any, *, read_node: bool = True) -> None:
        self._core = core_v1_api
        self._read_node = read_node
        self._sequences = _Sequences()

    async def apply(self, namespace: str, pod_name: str, container: str, signal: ResizeSignal) -> ResizeOutcome:
        key = (namespace, pod_name, container)
        errors = api_errors()
        plan = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                pod = await self._core.read_namespaced_pod(name=pod_name, namespace=namespace)
            except errors as exc:
                return _failed(exc, signal, namespace, pod_name, plan, attempt, "get", "pods")
            room = await self._room(pod, container) if self._read_node else None
            plan = plan_resize(signal, resize_state(pod, container, room=room, last_sequence=self._sequences.get(key)))
            if not plan.changes:
                self._sequences.handled(key, signal)
                return _planned(signal, plan, attempt)
            try:
                await self._core.patch_namespaced_pod_resize(name=pod_name, namespace=namespace, _content_type=STRATEGIC_MERGE,
                                                             body=resize_patch_body(container, plan.requests, plan.limits))
            except errors as exc:
                if api_status(exc) == 409 and attempt < MAX_ATTEMPTS:
                    log.info("resize of %s/%s conflicted (attempt %d); re-reading the pod", namespace, pod_name, attempt)
                    continue
                self._sequences.handled(key, signal)
                return _failed(exc, signal, namespace, pod_name, plan, attempt, "patch", "pods/resize")
            self._sequences.handled(key, signal)
            return _planned(signal, plan, attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _room(self, pod: Any, container: str) -> ResourceVector | None:
        node_name = pod.spec.node_name
        if not node_name:
            return None
        try:
            node = await self._core.read_node(name=node_name)
            pods = (await self._core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node_name}")).items
        except api_errors() as exc:
            log.info("room on node %s unknown (%s); resizes are not capped to it", node_name, api_message(exc))
            return None
        return node_room(node, pods, pod, container)

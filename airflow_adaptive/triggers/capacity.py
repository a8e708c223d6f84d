"""The deferrable half of ``PredictedResourcesFitSensor``: wait for room in the triggerer.

It reads the cluster with kubernetes_asyncio (:func:`read_cluster_state_async`, the same JSON
conversion the sync sensor uses) and calls the same pure ``fit``; the size was predicted by the
sensor before it deferred, so the triggerer never loads a model. Events are plain dicts:

| ``status`` | when | also |
|---|---|---|
| ``success`` | ``fit`` says ``fits`` | ``message``, ``node``, ``size`` (the predicted size, for XCom) |
| ``error`` | ``fit`` says ``never``; RBAC refuses a read; the cluster's data does not parse; the deadline passed | ``message`` |

An API error other than 403 (a restart, a timeout) is logged and the next poll tries again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.resources import GPU_RESOURCE, ResourceVector
from airflow_adaptive.logic.capacity import GPU_LABEL_KEY, ClusterState, FitResult, fit_state


class CapacityTrigger(BaseTrigger):
    """Poll the cluster until the stage's pod fits (see the module docstring).

    :param requests: / ``limits`` / ``overhead``: ``ResourceVector.as_dict()`` of the stage's
        container and of the rest of its pod.
    :param deadline: epoch seconds after which an ``error`` event says why it still does not fit.
    """

    def __init__(self, *, requests: dict[str, float], limits: dict[str, float], gpu_type: str | None,
                 namespace: str, kubernetes_conn_id: str | None = "kubernetes_default",
                 gpu_label_key: str = GPU_LABEL_KEY, overhead: dict[str, float] | None = None,
                 poll_interval: float = 60.0, deadline: float | None = None, size: dict[str, Any] | None = None,
                 config_file: str | None = None, cluster_context: str | None = None,
                 in_cluster: bool | None = None, gpu_resource: str = GPU_RESOURCE) -> None:
        super().__init__()
        self.requests = dict(requests)
        self.limits = dict(limits)
        self.gpu_type = gpu_type
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id
        self.gpu_label_key = gpu_label_key
        self.overhead = dict(overhead or {})
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self.size = size
        self.config_file = config_file
        self.cluster_context = cluster_context
        self.in_cluster = in_cluster
        self.gpu_resource = gpu_resource  # nvidia.com/gpu, or a MIG slice nvidia.com/mig-<profile>

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "requests": self.requests, "limits": self.limits, "gpu_type": self.gpu_type,
            "namespace": self.namespace, "kubernetes_conn_id": self.kubernetes_conn_id,
            "gpu_label_key": self.gpu_label_key, "overhead": self.overhead, "poll_interval": self.poll_interval,
            "deadline": self.deadline, "size": self.size, "config_file": self.config_file,
            "cluster_context": self.cluster_context, "in_cluster": self.in_cluster, "gpu_resource": self.gpu_resource,
        }

    async def _cluster_state(self) -> ClusterState:
        """The cluster now (the seam a test replaces)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio import client as async_client

        from airflow_adaptive.adapters.kubernetes.cluster_state import read_cluster_state_async

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id, config_file=self.config_file,
                                   cluster_context=self.cluster_context, in_cluster=self.in_cluster)
        async with hook.get_conn() as api_client:
            return await read_cluster_state_async(async_client.CoreV1Api(api_client), self.namespace)

    def check(self, state: ClusterState) -> FitResult:
        return fit_state(ResourceVector.from_dict(self.requests), ResourceVector.from_dict(self.limits), self.gpu_type,
                         state, self.gpu_label_key, overhead=ResourceVector.from_dict(self.overhead),
                         gpu_resource=self.gpu_resource)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        last = "the cluster was not read yet"
        while True:
            try:
                result = self.check(await self._cluster_state())
            except UserError as exc:  # RBAC (CapacityForbidden), a quantity that does not parse
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            except Exception as exc:  # noqa: BLE001 - API restarts, timeouts: look again next poll
                last = f"cannot read the cluster ({type(exc).__name__}: {exc})"
                self.log.warning("%s; trying again in %.0f s", last, self.poll_interval)
            else:
                if result.status == "fits":
                    yield TriggerEvent({"status": "success", "message": result.message, "node": result.node,
                                        "size": self.size})
                    return
                if result.status == "never":
                    yield TriggerEvent({"status": "error", "message": result.message})
                    return
                last = result.message
                self.log.info("waiting for room: %s", last)
            if self.deadline is not None and time.time() + self.poll_interval > self.deadline:
                yield TriggerEvent({"status": "error", "message": f"timed out waiting for room: {last}"})
                return
            await asyncio.sleep(self.poll_interval)


__all__ = ["CapacityTrigger"]

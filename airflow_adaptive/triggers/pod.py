"""The provider's pod trigger, plus in-place resizing while the deferred stage runs.

``AdaptivePodTrigger`` wraps ``KubernetesPodTrigger.run`` rather than copying it: while the base
trigger waits for the pod, a task follows the monitor sidecar's log and applies each resize
signal through ``AsyncPodResizer`` (the same ``logic/resize_plan.py`` the sync path uses). The
event the base trigger yields is passed on with two more keys:

| key | value |
|---|---|
| ``resizes`` | one ``ResizeOutcome.to_dict()`` per signal handled while this trigger ran |
| ``last_resize_sequence`` | the last signal sequence handled; hand it back when deferring again (``logging_interval``) so no signal is applied twice |

A failure to follow or resize is logged and never fails the stage: it runs on at its size.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
from airflow.triggers.base import TriggerEvent

from airflow_adaptive.adapters.kubernetes.resize import AsyncPodResizer, ResizeForbidden
from airflow_adaptive.adapters.kubernetes.signal_follower import follow_signals_async
from airflow_adaptive.domain.signals import ResizeSignal

DEFAULT_MONITOR = "adaptive-monitor"


class AdaptivePodTrigger(KubernetesPodTrigger):
    """``KubernetesPodTrigger`` that also applies the monitor's resize signals to the workload container.

    :param monitor_container_name: the monitor sidecar whose log carries the signals.
    :param workload_container_name: the container to resize (default: ``base_container_name``).
    :param resize: False follows nothing (the base trigger alone).
    :param last_resize_sequence: signals up to this sequence were handled before (a re-deferral).
    """

    def __init__(self, *args: Any, monitor_container_name: str = DEFAULT_MONITOR,
                 workload_container_name: str | None = None, resize: bool = True,
                 last_resize_sequence: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor_container_name = monitor_container_name
        self.workload_container_name = workload_container_name or self.base_container_name
        self.resize = resize
        self.last_resize_sequence = last_resize_sequence

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.update(
            monitor_container_name=self.monitor_container_name,
            workload_container_name=self.workload_container_name,
            resize=self.resize,
            last_resize_sequence=self.last_resize_sequence,
        )
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        resizes: list[dict[str, Any]] = []
        follower = asyncio.create_task(self._follow_and_resize(resizes)) if self.resize else None
        try:
            async for event in super().run():
                await _stop(follower)  # no resize lands after the event is built
                yield TriggerEvent({**event.payload, "resizes": list(resizes),
                                    "last_resize_sequence": self.last_resize_sequence})
        finally:
            await _stop(follower)

    async def _follow_and_resize(self, resizes: list[dict[str, Any]]) -> None:
        from kubernetes_asyncio import client as async_client

        where = f"{self.pod_namespace}/{self.pod_name}"
        try:
            async with self.hook.get_conn() as api_client:
                core = async_client.CoreV1Api(api_client)
                resizer = AsyncPodResizer(core)

                async def on_signal(signal: ResizeSignal) -> None:
                    outcome = await resizer.apply(self.pod_namespace, self.pod_name, self.workload_container_name, signal)
                    resizes.append(outcome.to_dict())
                    self.last_resize_sequence = signal.sequence
                    self.log.info("resize %s %s -> %s of %s[%s]: %s (%s)", signal.resource, signal.old, signal.new,
                                  where, self.workload_container_name, outcome.status, outcome.message)

                await follow_signals_async(core, self.pod_namespace, self.pod_name, self.monitor_container_name,
                                           on_signal, last_sequence=self.last_resize_sequence)
        except asyncio.CancelledError:
            raise
        except ResizeForbidden as exc:
            resizes.append({"status": "forbidden", "message": str(exc)})
            self.log.error("no more resizes for %s: %s", where, exc)
        except Exception:
            self.log.exception("following the monitor of %s failed; the stage runs on at its current size", where)


async def _stop(task: asyncio.Task | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""The provider's pod trigger, plus in-place resizing while the deferred stage runs.

``AdaptivePodTrigger`` wraps ``KubernetesPodTrigger.run`` rather than copying it: while the base
trigger waits for the pod, a task follows the monitor sidecar's log and applies each resize
signal through ``AsyncPodResizer`` (the same ``logic/resize_plan.py`` the sync path uses). The
event the base trigger yields is passed on with these keys added:

| key | value |
|---|---|
| ``resizes`` | one ``ResizeOutcome.to_dict()`` per signal handled while this trigger ran |
| ``last_resize_sequence`` | the last signal sequence handled; hand it back when deferring again (``logging_interval``) so no signal is applied twice |
| ``monitor_statuses`` | the monitor's status events (``unavailable`` with its reason) |
| ``monitor_rejected`` | lines of the monitor's log refused by ``logic/monitor_trust.py``, counted by reason |
| ``observed_peak`` | the monitor summary's peak per resource (empty until the pod ends): the operator's prediction metrics |

With ``stage_run`` (tracking URI, experiment, run id) the trigger is the stage run's writer for
what the monitor reports while the task is deferred: its usage samples every ``FLUSH_S`` (in a
worker thread: the MLflow client is blocking) and, when the pod ends, the rest, the monitor's
summary and the refused lines. The monitor itself writes nothing anywhere but its stdout.

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
from airflow_adaptive.logic.monitor_trust import MonitorLines, TrustConfig

DEFAULT_MONITOR = "adaptive-monitor"
FLUSH_S = 30.0  # usage samples reach the stage run at least this often while the task is deferred
DRAIN_S = 15.0  # at most, for the follower to read a finished monitor's log to its end


class AdaptivePodTrigger(KubernetesPodTrigger):
    """``KubernetesPodTrigger`` that also applies the monitor's resize signals to the workload container.

    :param monitor_container_name: the monitor sidecar whose log carries the signals.
    :param workload_container_name: the container to resize (default: ``base_container_name``).
    :param resize: False follows nothing (the base trigger alone).
    :param last_resize_sequence: signals up to this sequence were handled before (a re-deferral).
    """

    def __init__(self, *args: Any, monitor_container_name: str = DEFAULT_MONITOR,
                 workload_container_name: str | None = None, resize: bool = True,
                 last_resize_sequence: int | None = None, stage_run: dict[str, str] | None = None,
                 maximum: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.monitor_container_name = monitor_container_name
        self.workload_container_name = workload_container_name or self.base_container_name
        self.resize = resize
        self.last_resize_sequence = last_resize_sequence
        self.stage_run = dict(stage_run) if stage_run else None
        self.maximum = dict(maximum or {})
        self._run_log = None  # the stage run's writer, made on the first write

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs.update(
            monitor_container_name=self.monitor_container_name,
            workload_container_name=self.workload_container_name,
            resize=self.resize,
            last_resize_sequence=self.last_resize_sequence,
            stage_run=self.stage_run,
            maximum=self.maximum,
        )
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        resizes: list[dict[str, Any]] = []
        monitor = MonitorLines(TrustConfig(maximum=self.maximum), last_sequence=self.last_resize_sequence)
        follows = self.resize or self.stage_run is not None
        follower = asyncio.create_task(self._follow_and_resize(resizes, monitor)) if follows else None
        flusher = asyncio.create_task(self._flush_periodically(monitor)) if self.stage_run else None
        try:
            async for event in super().run():
                if event.payload.get("status") != "running":  # the pod ended: its monitor's log is complete
                    await _drain(follower, DRAIN_S)
                await _stop(follower)  # no resize lands after the event is built
                await _stop(flusher)
                await self._write(monitor, final=True)
                yield TriggerEvent({**event.payload, "resizes": list(resizes),
                                    "last_resize_sequence": self.last_resize_sequence,
                                    "monitor_statuses": [{"event": s.event, "reason": s.reason, "time": s.time}
                                                         for s in monitor.statuses],
                                    "monitor_rejected": dict(monitor.rejected),
                                    "observed_peak": dict(monitor.summary.peak) if monitor.summary else {}})
        finally:
            await _stop(follower)
            await _stop(flusher)

    async def _flush_periodically(self, monitor: MonitorLines) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            await self._write(monitor, final=False)

    async def _write(self, monitor: MonitorLines, *, final: bool) -> None:
        """The samples read so far (and at the end the summary and refused lines) into the stage
        run; a failure is logged and the samples are kept for the next write."""
        if not self.stage_run:
            return
        from airflow_adaptive.adapters.mlflow.stage_run_log import StageRunLog
        from airflow_adaptive.domain.monitor_protocol import summary_metrics

        samples = monitor.take_samples()
        metrics = summary_metrics(monitor.summary) if final else None
        rejected = dict(monitor.rejected) if final else {}
        if not (samples or metrics or rejected):
            return
        if self._run_log is None:
            self._run_log = StageRunLog(self.stage_run["tracking_uri"], self.stage_run.get("experiment") or "airflow-adaptive-stages")
        try:
            await asyncio.to_thread(self._run_log.record_monitor_lines, self.stage_run["run_id"], [u.sample for u in samples],
                                    metrics, rejected)
        except Exception as exc:  # noqa: BLE001 - MLflow down: keep the samples, say so
            monitor.samples[:0] = samples
            self.log.warning("cannot write the monitor's samples to MLflow run %s (%s); kept for the next write",
                             self.stage_run["run_id"], exc)

    async def _follow_and_resize(self, resizes: list[dict[str, Any]], monitor: MonitorLines) -> None:
        from kubernetes_asyncio import client as async_client

        where = f"{self.pod_namespace}/{self.pod_name}"
        try:
            async with self.hook.get_conn() as api_client:
                core = async_client.CoreV1Api(api_client)
                resizer = AsyncPodResizer(core)

                async def on_signal(signal: ResizeSignal) -> None:
                    if not self.resize:  # shadow mode or in_place_resize=False: usage only
                        self.last_resize_sequence = signal.sequence
                        return
                    outcome = await resizer.apply(self.pod_namespace, self.pod_name, self.workload_container_name, signal)
                    resizes.append(outcome.to_dict())
                    self.last_resize_sequence = signal.sequence
                    self.log.info("resize %s %s -> %s of %s[%s]: %s (%s)", signal.resource, signal.old, signal.new,
                                  where, self.workload_container_name, outcome.status, outcome.message)

                await follow_signals_async(core, self.pod_namespace, self.pod_name, self.monitor_container_name,
                                           on_signal, last_sequence=self.last_resize_sequence, monitor=monitor)
        except asyncio.CancelledError:
            raise
        except ResizeForbidden as exc:
            resizes.append({"status": "forbidden", "message": str(exc)})
            self.log.error("no more resizes for %s: %s", where, exc)
        except Exception:
            self.log.exception("following the monitor of %s failed; the stage runs on at its current size", where)


async def _drain(task: asyncio.Task | None, timeout_s: float) -> None:
    """Let ``task`` end by itself (the follower, at the end of a finished container's log)."""
    if task is None or task.done():
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), timeout_s)


async def _stop(task: asyncio.Task | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

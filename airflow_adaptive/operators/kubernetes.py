"""The operator's Kubernetes path: the pod narrowed to the plan, resizes applied while KPO waits,
OOM kills recorded before KPO deletes the pod.

Only narrow hooks of KubernetesPodOperator are used:

| KPO hook | what airflow-adaptive does there |
|---|---|
| ``build_pod_request_obj`` | :func:`shape_stage_pod`: sized container, monitor sidecar, GPU-type affinity |
| callback ``on_pod_creation`` (sync mode) | start following the monitor's log; each signal -> ``pods/resize`` |
| callback ``on_pod_completion`` (both modes) | stop following; OOMKilled / CUDA out-of-memory -> the stage's MLflow run |
| ``defer`` | the provider's pod trigger becomes :class:`~airflow_adaptive.triggers.pod.AdaptivePodTrigger` (same kwargs, plus the monitor's) |
| ``trigger_reentry`` | log the trigger's resize decisions, keep the last signal sequence for a re-deferral |
"""

from __future__ import annotations

import json
import time
from typing import Any

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from kubernetes.client import models as k8s

from airflow_adaptive.domain.stage_run import OomEvent
from airflow_adaptive.logic.oom import gpu_out_of_memory, kernel_oom_killed

MONITOR_CONTAINER = "adaptive-monitor"
#: The image built from the repository's Dockerfile (airflow-adaptive installed, non-root USER).
MONITOR_IMAGE = "ghcr.io/airflow-adaptive/monitor:0.1.0"
LOG_TAIL_LINES = 200  # where a CUDA out-of-memory error would be: the end of the workload's log


def shape_stage_pod(operator, pod: k8s.V1Pod, plan) -> k8s.V1Pod:
    from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod

    monitor = MonitorSidecar(
        image=operator.monitor_image or MONITOR_IMAGE, interval_s=operator.monitor_interval, name=MONITOR_CONTAINER,
        env={} if plan.resizable else {"AIRFLOW_ADAPTIVE_CHANNEL": "recommend"},
    )
    tracking = operator._run_log.tracking_uri if operator._run_log is not None else None
    return shape_pod(
        pod, container=operator.base_container_name, size=plan.size, monitor=monitor,
        run_id=operator._stage_run, tracking_uri=tracking,
        profile_json=json.dumps(plan.profile.to_dict()) if plan.profile else None,
        service_account=operator.service_account_name, maximum=plan.limited if plan.limited.memory > 0 else None,
    )


class AdaptivePodCallbacks(KubernetesPodOperatorCallback):
    """Added to every AdaptiveTrainingOperator's KPO callbacks (after the user's own)."""

    @staticmethod
    def on_pod_creation(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        if operator is None or str(mode).lower().endswith("async") or not _resizable(operator) or pod is None:
            return
        from airflow_adaptive.adapters.kubernetes.resize import PodResizer
        from airflow_adaptive.adapters.kubernetes.signal_follower import SignalFollowerThread

        namespace, name = pod.metadata.namespace, pod.metadata.name
        resizer = PodResizer(client)
        applied: list[dict[str, Any]] = []

        def on_signal(signal) -> None:
            outcome = resizer.apply(namespace, name, operator.base_container_name, signal)
            operator.log.info("resize %s %s -> %s: %s (%s)", signal.resource, signal.old, signal.new, outcome.status, outcome.message)
            applied.append({**outcome.to_dict(), "time": time.time(), "resource": signal.resource, "old": signal.old, "new": signal.new,
                            "reason": signal.reason})

        thread = SignalFollowerThread(client, namespace, name, MONITOR_CONTAINER, on_signal)
        operator._resize_follower, operator._resizes = thread, applied
        thread.start()

    @staticmethod
    def on_pod_completion(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        if operator is None or pod is None:
            return
        follower = getattr(operator, "_resize_follower", None)
        if follower is not None:
            follower.stop()
        record_pod_outcome(operator, pod, client)


def _resizable(operator) -> bool:
    plan = getattr(operator, "_plan", None)
    return plan is not None and plan.resizable


def record_pod_outcome(operator, pod: k8s.V1Pod, client) -> None:
    """OOM kills (kernel, or CUDA out of memory in the log) of this try go to its MLflow run now:
    KPO deletes the pod next, and Airflow clears XCom before the retry."""
    run_id, run_log = getattr(operator, "_stage_run", None), getattr(operator, "_run_log", None)
    if not run_id or run_log is None:
        return
    container = operator.base_container_name
    statuses = (pod.status.container_statuses or []) if pod.status else []
    status = next((s for s in statuses if s.name == container), None)
    try_number = operator._try_number
    limit = operator._plan.size.limits.memory if operator._plan else 0.0
    events = []
    if status is not None and kernel_oom_killed(status):
        events.append(OomEvent(time.time(), container, limit, try_number, "kernel"))
    else:
        try:
            tail = client.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=container, tail_lines=LOG_TAIL_LINES)
        except Exception as exc:  # noqa: BLE001 - the log is gone or unreadable: nothing more to learn
            operator.log.info("cannot read the workload's log tail for GPU out-of-memory errors: %s", exc)
            tail = ""
        if gpu_out_of_memory(tail.splitlines()):
            events.append(OomEvent(time.time(), container, operator._plan.size.limits.gpu_memory if operator._plan else 0.0, try_number, "gpu"))
    try:
        if events:
            run_log.record_oom(run_id, events)
            operator.log.warning("try %d of task '%s': %s out of memory, recorded in MLflow run %s for the next try",
                                 try_number, operator.task_id, events[0].kind, run_id)
        resizes = getattr(operator, "_resizes", None)
        if resizes:
            run_log.log_resizes(run_id, [r for r in resizes if r.get("status") in ("applied", "capped")])
    except Exception as exc:  # noqa: BLE001 - MLflow down: say so, never fail the pod's outcome on it
        operator.log.warning("cannot record the pod's outcome in MLflow run %s: %s", run_id, exc)

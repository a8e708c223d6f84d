"""The operator's Kubernetes path: the pod narrowed to the plan, resizes applied while KPO waits,
OOM kills recorded before KPO deletes the pod.

Only narrow hooks of KubernetesPodOperator are used:

| KPO hook | what airflow-adaptive does there |
|---|---|
| ``build_pod_request_obj`` | :func:`shape_stage_pod`: sized container, monitor sidecar, GPU-type affinity |
| callback ``on_pod_creation`` (sync mode) | start following the monitor's log; each signal -> ``pods/resize`` |
| callback ``on_pod_completion`` (both modes) | stop following; OOMKilled / CUDA out-of-memory -> the stage's MLflow run |
| callback ``on_pod_cleanup`` | stop following (also when the pod never started) |
| ``defer`` | the provider's pod trigger becomes :class:`~airflow_adaptive.triggers.pod.AdaptivePodTrigger` (same kwargs, plus the monitor's) |
| ``trigger_reentry`` | log the trigger's resize decisions, keep the last signal sequence for a re-deferral |
"""

from __future__ import annotations

import json
import time
from typing import Any

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from kubernetes.client import models as k8s

from airflow_adaptive.domain.signals import UNAVAILABLE
from airflow_adaptive.domain.stage_run import OomEvent
from airflow_adaptive.logic.oom import gpu_out_of_memory, kernel_oom_killed, try_outcome
from airflow_adaptive.logic.stage_plan import deferred_sizes

MONITOR_CONTAINER = "adaptive-monitor"
#: The image built from the repository's Dockerfile (airflow-adaptive installed, non-root USER).
MONITOR_IMAGE = "ghcr.io/airflow-adaptive/monitor:0.1.0"
DRAIN_S = 15.0  # at most, for the follower to read a finished monitor's log to its end
LOG_TAIL_LINES = 200  # where a CUDA out-of-memory error would be: the end of the workload's log


def shape_stage_pod(operator, pod: k8s.V1Pod, plan) -> k8s.V1Pod:
    from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod

    monitor = MonitorSidecar(
        image=operator.monitor_image or MONITOR_IMAGE, interval_s=operator.monitor_interval, name=MONITOR_CONTAINER,
        env={} if plan.resizable else {"AIRFLOW_ADAPTIVE_CHANNEL": "recommend"},
    )
    # No MLflow address for the monitor: it prints its samples beside its signals and the operator
    # writes the stage run (one writer; no credentials, network or spool in the pod).
    return shape_pod(
        pod, container=operator.base_container_name, size=plan.size, monitor=monitor,
        run_id=None, tracking_uri=None,
        profile_json=json.dumps(plan.profile.to_dict()) if plan.profile else None,
        service_account=operator.service_account_name, maximum=plan.limited if plan.limited.memory > 0 else None,
    )


class AdaptivePodCallbacks(KubernetesPodOperatorCallback):
    """Added to every AdaptiveTrainingOperator's KPO callbacks (after the user's own)."""

    @staticmethod
    def on_pod_creation(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        # KPO calls this with mode SYNC from its deferrable path too: there the trigger follows.
        if operator is None or operator.deferrable or getattr(operator, "_plan", None) is None or pod is None:
            return
        from airflow_adaptive.adapters.kubernetes.resize import PodResizer
        from airflow_adaptive.adapters.kubernetes.signal_follower import SignalFollowerThread

        namespace, name = pod.metadata.namespace, pod.metadata.name
        resizable = getattr(operator, "_resizable", False)
        resizer = PodResizer(client) if resizable else None
        applied: list[dict[str, Any]] = []

        def on_signal(signal) -> None:
            if resizer is None:  # shadow mode or in_place_resize=False: the monitor's usage is still read
                return
            outcome = resizer.apply(namespace, name, operator.base_container_name, signal)
            operator.log.info("resize %s %s -> %s: %s (%s)", signal.resource, signal.old, signal.new, outcome.status, outcome.message)
            applied.append({**outcome.to_dict(), "time": time.time(), "resource": signal.resource, "old": signal.old, "new": signal.new,
                            "reason": signal.reason})

        monitor = monitor_lines(operator)
        thread = SignalFollowerThread(client, namespace, name, MONITOR_CONTAINER, on_signal, monitor=monitor)
        operator._resize_follower, operator._resizes, operator._monitor_lines = thread, applied, monitor
        thread.start()

    @staticmethod
    def on_pod_completion(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        if operator is None or pod is None:
            return
        # The pod has ended, so the monitor's log is complete: let the follower read it to the end
        # (the summary is its last line) before stopping it.
        _stop_following(operator, drain_s=DRAIN_S)
        record_pod_outcome(operator, pod, client)

    @staticmethod
    def on_pod_cleanup(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        # KPO always calls this (from a ``finally``), also when the pod never started or the API failed.
        if operator is not None:
            _stop_following(operator)


def monitor_lines(operator):
    """What the operator accepts from the monitor's log, bounded by the user's limits."""
    from airflow_adaptive.logic.monitor_trust import MonitorLines, TrustConfig

    plan = getattr(operator, "_plan", None)
    maximum = {r: v for r, v in (plan.limited.as_dict() if plan is not None else {}).items() if r in ("cpu", "memory") and v > 0}
    return MonitorLines(TrustConfig(maximum=maximum))


def record_monitor(operator, run_log, run_id: str, monitor) -> None:
    """The monitor's samples, summary and refused lines into the stage run (the only writer)."""
    if monitor is None:
        return
    from airflow_adaptive.domain.monitor_protocol import summary_metrics

    summary = monitor.summary
    metrics = summary_metrics(summary)
    samples = [u.sample for u in monitor.take_samples()]
    run_log.record_monitor_lines(run_id, samples, metrics, dict(monitor.rejected))
    if monitor.rejected:
        operator.log.warning("the monitor's log had lines the operator refused (%s): %s; the stage run is tagged "
                             "untrusted and retraining leaves it out", dict(monitor.rejected), "; ".join(monitor.notes))
    operator.log.info("the monitor reported %d usage samples%s", monitor.sample_count,
                      "" if summary else " and no summary (it was stopped before it could write one)")


def monitor_image_message(image: str, problem: str) -> str:
    return (f"the monitor sidecar's image {image} cannot be pulled ({problem}), so the stage cannot start. "
            "Build the image from the project's Dockerfile, push it to a registry your cluster pulls from and "
            "pass it as monitor_image= (README: 'The monitor image'); or run the stage with sizing_mode='off'")


def wait_for_monitor(operator, pod: k8s.V1Pod) -> None:
    """Until the monitor sidecar runs (or the pod left Pending), within the startup timeout; an
    image that cannot be pulled fails the task with what to do."""
    from airflow.exceptions import AirflowException

    from airflow_adaptive.adapters.kubernetes.pod_spec import sidecar_start_problem, sidecar_started

    deadline = time.monotonic() + float(getattr(operator, "startup_timeout_seconds", 120) or 120)
    interval = min(float(getattr(operator, "startup_check_interval_seconds", 1) or 1), 1.0)
    while time.monotonic() < deadline:
        remote = operator.pod_manager.read_pod(pod)
        problem = sidecar_start_problem(remote, MONITOR_CONTAINER)
        if problem:
            image = next((c.image for c in remote.spec.init_containers or [] if c.name == MONITOR_CONTAINER), "?")
            operator.log.error("%s", monitor_image_message(image, problem))
            raise AirflowException(monitor_image_message(image, problem))
        if sidecar_started(remote, MONITOR_CONTAINER):
            return
        time.sleep(interval)


def _stop_following(operator, drain_s: float = 0.0) -> None:
    follower = getattr(operator, "_resize_follower", None)
    if follower is not None:
        if drain_s > 0:
            follower.drain(drain_s)  # to the end of a finished container's log
        follower.stop()
        operator._monitor_statuses = follower.monitor_statuses
        operator._monitor_lines = follower.monitor
        operator._resize_follower = None


def killed_at(operator, resource: str = "memory") -> float:
    """The limit in force when the try ended: the last resize applied, else the starting size."""
    applied = [r for r in getattr(operator, "_resizes", None) or [] if r.get("resource") == resource and r.get("status") in ("applied", "capped")]
    if applied:
        return float(applied[-1]["new"])
    return float((getattr(operator, "_limits", None) or {}).get(resource, 0.0))


def _memory_limit_in_spec(pod: k8s.V1Pod, container: str) -> float:
    """The memory limit the pod's spec held at the end (in-place resizes included), as the API
    server stored it: the plan's figure rounds to whole bytes on the way in. 0: none or no spec."""
    from airflow_adaptive.adapters.kubernetes.pod_spec import container_resources

    try:
        return container_resources(pod, container)[1].memory if pod.spec else 0.0
    except ValueError:  # no such container
        return 0.0


def not_actuated(pod: k8s.V1Pod, container: str) -> tuple[dict[str, float], str] | None:
    """Increases accepted by the API server but never actuated by the kubelet (``Deferred``), and why."""
    from airflow_adaptive.adapters.kubernetes.pod_spec import actuated_resources, container_resources, resize_conditions
    from airflow_adaptive.logic.resize_plan import unactuated_increases

    try:
        sizes, why = unactuated_increases(container_resources(pod, container), actuated_resources(pod, container),
                                          resize_conditions(pod))
    except (ValueError, AttributeError):  # no such container, or no spec/status to compare
        return None
    return (sizes, why) if sizes else None


def record_pod_outcome(operator, pod: k8s.V1Pod, client) -> None:
    """The try's outcome, and its OOM kills (kernel, or CUDA out of memory in the log), go to its
    MLflow run now: KPO deletes the pod next, and Airflow clears XCom before the retry."""
    run_id, run_log = getattr(operator, "_stage_run", None), getattr(operator, "_run_log", None)
    if not run_id or run_log is None:
        return
    container = operator.base_container_name
    statuses = (pod.status.container_statuses or []) if pod.status else []
    status = next((s for s in statuses if s.name == container), None)
    try_number = operator._try_number
    events = []
    if status is not None and kernel_oom_killed(status):
        limit = _memory_limit_in_spec(pod, container) or killed_at(operator, "memory")
        events.append(OomEvent(time.time(), container, limit, try_number, "kernel"))
    else:
        try:
            tail = client.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=container, tail_lines=LOG_TAIL_LINES)
        except Exception as exc:  # noqa: BLE001 - the log is gone or unreadable: nothing more to learn
            operator.log.info("cannot read the workload's log tail for GPU out-of-memory errors: %s", exc)
            tail = ""
        if gpu_out_of_memory(tail.splitlines()):
            events.append(OomEvent(time.time(), container, killed_at(operator, "gpu_memory"), try_number, "gpu"))
    try:
        if events:
            run_log.record_oom(run_id, events)
            operator.log.warning("try %d of task '%s': %s out of memory, recorded in MLflow run %s for the next try",
                                 try_number, operator.task_id, events[0].kind, run_id)
        resizes = getattr(operator, "_resizes", None) or []
        if resizes:
            run_log.log_resizes(run_id, resizes)
        pending = not_actuated(pod, container)
        if pending:
            operator.log.warning("try %d of task '%s': the kubelet had not actuated %s when the pod ended (%s); "
                                 "the next try starts there", try_number, operator.task_id, pending[0], pending[1])
        carried = deferred_sizes(resizes)
        for r, v in (pending[0] if pending else {}).items():
            carried[r] = max(carried.get(r, 0.0), v)
        run_log.record_deferred_sizes(run_id, carried)
        record_monitor(operator, run_log, run_id, getattr(operator, "_monitor_lines", None))
        unavailable = [st for st in getattr(operator, "_monitor_statuses", None) or [] if st.event == UNAVAILABLE]
        if unavailable:
            operator.log.warning("the monitor could not read the workload, so the stage ran at its planned size "
                                 "without in-place resizes: %s", unavailable[0].reason)
            run_log.record_monitor_unavailable(run_id, unavailable[0].reason)
        outcome = try_outcome(status, events)
        run_log.record_outcome(run_id, outcome)
        operator.log.info("try %d of task '%s' ended: %s (MLflow run %s)", try_number, operator.task_id, outcome, run_id)
    except Exception as exc:  # noqa: BLE001 - MLflow down: say so, never fail the pod's outcome on it
        operator.log.warning("cannot record the pod's outcome in MLflow run %s: %s", run_id, exc)

"""The operator's Kubernetes path: the pod narrowed to the plan, resizes applied while KPO waits,
OOM kills and ephemeral-storage evictions recorded before KPO deletes the pod.

The operator hands each try's :class:`~airflow_adaptive.operators.try_state.TryState` to a
:class:`KubernetesTry` (its ``adaptive_try``), which holds what the try observes and writes. Only narrow hooks of KubernetesPodOperator are used:

| KPO hook | what airflow-adaptive does there |
|---|---|
| ``build_pod_request_obj`` | :func:`shape_stage_pod`: sized container (ephemeral-storage included), monitor sidecar (with :func:`monitor_gpu_env` for a GPU stage), GPU-type affinity, bandwidth annotations (``network_bandwidth``) |
| callback ``on_pod_creation`` (sync mode) | start following the monitor's log; each signal -> ``pods/resize`` |
| callback ``on_pod_completion`` (both modes) | stop following; OOMKilled / CUDA out-of-memory / evicted for ephemeral storage (``logic/eviction.py``) -> the stage's MLflow run |
| callback ``on_pod_cleanup`` | stop following (also when the pod never started) |
| ``defer`` | the provider's pod trigger becomes :class:`~airflow_adaptive.triggers.pod.AdaptivePodTrigger` (same kwargs, plus the monitor's) |
| ``trigger_reentry`` | log the trigger's resize decisions, keep the last signal sequence for a re-deferral |
| ``await_pod_completion`` (sync mode) | an evicted pod's vanished log (an API error mid-follow) ends the wait, so ``on_pod_completion`` still records the eviction (:func:`evicted_while_following`) |
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger
from kubernetes.client import models as k8s

from airflow_adaptive import metrics
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import UNAVAILABLE, MonitorStatus
from airflow_adaptive.domain.stage_run import OomEvent
from airflow_adaptive.logic.eviction import eviction_note, read_eviction
from airflow_adaptive.logic.oom import gpu_out_of_memory, kernel_oom_killed, try_outcome
from airflow_adaptive.logic.monitor_trust import MonitorLines, TrustConfig
from airflow_adaptive.logic.stage_plan import deferred_sizes
from airflow_adaptive.operators.try_state import TryState

MONITOR_CONTAINER = "adaptive-monitor"
#: The image built from the repository's Dockerfile (airflow-adaptive installed, non-root USER).
MONITOR_IMAGE = "ghcr.io/airflow-adaptive/monitor:0.1.0"
DRAIN_S = 15.0  # at most, for the follower to read a finished monitor's log to its end
LOG_TAIL_LINES = 200  # where a CUDA out-of-memory error would be: the end of the workload's log


#: On the Airflow worker: ``off`` builds GPU pods without ``monitor_gpu_env`` (for clusters whose
#: admission policy refuses NVIDIA_VISIBLE_DEVICES on a container that requests no GPU).
MONITOR_GPUS_SWITCH = "AIRFLOW_ADAPTIVE_MONITOR_GPUS"


def monitor_gpu_env(plan) -> dict[str, str]:
    """What the monitor sidecar needs to read the workload's GPUs through NVML, for a stage that
    requests GPUs (none otherwise).

    The device plugin gives GPUs only to the container that requests ``nvidia.com/gpu``; the
    monitor requests none (it must not take a GPU from the scheduler's count). It asks the NVIDIA
    container runtime for every GPU of the node instead, and keeps only the workload's
    (``adapters/nvml``: ``workload_gpus``, read through the shared process namespace):

    | monitor env | value | why |
    |---|---|---|
    | ``NVIDIA_VISIBLE_DEVICES`` | ``all`` | the runtime mounts the node's GPUs and libnvidia-ml into the monitor; honoured from an unprivileged container only where the toolkit's ``accept-nvidia-visible-devices-envvar-when-unprivileged`` is true (the toolkit's default; false on hardened clusters, e.g. Bottlerocket's default, with the device plugin's volume-mounts strategy) |
    | ``NVIDIA_DRIVER_CAPABILITIES`` | ``utility`` | NVML (and nvidia-smi) only: no CUDA, no compute |

    The pod must run under the NVIDIA runtime (its default runtime on the node, or the pod's
    ``runtimeClassName: nvidia``; pod-wide, as the workload needs it anyway). Where the runtime
    ignores the variable (CDI-only runtimes, GKE's own device plugin, ``accept-...`` false) the
    monitor finds no NVML, says so once and records no GPU usage; cpu and memory are unaffected.
    ``AIRFLOW_ADAPTIVE_MONITOR_GPUS=off`` on the worker leaves the variables out.
    """
    gpus = max(plan.size.requests.gpu, plan.size.limits.gpu)
    if gpus <= 0 or os.environ.get(MONITOR_GPUS_SWITCH, "").strip().lower() == "off":
        return {}
    return {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "utility"}


def shape_stage_pod(operator, pod: k8s.V1Pod, plan) -> k8s.V1Pod:
    from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod

    monitor = MonitorSidecar(
        image=operator.monitor_image or MONITOR_IMAGE, interval_s=operator.monitor_interval, name=MONITOR_CONTAINER,
        env={**({} if plan.resizable else {"AIRFLOW_ADAPTIVE_CHANNEL": "recommend"}), **monitor_gpu_env(plan)},
    )
    # No MLflow address for the monitor: it prints its samples beside its signals and the operator
    # writes the stage run (one writer; no credentials, network or spool in the pod).
    shaped = shape_pod(
        pod, container=operator.base_container_name, size=plan.size, monitor=monitor,
        run_id=None, tracking_uri=None,
        profile_json=json.dumps(plan.profile.to_dict()) if plan.profile else None,
        service_account=operator.service_account_name, maximum=plan.limited if plan.limited.memory > 0 else None,
        minimum=ResourceVector(memory=plan.memory_floor) if plan.memory_floor else None,
    )
    bandwidth = getattr(operator, "_bandwidth", None)
    if bandwidth:  # network_bandwidth: checked and logged in execute, before any pod
        shaped.metadata.annotations = {**(shaped.metadata.annotations or {}), **bandwidth}
    return shaped


class AdaptivePodCallbacks(KubernetesPodOperatorCallback):
    """Added to every AdaptiveTrainingOperator's KPO callbacks (after the user's own); each hands
    over to the operator's :class:`KubernetesTry` (None: sizing is off, nothing to follow)."""

    @staticmethod
    def on_pod_creation(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        # KPO calls this with mode SYNC from its deferrable path too: there the trigger follows.
        current = getattr(operator, "adaptive_try", None)
        if current is None or operator.deferrable or pod is None:
            return
        current.follow(client, pod)

    @staticmethod
    def on_pod_completion(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        current = getattr(operator, "adaptive_try", None)
        if current is None or pod is None:
            return
        # The pod has ended, so the monitor's log is complete: let the follower read it to the end
        # (the summary is its last line) before stopping it.
        current.stop_following(drain_s=DRAIN_S)
        current.record_outcome(pod, client)
        # Sync mode only (a deferred try's peaks come in the trigger's event, see trigger_reentry).
        summary = current.monitor.summary if current.monitor is not None else None
        plan = getattr(operator, "_plan", None)
        if summary is not None and plan is not None:
            metrics.record(metrics.profile_vs_observed, plan.profile, summary.peak, current.dag_id, current.task_id)

    @staticmethod
    def on_pod_cleanup(*, pod: k8s.V1Pod, client, mode: str, operator=None, **kwargs) -> None:
        # KPO always calls this (from a ``finally``), also when the pod never started or the API failed.
        current = getattr(operator, "adaptive_try", None)
        if current is not None:
            current.stop_following()


class KubernetesTry:
    """One try of a stage on Kubernetes, from its :class:`TryState`: what the monitor's log said and
    which resizes were applied (the sync follower, or the trigger's event), and the stage run's
    writes when the pod ends.

    :param state: the try's state (frozen; a re-deferral replaces it with the last signal handled).
    :param run_log: the stage run's writer (``StageRunLog``), None when no stage run is open.
    :param log: where the task log goes (the operator's logger).
    :param container: the workload container.
    """

    def __init__(self, state: TryState, run_log, log: logging.Logger, container: str, task_id: str, dag_id: str = "") -> None:
        self.state, self.run_log, self.log, self.container, self.task_id = state, run_log, log, container, task_id
        self.dag_id = dag_id  # for the metrics' tags
        self.resizes: list[dict[str, Any]] = []
        self.statuses: list[MonitorStatus] = []
        self.monitor: MonitorLines | None = None  # the sync follower's; in deferrable mode the trigger writes
        self._follower = None

    # -- sync mode: a thread follows the monitor's log while KPO waits for the pod
    def follow(self, client, pod: k8s.V1Pod, on_handled=None) -> None:
        """``on_handled(sequence)`` after each signal applied (the executor-pod follower keeps it on the pod)."""
        from airflow_adaptive.adapters.kubernetes.resize import PodResizer
        from airflow_adaptive.adapters.kubernetes.signal_follower import SignalFollowerThread

        namespace, name = pod.metadata.namespace, pod.metadata.name
        resizer = PodResizer(client) if self.state.resizable else None

        def on_signal(signal) -> None:
            if resizer is None:  # shadow mode or in_place_resize=False: the monitor's usage is still read
                return
            outcome = resizer.apply(namespace, name, self.container, signal)
            self.log.info("resize %s %s -> %s: %s (%s)", signal.resource, signal.old, signal.new, outcome.status, outcome.message)
            self.resizes.append({**outcome.to_dict(), "time": time.time(), "resource": signal.resource, "old": signal.old,
                                 "new": signal.new, "reason": signal.reason})
            metrics.record(metrics.resize_outcomes, self.resizes[-1:])
            if on_handled is not None:
                on_handled(signal.sequence)

        self.monitor = monitor_lines(self.state)
        self._follower = SignalFollowerThread(client, namespace, name, MONITOR_CONTAINER, on_signal, monitor=self.monitor,
                                              last_sequence=self.state.last_resize_sequence)
        self._follower.start()

    def stop_following(self, drain_s: float = 0.0) -> None:
        follower, self._follower = self._follower, None
        if follower is None:
            return
        if drain_s > 0:
            follower.drain(drain_s)  # to the end of a finished container's log
        follower.stop()
        self.statuses = follower.monitor_statuses
        self.state = self.state.handled(follower.last_sequence)

    # -- deferrable mode: the trigger follows, resizes and writes the monitor's samples
    def trigger(self, trigger: KubernetesPodTrigger):
        """The provider's pod trigger as the project's, with this try's resize state."""
        from airflow_adaptive.triggers.pod import AdaptivePodTrigger

        _, kwargs = trigger.serialize()
        return AdaptivePodTrigger(**kwargs, monitor_container_name=MONITOR_CONTAINER, workload_container_name=self.container,
                                  resize=self.state.resizable, last_resize_sequence=self.state.last_resize_sequence,
                                  stage_run=self.state.stage_run.to_dict() if self.state.stage_run else None,
                                  maximum=dict(self.state.maximum))

    def reentered(self, event: dict[str, Any]) -> None:
        """What the trigger did while the task was deferred (its event's extra keys)."""
        resizes = [r for r in event.get("resizes") or [] if isinstance(r, dict)]
        self.resizes.extend(resizes)
        metrics.record(metrics.resize_outcomes, resizes)
        for r in resizes:
            self.log.info("resize %s: %s (%s)", r.get("resource"), r.get("status"), r.get("message"))
        if event.get("last_resize_sequence") is not None:
            self.state = self.state.handled(int(event["last_resize_sequence"]))
        self.statuses = [MonitorStatus(str(m.get("event")), str(m.get("reason")), float(m.get("time") or 0))
                         for m in event.get("monitor_statuses") or [] if isinstance(m, dict)]
        if event.get("monitor_rejected"):
            self.log.warning("the monitor's log had lines the trigger refused (%s); the stage run is tagged untrusted "
                             "and retraining leaves it out", event["monitor_rejected"])

    # -- the end of the try
    def killed_at(self, resource: str = "memory") -> float:
        """The limit in force when the try ended: the last resize applied, else the starting size."""
        applied = [r for r in self.resizes if r.get("resource") == resource and r.get("status") in ("applied", "capped")]
        if applied:
            return float(applied[-1]["new"])
        return float(self.state.limits.get(resource, 0.0))

    def record_outcome(self, pod: k8s.V1Pod, client) -> None:
        """The try's outcome, and its OOM kills (kernel, CUDA out of memory in the log, or an eviction
        for passing the workload's ephemeral-storage limit), go to its MLflow run now: KPO deletes
        the pod next, and Airflow clears XCom before the retry."""
        if self.state.stage_run is None or self.run_log is None:
            return
        run_id, run_log, container, try_number = self.state.stage_run.run_id, self.run_log, self.container, self.state.try_number
        statuses = (pod.status.container_statuses or []) if pod.status else []
        status = next((s for s in statuses if s.name == container), None)
        events = []
        eviction = read_eviction(pod.status.phase, pod.status.reason, pod.status.message) if pod.status else None
        if eviction is not None:
            self.log.warning("try %d of task '%s' was %s", try_number, self.task_id, eviction_note(eviction))
        if status is not None and kernel_oom_killed(status):
            limit = _memory_limit_in_spec(pod, container) or self.killed_at("memory")
            events.append(OomEvent(time.time(), container, limit, try_number, "kernel"))
        elif eviction is not None and eviction.storage_limit and eviction.container in (None, container):
            # The limit the API server stored for the workload, else this try's plan, else the kubelet's figure.
            limit = storage_limit_in_spec(pod, container) or self.killed_at("ephemeral_storage") or eviction.limit_bytes
            if limit > 0:
                events.append(OomEvent(time.time(), container, limit, try_number, "ephemeral_storage"))
        elif eviction is None:
            try:
                tail = client.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container=container,
                                                      tail_lines=LOG_TAIL_LINES)
            except Exception as exc:  # noqa: BLE001 - the log is gone or unreadable: nothing more to learn
                self.log.info("cannot read the workload's log tail for GPU out-of-memory errors: %s", exc)
                tail = ""
            if gpu_out_of_memory(tail.splitlines()):
                events.append(OomEvent(time.time(), container, self.killed_at("gpu_memory"), try_number, "gpu"))
        try:
            if events:
                metrics.record(metrics.oom_kill, events[0].kind, self.dag_id, self.task_id)
                run_log.record_oom(run_id, events)
                what = ("evicted for ephemeral storage" if events[0].kind == "ephemeral_storage"
                        else f"{events[0].kind} out of memory")
                self.log.warning("try %d of task '%s': %s, recorded in MLflow run %s for the next try",
                                 try_number, self.task_id, what, run_id)
            if self.resizes:
                run_log.log_resizes(run_id, self.resizes)
            pending = not_actuated(pod, container)
            if pending:
                self.log.warning("try %d of task '%s': the kubelet had not actuated %s when the pod ended (%s); "
                                 "the next try starts there", try_number, self.task_id, pending[0], pending[1])
            carried = deferred_sizes(self.resizes)
            for r, v in (pending[0] if pending else {}).items():
                carried[r] = max(carried.get(r, 0.0), v)
            run_log.record_deferred_sizes(run_id, carried)
            self._record_monitor(run_id)
            unavailable = [st for st in self.statuses if st.event == UNAVAILABLE]
            if unavailable:
                self.log.warning("the monitor could not read the workload, so the stage ran at its planned size "
                                 "without in-place resizes: %s", unavailable[0].reason)
                run_log.record_monitor_unavailable(run_id, unavailable[0].reason)
            outcome = try_outcome(status, events)
            run_log.record_outcome(run_id, outcome)
            self.log.info("try %d of task '%s' ended: %s (MLflow run %s)", try_number, self.task_id, outcome, run_id)
        except Exception as exc:  # noqa: BLE001 - MLflow down: say so, never fail the pod's outcome on it
            self.log.warning("cannot record the pod's outcome in MLflow run %s: %s", run_id, exc)

    def _record_monitor(self, run_id: str) -> None:
        """The monitor's samples, summary and refused lines into the stage run (the only writer)."""
        monitor = self.monitor
        if monitor is None:
            return
        from airflow_adaptive.domain.monitor_protocol import summary_metrics

        summary = monitor.summary
        samples = [u.sample for u in monitor.take_samples()]
        self.run_log.record_monitor_lines(run_id, samples, summary_metrics(summary), dict(monitor.rejected))
        if monitor.rejected:
            self.log.warning("the monitor's log had lines the operator refused (%s): %s; the stage run is tagged "
                             "untrusted and retraining leaves it out", dict(monitor.rejected), "; ".join(monitor.notes))
        self.log.info("the monitor reported %d usage samples%s", monitor.sample_count,
                      "" if summary else " and no summary (it was stopped before it could write one)")


def monitor_lines(state: TryState) -> MonitorLines:
    """What the operator accepts from the monitor's log, bounded by the user's limits."""
    return MonitorLines(TrustConfig(maximum=dict(state.maximum)), last_sequence=state.last_resize_sequence)


def monitor_image_message(image: str, problem: str) -> str:
    return (f"the monitor sidecar's image {image} cannot be pulled ({problem}), so the stage cannot start. "
            "Build the image from the project's Dockerfile, push it to a registry your cluster pulls from and "
            "pass it as monitor_image= (README: 'The monitor image'); or run the stage with sizing_mode='off'")


def wait_for_monitor(operator, pod: k8s.V1Pod) -> None:
    """Until the monitor sidecar runs (or the pod left Pending), within the startup timeout; an
    image that cannot be pulled fails the task with what to do."""
    from airflow.sdk.exceptions import AirflowException

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


def _memory_limit_in_spec(pod: k8s.V1Pod, container: str) -> float:
    """The memory limit the pod's spec held at the end (in-place resizes included), as the API
    server stored it: the plan's figure rounds to whole bytes on the way in. 0: none or no spec."""
    from airflow_adaptive.adapters.kubernetes.pod_spec import container_resources

    try:
        return container_resources(pod, container)[1].memory if pod.spec else 0.0
    except ValueError:  # no such container
        return 0.0


def evicted_while_following(operator, pod: k8s.V1Pod, exc: Exception) -> bool:
    """Whether the pod an API error came from has been evicted by the kubelet (said in the log);
    False when it has not or cannot be read (the error stands)."""
    try:
        remote = operator.pod_manager.read_pod(pod)
    except Exception:  # noqa: BLE001 - cannot tell: the provider's error stands
        return False
    status = remote.status if remote is not None else None
    eviction = read_eviction(status.phase, status.reason, status.message) if status is not None else None
    if eviction is None:
        return False
    operator.log.warning("the workload's log ended with the pod's eviction (%s: %s); recording the try",
                         getattr(exc, "status", type(exc).__name__), getattr(exc, "reason", exc))
    return True


def storage_limit_in_spec(pod: k8s.V1Pod, container: str) -> float:
    """The workload's ephemeral-storage limit as the API server stored it (0: none)."""
    from airflow_adaptive.adapters.kubernetes.pod_spec import container_storage_limit

    return container_storage_limit(pod, container)


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

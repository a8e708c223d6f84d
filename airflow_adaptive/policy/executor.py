"""The KubernetesExecutor's worker pod, sized by ``pod_mutation_hook``.

The executor builds one pod per task (``PodGenerator.construct_pod``, in the scheduler) and calls
``pod_mutation_hook`` on it. For a task the policy selected, ``task_policy`` left a mark on the
task's ``executor_config["pod_override"]`` (annotation ``airflow-adaptive/policy``: the mode and the
parse-time features), which the executor reconciles into the pod. Here the pod's annotations give
``dag_id``/``task_id``, its workload container (``base``) the user's request (the prior and bounds).

The hook runs in the scheduler's loop, so it never waits on MLflow: the profiler is loaded on a
background thread and kept (:class:`ProfilerCache`); the first pod waits at most ``timeout_s`` for
it, a failed load is not retried for ``retry_s``, and without a model the pod keeps the user's
request, with a log line saying why. A retry's earlier OOM kills are read from MLflow within the
same ``timeout_s`` (:class:`EarlierTries`; past it the retry is not escalated, and the log says so).
No stage run is opened here: the plan goes on the pod as the ``airflow-adaptive/plan`` annotation,
and the executor-pod follower (:mod:`airflow_adaptive.policy.follower`) opens and writes the run.

| mode | the pod |
|---|---|
| ``shadow`` | unchanged but for the ``airflow-adaptive/plan`` annotation (what adaptive would set) |
| ``adaptive``, no follower | ``base`` sized by the plan at its peak (nothing resizes it), plus the annotations |
| ``adaptive``, ``follower=True`` | ``base`` sized at the plan's start, the monitor sidecar, label ``airflow-adaptive/follow``: the follower applies the monitor's resizes in place |
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.stage_run import FEATURE_NAME, OomEvent, StageIdentity
from airflow_adaptive.logic.deviation import DeviationConfig
from airflow_adaptive.logic.sizing import SizingPolicy
from airflow_adaptive.logic.stage_plan import MODES, StagePlan, plan_stage

log = logging.getLogger("airflow_adaptive.policy")

MARK_ANNOTATION = "airflow-adaptive/policy"
PLAN_ANNOTATION = "airflow-adaptive/plan"
EXECUTOR_LABEL = "kubernetes_executor"  # PodGenerator.build_labels_for_k8s_executor_pod
WORKLOAD = "base"  # the executor's worker container
MAX_MARK = 16 * 1024  # a pod_override annotation is written by DAG code: bounded before it is read
FOLLOW_LABEL = "airflow-adaptive/follow"  # what the follower lists pods by


@dataclass(frozen=True)
class ExecutorMark:
    """What ``task_policy`` tells ``pod_mutation_hook`` about a selected task."""

    mode: str
    features: Mapping[str, Any] = field(default_factory=dict)

    def to_annotation(self) -> str:
        return json.dumps({"mode": self.mode, "features": dict(self.features)}, sort_keys=True, default=str)

    @classmethod
    def from_annotation(cls, text: str, where: str) -> "ExecutorMark":
        if len(text) > MAX_MARK:
            raise UserError(f"{where}: annotation {MARK_ANNOTATION} is {len(text)} characters, more than {MAX_MARK}")
        try:
            data = json.loads(text)
        except ValueError:
            raise UserError(f"{where}: annotation {MARK_ANNOTATION} is not JSON") from None
        if not isinstance(data, dict) or data.get("mode") not in MODES or not isinstance(data.get("features", {}), dict):
            raise UserError(f"{where}: annotation {MARK_ANNOTATION} must be {{'mode': one of {MODES}, 'features': {{...}}}}")
        features = {k: v for k, v in data.get("features", {}).items()
                    if isinstance(k, str) and FEATURE_NAME.match(k) and isinstance(v, (str, int, float)) and not isinstance(v, bool)}
        return cls(data["mode"], features)


class ProfilerCache:
    """The profiler, loaded off the caller's thread and kept for ``ttl_s`` (then refreshed in the
    background while the old one still answers).

    | knob | default | why |
    |---|---|---|
    | ``timeout_s`` | 1.0 | the most a pod's creation waits, and only while nothing is cached (a cold scheduler) |
    | ``ttl_s`` | 300 | a champion moves at retraining (daily at most): five minutes late is harmless |
    | ``retry_s`` | 30 | after a failed load: pods keep their request without waiting, MLflow is not hammered |
    """

    def __init__(self, load: Callable[[], tuple[Any, str]], *, timeout_s: float = 1.0, ttl_s: float = 300.0,
                 retry_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._load, self.timeout_s, self.ttl_s, self.retry_s, self._clock = load, timeout_s, ttl_s, retry_s, clock
        self._lock = threading.Lock()
        self._value: tuple[Any, str] | None = None
        self._loaded_at = 0.0
        self._failed_at: float | None = None
        self._error = ""
        self._done: threading.Event | None = None  # set while a load runs

    def get(self) -> tuple[tuple[Any, str] | None, str | None]:
        """(profiler, version), or None and why there is none now."""
        now = self._clock()
        with self._lock:
            value, fresh = self._value, self._value is not None and now - self._loaded_at < self.ttl_s
            if fresh:
                return value, None
            if self._failed_at is not None and now - self._failed_at < self.retry_s and value is None:
                return None, f"the profiler could not be loaded {now - self._failed_at:.0f} s ago ({self._error})"
            done = self._done or self._start()
        if value is not None:  # stale: answer now, the refresh runs behind
            return value, None
        done.wait(self.timeout_s)
        with self._lock:
            if self._value is not None:
                return self._value, None
            if not done.is_set():
                return None, f"MLflow did not answer within {self.timeout_s:g} s (the load goes on in the background)"
            return None, f"the profiler could not be loaded ({self._error})"

    def _start(self) -> threading.Event:
        done = self._done = threading.Event()
        threading.Thread(target=self._run, args=(done,), name="airflow-adaptive-profiler-load", daemon=True).start()
        return done

    def _run(self, done: threading.Event) -> None:
        try:
            value = self._load()
        except Exception as exc:  # noqa: BLE001 - any failure: the pods keep their request, the log says why
            with self._lock:
                self._failed_at, self._error = self._clock(), (str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}")
            log.warning("airflow-adaptive: cannot load the profiler for executor pods: %s", self._error)
        else:
            with self._lock:
                self._value, self._loaded_at, self._failed_at = value, self._clock(), None
        finally:
            with self._lock:
                self._done = None
            done.set()


class EarlierTries:
    """A retry's earlier OOM kills and unactuated resizes, read from the stage runs in MLflow
    within ``timeout_s`` on a daemon thread (the scheduler's loop waits no longer; past it, or on
    an error, the retry is not escalated and the log says why)."""

    def __init__(self, read: Callable[[StageIdentity], tuple[list[OomEvent], dict[str, float]]], timeout_s: float = 1.0) -> None:
        self._read, self.timeout_s = read, timeout_s

    def __call__(self, identity: StageIdentity, where: str) -> tuple[list[OomEvent], dict[str, float]]:
        if identity.try_number <= 1:
            return [], {}
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = self._read(identity)
            except Exception as exc:  # noqa: BLE001 - MLflow down: the retry runs unescalated
                box["error"] = exc

        thread = threading.Thread(target=run, name="airflow-adaptive-earlier-tries", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if "value" in box:
            return box["value"]
        why = f"{type(box['error']).__name__}: {box['error']}" if "error" in box else f"MLflow did not answer within {self.timeout_s:g} s"
        log.warning("%s: cannot read earlier tries' OOM kills (%s): try %d is not escalated", where, why, identity.try_number)
        return [], {}


def executor_plan(mark: ExecutorMark, requested: ResourceVector, limited: ResourceVector, predict, policy: SizingPolicy,
                  fallback: str | None, *, in_place: bool = False, earlier_ooms: Sequence[OomEvent] = (),
                  deferred: Mapping[str, float] | None = None, config: DeviationConfig = DeviationConfig()) -> StagePlan:
    """The plan of an executor pod: the shared ``plan_stage``; resized in place only where a follower runs."""
    profile = None
    if predict is not None and not fallback:
        try:
            profile = predict()
        except UserError as exc:
            fallback = str(exc)
    return plan_stage(requested, limited, profile, policy, mark.mode, fallback, earlier_ooms, config=config,
                      deferred=deferred, in_place=in_place)


def plan_annotation(plan: StagePlan, *, features: Mapping[str, Any] | None = None, model_uri: str | None = None,
                    experiment: str | None = None) -> str:
    """What the pod carries about its plan: mode, sizing, what the policy set or would set, why;
    and what the follower needs to open the stage run (features, prediction, the user's request
    and bounds, the start size)."""
    would = plan.policy_size or plan.size
    requests, limits = would.to_kubernetes()
    return json.dumps({
        "mode": plan.mode, "sizing": plan.sizing, "requests": requests, "limits": limits,
        "model_version": plan.profile.model_version if plan.profile else None, "reasons": plan.reasons()[:6],
        "resizable": plan.resizable, "allocated": plan.size.limits.as_dict(),
        "start_limits": plan.size.limits.max(plan.size.requests).as_dict(),
        "requested": plan.requested.as_dict(), "maximum": plan.limited.as_dict(), "memory_floor": plan.memory_floor,
        "features": dict(features or {}), "predicted": plan.profile.to_dict() if plan.profile else None,
        "model_uri": model_uri, "experiment": experiment,
    }, sort_keys=True, default=str)


class ExecutorPodSizer:
    """``pod_mutation_hook``'s work for executor pods (KPO's pods are sized by the task policy)."""

    def __init__(self, cache: ProfilerCache, model_uri: str, policy: SizingPolicy, *, follower: bool = False,
                 monitor_image: str | None = None, monitor_interval: float = 1.0, experiment: str | None = None,
                 earlier: EarlierTries | None = None) -> None:
        self.cache, self.model_uri, self.policy = cache, model_uri, policy
        self.follower, self.monitor_image, self.monitor_interval = follower, monitor_image, monitor_interval
        self.experiment, self.earlier = experiment, earlier

    def __call__(self, pod) -> None:
        meta = pod.metadata
        if meta is None or (meta.labels or {}).get(EXECUTOR_LABEL) != "True":
            return
        raw = (meta.annotations or {}).get(MARK_ANNOTATION)
        if not raw:
            return
        annotations = meta.annotations
        where = f"executor pod {meta.name} (task {annotations.get('dag_id')}.{annotations.get('task_id')})"
        from airflow_adaptive.operators.training import ENABLED_ENV, adaptive_enabled, resources_from

        if not adaptive_enabled():
            log.warning("%s: airflow-adaptive is switched off (%s / [adaptive] enabled): the pod is not sized", where, ENABLED_ENV)
            return
        started = time.perf_counter()
        try:
            mark = ExecutorMark.from_annotation(raw, where)
            container = next((c for c in pod.spec.containers if c.name == WORKLOAD), pod.spec.containers[0])
            requested, limited = resources_from(container.resources, f"{where} container {container.name}")
        except UserError as exc:
            log.warning("%s: not sized: %s", where, exc)
            return
        if mark.mode == "off":
            return
        features = {**mark.features, "dag_id": annotations.get("dag_id", ""), "task_id": annotations.get("task_id", "")}
        if container.image:
            features.setdefault("image", container.image)
        for resource in ("cpu", "memory", "gpu"):
            if getattr(requested, resource) > 0:
                features.setdefault(f"requested_{resource}", getattr(requested, resource))
        loaded, why = self.cache.get()
        predict = None
        if loaded is not None:
            from airflow_adaptive.hooks.profiler import predict_with

            profiler, version = loaded
            predict = lambda: predict_with(profiler, version, self.model_uri, features, where)  # noqa: E731
        earlier_ooms, deferred = [], {}
        identity = pod_identity(annotations)
        if self.earlier is not None and mark.mode == "adaptive" and identity is not None:
            earlier_ooms, deferred = self.earlier(identity, where)
        plan = executor_plan(mark, requested, limited, predict, self.policy, why, in_place=self.follower,
                             earlier_ooms=earlier_ooms, deferred=deferred,
                             config=DeviationConfig().for_interval(self.monitor_interval))
        self._apply(pod, container.name, plan, features)
        requests, limits = (plan.policy_size or plan.size).to_kubernetes()
        log.info("%s: %s (%s): %s requests %s, limits %s in %.0f ms%s", where, plan.sizing, plan.mode,
                 "would set" if plan.mode == "shadow" else "set", requests, limits, (time.perf_counter() - started) * 1000,
                 f"; the user's request is kept: {plan.fallback}" if plan.fallback else "")

    def _apply(self, pod, container: str, plan: StagePlan, features: Mapping[str, Any]) -> None:
        annotations = {PLAN_ANNOTATION: plan_annotation(plan, features=features, model_uri=self.model_uri,
                                                        experiment=self.experiment)}
        # A followed pod gets the monitor even when the user's request stands (a fallback): its usage
        # is what the next fit learns from.
        if plan.mode == "adaptive" and (plan.policy_size is not None or plan.escalation or plan.resizable):
            from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod
            from airflow_adaptive.operators.kubernetes import MONITOR_CONTAINER, MONITOR_IMAGE, monitor_gpu_env

            monitor = None
            if plan.resizable:
                monitor = MonitorSidecar(image=self.monitor_image or MONITOR_IMAGE, interval_s=self.monitor_interval,
                                         name=MONITOR_CONTAINER, env=monitor_gpu_env(plan))
            shaped = shape_pod(pod, container=container, size=plan.size, monitor=monitor, run_id=None, tracking_uri=None,
                               profile_json=json.dumps(plan.profile.to_dict()) if plan.profile and monitor else None,
                               maximum=plan.limited if monitor and plan.limited.memory > 0 else None,
                               minimum=ResourceVector(memory=plan.memory_floor) if monitor and plan.memory_floor else None)
            pod.spec = shaped.spec  # the hook mutates the executor's pod in place
            annotations = {**shaped.metadata.annotations, **annotations}
            if monitor is not None:
                pod.metadata.labels = {**(pod.metadata.labels or {}), FOLLOW_LABEL: "true"}
        pod.metadata.annotations = {**(pod.metadata.annotations or {}), **annotations}


def pod_identity(annotations: Mapping[str, str]) -> StageIdentity | None:
    """The try the executor built this pod for (``PodGenerator.construct_pod``'s annotations)."""
    try:
        return StageIdentity(str(annotations["dag_id"]), str(annotations["task_id"]), str(annotations.get("run_id", "")),
                             int(annotations.get("try_number") or 1), int(annotations.get("map_index") or -1))
    except (KeyError, ValueError):
        return None

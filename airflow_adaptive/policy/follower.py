"""Follow the KubernetesExecutor's adaptive worker pods: apply their monitor's resizes in place and
write their stage runs (``airflow-adaptive follow-executor-pods``; the chart's ``executorFollower``).

An executor pod is created by the scheduler, so no task is there to follow it as the operator
follows its own pods. The follower is that task's stand-in, one process per namespace, built from
the operator's own parts: :class:`~airflow_adaptive.operators.kubernetes.KubernetesTry` (the
monitor's log through ``pods/log`` under the same trust rules, ``pods/resize`` within the user's
limits, OOM kills and the outcome into the stage run when the pod ends).

It watches the pods labelled ``kubernetes_executor=True,airflow-adaptive/follow=true`` (what
``pod_mutation_hook`` labels in adaptive mode with ``executor_follower=True``) and acts on each as
:func:`~airflow_adaptive.logic.follow_decision.follow_action` says. The pod holds the follower's
state, so a restarted follower (a rollout, a crash) carries on where the last one stopped:

| annotation | written by | what it holds |
|---|---|---|
| ``airflow-adaptive/plan`` | ``pod_mutation_hook`` | the plan, the features, the prediction, the user's request and limits |
| ``airflow-adaptive/stage-run`` | the follower, when it first follows the pod | the MLflow run it writes (one run per try) |
| ``airflow-adaptive/last-sequence`` | the follower, after each signal applied | the last resize signal handled: none is applied twice |
| ``airflow-adaptive/recorded`` | the follower, when the pod ended | the outcome is in the run: nothing more to do |

One follower per namespace: the chart's Deployment has one replica and the ``Recreate`` strategy,
so two never resize the same pod. The kill switch (``AIRFLOW_ADAPTIVE_ENABLED=false``) stops it
following new pods; pods already started keep their size.

| knob | default | why |
|---|---|---|
| ``resync_s`` | 10 | a watch is re-opened (after a full list) at least this often: a missed event cannot stall a pod for longer, and a SIGTERM is acted on within it (a list of the labelled pods is cheap) |
| ``drain_s`` | 15 | at most, to read an ended pod's monitor log to its end (its summary is the last line) |
"""

from __future__ import annotations

import json
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.stage_run import STAGE_FEATURES, StageIdentity
from airflow_adaptive.logic.follow_decision import PodFacts, follow_action
from airflow_adaptive.policy.executor import EXECUTOR_LABEL, FOLLOW_LABEL, PLAN_ANNOTATION, WORKLOAD, pod_identity

log = logging.getLogger("airflow_adaptive.follower")

SELECTOR = f"{EXECUTOR_LABEL}=True,{FOLLOW_LABEL}=true"
STAGE_RUN_ANNOTATION = "airflow-adaptive/stage-run"
SEQUENCE_ANNOTATION = "airflow-adaptive/last-sequence"
RECORDED_ANNOTATION = "airflow-adaptive/recorded"
MAX_PLAN = 128 * 1024  # annotations are at most 256 KiB together; the hook's plan is a few KiB


@dataclass(frozen=True)
class FollowPlan:
    """What the hook left on an executor pod for its follower (the ``airflow-adaptive/plan`` annotation)."""

    identity: StageIdentity
    mode: str
    sizing: str
    reasons: tuple[str, ...]
    resizable: bool
    allocated: Mapping[str, float]
    start_limits: Mapping[str, float]
    requested: Mapping[str, float]
    maximum: Mapping[str, float]
    features: Mapping[str, Any]
    profile: PredictedProfile | None
    model_uri: str
    model_version: str | None
    experiment: str | None

    @classmethod
    def from_pod(cls, pod) -> "FollowPlan":
        meta = pod.metadata
        annotations = meta.annotations or {}
        where = f"pod {meta.namespace}/{meta.name}"
        raw = annotations.get(PLAN_ANNOTATION, "")
        if not raw or len(raw) > MAX_PLAN:
            raise UserError(f"{where}: annotation {PLAN_ANNOTATION} is {'missing' if not raw else f'over {MAX_PLAN} characters'}")
        try:
            data = json.loads(raw)
            identity = pod_identity(annotations)
            if identity is None:
                raise KeyError("the executor's dag_id/task_id/try_number annotations")
            profile = PredictedProfile.from_dict(data["predicted"]) if data.get("predicted") else None
            return cls(identity=identity, mode=str(data["mode"]), sizing=str(data["sizing"]),
                       reasons=tuple(str(r) for r in data.get("reasons") or ()), resizable=bool(data.get("resizable")),
                       allocated=_numbers(data.get("allocated")), start_limits=_numbers(data.get("start_limits")),
                       requested=_numbers(data.get("requested")), maximum=_numbers(data.get("maximum")),
                       features=dict(data.get("features") or {}), profile=profile,
                       model_uri=str(data.get("model_uri") or ""), model_version=data.get("model_version"),
                       experiment=data.get("experiment"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{where}: annotation {PLAN_ANNOTATION} is not a plan the policy wrote "
                            f"({type(exc).__name__}: {exc}); the pod is not followed") from None


def _numbers(values: Any) -> dict[str, float]:
    if not isinstance(values, Mapping):
        return {}
    # Finite, non-negative amounts only: a limit of NaN or -1 would bound nothing.
    return {str(k): float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0}


def pod_facts(pod, gone: bool = False) -> PodFacts:
    from airflow_adaptive.adapters.kubernetes.pod_spec import container_terminated

    annotations = pod.metadata.annotations or {}
    statuses = (pod.status.container_statuses or []) if pod.status else []
    workload = next((s for s in statuses if s.name == WORKLOAD), None)
    return PodFacts(gone=gone, recorded=annotations.get(RECORDED_ANNOTATION) == "true",
                    ended=container_terminated(pod, WORKLOAD),
                    workload_running=bool(workload and workload.state and workload.state.running))


@dataclass
class Followed:
    """A pod being followed: its try (``KubernetesTry``) and the last state seen of it."""

    pod: Any
    attempt: Any
    plan: FollowPlan
    done: threading.Event = field(default_factory=threading.Event)


class ExecutorPodFollower:
    """Follows the adaptive executor pods of one namespace (see the module docstring)."""

    def __init__(self, core, namespace: str, tracking_uri: str, *, experiment: str | None = None,
                 resync_s: float = 10.0, drain_s: float | None = None) -> None:
        from airflow_adaptive.operators.kubernetes import DRAIN_S

        self.core, self.namespace, self.tracking_uri, self.experiment = core, namespace, tracking_uri, experiment
        self.resync_s, self.drain_s = resync_s, DRAIN_S if drain_s is None else drain_s
        self.followed: dict[str, Followed] = {}
        self.finished: set[str] = set()  # uids this follower recorded or gave up on
        self._finishing = ThreadPoolExecutor(max_workers=4, thread_name_prefix="airflow-adaptive-finish")
        self._lock = threading.Lock()
        self._switched_off_said = False

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        """List, then watch, until ``stop`` is set; each watch ends after ``resync_s`` and starts again
        from a fresh list (so a 410 Gone, a dropped stream or a missed event costs one resync)."""
        from kubernetes import watch

        from airflow_adaptive.adapters.kubernetes.resize import api_errors
        from airflow_adaptive.adapters.kubernetes.signal_follower import _stream_errors

        log.info("following adaptive executor pods in namespace %s (%s)", self.namespace, SELECTOR)
        try:
            while not stop.is_set():
                try:
                    listed = self.core.list_namespaced_pod(self.namespace, label_selector=SELECTOR)
                    self.resync(listed.items)
                    stream = watch.Watch()
                    for event in stream.stream(self.core.list_namespaced_pod, self.namespace, label_selector=SELECTOR,
                                               resource_version=listed.metadata.resource_version,
                                               timeout_seconds=max(1, int(self.resync_s))):
                        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                            self.observe(event["object"], gone=event["type"] == "DELETED")
                        if stop.is_set():
                            stream.stop()
                            break
                except (*api_errors(), *_stream_errors()) as exc:
                    log.warning("listing or watching pods in %s failed (%s); retrying", self.namespace, exc)
                    stop.wait(2.0)
        finally:
            self.close()

    def resync(self, pods: list) -> None:
        """A full list: observe each pod; a followed pod missing from it is gone."""
        seen = {p.metadata.uid for p in pods}
        with self._lock:  # a pod no longer listed is gone for good: forget it (the set stays bounded)
            self.finished.intersection_update(seen)
        for pod in pods:
            self.observe(pod)
        for uid, followed in list(self.followed.items()):
            if uid not in seen:
                self.observe(followed.pod, gone=True)

    def observe(self, pod, gone: bool = False) -> None:
        uid = pod.metadata.uid
        with self._lock:
            if uid in self.finished:
                return
            followed = self.followed.get(uid)
            if followed is not None and not gone:
                followed.pod = pod
        action = follow_action(pod_facts(pod, gone), followed is not None)
        if action == "start" or (action == "finish" and followed is None):
            followed = self._start(pod)
        if action == "finish" and followed is not None:
            with self._lock:
                self.followed.pop(uid, None)
                self.finished.add(uid)
            self._finishing.submit(self._finish, followed, pod, gone)
        elif action == "ignore":
            with self._lock:
                self.finished.add(uid)

    # ------------------------------------------------------------------ one pod
    def _start(self, pod) -> Followed | None:
        from airflow_adaptive.adapters.mlflow.stage_run_log import STAGE_EXPERIMENT, StageRunLog
        from airflow_adaptive.operators.kubernetes import KubernetesTry
        from airflow_adaptive.operators.training import ENABLED_ENV, adaptive_enabled
        from airflow_adaptive.operators.try_state import StageRunRef, TryState

        meta, uid = pod.metadata, pod.metadata.uid
        if not adaptive_enabled():
            if not self._switched_off_said:
                log.warning("airflow-adaptive is switched off (%s): new executor pods are not followed", ENABLED_ENV)
                self._switched_off_said = True
            return None
        try:
            plan = FollowPlan.from_pod(pod)
        except UserError as exc:
            log.warning("%s", exc)
            with self._lock:
                self.finished.add(uid)
            return None
        where = f"executor pod {meta.namespace}/{meta.name} (task {plan.identity.dag_id}.{plan.identity.task_id}, try {plan.identity.try_number})"
        experiment = plan.experiment or self.experiment or STAGE_EXPERIMENT
        run_log = StageRunLog(self.tracking_uri, experiment)
        annotations = meta.annotations or {}
        run_id = annotations.get(STAGE_RUN_ANNOTATION)
        if not run_id:
            try:
                run_id = run_log.start(plan.identity, plan.features, plan.profile, plan.allocated, plan.requested,
                                       sizing=plan.sizing, reason="; ".join(plan.reasons), model_uri=plan.model_uri,
                                       model_version=plan.model_version, schema_id=STAGE_FEATURES.id)
                self._annotate(pod, {STAGE_RUN_ANNOTATION: run_id})
            except Exception as exc:  # noqa: BLE001 - MLflow down: the pod is still resized, its usage is not recorded
                log.warning("%s: cannot open its MLflow stage run at %s (%s): it is resized, not recorded",
                            where, self.tracking_uri, exc)
                run_id = None
        sequence = annotations.get(SEQUENCE_ANNOTATION)
        state = TryState(try_number=plan.identity.try_number, limits=plan.start_limits, resizable=plan.resizable,
                         maximum=plan.maximum, stage_run=StageRunRef(run_id, self.tracking_uri, experiment) if run_id else None,
                         last_resize_sequence=int(sequence) if sequence and sequence.isdigit() else None)
        attempt = KubernetesTry(state, run_log if run_id else None, log, WORKLOAD, plan.identity.task_id, plan.identity.dag_id)
        followed = Followed(pod, attempt, plan)
        with self._lock:
            self.followed[uid] = followed
        attempt.follow(self.core, pod, on_handled=lambda seq: self._annotate(followed.pod, {SEQUENCE_ANNOTATION: str(seq)}))
        log.info("%s: following its monitor (stage run %s)", where, run_id or "none")
        return followed

    def _finish(self, followed: Followed, pod, gone: bool) -> None:
        from airflow_adaptive import metrics

        attempt = followed.attempt
        try:
            # An ended pod's log is complete: read it to its end. A deleted pod's log is gone.
            attempt.stop_following(drain_s=0.0 if gone else self.drain_s)
            attempt.record_outcome(pod, self.core)
            summary = attempt.monitor.summary if attempt.monitor is not None else None
            if summary is not None:
                metrics.record(metrics.profile_vs_observed, followed.plan.profile, summary.peak, attempt.dag_id,
                               attempt.task_id)
            if not gone:
                self._annotate(pod, {RECORDED_ANNOTATION: "true"})
        except Exception:  # noqa: BLE001 - one pod's failure must not stop the others being followed
            log.exception("recording executor pod %s failed", pod.metadata.name)
        finally:
            followed.done.set()

    def _annotate(self, pod, annotations: Mapping[str, str]) -> None:
        try:
            self.core.patch_namespaced_pod(pod.metadata.name, pod.metadata.namespace,
                                           {"metadata": {"annotations": dict(annotations)}})
        except Exception as exc:  # noqa: BLE001 - the pod may be gone; the state is also held in memory
            log.info("cannot annotate pod %s (%s): %s", pod.metadata.name, ", ".join(annotations), exc)

    def close(self) -> None:
        """Stop following (the pods run on; a new follower resumes them from their annotations) and
        wait for outcomes being recorded."""
        with self._lock:
            followed, self.followed = list(self.followed.values()), {}
        for f in followed:
            f.attempt.stop_following()
        self._finishing.shutdown(wait=True)

"""``AdaptiveTrainingOperator``: a KubernetesPodOperator whose pod is sized by the Job Profiler.

Before the pod is built the operator predicts the stage from its ``features`` and sizes it from
the user's own ``container_resources`` (the prior and the bounds) with the sizing policy; it
prints the plan as a table, pushes it to XCom, and opens the stage's MLflow run with the
prediction. Then either

* **Kubernetes**: KPO runs the pod, built by KPO and narrowed by :meth:`build_pod_request_obj`
  (sized container, the monitor as a native sidecar, GPU-type affinity); callbacks follow the
  monitor's resize signals and record an OOM kill in MLflow before KPO deletes the pod; or
* **local** (the embedded default, no Kubernetes configured): ``cmds`` + ``arguments`` run under
  the local Resource Manager (``airflow-adaptive run``'s runner) in the worker's own Python
  environment, with the same plan, monitoring, in-place resizing and logging. The image is
  ignored, and the log says so.

A retry reads the OOM kills earlier tries recorded in MLflow (Airflow clears XCom between tries)
and escalates memory with the deviation policy's rule.

Switches:

| what | how | effect |
|---|---|---|
| shadow mode | ``sizing_mode="shadow"`` (per task; set it in ``default_args`` for a DAG) | predict and log; run with the user's request |
| kill switch | ``AIRFLOW_ADAPTIVE_ENABLED=false`` or ``[adaptive] enabled = False`` | plain KubernetesPodOperator behaviour |
| on a sizing error | ``on_sizing_error="fallback"`` (default) or ``"fail"`` | the user's request with a warning, or a failed task |
| where it runs | ``runner="auto"`` / ``"kubernetes"`` / ``"local"``, or ``AIRFLOW_ADAPTIVE_RUNNER`` | auto: Kubernetes when a kube config is found |
| phases off | ``follow_phases=False`` (templated) | the constant profile: sized for the peak, the monitor's reactive rules only |
| network bandwidth | ``network_bandwidth=True`` (Kubernetes) | ``kubernetes.io/ingress-bandwidth`` / ``egress-bandwidth`` from the predicted network rates (``adapters/kubernetes/bandwidth.py``; needs the CNI bandwidth plugin) |

Ephemeral storage is sized from the prediction at pod start (``logic/sizing.size_storage``), and a
try the kubelet evicts for passing its ephemeral-storage limit is recorded like an OOM kill
(``logic/eviction.py``) so the retry starts with a larger limit.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from airflow_adaptive.adapters.kubernetes.pod_spec import resources_from, storage_from
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.stage_run import STAGE_FEATURES, OomEvent, StageIdentity, check_feature_names
from airflow_adaptive import metrics
from airflow_adaptive.hooks.profiler import DEFAULT_CONN_ID, ProfilerHook
from airflow_adaptive.links import ProfilerModelLink, StageRunLink, model_url, run_url
from airflow_adaptive.logic.deviation import DeviationConfig
from airflow_adaptive.logic.sizing import GpuType, policy_from
from airflow_adaptive.logic.stage_plan import MODES, StagePlan, default_request, plan_stage, prediction_table
from airflow_adaptive.operators.try_state import StageRunRef, TryState

if TYPE_CHECKING:
    from airflow_adaptive.operators.kubernetes import KubernetesTry

ENABLED_ENV = "AIRFLOW_ADAPTIVE_ENABLED"
RUNNER_ENV = "AIRFLOW_ADAPTIVE_RUNNER"
RUNNERS = ("auto", "kubernetes", "local")
ON_ERROR = ("fallback", "fail")
XCOM_PLAN = "adaptive_sizing"
#: What a resumed (deferred) try needs to record its outcome: Airflow resumes on a fresh operator.
XCOM_STATE = "adaptive_state"


class SizingFailed(UserError):
    """Sizing could not be done and the task asked to fail rather than fall back."""


def adaptive_enabled() -> bool:
    """The global kill switch: environment first, then Airflow's ``[adaptive] enabled``."""
    value = os.environ.get(ENABLED_ENV)
    if value is None:
        try:
            from airflow.sdk import conf

            value = conf.get("adaptive", "enabled", fallback="true")
        except Exception:  # noqa: BLE001 - no configuration available: enabled
            value = "true"
    return str(value).strip().lower() not in ("0", "false", "no", "off")


def kubernetes_configured() -> bool:
    """A kube config the provider would use: in-cluster, KUBECONFIG, or ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    paths.append(str(Path.home() / ".kube" / "config"))
    return any(Path(p).is_file() for p in paths)


class AdaptiveTrainingOperator(KubernetesPodOperator):
    """Run one ML pipeline stage with resources predicted for it (see the module docstring).

    :param features: the stage's job features (templated), in the registered profiler's schema.
        ``dag_id`` and ``task_id`` are filled in when missing.
    :param container_resources: the user's own request: requests are the prior, limits the bounds.
    :param model_uri: the profiler, ``models:/job-profiler@champion`` by default.
    :param sizing_preset: ``burstable`` (requests = predicted median) or ``guaranteed``.
    :param sizing_margin: headroom over the covering quantile for limits.
    :param min_resources: / ``max_resources``: clamps, as Kubernetes quantities ({"memory": "8Gi"}).
    :param gpu_types: GPU types to choose from by predicted GPU memory per GPU: full GPUs
        ``{"label", "memory"}`` (node label value) or, for a 1-GPU stage, MIG profiles ``{"mig": "1g.10gb", "memory": "10Gi"}``.
    :param elastic_gpus: ``{"min": m, "max": n}`` or ``(m, n)``: the stage runs on any GPU count in
        [m, n], so the prediction (and a learned speed-up) may choose it; None (default): the
        ``nvidia.com/gpu`` in ``container_resources`` is the job's world size and is never changed.
    :param sizing_mode: ``adaptive``, ``shadow`` (predict and log only) or ``off`` (templated).
    :param on_sizing_error: ``fallback`` to the user's request with a warning, or ``fail``.
    :param runner: ``auto``, ``kubernetes`` or ``local``.
    :param mlflow_conn_id: Airflow connection of the MLflow server (else the environment).
    :param experiment: MLflow experiment of the stage runs.
    :param monitor_image: image of the monitor sidecar (Kubernetes; default: the project's monitor image).
    :param monitor_interval: seconds between the monitor's samples.
    :param in_place_resize: resize the running stage when the monitor signals (default); False
        sizes at start and on retries only (clusters without in-place pod resize).
    :param follow_phases: size by the profile's predicted phases (default); False (templated:
        ``"False"`` too) drops them, so the stage runs on the constant profile and the monitor's
        reactive rules alone (the profile's notes say ``phases: off (follow_phases=False)``).
    :param network_bandwidth: set the pod's ``kubernetes.io/ingress-bandwidth`` and
        ``kubernetes.io/egress-bandwidth`` (bits/s) from the predicted ``network_rx`` / ``network_tx``
        upper (Kubernetes only; off by default). Annotations the user gave are the bound. Only
        shapes traffic where the cluster's CNI chain has the bandwidth plugin.
    """

    template_fields: Sequence[str] = (*KubernetesPodOperator.template_fields, "features", "sizing_mode", "follow_phases")
    operator_extra_links = (StageRunLink(), ProfilerModelLink())

    def __init__(
        self,
        *,
        features: Mapping[str, Any] | None = None,
        model_uri: str = "models:/job-profiler@champion",
        sizing_preset: str = "burstable",
        sizing_margin: float = 0.10,
        min_resources: Mapping[str, str] | None = None,
        max_resources: Mapping[str, str] | None = None,
        gpu_types: Sequence[GpuType | Mapping[str, Any]] = (),
        elastic_gpus: Mapping[str, int] | Sequence[int] | None = None,
        sizing_mode: str = "adaptive",
        on_sizing_error: str = "fallback",
        runner: str = "auto",
        mlflow_conn_id: str | None = DEFAULT_CONN_ID,
        experiment: str | None = None,
        monitor_image: str | None = None,
        monitor_interval: float = 1.0,
        in_place_resize: bool = True,
        follow_phases: bool | str = True,
        network_bandwidth: bool = False,
        **kwargs: Any,
    ) -> None:
        from airflow_adaptive.operators.kubernetes import AdaptivePodCallbacks

        kwargs.setdefault("image", "python:3.11-slim")
        kwargs.setdefault("name", kwargs.get("task_id"))
        callbacks = kwargs.pop("callbacks", None) or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        super().__init__(callbacks=[*callbacks, AdaptivePodCallbacks], **kwargs)
        self.configure_sizing(
            features=features, model_uri=model_uri, sizing_preset=sizing_preset, sizing_margin=sizing_margin,
            min_resources=min_resources, max_resources=max_resources, gpu_types=gpu_types, elastic_gpus=elastic_gpus,
            sizing_mode=sizing_mode, on_sizing_error=on_sizing_error, runner=runner, mlflow_conn_id=mlflow_conn_id,
            experiment=experiment, monitor_image=monitor_image, monitor_interval=monitor_interval,
            in_place_resize=in_place_resize, follow_phases=follow_phases, network_bandwidth=network_bandwidth)

    def configure_sizing(self, *, features, model_uri, sizing_preset, sizing_margin, min_resources, max_resources,
                         gpu_types, elastic_gpus, sizing_mode, on_sizing_error, runner, mlflow_conn_id, experiment,
                         monitor_image, monitor_interval, in_place_resize, follow_phases,
                         network_bandwidth: bool = False) -> None:
        """Validate and keep ``__init__``'s own arguments; the cluster policy (``airflow_adaptive.policy``)
        calls it too, on an existing KubernetesPodOperator task it turns adaptive."""
        if on_sizing_error not in ON_ERROR:
            raise ValueError(f"{self.task_id}: on_sizing_error must be one of {ON_ERROR}, got {on_sizing_error!r}")
        if runner not in RUNNERS:
            raise ValueError(f"{self.task_id}: runner must be one of {RUNNERS}, got {runner!r}")
        if "{{" not in str(sizing_mode) and sizing_mode not in MODES:
            raise ValueError(f"{self.task_id}: sizing_mode must be one of {MODES}, got {sizing_mode!r}")
        if "{{" not in str(follow_phases):
            follow_phases = _flag(follow_phases, f"{self.task_id}: follow_phases", ValueError)
        self.features = dict(features or {})
        self.model_uri = model_uri
        # Clamps are plain text until execute, so a bad one fails the parse with the field named.
        self.policy = policy_from(sizing_preset, sizing_margin, min_resources, max_resources, gpu_types, self.task_id,
                                  elastic_gpus)
        self.sizing_mode = sizing_mode
        self.on_sizing_error = on_sizing_error
        self.runner = runner
        self.mlflow_conn_id = mlflow_conn_id
        self.experiment = experiment
        self.monitor_image = monitor_image
        self.monitor_interval = monitor_interval
        self.in_place_resize = in_place_resize
        self.follow_phases = follow_phases
        self.network_bandwidth = _flag(network_bandwidth, f"{self.task_id}: network_bandwidth", ValueError)
        self._plan: StagePlan | None = None
        #: The pod's bandwidth annotations for this try (``network_bandwidth``), set in execute.
        self._bandwidth: dict[str, str] = {}
        self._run_log = None  # the stage runs' writer, made once per try
        self._profiler_hook: ProfilerHook | None = None
        #: The running try on Kubernetes (its state, what it observed), None when sizing is off.
        self.adaptive_try: KubernetesTry | None = None

    # ------------------------------------------------------------------ the decision
    def _runner(self) -> str:
        chosen = os.environ.get(RUNNER_ENV) or self.runner
        if chosen not in RUNNERS:
            raise UserError(f"{RUNNER_ENV}={chosen!r}: expected one of {RUNNERS}")
        if chosen == "auto":
            return "kubernetes" if kubernetes_configured() else "local"
        return chosen

    def _identity(self, context) -> StageIdentity:
        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return StageIdentity(ti.dag_id, ti.task_id, ti.run_id, int(ti.try_number or 1),
                             int(map_index) if map_index is not None else -1)

    def _stage_features(self, context) -> dict[str, Any]:
        features = self.features
        if isinstance(features, str):  # a template that rendered to JSON text
            try:
                features = json.loads(features)
            except (ValueError, RecursionError):  # RecursionError: [[[[... nested past the stack
                raise UserError(f"task '{self.task_id}': features rendered to text that is not a JSON object: {features[:200]!r}") from None
        if not isinstance(features, Mapping):
            raise UserError(f"task '{self.task_id}': features must be a mapping of feature name to value, got {type(features).__name__}")
        features = dict(features)
        check_feature_names(features, f"task '{self.task_id}' features")
        features.setdefault("dag_id", context["ti"].dag_id)
        features.setdefault("task_id", context["ti"].task_id)
        # The user's own request is a feature the author should not have to repeat.
        requested, _ = resources_from(self.container_resources, f"task '{self.task_id}' container_resources")
        for resource in ("cpu", "memory", "gpu"):
            if getattr(requested, resource) > 0:
                features.setdefault(f"requested_{resource}", getattr(requested, resource))
        return features

    def plan(self, context) -> StagePlan:
        """Predict, size and explain this try (no pod, no process yet)."""
        requested, limited = resources_from(self.container_resources, f"task '{self.task_id}' container_resources")
        storage = storage_from(self.container_resources, f"task '{self.task_id}' container_resources")
        mode = str(self.sizing_mode).strip()
        if mode not in MODES:
            raise UserError(f"task '{self.task_id}': sizing_mode rendered to {mode!r}; expected one of {MODES}")
        if not adaptive_enabled():
            self.log.warning("airflow-adaptive is switched off (%s / [adaptive] enabled): plain KubernetesPodOperator sizing", ENABLED_ENV)
            return plan_stage(requested, limited, None, self.policy, "off")
        if mode == "off":
            self.log.info("sizing_mode is off for task '%s': plain KubernetesPodOperator sizing", self.task_id)
            return plan_stage(requested, limited, None, self.policy, "off")
        identity = self._identity(context)
        features = self._stage_features(context)
        profile, fallback = None, None
        hook = self._hook()
        started = time.perf_counter()
        try:
            profile, _ = hook.predict(features, where=f"task '{self.task_id}' features")
        except Exception as exc:  # noqa: BLE001 - any failure to predict is a fallback (or a clear failure), never a crash
            why = str(exc) if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
            if self.on_sizing_error == "fail":
                raise SizingFailed(f"task '{self.task_id}': cannot size the stage: {why}") from exc
            fallback = why
            self._fallback_label = metrics.fallback_reason(exc)  # the decision metric's reason
            self.log.warning("cannot size task '%s' from the profiler, using the user's own request: %s", self.task_id, why)
        if profile is None and self._runner() == "kubernetes":
            # No prediction: a stage whose author gave no request gets the namespace's LimitRange
            # default, else a stated one, rather than a BestEffort pod (locally the host bounds it).
            requested, limited, why = default_request(requested, limited, self._limit_range())
            if why:
                fallback = f"{fallback}; {why}" if fallback else why
        if profile is not None and not _flag(self.follow_phases, f"task '{self.task_id}': follow_phases", UserError):
            profile = replace(profile, phases={}, notes=(*profile.notes, "phases: off (follow_phases=False)"))
        self.log.info("sizing took %.0f ms (model %s)", (time.perf_counter() - started) * 1000, self.model_uri)
        metrics.record(metrics.sizing_duration, time.perf_counter() - started, profile is not None, identity.dag_id, identity.task_id)
        earlier = self._earlier_ooms(hook.tracking_uri, identity)
        deferred = self._earlier_deferred(hook.tracking_uri, identity)
        return plan_stage(requested, limited, profile, self.policy, mode, fallback, earlier, deferred=deferred,
                          in_place=bool(self.in_place_resize), storage=storage,
                          config=DeviationConfig().for_interval(float(self.monitor_interval)))

    def _bandwidth_annotations(self, plan: StagePlan) -> dict[str, str]:
        """``network_bandwidth``: the pod's bandwidth annotations (adaptive mode; shadow only logs
        them); a user annotation Kubernetes would refuse is a UserError naming it."""
        from airflow_adaptive.adapters.kubernetes.bandwidth import plan_bandwidth

        if not self.network_bandwidth or plan.mode == "off":
            return {}
        bandwidth = plan_bandwidth(plan.profile if not plan.fallback else None, self.annotations, self.policy.margin,
                                   f"task '{self.task_id}'")
        if plan.mode == "shadow":
            for reason in bandwidth.reasons:
                self.log.info("network bandwidth (shadow mode, not applied): %s", reason)
            return {}
        for reason in bandwidth.reasons:
            self.log.info("network bandwidth: %s", reason)
        return dict(bandwidth.annotations)

    def _limit_range(self):
        """The stage namespace's LimitRange defaults, None when there are none or they cannot be read."""
        from airflow_adaptive.adapters.kubernetes.cluster_state import read_limit_range

        try:
            namespace = self.namespace or self.hook.get_namespace() or "default"
            return read_limit_range(self.hook.core_v1_client, namespace)
        except Exception as exc:  # noqa: BLE001 - no RBAC (rbac.nodeFit), no API server: the stated default
            self.log.warning("cannot read the namespace's LimitRanges (%s): the stated default request is used", exc)
            return None

    def _hook(self) -> ProfilerHook:
        """One per try: it looks the MLflow connection up (a call to Airflow's API) when made."""
        if self._profiler_hook is None:
            self._profiler_hook = ProfilerHook(self.mlflow_conn_id, self.model_uri)
        return self._profiler_hook

    def _stage_log(self, tracking_uri: str):
        if self._run_log is None:
            from airflow_adaptive.adapters.mlflow.stage_run_log import STAGE_EXPERIMENT, StageRunLog

            self._run_log = StageRunLog(tracking_uri, self.experiment or STAGE_EXPERIMENT)
        return self._run_log

    def _earlier_ooms(self, tracking_uri: str, identity: StageIdentity) -> list[OomEvent]:
        if identity.try_number <= 1:
            return []
        try:
            return self._stage_log(tracking_uri).earlier_oom_kills(identity)
        except Exception as exc:  # noqa: BLE001 - MLflow down: the retry cannot escalate, but must still run
            self.log.warning("cannot read earlier tries' OOM kills from MLflow (%s): the retry is not escalated", exc)
            return []

    def _earlier_deferred(self, tracking_uri: str, identity: StageIdentity) -> dict[str, float]:
        if identity.try_number <= 1:
            return {}
        try:
            return self._stage_log(tracking_uri).earlier_deferred_sizes(identity)
        except Exception as exc:  # noqa: BLE001 - MLflow down: the retry starts at its plan
            self.log.warning("cannot read earlier tries' deferred resizes from MLflow (%s)", exc)
            return {}

    def _record_plan(self, context, plan: StagePlan) -> StageRunRef | None:
        """Task log table, XCom, and the stage's MLflow run (never fatal: the stage matters more)."""
        self.log.info("resources for task '%s':\n%s", self.task_id, prediction_table(plan))
        ti = context["ti"]
        ti.xcom_push(key=XCOM_PLAN, value=plan.to_dict())
        for link in self.operator_extra_links:  # empty until known: the UI asks for every link
            ti.xcom_push(key=link.xcom_key, value="")
        if plan.mode == "off":
            return None
        tracking = self._hook().tracking_uri
        identity = self._identity(context)
        try:
            run_log = self._stage_log(tracking)
            features = self._stage_features(context)
            if self.policy.elastic is not None and plan.size.limits.gpu > 0 and plan.mode == "adaptive":
                # The count an elastic stage ran at: what its speed-up (duration against GPUs) is learned from.
                features.setdefault("world_size", plan.size.limits.gpu)
            run_id = run_log.start(
                identity, features, plan.profile,
                plan.size.limits.as_dict(), plan.requested.as_dict(),
                sizing=plan.sizing, reason="; ".join(plan.reasons()), model_uri=self.model_uri,
                model_version=plan.profile.model_version if plan.profile else None, schema_id=STAGE_FEATURES.id,
            )
            ti.xcom_push(key=StageRunLink().xcom_key, value=run_url(tracking, run_log.experiment_id, run_id))
            version = plan.profile.model_version if plan.profile else ""
            name = self.model_uri.split("/")[1].split("@")[0] if self.model_uri.startswith("models:/") else self.model_uri
            ti.xcom_push(key=ProfilerModelLink().xcom_key, value=model_url(tracking, name, version) if version else "")
            return StageRunRef(run_id, run_log.tracking_uri, run_log.experiment_name)
        except Exception as exc:  # noqa: BLE001 - MLflow down: log, run the stage anyway
            self.log.warning("cannot open the stage's MLflow run at %s (%s): usage of this try is not recorded", tracking, exc)
            return None

    def _kubernetes_try(self, state: TryState) -> KubernetesTry:
        from airflow_adaptive.operators.kubernetes import KubernetesTry

        run_log = None
        if state.stage_run is not None:
            run_log = self._run_log
            if run_log is None or run_log.tracking_uri != state.stage_run.tracking_uri:
                from airflow_adaptive.adapters.mlflow.stage_run_log import StageRunLog

                run_log = StageRunLog(state.stage_run.tracking_uri, state.stage_run.experiment)
        return KubernetesTry(state, run_log, self.log, self.base_container_name, self.task_id, self.dag_id)

    def _resume(self, context) -> None:
        """A deferred try resumes on a freshly parsed operator: its state comes back from XCom."""
        if self.adaptive_try is not None:
            return
        saved = context["ti"].xcom_pull(task_ids=self.task_id, key=XCOM_STATE)
        if saved is None:  # sizing was off for this try: nothing was saved, nothing to follow
            return
        try:
            state = TryState.from_xcom(saved, f"task '{self.task_id}' XCom '{XCOM_STATE}'")
        except UserError as exc:
            self.log.warning("%s; this try's outcome is not recorded in MLflow", exc)
            return
        self.adaptive_try = self._kubernetes_try(state)

    # ------------------------------------------------------------------ execution
    def execute(self, context):
        try:
            plan = self.plan(context)
            runner = self._runner()
            self._bandwidth = self._bandwidth_annotations(plan) if runner == "kubernetes" else {}
        except UserError as exc:
            from airflow.sdk.exceptions import AirflowFailException

            self.log.error("%s", exc)
            raise AirflowFailException(str(exc)) from None
        self._plan = plan
        metrics.record(metrics.plan_decision, plan, context["ti"].dag_id, self.task_id,
                       fallback=getattr(self, "_fallback_label", None), switched_off=not adaptive_enabled())
        stage_run = self._record_plan(context, plan)
        state = TryState.for_plan(plan, self._identity(context).try_number, stage_run)
        if runner == "local":
            return self._execute_local(context, plan, state)
        if plan.mode != "off":
            context["ti"].xcom_push(key=XCOM_STATE, value=state.to_xcom())
            self.adaptive_try = self._kubernetes_try(state)
        return super().execute(context)

    def _execute_local(self, context, plan: StagePlan, state: TryState):
        from airflow.sdk.exceptions import AirflowException

        from airflow_adaptive.operators.local import run_stage_locally

        from airflow.sdk.exceptions import AirflowFailException

        try:
            result = run_stage_locally(self, context, plan, state, self._run_log if state.stage_run else None)
        except UserError as exc:  # e.g. a command that is not on this worker
            self.log.error("%s", exc)
            if state.stage_run and self._run_log is not None:
                try:
                    self._run_log.backend.terminate(state.stage_run.run_id, "FAILED")
                except Exception:  # noqa: BLE001 - best effort: the task's failure is what matters
                    pass
            raise AirflowFailException(str(exc)) from None
        if result.oom_killed:
            raise AirflowException(f"task '{self.task_id}' was OOM-killed at {result.limit_text}; "
                                   "the next try gets more memory (recorded in the stage's MLflow run)")
        if result.exit_code != 0:
            raise AirflowException(f"task '{self.task_id}': the command exited with code {result.exit_code}")
        return result.summary if self.do_xcom_push else None

    # ------------------------------------------------------------------ Kubernetes
    def build_pod_request_obj(self, context=None, *, dry_run: bool = False) -> k8s.V1Pod:
        pod = super().build_pod_request_obj(context, dry_run=dry_run)
        plan = self._plan
        if plan is None or plan.mode == "off":
            return pod
        from airflow_adaptive.operators.kubernetes import shape_stage_pod

        return shape_stage_pod(self, pod, plan)

    def await_pod_start(self, pod: k8s.V1Pod) -> None:
        """Fail at once, saying what to do, when the monitor sidecar's image cannot be pulled (the
        provider would wait its startup timeout and report only that); then the provider's wait."""
        from airflow_adaptive.operators.kubernetes import wait_for_monitor

        if self._plan is not None and self._plan.mode != "off":
            wait_for_monitor(self, pod)
        return super().await_pod_start(pod)

    def await_pod_completion(self, pod: k8s.V1Pod):
        """The provider's wait (it follows the workload's log); when the kubelet evicts the pod, the
        log can vanish mid-read (400 "container ... is terminated") and the provider would raise
        before its ``on_pod_completion`` callbacks: the eviction would go unrecorded and the retry
        would not be larger. An evicted pod's wait ends here instead; the provider then fails the try."""
        from kubernetes.client.exceptions import ApiException

        from airflow_adaptive.operators.kubernetes import evicted_while_following

        try:
            return super().await_pod_completion(pod)
        except ApiException as exc:
            if self.adaptive_try is None or not evicted_while_following(self, pod, exc):
                raise
            return None

    def defer(self, *, trigger, method_name, kwargs=None, timeout=None):
        """The provider's pod trigger, as the project's trigger that also applies resizes."""
        from airflow.providers.cncf.kubernetes.triggers.pod import KubernetesPodTrigger

        from airflow_adaptive.triggers.pod import AdaptivePodTrigger

        if self.adaptive_try is not None and isinstance(trigger, KubernetesPodTrigger) and not isinstance(trigger, AdaptivePodTrigger):
            trigger = self.adaptive_try.trigger(trigger)
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def trigger_reentry(self, context, event):
        self._resume(context)
        if self.adaptive_try is not None:
            self.adaptive_try.reentered(event)
            if event.get("observed_peak"):  # the pod ended: its peaks against the prediction in XCom
                metrics.record(lambda: metrics.profile_vs_observed(
                    (context["ti"].xcom_pull(task_ids=self.task_id, key=XCOM_PLAN) or {}).get("predicted"),
                    event["observed_peak"], self.dag_id, self.task_id))
        return super().trigger_reentry(context, event)


def _flag(value: Any, where: str, error: type[Exception]) -> bool:
    """A boolean argument that may come from a template (rendered as text: "True", "false")."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise error(f"{where} must be true or false, got {value!r}")


def python_command(cmds: Sequence[str] | None, arguments: Sequence[str] | None) -> list[str]:
    """The local command: ``python``/``python3`` is this worker's interpreter (the image is not used)."""
    command = [str(c) for c in (cmds or [])] + [str(a) for a in (arguments or [])]
    if command and command[0] in ("python", "python3", "python3.11"):
        command[0] = sys.executable
    elif command and os.sep not in command[0] and shutil.which(command[0]) is None:
        raise UserError(f"the command {command[0]!r} is not on this worker's PATH (local runner: the image is not used)")
    return command


__all__ = ["AdaptiveTrainingOperator", "SizingFailed", "adaptive_enabled", "kubernetes_configured"]

"""A cluster policy that gives existing DAGs adaptive sizing without rewriting them.

A platform team installs it once, in ``$AIRFLOW_HOME/config/airflow_local_settings.py`` (Airflow
puts that folder on ``sys.path``) or any ``airflow_local_settings`` module on the ``PYTHONPATH``::

    from airflow_adaptive.policy import adaptive_policy

    _adaptive = adaptive_policy(select={"tags": ["ml"]}, mode="shadow")
    task_policy = _adaptive.task_policy
    pod_mutation_hook = _adaptive.pod_mutation_hook
    __all__ = ["task_policy", "pod_mutation_hook"]

* ``task_policy`` (DAG processor and worker, at parse time): a selected KubernetesPodOperator or
  ``@task.kubernetes`` task becomes adaptive (:mod:`airflow_adaptive.policy.operator`); any other
  selected task, under the KubernetesExecutor, is marked for ``pod_mutation_hook``.
* ``pod_mutation_hook`` (scheduler): the executor's worker pod of a marked task is sized
  (:mod:`airflow_adaptive.policy.executor`); never waits on MLflow.

Selection: :mod:`airflow_adaptive.policy.selection`; features: :mod:`airflow_adaptive.policy.features`.
The kill switch (``AIRFLOW_ADAPTIVE_ENABLED=false`` / ``[adaptive] enabled = False``) is read by
both hooks and, at run time, by the operator, so every task runs as written.

This module imports no Airflow at import time: ``airflow_local_settings`` is imported while
Airflow itself is still being initialised.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Mapping, Sequence

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.logic.stage_plan import MODES
from airflow_adaptive.policy.features import derived_features, operator_name, task_settings
from airflow_adaptive.policy.selection import PolicyConfigError, Selector, TaskFacts

log = logging.getLogger("airflow_adaptive.policy")

EXECUTOR_PODS = ("auto", True, False)


class AdaptivePolicy:
    """The two hooks and what they share. Build it with :func:`adaptive_policy`.

    ``task_policy`` and ``pod_mutation_hook`` are plain functions (Airflow registers them with
    pluggy, which cannot mark a bound method).
    """

    def __init__(self, selector: Selector, mode: str, sizing: Mapping[str, Any], *, shadow_monitor: bool,
                 executor_pods: bool | str, executor_timeout_s: float, model_ttl_s: float,
                 executor_follower: bool = False) -> None:
        self.selector, self.mode, self.sizing = selector, mode, dict(sizing)
        self.shadow_monitor, self.executor_pods, self.executor_follower = shadow_monitor, executor_pods, executor_follower
        self._executor_timeout_s, self._model_ttl_s = executor_timeout_s, model_ttl_s
        self._sizer = None
        self.task_policy = _hook("task", self.apply_to_task)
        self.pod_mutation_hook = _hook("pod", self.apply_to_pod)

    # ------------------------------------------------------------------ task_policy
    def decide(self, task) -> str | None:
        """What the policy does with ``task``: ``kubernetes``, ``executor`` or None (leave it)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from airflow.sdk import BaseOperator

        from airflow_adaptive.operators.training import AdaptiveTrainingOperator

        from airflow_adaptive.policy.operator import is_mapped

        if is_mapped(task):  # .partial().expand(): its instances are built from operator_class
            cls = task.operator_class
            if (not isinstance(cls, type) or not issubclass(cls, KubernetesPodOperator)
                    or issubclass(cls, AdaptiveTrainingOperator) or not self.selector.selects(facts_of(task))):
                return None  # a mapped task under the KubernetesExecutor: its pod_override is per instance
            return "kubernetes"
        if not isinstance(task, BaseOperator):
            return None
        if isinstance(task, AdaptiveTrainingOperator) or not self.selector.selects(facts_of(task)):
            return None
        if isinstance(task, KubernetesPodOperator):
            return "kubernetes"
        return "executor" if self._marks_executor_pods() else None

    def apply_to_task(self, task) -> None:
        from airflow_adaptive.operators.training import adaptive_enabled

        if self.mode == "off" or not adaptive_enabled():
            return
        what = self.decide(task)
        if what is None:
            return
        where = f"task '{task.task_id}' of DAG '{task.dag_id}'"
        try:
            settings = task_settings(task.executor_config, where)
        except PolicyConfigError as exc:
            from airflow.exceptions import AirflowClusterPolicyViolation

            raise AirflowClusterPolicyViolation(str(exc)) from None
        mode = settings.sizing_mode or self.mode
        if mode == "off":
            return
        if what == "kubernetes":
            from airflow_adaptive.policy.operator import make_adaptive

            make_adaptive(task, sizing_mode=mode, features=settings.features, shadow_monitor=self.shadow_monitor,
                          sizing=self.sizing)
        else:
            self._mark_executor_pod(task, mode, settings.features, where)
        log.debug("airflow-adaptive policy: %s (%s) sized in %s mode (%s)", where, type(task).__name__, mode, what)

    def _marks_executor_pods(self) -> bool:
        if self.executor_pods != "auto":
            return bool(self.executor_pods)
        from airflow.configuration import conf

        return "KubernetesExecutor" in conf.get("core", "executor", fallback="")

    def _mark_executor_pod(self, task, mode: str, declared: Mapping[str, Any], where: str) -> None:
        from kubernetes.client import models as k8s

        from airflow_adaptive.policy.executor import MARK_ANNOTATION, ExecutorMark

        config = dict(task.executor_config or {})
        if "KubernetesExecutor" in config:
            log.warning("%s: executor_config uses the legacy 'KubernetesExecutor' key, which cannot be combined with a "
                        "pod_override: its executor pod is not sized (use pod_override)", where)
            return
        override = config.get("pod_override")
        if override is not None and not isinstance(override, k8s.V1Pod):
            return  # the executor refuses it anyway, with its own error
        pod = copy.deepcopy(override) if override is not None else k8s.V1Pod()  # default_args may share one
        pod.metadata = pod.metadata or k8s.V1ObjectMeta()
        features, _ = derived_features(operator_name(type(task)), None, _param_defaults(task), declared)
        pod.metadata.annotations = {**(pod.metadata.annotations or {}),
                                    MARK_ANNOTATION: ExecutorMark(mode, features).to_annotation()}
        task.executor_config = {**config, "pod_override": pod}

    # ------------------------------------------------------------------ pod_mutation_hook
    def apply_to_pod(self, pod) -> None:
        try:
            self._executor_sizer()(pod)
        except Exception:  # noqa: BLE001 - a sizing bug must never stop the executor from creating the pod
            log.exception("airflow-adaptive: sizing the executor pod failed; it keeps the task's own request")

    def _executor_sizer(self):
        if self._sizer is None:
            from airflow_adaptive.hooks.profiler import ProfilerHook
            from airflow_adaptive.logic.sizing import policy_from
            from airflow_adaptive.policy.executor import EarlierTries, ExecutorPodSizer, ProfilerCache

            s = self.sizing
            cache = ProfilerCache(lambda: ProfilerHook(s["mlflow_conn_id"], s["model_uri"]).load(),
                                  timeout_s=self._executor_timeout_s, ttl_s=self._model_ttl_s)
            policy = policy_from(s["sizing_preset"], s["sizing_margin"], s["min_resources"], s["max_resources"], (),
                                 "adaptive_policy")
            self._sizer = ExecutorPodSizer(cache, s["model_uri"], policy, follower=self.executor_follower,
                                           monitor_image=s["monitor_image"], monitor_interval=s["monitor_interval"],
                                           experiment=s["experiment"],
                                           earlier=EarlierTries(self._earlier_tries, self._executor_timeout_s))
        return self._sizer

    def _earlier_tries(self, identity):
        """A retry's earlier OOM kills and deferred sizes, from the stage runs the follower wrote."""
        from airflow_adaptive.adapters.mlflow.stage_run_log import STAGE_EXPERIMENT, StageRunLog
        from airflow_adaptive.hooks.profiler import ProfilerHook

        tracking = ProfilerHook(self.sizing["mlflow_conn_id"], self.sizing["model_uri"]).tracking_uri
        run_log = StageRunLog(tracking, self.sizing["experiment"] or STAGE_EXPERIMENT)
        return run_log.earlier_oom_kills(identity), run_log.earlier_deferred_sizes(identity)

    def install(self, namespace: dict) -> None:
        """``adaptive_policy(...).install(globals())`` in ``airflow_local_settings.py``."""
        namespace["task_policy"] = self.task_policy
        namespace["pod_mutation_hook"] = self.pod_mutation_hook


def adaptive_policy(
    *,
    select: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    exclude: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    mode: str = "shadow",
    model_uri: str = "models:/job-profiler@champion",
    mlflow_conn_id: str | None = "mlflow_default",
    sizing_preset: str = "burstable",
    sizing_margin: float = 0.10,
    min_resources: Mapping[str, str] | None = None,
    max_resources: Mapping[str, str] | None = None,
    monitor_image: str | None = None,
    monitor_interval: float = 1.0,
    shadow_monitor: bool = False,
    experiment: str | None = None,
    executor_pods: bool | str = "auto",
    executor_timeout_s: float = 1.0,
    model_ttl_s: float = 300.0,
    executor_follower: bool = False,
) -> AdaptivePolicy:
    """The cluster policy (see the module docstring).

    :param select: which tasks (:mod:`~airflow_adaptive.policy.selection`); ``{}``: every task.
    :param exclude: tasks never sized, same form; wins over ``select``.
    :param mode: ``shadow`` (default: predict and record, the pod runs as written), ``adaptive`` or
        ``off``; a task may set its own in ``executor_config={"airflow_adaptive": {"sizing_mode": ...}}``.
    :param shadow_monitor: in shadow mode, add the monitor sidecar (recommend channel) so usage is
        recorded too; the default leaves the pod exactly as written.
    :param executor_pods: mark selected non-KPO tasks for ``pod_mutation_hook``: ``auto`` when
        ``[core] executor`` includes the KubernetesExecutor.
    :param executor_timeout_s: / ``model_ttl_s``: the executor path's model cache (``ProfilerCache``);
        ``executor_timeout_s`` also bounds a retry's read of its earlier OOM kills.
    :param executor_follower: the executor-pod follower runs in the worker pods' namespace
        (``airflow-adaptive follow-executor-pods``, the chart's ``executorFollower``): adaptive
        executor pods then start at their plan's first size with the monitor sidecar and are resized
        in place, and the follower writes their stage runs. False: sized once, at their peak.

    The other arguments are AdaptiveTrainingOperator's, for every task the policy sizes.
    """
    where = "adaptive_policy"
    if mode not in MODES:
        raise PolicyConfigError(f"{where}(mode={mode!r}): expected one of {MODES}")
    if not isinstance(executor_follower, bool):
        raise PolicyConfigError(f"{where}(executor_follower={executor_follower!r}): expected True or False")
    if executor_pods not in EXECUTOR_PODS:
        raise PolicyConfigError(f"{where}(executor_pods={executor_pods!r}): expected 'auto', True or False")
    for name, value in (("executor_timeout_s", executor_timeout_s), ("model_ttl_s", model_ttl_s),
                        ("monitor_interval", monitor_interval)):
        if not isinstance(value, (int, float)) or value <= 0:
            raise PolicyConfigError(f"{where}({name}={value!r}): expected a number of seconds > 0")
    selector = Selector.from_config(select, exclude, where)
    from airflow_adaptive.logic.sizing import policy_from

    try:  # a bad quantity fails here, once, rather than at every parse
        policy_from(sizing_preset, sizing_margin, min_resources, max_resources, (), where)
    except (UserError, ValueError, TypeError) as exc:
        raise PolicyConfigError(str(exc)) from None
    sizing = {"model_uri": model_uri, "mlflow_conn_id": mlflow_conn_id, "sizing_preset": sizing_preset,
              "sizing_margin": sizing_margin, "min_resources": min_resources, "max_resources": max_resources,
              "monitor_image": monitor_image, "monitor_interval": monitor_interval, "experiment": experiment}
    return AdaptivePolicy(selector, mode, sizing, shadow_monitor=shadow_monitor, executor_pods=executor_pods,
                          executor_timeout_s=executor_timeout_s, model_ttl_s=model_ttl_s,
                          executor_follower=executor_follower)


def facts_of(task) -> TaskFacts:
    dag = getattr(task, "dag", None)
    return TaskFacts(dag_id=str(getattr(task, "dag_id", "") or ""), task_id=str(task.task_id),
                     tags=frozenset(str(t) for t in (getattr(dag, "tags", None) or ())),
                     pool=str(getattr(task, "pool", "") or ""), queue=str(getattr(task, "queue", "") or ""))


def _param_defaults(task) -> dict[str, Any]:
    """The task's params as known at parse time (a param without a default is left out)."""
    params, out = getattr(task, "params", None) or {}, {}
    for name in params:
        try:
            out[name] = params[name]
        except Exception:  # noqa: BLE001 - no default, or one that does not validate: not a feature
            continue
    return out


def _hook(arg: str, target: Callable[[Any], None]) -> Callable[[Any], None]:
    """A plain function named after its hook, taking the hookspec's argument name."""
    if arg == "task":
        def task_policy(task) -> None:
            target(task)
        return task_policy

    def pod_mutation_hook(pod) -> None:
        target(pod)
    return pod_mutation_hook


__all__ = ["AdaptivePolicy", "PolicyConfigError", "Selector", "TaskFacts", "adaptive_policy"]

"""An existing KubernetesPodOperator task, turned into an adaptive one by the cluster policy.

The task keeps its object and its arguments; its class becomes an *adaptive variant* of its own
class, made once per class: ``(PolicyAdaptiveMixin, AdaptiveTrainingOperator, <its class>)``.
AdaptiveTrainingOperator only extends KubernetesPodOperator through cooperative ``super()`` calls,
so in that order its hooks run first and hand over to the task's own class (``@task.kubernetes``
writes its script, then KPO runs the pod): one code path for the plan, the monitor sidecar,
in-place resizes, OOM retry escalation and the MLflow stage run.

Why a class swap works in Airflow 3: the task policy runs wherever a DAG file is parsed into a
DagBag, the DAG processor (what the scheduler and UI see, serialized, with the variant's name as
the task type) and the worker (``task_runner.parse``: the task that runs is re-parsed there and
swapped again). A mapped task (``.partial(...).expand(...)``) is a ``MappedOperator`` until the
worker unmaps it: the policy swaps its ``operator_class`` for the variant and adds the sizing
settings to its ``partial_kwargs`` (one key, :data:`SETTINGS_KWARG`), so each mapped instance is
built adaptive, with the same settings, and sized as its own try (its features are the task's:
the same for every instance of one run, so one prediction; each instance's usage is recorded).

| policy mode | the pod | recorded |
|---|---|---|
| ``shadow`` (default) | exactly the task's own pod (no sidecar, no annotation): only a prediction and the try's outcome | plan in the task log and XCom, stage run in MLflow with the prediction and outcome (OOM or not) |
| ``shadow`` with ``shadow_monitor=True`` | the task's own size, plus the monitor sidecar (recommend channel) | as above, plus usage samples |
| ``adaptive`` | sized, the monitor sidecar, resized in place | as AdaptiveTrainingOperator |
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Mapping

from airflow_adaptive.operators.kubernetes import AdaptivePodCallbacks, KubernetesTry
from airflow_adaptive.operators.training import AdaptiveTrainingOperator
from airflow_adaptive.policy.features import derived_features, operator_name

_variants: dict[type, type] = {}  # a cache of classes (one per KPO class), not configuration
_lock = threading.Lock()
#: The one ``partial_kwargs`` key the policy adds to a mapped task: the settings each mapped
#: instance is configured with when the worker unmaps it.
SETTINGS_KWARG = "airflow_adaptive_policy"


class UnmonitoredTry(KubernetesTry):
    """A shadow try whose pod has no monitor: nothing to follow, only the outcome to record."""

    def follow(self, client, pod) -> None:
        return None

    def trigger(self, trigger):
        return trigger


class PolicyAdaptiveMixin:
    """What the cluster policy adds to AdaptiveTrainingOperator's behaviour (see the module docstring)."""

    #: The task's own class (its ``operator`` feature), set on each variant.
    adaptive_source: type
    adaptive_shadow_monitor: bool = False

    def __init__(self, *args, **kwargs) -> None:
        settings = kwargs.pop(SETTINGS_KWARG, None)  # a mapped instance, built by unmap()
        super().__init__(*args, **kwargs)
        if settings is not None:
            configure(self, **settings)

    def _stage_features(self, context) -> dict[str, Any]:
        features = super()._stage_features(context)  # declared, then dag_id, task_id, requested_*
        params = context.get("params") or {}
        derived, skipped = derived_features(operator_name(self.adaptive_source), getattr(self, "image", None),
                                            {k: params[k] for k in params}, {})
        if skipped and not getattr(self, "_adaptive_skipped_logged", False):
            self._adaptive_skipped_logged = True
            self.log.info("params %s are not features (not a scalar, or not an identifier name)", skipped)
        for name, value in derived.items():
            features.setdefault(name, value)
        return features

    def _pod_untouched(self) -> bool:
        return str(self.sizing_mode).strip() == "shadow" and not self.adaptive_shadow_monitor

    def build_pod_request_obj(self, context=None, *, dry_run: bool = False):
        if self._pod_untouched():  # the task's own pod, as its class builds it
            return super(AdaptiveTrainingOperator, self).build_pod_request_obj(context, dry_run=dry_run)
        return super().build_pod_request_obj(context, dry_run=dry_run)

    def await_pod_start(self, pod) -> None:
        if self._pod_untouched():  # no monitor to wait for
            return super(AdaptiveTrainingOperator, self).await_pod_start(pod)
        return super().await_pod_start(pod)

    def _kubernetes_try(self, state) -> KubernetesTry:
        current = super()._kubernetes_try(state)
        if self._pod_untouched():
            current.__class__ = UnmonitoredTry
        return current


def adaptive_variant(cls: type) -> type:
    """The adaptive class of KPO subclass ``cls`` (made once, then reused)."""
    if issubclass(cls, AdaptiveTrainingOperator):
        return cls
    with _lock:
        variant = _variants.get(cls)
        if variant is None:
            extra = [f for f in AdaptiveTrainingOperator.template_fields if f not in cls.template_fields
                     and f not in ("cmds", "arguments")]  # @task.kubernetes makes its own command
            links = list(getattr(cls, "operator_extra_links", ()) or ())
            links += [link for link in AdaptiveTrainingOperator.operator_extra_links if type(link) not in map(type, links)]
            name = "Adaptive" + cls.__name__.lstrip("_")
            variant = type(cls)(name, (PolicyAdaptiveMixin, AdaptiveTrainingOperator, cls), {
                "__module__": __name__, "__qualname__": name,
                "template_fields": (*cls.template_fields, *extra),
                "operator_extra_links": tuple(links),
                "adaptive_source": cls,
            })
            _variants[cls] = variant
    return variant


def _sizing_defaults() -> dict[str, Any]:
    """AdaptiveTrainingOperator's own defaults: one source for the operator and the policy."""
    params = inspect.signature(AdaptiveTrainingOperator.__init__).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY}


def make_adaptive(task, *, sizing_mode: str, features: Mapping[str, Any], shadow_monitor: bool,
                  sizing: Mapping[str, Any]) -> None:
    """Turn KPO task ``task`` adaptive in place. ``sizing``: AdaptiveTrainingOperator arguments.

    A mapped task (``MappedOperator``) gets the variant as the class its instances are built
    from, and the settings in its ``partial_kwargs``."""
    settings = {"sizing_mode": sizing_mode, "features": dict(features), "shadow_monitor": bool(shadow_monitor),
                "sizing": dict(sizing)}
    if is_mapped(task):
        variant = adaptive_variant(task.operator_class)
        task.operator_class = variant
        task.partial_kwargs = {**task.partial_kwargs, SETTINGS_KWARG: settings}
        task.task_type = variant.__name__
        return
    task.__class__ = adaptive_variant(type(task))
    configure(task, **settings)


def is_mapped(task) -> bool:
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    return isinstance(task, MappedOperator)


def configure(task, *, sizing_mode: str, features: Mapping[str, Any], shadow_monitor: bool,
              sizing: Mapping[str, Any]) -> None:
    """The sizing settings of an adaptive variant's instance, and its pod callbacks."""
    callbacks = list(task.callbacks or [])
    if AdaptivePodCallbacks not in callbacks:
        task.callbacks = [*callbacks, AdaptivePodCallbacks]
    settings = {**_sizing_defaults(), **dict(sizing), "features": dict(features), "sizing_mode": sizing_mode,
                # an existing KPO task runs on Kubernetes, never in the worker's own process
                "runner": "kubernetes"}
    task.configure_sizing(**settings)
    task.adaptive_shadow_monitor = bool(shadow_monitor)

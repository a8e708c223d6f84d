"""``PredictedResourcesFitSensor``: hold a DAG until the next stage's *predicted* size fits.

A stage whose pod cannot be scheduled sits Pending inside its task, holding a worker slot and
eating its own timeout; one that can never be scheduled fails only after that. This sensor sizes
the stage exactly as ``AdaptiveTrainingOperator`` will (``ProfilerHook.predict`` + ``plan_stage``
with the same policy), then asks the pure :func:`~airflow_adaptive.logic.capacity.fit`:

| ``fit`` | the sensor |
|---|---|
| ``fits`` | done; the size (requests, limits, GPU type, node) goes to XCom as the return value |
| ``wait`` | pokes again (or, deferrable, the trigger keeps polling) |
| ``never`` | ``AirflowFailException`` with the reason: waiting cannot help |

A prediction that cannot be made (no model, MLflow down, a bad feature) falls back to the
user's request with a warning, as the operator's default ``on_sizing_error="fallback"`` does.
The pod also carries the monitor sidecar (``MonitorSidecar``'s 50m / 64Mi), counted as overhead.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Mapping, Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowFailException

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.hooks.profiler import DEFAULT_CONN_ID, ProfilerHook
from airflow_adaptive.logic.capacity import GPU_LABEL_KEY, ClusterState, FitResult, fit_state
from airflow_adaptive.logic.sizing import GpuType, SizingPolicy, policy_from
from airflow_adaptive.logic.stage_plan import StagePlan, plan_stage

#: The monitor sidecar every adaptive pod carries (adapters/kubernetes/pod_spec.py MonitorSidecar
#: defaults, requests == limits).
MONITOR_OVERHEAD = ResourceVector(cpu=0.05, memory=64 * 2**20)


class PredictedResourcesFitSensor(BaseSensorOperator):
    """Wait until the next stage's predicted pod fits on a node (see the module docstring).

    :param features: the stage's job features (templated); ``dag_id`` and ``task_id`` (``stage_task_id``,
        else this sensor's) are filled in when missing, as the operator does.
    :param container_resources: the user's request for the stage (templated), as for the operator.
    :param namespace: where the stage's pod will run (templated): its quotas and limit ranges count.
    :param model_uri: / ``sizing_preset`` (templated) / ``sizing_margin`` / ``min_resources`` /
        ``max_resources`` / ``gpu_types`` / ``elastic_gpus``: the operator's sizing arguments; pass the same ones.
    :param gpu_label_key: the node label that names the GPU type.
    :param include_monitor: count the monitor sidecar (False for a stage in ``off`` mode).
    :param deferrable: wait in the triggerer (:class:`~airflow_adaptive.triggers.capacity.CapacityTrigger`).
    """

    template_fields: Sequence[str] = ("features", "container_resources", "namespace", "model_uri", "sizing_preset")

    def __init__(
        self,
        *,
        features: Mapping[str, Any] | None = None,
        container_resources: Any = None,
        namespace: str = "default",
        model_uri: str = "models:/job-profiler@champion",
        sizing_preset: str = "burstable",
        sizing_margin: float = 0.10,
        min_resources: Mapping[str, str] | None = None,
        max_resources: Mapping[str, str] | None = None,
        gpu_types: Sequence[GpuType | Mapping[str, Any]] = (),
        elastic_gpus: Mapping[str, int] | Sequence[int] | None = None,
        stage_task_id: str | None = None,
        mlflow_conn_id: str | None = DEFAULT_CONN_ID,
        kubernetes_conn_id: str | None = "kubernetes_default",
        gpu_label_key: str = GPU_LABEL_KEY,
        include_monitor: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.features = dict(features or {})
        self.container_resources = container_resources
        self.namespace = namespace
        self.model_uri = model_uri
        self.sizing_preset = sizing_preset
        self.sizing_margin = sizing_margin
        self.min_resources = dict(min_resources or {})
        self.max_resources = dict(max_resources) if max_resources else None
        self.gpu_types = tuple(gpu_types)
        self.elastic_gpus = elastic_gpus
        self.stage_task_id = stage_task_id
        self.mlflow_conn_id = mlflow_conn_id
        self.kubernetes_conn_id = kubernetes_conn_id
        self.gpu_label_key = gpu_label_key
        self.include_monitor = include_monitor
        self.deferrable = deferrable
        self._plan: StagePlan | None = None

    # ------------------------------------------------------------------ sizing (as the operator)
    def _policy(self) -> SizingPolicy:
        where = f"task '{self.task_id}'"
        try:
            return policy_from(self.sizing_preset, self.sizing_margin, self.min_resources, self.max_resources, self.gpu_types, where,
                               self.elastic_gpus)
        except UserError:
            raise
        except ValueError as exc:
            raise UserError(f"{where}: {exc}") from None

    def stage_plan(self, context: Any) -> StagePlan:
        """The size the stage would get now (the prediction made once per try, then reused)."""
        if self._plan is not None:
            return self._plan
        from airflow_adaptive.adapters.kubernetes.pod_spec import resources_from

        requested, limited = resources_from(self.container_resources, f"task '{self.task_id}' container_resources")
        policy = self._policy()
        features = dict(self.features)
        ti = context.get("ti") if isinstance(context, Mapping) else None
        if ti is not None:
            features.setdefault("dag_id", ti.dag_id)
        features.setdefault("task_id", self.stage_task_id or self.task_id)
        profile, fallback = None, None
        try:
            profile, _ = ProfilerHook(self.mlflow_conn_id, self.model_uri).predict(features, where=f"task '{self.task_id}' features")
        except UserError as exc:
            fallback = str(exc)
            self.log.warning("cannot predict the stage's size (%s); checking the user's own request instead", exc)
        self._plan = plan_stage(requested, limited, profile, policy, "adaptive", fallback)
        return self._plan

    def _overhead(self) -> ResourceVector:
        return MONITOR_OVERHEAD if self.include_monitor else ResourceVector()

    def size_payload(self, plan: StagePlan, result: FitResult | None = None) -> dict[str, Any]:
        """What goes to XCom: the size the stage would run with, and where it fits."""
        return {"requests": plan.size.requests.to_kubernetes(), "limits": plan.size.limits.to_kubernetes(),
                "gpu_type": plan.size.gpu_type, "sizing": plan.sizing, "fallback": plan.fallback,
                "node": result.node if result else None, "message": result.message if result else None}

    # ------------------------------------------------------------------ the cluster
    def _cluster_state(self) -> ClusterState:
        """The cluster now (the seam a test replaces)."""
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from airflow_adaptive.adapters.kubernetes.cluster_state import read_cluster_state

        return read_cluster_state(KubernetesHook(conn_id=self.kubernetes_conn_id).core_v1_client, self.namespace)

    def check(self, context: Any) -> tuple[StagePlan, FitResult]:
        plan = self.stage_plan(context)
        result = fit_state(plan.size.requests, plan.size.limits, plan.size.gpu_type, self._cluster_state(),
                           self.gpu_label_key, overhead=self._overhead(), gpu_resource=plan.size.gpu_resource)
        return plan, result

    # ------------------------------------------------------------------ sensor
    def poke(self, context: Any) -> bool | PokeReturnValue:
        try:
            plan, result = self.check(context)
        except UserError as exc:  # bad request, RBAC, a cluster quantity that does not parse
            raise AirflowFailException(str(exc)) from None
        if result.status == "never":
            raise AirflowFailException(f"task '{self.task_id}': the stage can never be scheduled: {result.message}")
        if result.status == "wait":
            self.log.info("not yet: %s", result.message)
            for node, why in sorted(result.per_node.items()):
                self.log.debug("  node %s: %s", node, why)
            return False
        self.log.info("%s", result.message)
        return PokeReturnValue(True, self.size_payload(plan, result))

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        from airflow_adaptive.triggers.capacity import CapacityTrigger

        try:
            plan = self.stage_plan(context)
        except UserError as exc:
            raise AirflowFailException(str(exc)) from None
        trigger = CapacityTrigger(
            requests=plan.size.requests.as_dict(), limits=plan.size.limits.as_dict(), gpu_type=plan.size.gpu_type,
            namespace=self.namespace, kubernetes_conn_id=self.kubernetes_conn_id, gpu_label_key=self.gpu_label_key,
            overhead=self._overhead().as_dict(), poll_interval=float(self.poke_interval),
            deadline=time.time() + float(self.timeout), size=self.size_payload(plan), gpu_resource=plan.size.gpu_resource,
        )
        # The trigger's own deadline comes first, so its event can say why there is no room.
        self.defer(trigger=trigger, method_name="execute_complete",
                   timeout=timedelta(seconds=float(self.timeout) + float(self.poke_interval) + 60))

    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> Any:
        if not event or event.get("status") != "success":
            message = (event or {}).get("message") or "the capacity trigger ended without an event"
            raise AirflowFailException(f"task '{self.task_id}': {message}")
        self.log.info("%s", event.get("message"))
        return {**(event.get("size") or {}), "node": event.get("node"), "message": event.get("message")}


__all__ = ["MONITOR_OVERHEAD", "PredictedResourcesFitSensor"]

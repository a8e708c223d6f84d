"""The features the cluster policy gives a task it sizes, and what a task may say for itself. Pure.

| feature | from | when |
|---|---|---|
| ``dag_id``, ``task_id`` | the task instance | at run time (the operator fills them) |
| ``requested_cpu`` / ``_memory`` / ``_gpu`` | ``container_resources`` (KPO) or the executor pod's ``pod_override`` | at run time / when the pod is built |
| ``operator`` | the task's own class (``KubernetesPodOperator``, ``@task.kubernetes``, ``PythonOperator``) | at parse time |
| ``image`` | the workload image, rendered (KPO) | at run time |
| every scalar param | the task's ``params`` (DAG params included; ``dag_run.conf`` overrides them where Airflow lets it) | at run time (KPO), parse-time defaults (executor pods) |
| declared | ``executor_config={"airflow_adaptive": {"features": {...}}}`` | always; they win over the derived ones |

A param is a feature only when its name is an identifier (it becomes an MLflow param name) and its
value a string, number or boolean; the names the operator fills itself are never taken from params.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow_adaptive.domain.stage_run import FEATURE_NAME
from airflow_adaptive.logic.stage_plan import MODES
from airflow_adaptive.policy.selection import PolicyConfigError

#: ``executor_config`` key of a task's own settings (any executor ignores keys it does not know).
TASK_KEY = "airflow_adaptive"
TASK_SETTINGS = ("features", "sizing_mode")
#: Filled by the operator from the task instance and the request: a param of that name would lie.
RESERVED = frozenset({"dag_id", "task_id", "requested_cpu", "requested_memory", "requested_gpu", "world_size"})
MAX_TEXT = 200  # a longer text param is a payload (SQL, a path list), not a category


@dataclass(frozen=True)
class TaskSettings:
    """What a task says for itself in ``executor_config["airflow_adaptive"]``."""

    features: Mapping[str, Any] = field(default_factory=dict)
    sizing_mode: str | None = None


def task_settings(executor_config: Any, where: str) -> TaskSettings:
    """The task's own settings; a clear error naming the task for a bad one."""
    raw = (executor_config or {}).get(TASK_KEY) if isinstance(executor_config, Mapping) else None
    if raw is None:
        return TaskSettings()
    if not isinstance(raw, Mapping):
        raise PolicyConfigError(f"{where}: executor_config['{TASK_KEY}'] must be a mapping with {list(TASK_SETTINGS)}, "
                                f"got {type(raw).__name__}")
    unknown = sorted(str(k) for k in raw if k not in TASK_SETTINGS)
    if unknown:
        raise PolicyConfigError(f"{where}: executor_config['{TASK_KEY}'] has unknown key(s) {unknown}; "
                                f"expected some of {list(TASK_SETTINGS)}")
    features = raw.get("features") or {}
    if not isinstance(features, Mapping):
        raise PolicyConfigError(f"{where}: executor_config['{TASK_KEY}']['features'] must be a mapping of feature "
                                f"name to value, got {type(features).__name__}")
    bad = sorted(str(k) for k in features if not isinstance(k, str) or not FEATURE_NAME.match(k))
    if bad:
        raise PolicyConfigError(f"{where}: executor_config['{TASK_KEY}']['features'] names {bad} are not identifiers "
                                "(letters, digits and '_', not starting with a digit); rename them")
    mode = raw.get("sizing_mode")
    if mode is not None and mode not in MODES:
        raise PolicyConfigError(f"{where}: executor_config['{TASK_KEY}']['sizing_mode'] must be one of {MODES}, got {mode!r}")
    return TaskSettings(dict(features), mode)


def operator_name(cls: type) -> str:
    """The name a DAG author knows the task by: ``@task.kubernetes`` rather than its private class."""
    return str(getattr(cls, "custom_operator_name", None) or cls.__name__)


def param_features(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(features, names left out) from a task's params: scalars under identifier names only."""
    out, skipped = {}, []
    for name, value in params.items():
        if name in RESERVED or not isinstance(name, str) or not FEATURE_NAME.match(name):
            skipped.append(str(name))
        elif isinstance(value, bool):
            out[name] = str(value).lower()  # categorical: a model reads "true", not 1.0
        elif isinstance(value, (int, float)) or (isinstance(value, str) and len(value) <= MAX_TEXT):
            out[name] = value
        else:
            skipped.append(name)
    return out, sorted(skipped)


def derived_features(operator: str, image: Any, params: Mapping[str, Any], declared: Mapping[str, Any]
                     ) -> tuple[dict[str, Any], list[str]]:
    """The features the policy gives a task (declared ones win), and the params it left out."""
    out, skipped = param_features(params)
    out["operator"] = operator
    if isinstance(image, str) and image and "{{" not in image:
        out["image"] = image
    return {**out, **dict(declared)}, skipped

"""``ProfilerQualitySensor``: hold a DAG until the profiler an alias points to is good enough.

Predictions are only as good as the model behind ``models:/job-profiler@champion``. A DAG that
should not size stages from a poor or barely-trained model waits here for the champion to clear
a bar on the hold-out metrics the retraining flow logs (see
:mod:`airflow_adaptive.logic.model_quality`). The alias is resolved at every poke, so a
promotion while the sensor waits is seen at once.

On success the return value (XCom) is ``{"model_uri", "version", "run_id", "metrics"}``.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Mapping, Sequence

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowFailException

from airflow_adaptive.hooks.profiler import DEFAULT_CONN_ID, ProfilerHook
from airflow_adaptive.logic.model_quality import BAR_FIELDS, QualityBar
from airflow_adaptive.triggers.model_quality import ModelQualityTrigger, alias_of, check_quality


def _number(value: Any, name: str, whole: bool = False) -> float | int | None:
    """A rendered template ("1.5", "") as a number; None and "" mean "not checked"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if whole:
        if number != int(number):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        return int(number)
    return number


class ProfilerQualitySensor(BaseSensorOperator):
    """Wait until the model version behind ``model_uri``'s alias meets the quality bar.

    :param model_uri: ``models:/<name>@<alias>`` (templated); a fixed version is refused.
    :param max_allocated_over_used: / ``max_under_provisioned_fraction`` / ``min_training_records`` /
        ``max_phased_over_upper_fraction``: the bar (templated); None leaves a metric unchecked.
        The last one needs a champion retrained with usage series (``holdout_phased_over_upper_fraction``).
    :param mlflow_conn_id: Airflow connection of the MLflow server (else ``MLFLOW_TRACKING_URI``,
        else the embedded store), as for the operator.
    :param deferrable: wait in the triggerer (:class:`~airflow_adaptive.triggers.model_quality.ModelQualityTrigger`).
    """

    template_fields: Sequence[str] = ("model_uri", *BAR_FIELDS)

    def __init__(
        self,
        *,
        model_uri: str = "models:/job-profiler@champion",
        max_allocated_over_used: float | str | None = None,
        max_under_provisioned_fraction: float | str | None = None,
        min_training_records: int | str | None = None,
        max_phased_over_upper_fraction: float | str | None = None,
        mlflow_conn_id: str | None = DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if "{{" not in str(model_uri):
            try:
                alias_of(model_uri)
            except ValueError as exc:
                raise ValueError(f"{self.task_id}: {exc}") from None
        self.model_uri = model_uri
        self.max_allocated_over_used = max_allocated_over_used
        self.max_under_provisioned_fraction = max_under_provisioned_fraction
        self.min_training_records = min_training_records
        self.max_phased_over_upper_fraction = max_phased_over_upper_fraction
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable

    def bar(self) -> QualityBar:
        """The bar as rendered; a bad value fails the task (a typo must not mean "not checked")."""
        try:
            return QualityBar(
                _number(self.max_allocated_over_used, "max_allocated_over_used"),
                _number(self.max_under_provisioned_fraction, "max_under_provisioned_fraction"),
                _number(self.min_training_records, "min_training_records", whole=True),  # type: ignore[arg-type]
                _number(self.max_phased_over_upper_fraction, "max_phased_over_upper_fraction"),
            )
        except ValueError as exc:
            raise AirflowFailException(f"task '{self.task_id}': {exc}") from None

    def tracking_uri(self) -> str:
        return ProfilerHook(self.mlflow_conn_id, str(self.model_uri)).tracking_uri

    def poke(self, context: Any) -> bool | PokeReturnValue:
        check = check_quality(self.tracking_uri(), str(self.model_uri), self.bar())
        if check.fatal:
            raise AirflowFailException(f"task '{self.task_id}': {check.reason}")
        if not check.met:
            self.log.info("not yet: %s", check.reason)
            return False
        self.log.info("%s", check.reason)
        return PokeReturnValue(True, {"model_uri": str(self.model_uri), "version": check.version,
                                      "run_id": check.run_id, "metrics": dict(check.metrics)})

    def execute(self, context: Any) -> Any:
        if not self.deferrable:
            return super().execute(context)
        trigger = ModelQualityTrigger(model_uri=str(self.model_uri), tracking_uri=self.tracking_uri(),
                                      bar=self.bar().to_dict(), poll_interval=float(self.poke_interval),
                                      deadline=time.time() + float(self.timeout))
        # The trigger's own deadline comes first, so its event can say what is still missing.
        self.defer(trigger=trigger, method_name="execute_complete",
                   timeout=timedelta(seconds=float(self.timeout) + float(self.poke_interval) + 60))

    def execute_complete(self, context: Any, event: Mapping[str, Any] | None = None) -> Any:
        if not event or event.get("status") != "success":
            message = (event or {}).get("message") or "the quality trigger ended without an event"
            raise AirflowFailException(f"task '{self.task_id}': {message}")
        self.log.info("%s", event.get("message"))
        return {k: event.get(k) for k in ("model_uri", "version", "run_id", "metrics")}


__all__ = ["ProfilerQualitySensor"]

"""Read the metrics of the model version an alias points to *now*, and the deferrable wait on them.

:func:`check_quality` is the one read both callers use: the sync ``ProfilerQualitySensor.poke``
calls it directly, :class:`ModelQualityTrigger` through ``asyncio.to_thread`` (the REST client
is blocking urllib). The alias is resolved on every call (a promotion takes effect at once),
over MLflow's REST API for an http(s) tracking URI and through ``MlflowClient`` for a local
store (SQLite, files): the reads are :mod:`airflow_adaptive.adapters.mlflow.alias_metrics`.
The decision is the pure :func:`~airflow_adaptive.logic.model_quality.meets`.

| what happened | ``QualityCheck`` | sensor | trigger event |
|---|---|---|---|
| bar met | ``met`` | done, version + metrics to XCom | ``success`` |
| bar not met; model or alias missing; MLflow not answering | not met, not fatal | poke again | keeps polling; ``error`` at the deadline, with the last reason |
| credentials refused; a model URI without an alias | ``fatal`` | ``AirflowFailException`` | ``error`` |
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Mapping

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_adaptive.logic.model_quality import QualityBar, meets


@dataclass(frozen=True)
class QualityCheck:
    met: bool
    reason: str
    version: str | None = None
    run_id: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    fatal: bool = False  # waiting cannot help

    def to_dict(self) -> dict[str, Any]:
        return {"met": self.met, "reason": self.reason, "version": self.version, "run_id": self.run_id,
                "metrics": dict(self.metrics)}


def alias_of(model_uri: str) -> tuple[str, str]:
    """(name, alias) of ``models:/name@alias``; ValueError for any other form."""
    from airflow_adaptive.adapters.mlflow.registry import parse_model_uri
    from airflow_adaptive.domain.errors import RegistryError

    try:
        name, alias, _ = parse_model_uri(str(model_uri).strip())
    except RegistryError as exc:
        raise ValueError(str(exc)) from None
    if not alias:
        raise ValueError(f"model URI {model_uri!r} names a fixed version; the quality sensor watches an alias "
                         "(models:/<name>@<alias>), whose version can change")
    return name, alias


def check_quality(tracking_uri: str, model_uri: str, bar: QualityBar) -> QualityCheck:
    """The alias resolved now, its version's run metrics, and whether they meet ``bar``."""
    from airflow_adaptive.adapters.mlflow.alias_metrics import read_alias
    from airflow_adaptive.adapters.mlflow.rest import MlflowAuthError, MlflowUnavailable

    try:
        name, alias = alias_of(model_uri)
    except ValueError as exc:
        return QualityCheck(False, str(exc), fatal=True)
    try:
        read = read_alias(tracking_uri, name, alias)
    except MlflowAuthError as exc:
        return QualityCheck(False, str(exc), fatal=True)
    except (MlflowUnavailable, OSError) as exc:
        return QualityCheck(False, f"MLflow at {tracking_uri} did not answer: {exc}")
    except Exception as exc:  # noqa: BLE001 - any other refusal: say it, and look again later
        return QualityCheck(False, f"cannot read {model_uri} from {tracking_uri}: {exc}")
    if isinstance(read, str):
        return QualityCheck(False, read)
    ok, reason = meets(bar, read.metrics)
    if not read.run_id:
        reason += " (the version has no run to read metrics from)"
    return QualityCheck(ok, f"{name} version {read.version} (@{alias}): {reason}", read.version, read.run_id,
                        dict(read.metrics))


class ModelQualityTrigger(BaseTrigger):
    """Poll the alias until its version meets the bar; see the module docstring.

    :param bar: ``QualityBar.to_dict()``.
    :param deadline: epoch seconds after which an ``error`` event gives the last reason.
    """

    def __init__(self, *, model_uri: str, tracking_uri: str, bar: Mapping[str, Any], poll_interval: float = 60.0,
                 deadline: float | None = None) -> None:
        super().__init__()
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.bar = dict(bar)
        self.poll_interval = float(poll_interval)
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "model_uri": self.model_uri, "tracking_uri": self.tracking_uri, "bar": self.bar,
            "poll_interval": self.poll_interval, "deadline": self.deadline}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        bar = QualityBar(**self.bar)
        while True:
            check = await asyncio.to_thread(check_quality, self.tracking_uri, self.model_uri, bar)
            if check.met:
                yield TriggerEvent({"status": "success", "message": check.reason, "model_uri": self.model_uri,
                                    "version": check.version, "run_id": check.run_id, "metrics": dict(check.metrics)})
                return
            if check.fatal:
                yield TriggerEvent({"status": "error", "message": check.reason})
                return
            self.log.info("%s", check.reason)
            if self.deadline is not None and time.time() + self.poll_interval > self.deadline:
                yield TriggerEvent({"status": "error", "message": f"timed out waiting for the quality bar: {check.reason}"})
                return
            await asyncio.sleep(self.poll_interval)


__all__ = ["ModelQualityTrigger", "QualityCheck", "alias_of", "check_quality"]

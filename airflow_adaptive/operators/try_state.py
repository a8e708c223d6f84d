"""One try of a stage, after sizing, as one frozen value.

The operator makes a :class:`TryState` once the plan is made and the stage's MLflow run is open,
and hands it explicitly to the Kubernetes path (:class:`~airflow_adaptive.operators.kubernetes.KubernetesTry`)
or the local path (:func:`~airflow_adaptive.operators.local.run_stage_locally`). A deferred try
resumes on a freshly parsed operator, so the state also travels through XCom
(:meth:`TryState.to_xcom` / :meth:`TryState.from_xcom`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from airflow_adaptive.domain.errors import UserError

#: Resources the monitor may ask for in place; its lines are held to the user's limits on these.
RESIZED = ("cpu", "memory")


@dataclass(frozen=True)
class StageRunRef:
    """Where the try's MLflow stage run is."""

    run_id: str
    tracking_uri: str
    experiment: str

    def to_dict(self) -> dict[str, str]:
        return {"run_id": self.run_id, "tracking_uri": self.tracking_uri, "experiment": self.experiment}


def _frozen(values: Mapping[str, Any] | None) -> Mapping[str, float]:
    return MappingProxyType({str(k): float(v) for k, v in (values or {}).items()})


@dataclass(frozen=True)
class TryState:
    """What the rest of a try needs from its sizing.

    :param try_number: Airflow's try number (OOM records name it; a retry escalates from them).
    :param limits: the size in force at start (a limit left out: its request), for OOM records;
        ``ephemeral_storage`` too when the plan sets it (an eviction's record).
    :param resizable: the monitor's signals are applied in place (adaptive mode, ``in_place_resize``).
    :param maximum: the user's limits on cpu and memory; a monitor line asking beyond them is refused.
    :param stage_run: the stage's MLflow run; None when it could not be opened (nothing is recorded).
    :param last_resize_sequence: the last signal handled, so a re-deferred try applies none twice.
    """

    try_number: int
    limits: Mapping[str, float] = field(default_factory=dict)
    resizable: bool = False
    maximum: Mapping[str, float] = field(default_factory=dict)
    stage_run: StageRunRef | None = None
    last_resize_sequence: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "limits", _frozen(self.limits))
        object.__setattr__(self, "maximum", _frozen({r: v for r, v in (self.maximum or {}).items() if r in RESIZED and v > 0}))

    @classmethod
    def for_plan(cls, plan, try_number: int, stage_run: StageRunRef | None) -> "TryState":
        """The state of a try sized by ``plan`` (a :class:`~airflow_adaptive.logic.stage_plan.StagePlan`)."""
        limits = plan.size.limits.max(plan.size.requests).as_dict()
        storage = plan.size.ephemeral
        if storage.limit > 0:
            limits["ephemeral_storage"] = storage.limit
        return cls(try_number=try_number, limits=limits,
                   resizable=plan.resizable, maximum=plan.limited.as_dict(), stage_run=stage_run)

    def handled(self, sequence: int | None) -> "TryState":
        """The same try after signals up to ``sequence`` were handled."""
        if sequence is None or (self.last_resize_sequence is not None and sequence <= self.last_resize_sequence):
            return self
        return replace(self, last_resize_sequence=int(sequence))

    def to_xcom(self) -> dict[str, Any]:
        return {"try_number": self.try_number, "limits": dict(self.limits), "resizable": self.resizable,
                "maximum": dict(self.maximum), "stage_run": self.stage_run.to_dict() if self.stage_run else None,
                "last_resize_sequence": self.last_resize_sequence}

    @classmethod
    def from_xcom(cls, data: Any, where: str = "XCom 'adaptive_state'") -> "TryState":
        """The state an earlier part of this try pushed; a clear error when it is not one."""
        if not isinstance(data, Mapping) or "try_number" not in data:
            raise UserError(f"{where}: no state of this try was found (got {type(data).__name__}); "
                            "the task was resumed without the part that sized it, clear the task to run it again")
        try:
            ref = data.get("stage_run")
            stage_run = StageRunRef(str(ref["run_id"]), str(ref["tracking_uri"]), str(ref["experiment"])) if ref else None
            sequence = data.get("last_resize_sequence")
            return cls(try_number=int(data["try_number"]), limits=data.get("limits") or {},
                       resizable=bool(data.get("resizable")), maximum=data.get("maximum") or {}, stage_run=stage_run,
                       last_resize_sequence=int(sequence) if sequence is not None else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: the saved state of this try is malformed ({type(exc).__name__}: {exc})") from None

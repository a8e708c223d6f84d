"""Is the registered profiler good enough to size stages with? Pure.

A DAG can wait for the champion to clear a bar before it relies on predictions, reading the
hold-out metrics the retraining flow logs on the model's run (``retraining.py``):

| metric | bar | better when |
|---|---|---|
| ``holdout_allocated_over_used`` | ``max_allocated_over_used`` | lower: less memory reserved per byte used |
| ``holdout_under_provisioned_fraction`` | ``max_under_provisioned_fraction`` | lower: fewer stages that would have been OOM-killed |
| ``training_records`` | ``min_training_records`` | higher: a model fitted on more history |
| ``holdout_phased_over_upper_fraction`` | ``max_phased_over_upper_fraction`` | lower: fewer usage samples above the predicted phase's upper (only with usage series) |

A bar left as None is not checked. A metric the run lacks (or a NaN) fails its bar: a model
nobody measured is not known to be good.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

ALLOCATED_OVER_USED = "holdout_allocated_over_used"
UNDER_PROVISIONED = "holdout_under_provisioned_fraction"
TRAINING_RECORDS = "training_records"
PHASED_OVER_UPPER = "holdout_phased_over_upper_fraction"
#: The bars, in the order ``QualityBar`` takes them positionally.
BAR_FIELDS = ("max_allocated_over_used", "max_under_provisioned_fraction", "min_training_records",
              "max_phased_over_upper_fraction")


@dataclass(frozen=True)
class QualityBar:
    max_allocated_over_used: float | None = None
    max_under_provisioned_fraction: float | None = None
    min_training_records: int | None = None
    max_phased_over_upper_fraction: float | None = None

    def __post_init__(self) -> None:
        for name in BAR_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"quality bar {name} must be a finite number >= 0 or None, got {value!r}")

    def checks(self) -> tuple[tuple[str, str, float], ...]:
        """(metric, "max" | "min", bound) for every bar that is set."""
        out = []
        if self.max_allocated_over_used is not None:
            out.append((ALLOCATED_OVER_USED, "max", float(self.max_allocated_over_used)))
        if self.max_under_provisioned_fraction is not None:
            out.append((UNDER_PROVISIONED, "max", float(self.max_under_provisioned_fraction)))
        if self.min_training_records is not None:
            out.append((TRAINING_RECORDS, "min", float(self.min_training_records)))
        if self.max_phased_over_upper_fraction is not None:
            out.append((PHASED_OVER_UPPER, "max", float(self.max_phased_over_upper_fraction)))
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in BAR_FIELDS}


def meets(bar: QualityBar, metrics: Mapping[str, Any]) -> tuple[bool, str]:
    """(met, reason): the reason lists every failed bar, or the values that passed."""
    failed, passed = [], []
    for metric, kind, bound in bar.checks():
        raw = metrics.get(metric)
        try:
            value = float(raw) if raw is not None and not isinstance(raw, bool) else math.nan
        except (TypeError, ValueError):
            value = math.nan
        if raw is None:
            failed.append(f"{metric} is missing from the model's run")
        elif math.isnan(value):
            failed.append(f"{metric} is not a number ({raw!r})")
        elif kind == "max" and value > bound:
            failed.append(f"{metric} {value:g} > {bound:g}")
        elif kind == "min" and value < bound:
            failed.append(f"{metric} {value:g} < {bound:g}")
        else:
            passed.append(f"{metric} {value:g} {'<=' if kind == 'max' else '>='} {bound:g}")
    if failed:
        return False, "quality bar not met: " + "; ".join(failed)
    if not passed:
        return True, "no quality bar set"
    return True, "quality bar met: " + "; ".join(passed)


__all__ = ["ALLOCATED_OVER_USED", "BAR_FIELDS", "PHASED_OVER_UPPER", "QualityBar", "TRAINING_RECORDS", "UNDER_PROVISIONED",
           "meets"]

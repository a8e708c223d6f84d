"""The hold-out score over time: what a profiler's phases would have reserved, and missed.

The peak score (:func:`airflow_adaptive.logic.promotion.score_on_window`) judges one number per
run. A phased profile promises more: *when* a run needs what. This module replays each held-out
run's usage series against the phases predicted for it and measures, per resource:

| figure | what | why |
|---|---|---|
| ``phased_reserved_over_used`` | integral of the phased upper over time / integral of usage | what sizing by phase reserves per unit used |
| ``constant_reserved_over_used`` | the same with the constant predicted upper | what sizing for the peak reserves: the baseline the phases must beat |
| ``over_upper_fraction`` | share of samples above the phased upper | how often the phases promised too little: the run would have leaned on the reactive rules (for memory: been at risk of a kill) |

Time is charged as :mod:`airflow_adaptive.logic.simulate` charges it: a sample holds until the
next (the last one for the median interval, :func:`~airflow_adaptive.logic.simulate.durations`).
The phase in force at a sample is the one its elapsed time since the run's first sample falls
in (past the last phase: the last phase), as the runtime (``logic/deviation.py``) places it.
A run whose prediction has no phases for the resource is scored with the constant upper for
both figures (they agree there) and counted in ``runs`` but not in ``phased_runs``.

Pure: numpy only, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from airflow_adaptive.domain.profile import PhaseNeed, PredictedProfile
from airflow_adaptive.domain.series import SERIES_RESOURCES, UsageSeries
from airflow_adaptive.logic.simulate import durations


@dataclass(frozen=True)
class PhaseScore:
    """One resource's score over the runs that had both a prediction and usage of it."""

    resource: str
    phased_reserved_over_used: float  # NaN when nothing was used
    constant_reserved_over_used: float
    over_upper_fraction: float  # NaN when no sample was scored
    runs: int  # runs scored
    phased_runs: int  # of those, runs whose prediction had phases
    samples: int
    series: tuple[str, ...] = ()  # the scored runs' ids, sorted: two scores compare only on the same runs

    def to_dict(self) -> dict[str, float | int | str]:
        return {"resource": self.resource, "phased_reserved_over_used": self.phased_reserved_over_used,
                "constant_reserved_over_used": self.constant_reserved_over_used,
                "over_upper_fraction": self.over_upper_fraction, "runs": self.runs, "phased_runs": self.phased_runs,
                "samples": self.samples}


def upper_at(phases: Sequence[PhaseNeed], elapsed: np.ndarray) -> np.ndarray:
    """The phased upper in force at each ``elapsed`` second: the first phase not yet ended,
    past the last phase the last one."""
    ends = np.array([p.end_s for p in phases], float)
    if not len(ends):
        raise ValueError("no phases to place the samples in")
    if np.any(np.diff(ends) < 0):
        raise ValueError(f"phases must be in time order, got ends {ends.tolist()}")
    index = np.minimum(np.searchsorted(ends, elapsed, side="right"), len(ends) - 1)
    return np.array([p.upper for p in phases], float)[index]


def score_phases(predictions: Mapping[str, PredictedProfile], runs: Sequence[UsageSeries],
                 resource: str = "memory") -> PhaseScore:
    """Score ``runs`` (held-out usage series) against ``predictions`` (keyed by the run's
    ``series`` id). A run without a prediction, without usage of ``resource``, or whose
    prediction does not model ``resource`` is left out (nothing to judge)."""
    if resource not in SERIES_RESOURCES:
        raise ValueError(f"unknown resource {resource!r}; known: {', '.join(SERIES_RESOURCES)}")
    phased = constant = used = 0.0
    samples = over = phased_runs = 0
    scored = []
    for run in runs:
        profile, pair = predictions.get(run.series), run.usage.get(resource)
        if profile is None or pair is None or resource not in profile.resources:
            continue
        times, values = np.asarray(pair[0], float), np.asarray(pair[1], float)
        if times.shape != values.shape or times.ndim != 1:
            raise ValueError(f"run {run.series!r} {resource}: times and values must be 1-d and of one length, "
                             f"got {times.shape} and {values.shape}")
        if not len(times):
            continue
        if np.any(np.diff(times) < 0):
            raise ValueError(f"run {run.series!r} {resource}: sample times must not decrease")
        hold = durations(times)
        flat = profile.resources[resource].upper
        phases = profile.phases.get(resource)
        upper = upper_at(phases, times - times[0]) if phases else np.full(len(times), flat)
        phased += float((upper * hold).sum())
        constant += flat * float(hold.sum())
        used += float((values * hold).sum())
        samples += len(times)
        over += int((values > upper).sum())
        phased_runs += bool(phases)
        scored.append(str(run.series))
    ratio = (lambda x: x / used) if used > 0 else (lambda x: math.nan)
    return PhaseScore(resource, ratio(phased), ratio(constant), over / samples if samples else math.nan,
                      len(scored), phased_runs, samples, tuple(sorted(scored)))


def describe(score: PhaseScore) -> str:
    """One line for logs and reasons."""
    return (f"{score.resource} on {score.runs} run(s), {score.phased_runs} with phases: reserved/used "
            f"{score.phased_reserved_over_used:.3f} by phase vs {score.constant_reserved_over_used:.3f} constant, "
            f"{score.over_upper_fraction:.4f} of {score.samples} samples above the phased upper")


def score_all(predictions: Mapping[str, PredictedProfile], runs: Sequence[UsageSeries]) -> dict[str, PhaseScore]:
    """:func:`score_phases` for every resource the runs sampled that some prediction models."""
    present = {r for run in runs for r in run.usage}
    modelled = {r for p in predictions.values() for r in p.resources}
    return {r: score_phases(predictions, runs, r) for r in SERIES_RESOURCES if r in present and r in modelled}


__all__ = ["PhaseScore", "describe", "score_all", "score_phases", "upper_at"]

"""A stage's usage over its life: phases over normalised progress, learned from earlier runs.

Each earlier run's usage of a resource is divided by that run's peak and binned over progress
(elapsed / the run's duration) into ``BINS`` bins, keeping each bin's highest sample: the run's
*shape*. Across runs, every bin gets the median and the upper (``coverage`` quantile, the highest
for few runs) of the shapes. Binary segmentation then cuts the upper curve into at most
``MAX_PHASES`` phases where it steps by more than ``MIN_STEP`` of the peak; a phase's figures are
the highest of its bins (an envelope: a phase never promises less than one of its bins).

The shape is relative, so it composes with the profiler's prediction of the peak from the
stage's features: a phase's need = its fraction x the predicted peak (median or upper). Each
phase also learns its *step*: how far usage jumped above the phase's running peak between two
samples (model loads, a batch, an adapter), so the runtime can hold room for the next jump above
what a run has reached rather than for the worst run's peak. The runs' durations (median,
upper) map progress to seconds. With fewer than ``MIN_RUNS`` runs the
profile is one phase at the peak (today's constant profile), and ``fallback`` says why.

Pure: numpy only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from airflow_adaptive.domain.profile import PhaseNeed

BINS = 20
MAX_PHASES = 5
MIN_STEP = 0.10  # of the run's peak: a smaller step is noise, not a phase
MIN_RUNS = 3
#: A run with fewer samples is too short to show its phases (a 4 s stage sampled every second is
#: its start-up and three points): it still counts for the peak, not for the shape.
MIN_SAMPLES = 8


@dataclass(frozen=True)
class Phase:
    """Progress ``[start, end)`` of the run, with the need as fractions of the run's peak."""

    start: float
    end: float
    median: float
    upper: float
    #: How far the stage's usage jumps above a phase's running peak between two samples (a fraction
    #: of the run's peak, the same quantile across runs as ``upper``; the stage's, so every phase
    #: has the same); None: not learned (shapes registered before steps were).
    step: float | None = None

    def to_dict(self) -> dict[str, float]:
        out = {"start": self.start, "end": self.end, "median": self.median, "upper": self.upper}
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class UsageShape:
    """How one resource of a stage evolves over a run (fractions of the run's peak)."""

    resource: str
    phases: tuple[Phase, ...]
    duration_median: float
    duration_upper: float
    runs: int
    fallback: str | None = None

    def at(self, progress: float) -> Phase:
        """The phase at ``progress`` (past the end: the last phase)."""
        for phase in self.phases:
            if progress < phase.end:
                return phase
        return self.phases[-1]

    def upper_within(self, start: float, end: float) -> float:
        """The highest upper of the phases that ``[start, end]`` touches: the need to be ready
        for now if a rise may come within the lead time."""
        touched = [p for p in self.phases if p.end > start and p.start <= end]
        return max(p.upper for p in touched) if touched else self.at(start).upper  # past the end: the last phase

    def to_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, "phases": [p.to_dict() for p in self.phases],
                "duration_median": self.duration_median, "duration_upper": self.duration_upper,
                "runs": self.runs, "fallback": self.fallback}


def constant_shape(resource: str, runs: int, durations: Sequence[float], why: str) -> UsageShape:
    med, up = _durations(durations)
    return UsageShape(resource, (Phase(0.0, 1.0, 1.0, 1.0),), med, up, runs, why)


def _durations(durations: Sequence[float]) -> tuple[float, float]:
    d = np.asarray([x for x in durations if x > 0], float)
    if not d.size:
        return 0.0, 0.0
    return float(np.median(d)), float(d.max())


def run_shape(times: np.ndarray, values: np.ndarray, bins: int = BINS, min_samples: int = MIN_SAMPLES) -> np.ndarray | None:
    """One run's usage as the highest sample per progress bin over its peak; a bin with no
    sample takes the bin before it (usage holds until the next sample). None: nothing to learn
    (too few samples, no duration or no usage)."""
    if len(times) < max(2, min_samples) or times[-1] <= times[0] or not values.max() > 0:
        return None
    progress = (times - times[0]) / (times[-1] - times[0])
    index = np.minimum((progress * bins).astype(int), bins - 1)
    shape = np.full(bins, np.nan)
    np.fmax.at(shape, index, values / values.max())
    for b in range(bins):
        if np.isnan(shape[b]):
            shape[b] = shape[b - 1] if b else values[0] / values.max()
    return shape


def segment(curve: np.ndarray, max_phases: int = MAX_PHASES, min_step: float = MIN_STEP) -> list[tuple[int, int]]:
    """Binary segmentation of ``curve`` into piecewise-constant pieces ``[i, j)``: split where the
    squared error drops most, while the two sides' means differ by at least ``min_step``."""
    pieces = [(0, len(curve))]
    while len(pieces) < max_phases:
        best = None
        for k, (i, j) in enumerate(pieces):
            whole = curve[i:j]
            base = float(((whole - whole.mean()) ** 2).sum())
            for s in range(i + 1, j):
                left, right = curve[i:s], curve[s:j]
                if abs(left.mean() - right.mean()) < min_step:
                    continue
                gain = base - float(((left - left.mean()) ** 2).sum() + ((right - right.mean()) ** 2).sum())
                if best is None or gain > best[0]:
                    best = (gain, k, s)
        if best is None:
            break
        _, k, s = best
        i, j = pieces[k]
        pieces[k:k + 1] = [(i, s), (s, j)]
    return pieces


def learn_shape(resource: str, runs: Sequence[tuple[np.ndarray, np.ndarray]], coverage: float = 0.9,
                bins: int = BINS, min_runs: int = MIN_RUNS) -> UsageShape:
    """The stage's shape of ``resource`` from its earlier runs' ``(times, values)``."""
    usable = [(t, v, shape) for t, v in runs if (shape := run_shape(t, v, bins)) is not None]
    shapes = [shape for _, _, shape in usable]
    durations = [float(t[-1] - t[0]) for t, _ in runs if len(t) > 1]
    if len(shapes) < min_runs:
        return constant_shape(resource, len(shapes), durations,
                              f"{len(shapes)} earlier run(s) with usage over time ({MIN_SAMPLES}+ samples); {min_runs} "
                              "needed for phases: one phase at the predicted peak")
    stack = np.vstack(shapes)
    median = np.median(stack, axis=0)
    upper = _upper(stack, coverage)
    pieces = segment(upper)
    bounds = [(i / bins, j / bins if j < bins else 1.0) for i, j in pieces]
    # One step for the stage, not one per phase: where a stage jumps is as random as how far is
    # regular (a serving pod loads a model at any moment), and a phase that three runs crossed
    # without a jump has not shown that it never jumps.
    step = float(_upper(np.array([run_steps(t, v, bounds).max() for t, v, _ in usable]), coverage))
    phases = tuple(Phase(start, end, float(median[i:j].max()), float(upper[i:j].max()), step)
                   for (i, j), (start, end) in zip(pieces, bounds))
    med, up = _durations(durations)
    return UsageShape(resource, phases, med, up, len(shapes))


def _upper(stack: np.ndarray, coverage: float) -> np.ndarray:
    """Per column, the ``coverage`` quantile across runs; the highest with fewer than 10 runs."""
    return np.quantile(stack, coverage, axis=0, method="higher") if len(stack) >= 10 else stack.max(axis=0)


def run_steps(times: np.ndarray, values: np.ndarray, bounds: Sequence[tuple[float, float]]) -> np.ndarray:
    """Per phase (progress ``bounds``), the largest jump of one sample above the phase's running
    peak, over the run's peak: how far usage steps between two samples *within* a phase (the rise
    at a phase's start is the phases' to predict, so a phase's first sample sets its peak and
    counts no jump). Measured at the series' own sampling interval, as the monitor will sample."""
    progress = (times - times[0]) / (times[-1] - times[0])
    peak = float(values.max())
    out = np.zeros(len(bounds))
    for k, (start, end) in enumerate(bounds):
        inside = values[(progress >= start) & ((progress < end) if k < len(bounds) - 1 else (progress <= end))]
        if len(inside) > 1:
            out[k] = max(0.0, float((inside[1:] - np.maximum.accumulate(inside)[:-1]).max())) / peak
    return out


# ----------------------------------------------------------------------------- per stage
def stage_key(dag_id: Any, task_id: Any) -> str:
    """How stages are named in series read from MLflow (``adapters/series/mlflow_runs.py``)."""
    return f"{dag_id}.{task_id}"


def learn_stage_shapes(runs_by_stage: Mapping[str, Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]]]
                       ) -> dict[str, dict[str, UsageShape]]:
    """Every stage's shape of every resource its runs sampled (``{stage: [run usage, ...]}``,
    a run's usage being ``{resource: (times, values)}``)."""
    out: dict[str, dict[str, UsageShape]] = {}
    for stage, runs in runs_by_stage.items():
        resources = sorted({r for run in runs for r in run})
        out[stage] = {r: learn_shape(r, [run[r] for run in runs if r in run]) for r in resources}
    return out


def phases_for(shapes: Mapping[str, UsageShape] | None, resources: Mapping[str, Any],
               duration_s: float | None) -> tuple[dict[str, tuple[PhaseNeed, ...]], str | None]:
    """The phases of a predicted profile: each shape's fractions x the predicted peak
    (``resources[r]``, a ResourceEstimate), its progress x the predicted duration. Also why a
    resource has none (no history over time, too few runs), or None."""
    if not shapes:
        return {}, "no usage over time recorded for this stage yet: constant over the run"
    out, why = {}, []
    for r, shape in shapes.items():
        est = resources.get(r)
        if est is None:
            continue
        if shape.fallback:
            why.append(f"{r}: {shape.fallback}")
            continue
        duration = duration_s if duration_s and duration_s > 0 else shape.duration_median
        if not duration > 0:
            why.append(f"{r}: no duration to map progress to time")
            continue
        out[r] = tuple(PhaseNeed(p.start * duration, p.end * duration, p.median * est.median, p.upper * est.upper,
                                 None if p.step is None else p.step * est.upper)
                       for p in shape.phases)
    return out, "; ".join(why) or None


def start_estimate(phases: Sequence[PhaseNeed], lead_s: float) -> "ResourceEstimate | None":
    """What a run needs at its start: the first phase's median, and the highest upper of the
    phases that start within ``lead_s`` (a step right after the start is ready in time)."""
    from airflow_adaptive.domain.profile import ResourceEstimate

    if not phases:
        return None
    return ResourceEstimate(phases[0].median, max(p.upper for p in phases if p.start_s <= lead_s))


def with_phases(profile, shapes_by_stage: Mapping[str, Mapping[str, UsageShape]] | None, features: Mapping[str, Any]):
    """``profile`` (a PredictedProfile) with the phases of its stage, and a note when it has none.
    ``shapes_by_stage`` None: the profiler predates time-varying profiles."""
    from dataclasses import replace

    if shapes_by_stage is None:
        return replace(profile, notes=(*profile.notes, "phases: the profiler was registered before time-varying "
                                                         "profiles; retrain it to learn them"))
    shapes = shapes_by_stage.get(stage_key(features.get("dag_id"), features.get("task_id")))
    duration = profile.duration.median if profile.duration is not None else None
    phases, note = phases_for(shapes, profile.resources, duration)
    return replace(profile, phases=phases, notes=(*profile.notes, f"phases: {note}") if note else profile.notes)

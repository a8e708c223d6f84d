"""Champion/challenger: when a newly trained profiler may replace the one serving.

A profiler is judged where sizing hurts: how much it allocates per unit used
(``allocated_over_used``) at the risk the operator accepts (``target_under``, the share of
jobs whose first attempt is under-provisioned), on jobs neither model trained on. Comparing at
equal risk is what keeps a "cheaper" challenger from winning by simply OOM-killing more jobs.

Rules of :func:`decide`:

* with a champion, the challenger wins only if its cost at the target is **strictly** lower on
  the **same** window (a tie keeps the champion: swapping models has a cost of its own; scores
  from different windows are not comparable, so nothing is promoted);
* with no champion, there is nothing to beat, so the challenger only has to be honest: the
  share of under-provisioned jobs at its own default coverage must be within
  ``coverage_tolerance`` of the target;
* over time (:mod:`airflow_adaptive.logic.phase_score`), when both models have a phased score on
  the **same** hold-out runs: a challenger that would otherwise win is **not** promoted if the
  share of usage samples above its phased upper exceeds the champion's by more than
  ``phase_tolerance`` (0.05 absolute): cheaper phases that promise less than the runs use are
  not better, they move the risk from the start of the run into its middle. Scores on different
  runs or resources are not compared (the reason says so); without phase scores the rule is off.

| peak rule | phase scores | over-upper gap (challenger - champion) | promoted |
|---|---|---|---|
| wins | both, same runs | <= ``phase_tolerance`` | yes |
| wins | both, same runs | > ``phase_tolerance`` | no: its phases promise less than the usage needs |
| wins | either missing (no series, no champion) | - | yes (the peak rule's reason) |
| wins | on different runs / resources, or no sample scored | - | yes (not compared, said in the reason) |
| loses | any | - | no (the peak rule's reason) |

Pure logic: no MLflow here (the registry adapter applies the decision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic import conformal
from airflow_adaptive.logic.replay import at_target, simulate, summarise

if TYPE_CHECKING:
    from airflow_adaptive.logic.phase_score import PhaseScore

NON_COMPRESSIBLE = ("memory", "gpu_memory", "gpu")
#: How much more often (absolute share of samples) a challenger's phased upper may be exceeded
#: than the champion's: below this the difference is noise of a small hold-out.
PHASE_TOLERANCE = 0.05


@dataclass(frozen=True)
class Score:
    """A profiler's replay result on one window of held-out jobs."""

    allocated_over_used: float  # at ``target_under`` under-provisioning (interpolated)
    under_provisioned_fraction: float  # at the profiler's own default coverage
    window: str  # what was scored: schema, resource, jobs, submit span
    reached: bool = True  # False when no coverage level gets down to the target risk


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def decide(
    challenger: Score, champion: Score | None, target_under: float, coverage_tolerance: float = 0.01, *,
    challenger_phases: "PhaseScore | None" = None, champion_phases: "PhaseScore | None" = None,
    phase_tolerance: float = PHASE_TOLERANCE,
) -> Decision:
    """Whether ``challenger`` should become champion, and why (see the module docstring)."""
    if not phase_tolerance >= 0:
        raise ValueError(f"phase_tolerance must be a share >= 0, got {phase_tolerance!r}")
    peak = _decide_peaks(challenger, champion, target_under, coverage_tolerance)
    return _check_phases(peak, challenger_phases, champion_phases, phase_tolerance)


def _check_phases(peak: Decision, challenger: "PhaseScore | None", champion: "PhaseScore | None",
                  tolerance: float) -> Decision:
    """The rule over time: a winning challenger whose phases are exceeded more often loses."""
    if not peak.promote or challenger is None or champion is None:
        return peak
    if challenger.resource != champion.resource or challenger.series != champion.series:
        return Decision(True, f"{peak.reason}; phases not compared (scored on different hold-out runs or resources)")
    c, d = challenger.over_upper_fraction, champion.over_upper_fraction
    if not challenger.runs or math.isnan(c) or math.isnan(d):  # NaN: no sample scored
        return Decision(True, f"{peak.reason}; phases not compared (no hold-out run with usage over time)")
    what = f"{challenger.resource} samples of {challenger.runs} hold-out run(s) above the phased upper"
    # The epsilon keeps a gap of exactly the tolerance (0.30 - 0.25) on the allowed side.
    if c - d > tolerance + 1e-12:
        return Decision(False, f"{peak.reason}, but its phases leave {c:.4f} of the {what} against the champion's "
                               f"{d:.4f} (more than {tolerance:g} more): they promise less than the usage needs")
    return Decision(True, f"{peak.reason}; {c:.4f} of the {what} (champion {d:.4f})")


def _decide_peaks(challenger: Score, champion: Score | None, target_under: float, coverage_tolerance: float) -> Decision:
    if champion is None:
        gap = abs(challenger.under_provisioned_fraction - target_under)
        verdict = "within" if gap <= coverage_tolerance else "outside"
        return Decision(
            gap <= coverage_tolerance,
            f"no champion; challenger under-provisions {challenger.under_provisioned_fraction:.4f} of jobs at its "
            f"default coverage, {verdict} {coverage_tolerance:g} of the target {target_under:g}",
        )
    if challenger.window != champion.window:
        return Decision(
            False, f"scores are from different windows (challenger: {challenger.window}; champion: {champion.window})"
        )
    if not challenger.reached:
        return Decision(False, f"challenger never gets down to {target_under:g} under-provisioning on {challenger.window}")
    c, d = challenger.allocated_over_used, champion.allocated_over_used
    if champion.reached and c >= d:
        word = "ties" if c == d else "is worse than"
        return Decision(False, f"challenger allocated/used {c:.4f} {word} champion's {d:.4f} at {target_under:g} under")
    return Decision(True, f"challenger allocated/used {c:.4f} beats champion's {d:.4f} at {target_under:g} under")


def score_on_window(profiler, window: JobTable, target_under: float) -> Score:
    """Replay ``window`` sized by ``profiler`` at every conformal coverage level.

    The memory target when the profiler has one (what OOM-kills jobs), else the schema's first
    modelled resource. Jobs without a known usage or run time cannot be judged and are skipped.
    """
    preds = profiler.predict_targets(window)
    resources = [r for r in window.schema.resources if r in preds]
    if not resources:
        raise UserError(f"the profiler models none of the resources {window.schema.resources}")
    resource = "memory" if "memory" in resources else resources[0]
    p = preds[resource]
    used, run_time = window.used[resource], window.run_time
    rows = np.flatnonzero((used > 0) & (run_time > 0))
    if not len(rows):
        raise UserError(f"no job of the window has a known {resource} usage and run time to score on")
    levels = np.exp(p.median_log[rows, None] + p.offsets[rows])  # (n, len(QUANTILES))
    default = p.quantile(profiler.coverage)[rows, None]
    sim = simulate(
        np.column_stack([levels, default]), used[rows], run_time[rows],
        escalate=lambda a, r: a * 2, compressible=resource not in NON_COMPRESSIBLE,
    )
    summary = summarise(sim, used[rows], run_time[rows])
    K = len(conformal.QUANTILES)
    hit = at_target(summary["under_provisioned_fraction"][:K], summary["allocated_over_used"][:K], target_under)
    submit = window.submit[rows]
    return Score(
        allocated_over_used=hit["allocated_over_used"],
        under_provisioned_fraction=float(summary["under_provisioned_fraction"][K]),
        window=f"{window.schema.id} {resource}: {len(rows)} jobs submitted {submit.min():.0f}..{submit.max():.0f}",
        reached=bool(hit["reached"]),
    )


def split_holdout(table: JobTable, fraction: float = 0.2) -> tuple[JobTable, JobTable]:
    """(train, holdout): holdout is the most recent ``fraction`` of jobs by submit time; train
    holds only jobs that **ended** before the first holdout job was submitted, so no usage the
    holdout could not have known leaks into training."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"holdout fraction must be in (0, 1), got {fraction}")
    order = np.argsort(table.submit, kind="stable")
    n_hold = max(1, int(round(len(table) * fraction)))
    if n_hold >= len(table):
        raise UserError(f"{len(table)} records are too few to hold out {fraction:g} of them")
    hold, rest = order[-n_hold:], order[:-n_hold]
    first = table.submit[hold].min()
    train = rest[table.end[rest] < first]
    return table.take(train), table.take(hold)

"""The closed loop's last step: refit the profiler and move ``champion`` only if it wins.

Used by ``airflow-adaptive train --register`` and by the retraining DAG. The challenger is
fitted without the most recent ``holdout_fraction`` of records (and without any record that
had not ended when that window opened); it and the current champion are scored on that same
window (:mod:`airflow_adaptive.logic.promotion`); the new version is registered either way and
the alias moves only on a win. The returned :class:`RetrainResult` says why.

With usage series, both models are also scored over time on the hold-out window's runs
(:mod:`airflow_adaptive.logic.phase_score`): the figures are logged on the challenger's run
(``holdout_phased_*``, ``holdout_constant_reserved_over_used``; the primary resource unsuffixed,
others with ``_<resource>``), and a challenger whose phases are exceeded clearly more often than
the champion's is not promoted (:func:`~airflow_adaptive.logic.promotion.decide`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.records import JobTable

log = logging.getLogger(__name__)
HOLDOUT_FRACTION = 0.2
TARGET_UNDER = 0.01


@dataclass(frozen=True)
class RetrainResult:
    model_name: str
    version: str | None
    promoted: bool
    reason: str
    champion_before: str | None
    champion_after: str | None
    records: int
    holdout_window: str
    profiler: str
    #: The hold-out score over time (``PhaseScore.to_dict()`` of the primary resource) per model,
    #: ``{"challenger": ..., "champion": ...}``; None without usage series.
    phase_scores: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain_and_promote(table: JobTable, name: str, coverage: float = 0.99, *, holdout_fraction: float = HOLDOUT_FRACTION,
                        target_under: float = TARGET_UNDER, plot: bool = True, series=None) -> RetrainResult:
    """``series`` (a SeriesSet of the stage runs' usage over time, ``adapters/series``): the
    challenger also learns each stage's challenger_phases from the runs it was fitted on."""
    from airflow_adaptive.adapters.mlflow.registry import load_profiler, log_profiler, set_alias
    from airflow_adaptive.domain.errors import FeatureSchemaMismatch, ModelNotFound
    from airflow_adaptive.logic.promotion import decide, score_on_window, split_holdout
    from airflow_adaptive.logic.scaling import profiler_for

    train, holdout = split_holdout(table, holdout_fraction)
    challenger = profiler_for(train, coverage).fit(train)
    if series is not None:
        challenger.shapes_ = training_shapes(series, train)
    score = score_on_window(challenger, holdout, target_under)
    challenger_phases = holdout_phase_scores(challenger, holdout, series) if series is not None else None
    champion_score, champion_version, champion_phases = None, None, None
    try:
        champion, champion_version = load_profiler(f"models:/{name}@champion")
        champion_score = score_on_window(champion, holdout, target_under)
        if challenger_phases is not None:
            champion_phases = holdout_phase_scores(champion, holdout, series)
    except ModelNotFound:
        champion_version = None
    except FeatureSchemaMismatch as exc:
        log.warning("champion cannot be scored on this window (%s); treating it as absent", exc)
        champion_score = champion_phases = None
    primary = primary_resource(challenger_phases) if challenger_phases else None
    decision = decide(score, champion_score, target_under,
                      challenger_phases=challenger_phases.get(primary) if primary else None,
                      champion_phases=(champion_phases or {}).get(primary) if primary else None)
    metrics = {
        "holdout_allocated_over_used": score.allocated_over_used,
        "holdout_under_provisioned_fraction": score.under_provisioned_fraction,
        "training_records": float(len(train)),
        **phase_metrics(challenger_phases or {}, primary),
    }
    reason = decision.reason
    if primary:
        from airflow_adaptive.logic.phase_score import describe

        reason += f" | hold-out over time: challenger {describe(challenger_phases[primary])}"
        if champion_phases and primary in champion_phases:
            reason += f"; champion {describe(champion_phases[primary])}"
    with tempfile.TemporaryDirectory() as tmp:
        plot_path = None
        if plot:
            from airflow_adaptive.cli.report import holdout_plot

            plot_path = f"{tmp}/holdout.png"
            holdout_plot(challenger, holdout, plot_path)
        _, version = log_profiler(challenger, name=name, metrics=metrics, plot_path=plot_path, register=True)
    if decision.promote:
        set_alias(name, "champion", version)
    after = version if decision.promote else champion_version
    scored = {"challenger": challenger_phases[primary].to_dict()} if primary else None
    if scored and champion_phases and primary in champion_phases:
        scored["champion"] = champion_phases[primary].to_dict()
    result = RetrainResult(name, version, decision.promote, reason, champion_version, after,
                           len(table), score.window, type(challenger).__name__, scored)
    describe_in_registry(result, metrics, plotted=plot_path is not None)
    return result


#: Model-version tags: what the MLflow UI's version page shows next to the description.
TAG_DECISION = "airflow_adaptive.promotion"  # ``champion`` or ``not promoted``
TAG_REASON = "airflow_adaptive.promotion_reason"
MODEL_DESCRIPTION = ("Job profiler of airflow-adaptive: predicts each pipeline stage's resource profile (median and covering "
                     "quantile of memory, CPU, GPU, duration; phases over the stage's life) from its features. The "
                     "`champion` alias is the version AdaptiveTrainingOperator sizes stages with; each retraining "
                     "registers a challenger and moves the alias only when it wins on the hold-out window.")


def version_description(result: RetrainResult, metrics: Mapping[str, float], plotted: bool) -> str:
    """What the MLflow UI shows on the version's page: what it is, how it scored, why (not) champion."""
    verdict = ("**Champion**: promoted by the champion/challenger rule" if result.promoted
               else f"**Not promoted** (champion stays version {result.champion_before})")
    lines = [f"{result.profiler} fitted on {int(metrics.get('training_records', 0))} of {result.records} stage runs; "
             f"hold-out window: {result.holdout_window}.",
             "",
             f"Hold-out: allocated/used {metrics.get('holdout_allocated_over_used', float('nan')):.2f}, "
             f"under-provisioned fraction {metrics.get('holdout_under_provisioned_fraction', float('nan')):.3f} "
             "(metrics `holdout_*` of the source run).",
             "",
             f"{verdict}: {result.reason}"]
    if plotted:
        lines += ["", "Predicted against observed on the hold-out: `holdout.png` in the source run's artifacts."]
    return "\n".join(lines)


def describe_in_registry(result: RetrainResult, metrics: Mapping[str, float], plotted: bool) -> None:
    """Description and decision tags on the new version (and the model's description): never fatal,
    the version and the alias are what matter."""
    if result.version is None:
        return
    try:
        from airflow_adaptive.adapters.mlflow import store

        client = store.client()
        client.update_model_version(result.model_name, result.version, description=version_description(result, metrics, plotted))
        client.set_model_version_tag(result.model_name, result.version, TAG_DECISION, "champion" if result.promoted else "not promoted")
        client.set_model_version_tag(result.model_name, result.version, TAG_REASON, result.reason[:5000])
        if not client.get_registered_model(result.model_name).description:
            client.update_registered_model(result.model_name, description=MODEL_DESCRIPTION)
    except Exception as exc:  # noqa: BLE001 - a missing description must not undo a retraining
        log.warning("cannot describe %s version %s in the model registry (%s): the version and alias are set",
                    result.model_name, result.version, exc)


def holdout_predictions(profiler, holdout: JobTable) -> dict[str, PredictedProfile]:
    """Each hold-out row's profile as the operator would get it (peaks, duration, then the
    stage's phases: ``with_phases``), keyed by its job id (a stage run's MLflow run id, which is
    also its usage series' id)."""
    import numpy as np

    from airflow_adaptive.logic.targets import DURATION
    from airflow_adaptive.logic.usage_profile import with_phases

    preds = profiler.predict(holdout)
    shapes = getattr(profiler, "shapes_", None)
    out = {}
    for i, job in enumerate(holdout.job_id):
        estimates = {}
        for target, p in preds.items():
            median, upper = float(p["median"][i]), float(p["upper"][i])
            if np.isfinite(median) and np.isfinite(upper) and median >= 0:
                estimates[target] = ResourceEstimate(median, max(upper, median))  # as predict_profile does
        duration = estimates.pop(DURATION, None)
        profile = PredictedProfile(estimates, coverage=profiler.coverage, duration=duration, schema_id=holdout.schema.id)
        features = {name: column[i] for name, column in holdout.features.items()}
        out[str(job)] = with_phases(profile, shapes, features)
    return out


def holdout_phase_scores(profiler, holdout: JobTable, series) -> dict[str, Any]:
    """``{resource: PhaseScore}`` of ``profiler`` on the usage series of the hold-out rows (runs
    outside the window are left out; empty when none of its runs has a series)."""
    import numpy as np

    from airflow_adaptive.logic.phase_score import score_all

    ids = {run.series for run in series}
    rows = np.flatnonzero([str(j) in ids for j in holdout.job_id])
    if not len(rows):
        return {}
    window = holdout.take(rows)
    keep = {str(j) for j in window.job_id}
    return score_all(holdout_predictions(profiler, window), [run for run in series if run.series in keep])


def primary_resource(scores: Mapping[str, Any]) -> str | None:
    """The resource the promotion rule and the unsuffixed metrics use: memory (what kills a
    run) when scored, else the first scored with runs."""
    scored = [r for r, s in scores.items() if s.runs]
    return "memory" if "memory" in scored else (scored[0] if scored else None)


def phase_metrics(scores: Mapping[str, Any], primary: str | None) -> dict[str, float]:
    """MLflow metrics of the hold-out score over time (NaN figures left out: a missing metric
    fails a quality bar, as it should for a model nobody measured)."""
    import math

    out: dict[str, float] = {}
    for resource, s in scores.items():
        if not s.runs:
            continue
        suffix = "" if resource == primary else f"_{resource}"
        figures = {"holdout_phased_reserved_over_used": s.phased_reserved_over_used,
                   "holdout_phased_over_upper_fraction": s.over_upper_fraction,
                   "holdout_constant_reserved_over_used": s.constant_reserved_over_used,
                   "holdout_phased_runs": float(s.runs),
                   "holdout_phased_runs_with_phases": float(s.phased_runs)}
        out.update({name + suffix: float(v) for name, v in figures.items() if not math.isnan(v)})
    return out


def training_shapes(series, train: JobTable) -> dict[str, Any]:
    """Each stage's phases from the usage series of the runs in ``train`` (the hold-out window's
    runs stay out, as they do of the peaks)."""
    from airflow_adaptive.logic.usage_profile import learn_stage_shapes

    keep = {str(i) for i in train.job_id}
    by_stage: dict[str, list] = {}
    for run in series:
        if run.series in keep:
            by_stage.setdefault(run.stage, []).append(run.usage)
    shapes = learn_stage_shapes(by_stage)
    log.info("usage over time: %d stage(s) from %d run(s); with phases: %s", len(shapes), sum(map(len, by_stage.values())),
             sorted(s for s, by_r in shapes.items() if any(not sh.fallback for sh in by_r.values())) or "none yet")
    return shapes

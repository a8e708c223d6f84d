"""The closed loop's last step: refit the profiler and move ``champion`` only if it wins.

Used by ``airflow-adaptive train --register`` and by the retraining DAG. The challenger is
fitted without the most recent ``holdout_fraction`` of records (and without any record that
had not ended when that window opened); it and the current champion are scored on that same
window (:mod:`airflow_adaptive.logic.promotion`); the new version is registered either way and
the alias moves only on a win. The returned :class:`RetrainResult` says why.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def retrain_and_promote(table: JobTable, name: str, coverage: float = 0.99, *, holdout_fraction: float = HOLDOUT_FRACTION,
                        target_under: float = TARGET_UNDER, plot: bool = True, series=None) -> RetrainResult:
    """``series`` (a SeriesSet of the stage runs' usage over time, ``adapters/series``): the
    challenger also learns each stage's phases from the runs it was fitted on."""
    from airflow_adaptive.adapters.mlflow.registry import load_profiler, log_profiler, set_alias
    from airflow_adaptive.domain.errors import FeatureSchemaMismatch, ModelNotFound
    from airflow_adaptive.logic.promotion import decide, score_on_window, split_holdout
    from airflow_adaptive.logic.scaling import profiler_for

    train, holdout = split_holdout(table, holdout_fraction)
    challenger = profiler_for(train, coverage).fit(train)
    if series is not None:
        challenger.shapes_ = training_shapes(series, train)
    score = score_on_window(challenger, holdout, target_under)
    champion_score, champion_version = None, None
    try:
        champion, champion_version = load_profiler(f"models:/{name}@champion")
        champion_score = score_on_window(champion, holdout, target_under)
    except ModelNotFound:
        champion_version = None
    except FeatureSchemaMismatch as exc:
        log.warning("champion cannot be scored on this window (%s); treating it as absent", exc)
    decision = decide(score, champion_score, target_under)
    metrics = {
        "holdout_allocated_over_used": score.allocated_over_used,
        "holdout_under_provisioned_fraction": score.under_provisioned_fraction,
        "training_records": float(len(train)),
    }
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
    return RetrainResult(name, version, decision.promote, decision.reason, champion_version, after,
                         len(table), score.window, type(challenger).__name__)


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

"""Trace replay: size every job with each policy, charge failures, compare at equal risk.

Rules of the replay (what makes the comparison fair):

* Jobs are sized in submit order; a policy sees a job's usage only once that job **ended before**
  the sizing moment (``end < submit``).
* A job whose use exceeds its allocation is OOM-killed: the attempt costs its allocation for the
  job's run time, and the job is retried with the policy's OOM rule until it fits. CPU is
  compressible: an under-sized job is throttled (counted as under-provisioned; it runs
  ``used/allocated`` times longer on its allocation, so its cost is its usage).
* Each policy has one safety knob; the replay sweeps it and reports the trade-off curve between
  ``under_provisioned_fraction`` and ``allocated_over_used``, and compares the policies where
  each curve crosses ``target_under``.
* The adaptive policy refits its median model every ``refit_days`` of trace time on the jobs
  finished by then, and re-calibrates its conformal offsets every 25 finished jobs per stratum.
* A job whose trace gives no request of a resource (unknown, ``-1``) is left out, unless
  ``ReplayConfig.default_request`` names one: then that amount is the job's request for every
  policy (the user's allocation, the baselines' cold start, the adaptive policy's prior), job by
  job, and the report counts those jobs. The ``requested_*`` *features* stay unknown: the model
  must not learn that a default is what the user asked for.
* Bandwidths (``BANDWIDTH_RESOURCES``: disk and network bytes/s) are replayed when the trace has
  their usage, like CPU: compressible (an under-sized job is throttled, not killed). Traces rarely
  carry a bandwidth request (PAI has none), so their jobs are left out ("no ... request in the
  trace") unless ``--default-request`` names one (``network_rx=10Mi``: bytes/s); the report still
  lists their population, so an unreplayed bandwidth says why.
"""

from __future__ import annotations

import time as _time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from airflow_adaptive.domain.errors import QuantityError, UserError
from airflow_adaptive.domain.features import BANDWIDTH_RESOURCES
from airflow_adaptive.domain.quantities import cpu_cores, memory_bytes, parse_quantity
from airflow_adaptive.domain.records import JobTable
from airflow_adaptive.logic import conformal
from airflow_adaptive.logic.baselines import AUTOPILOT_MARGIN, MovingWindowMaxState, VpaState, history_estimates
from airflow_adaptive.logic.history import STATS
from airflow_adaptive.logic.profiler import (
    DURATION,
    MIN_ROWS,
    fit_median_model,
    history_block,
    learn_categories,
    recency_weight,
    static_block,
    stratum_of,
    target_values,
)
from airflow_adaptive.logic.vpa import FIRST_BUCKET_CPU, FIRST_BUCKET_MEMORY, MAX_CPU, MAX_MEMORY, oom_bump
from airflow_adaptive.logic.vpa import MARGIN as VPA_MARGIN

POLICIES = ("user_request", "vpa", "autopilot_moving_window", "adaptive")
REQUEST_MULTIPLIERS = np.array([0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])
MARGINS = np.array([0.0, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
#: Adaptive knob: the price of one OOM kill in resource-hours (GiB-hours for memory).
PRICES = np.array([0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300, 1e3, 3e3, 1e4, 3e4, 1e5])
DEFAULT_PRICE = 100.0
UNKNOWN_DURATION = 3600.0  # a job with no run-time history and no requested time
USER_OOM_FACTOR = 2.0  # a user whose job was OOM-killed doubles the request
#: ``--default-request`` names (as Kubernetes writes them) and the replay's resource for each.
DEFAULT_REQUEST_NAMES = {"cpu": "cpu", "memory": "memory", "nvidia.com/gpu": "gpu",
                         **{r: r for r in BANDWIDTH_RESOURCES}}  # bandwidths: bytes/s, e.g. 10Mi
#: Decaying-histogram range of the VPA-style baseline for bandwidths (bytes/s): VPA itself has
#: none; CPU's buckets (0.01 to 1000) would cap every estimate at 1000 B/s.
FIRST_BUCKET_BANDWIDTH = 1e4
MAX_BANDWIDTH = 1e12
#: Unit of the adaptive policy's cost weight for bandwidths: MiB/s (x hours), which puts a
#: typical stage's weight on the scale of a GiB of memory or a core.
BANDWIDTH_COST_UNIT = float(2**20)
#: Pooled history before the first fit is scaled by this feature when the trace has it: a
#: parallel job's memory and cores grow with its processors (LANL-CM5 memory: log used memory
#: spreads 4.2 from p50 to p99 over all jobs, 2.1 per processor).
POOLED_SIZE_FEATURE = "procs"
#: Finished jobs the pooled history needs before it replaces the default request.
POOLED_MIN_JOBS = conformal.MIN_RESIDUALS


@dataclass(frozen=True)
class ReplayConfig:
    target_under: float = 0.01
    refit_days: float = 45.0
    half_life_days: float = 90.0
    max_train_rows: int = 15000
    max_iter: int = 50
    learning_rate: float = 0.1
    #: Replayed when the trace has their usage (bandwidths need a request: see the module doc).
    resources: tuple[str, ...] = ("memory", "cpu", *BANDWIDTH_RESOURCES)
    random_state: int = 0
    #: resource -> amount (cores, bytes, GPUs) for jobs whose trace gives no request; empty: such
    #: jobs are excluded. Parse ``cpu=1,memory=1Gi`` with ``parse_default_request``.
    default_request: Mapping[str, float] = field(default_factory=dict)


def parse_default_request(text: str, flag: str = "--default-request") -> dict[str, float]:
    """``cpu=1,memory=1Gi`` (quantities as Kubernetes writes them) -> {"cpu": 1.0, "memory": 2**30}.

    A mistake raises ``UserError`` naming ``flag`` and the part that is wrong.
    """
    example = "e.g. cpu=1,memory=1Gi"
    out: dict[str, float] = {}
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise UserError(f"{flag}: no request given; {example}")
    for part in parts:
        name, sep, value = (x.strip() for x in part.partition("="))
        if not part or not sep or not name or not value:
            raise UserError(f"{flag}: {part!r} is not NAME=QUANTITY; {example}")
        resource = DEFAULT_REQUEST_NAMES.get(name)
        if resource is None:
            raise UserError(f"{flag}: unknown resource {name!r} in {part!r}; use {', '.join(DEFAULT_REQUEST_NAMES)}")
        if resource in out:
            raise UserError(f"{flag}: {name} is given twice")
        where = f"{flag} {name}"
        try:
            if resource == "cpu":
                amount = cpu_cores(value, where)
            elif resource == "memory" or resource in BANDWIDTH_RESOURCES:  # bytes, or bytes/s
                amount = float(memory_bytes(value, where))
            else:
                whole = parse_quantity(value, where)
                if whole.denominator != 1:
                    raise QuantityError(f"{where}: {value!r} is not a whole number of GPUs")
                amount = float(whole)
        except OverflowError:  # float() of an exact amount such as 1e1000
            raise QuantityError(f"{where}: {value!r} is too large to be a request") from None
        if not amount > 0:
            raise UserError(f"{where}: {value!r} is not more than zero; a default request sizes every job without one")
        out[resource] = amount
    return out


@dataclass
class Simulation:
    under: np.ndarray  # (n, K) bool: first attempt under-sized
    cost: np.ndarray  # (n, K) allocated x time over all attempts
    attempts: np.ndarray  # (n, K)
    slack: np.ndarray  # (n, K) 1 - used/allocated on the successful attempt


def select_population(table: JobTable, resource: str, default_request: float | None = None) -> tuple[np.ndarray, dict[str, int]]:
    """Rows a replay of ``resource`` can judge, and how many were excluded for what.

    With a ``default_request``, a job with no request of its own is kept (it will get the default)."""
    rt, used = table.run_time, table.used[resource]
    req = table.requested.get(resource, np.full(len(table), np.nan))
    if default_request is not None:
        req = np.where(req > 0, req, default_request)
    reasons = {
        "run time unknown or zero": ~(rt > 0),
        f"{resource} usage unknown or zero": (rt > 0) & ~(used > 0),
        f"no {resource} request in the trace": (rt > 0) & (used > 0) & ~(req > 0),
    }
    keep = (rt > 0) & (used > 0) & (req > 0)
    return np.flatnonzero(keep), {k: int(v.sum()) for k, v in reasons.items() if v.sum()}


def simulate(
    alloc: np.ndarray,
    used: np.ndarray,
    run_time: np.ndarray,
    escalate: Callable[[np.ndarray, np.ndarray], np.ndarray],
    compressible: bool,
    max_attempts: int = 64,
) -> Simulation:
    """Charge every attempt of every job for every knob column of ``alloc`` (n, K)."""
    used2, rt2 = used[:, None], run_time[:, None]
    under = used2 > alloc
    if compressible:
        cost = np.where(under, used2 * rt2, alloc * rt2)
        return Simulation(under, cost, np.ones_like(alloc), np.where(under, 0.0, 1 - used2 / alloc))
    a = alloc.copy()
    cost = alloc * rt2
    attempts = np.ones_like(alloc)
    failing = under.copy()
    for _ in range(max_attempts):
        if not failing.any():
            break
        rows, cols = np.nonzero(failing)
        a[rows, cols] = np.maximum(escalate(a[rows, cols], rows), a[rows, cols] * 1.01)
        cost[rows, cols] += a[rows, cols] * run_time[rows]
        attempts[rows, cols] += 1
        failing = used2 > a
    return Simulation(under, cost, attempts, 1 - used2 / a)


def summarise(sim: Simulation, used: np.ndarray, run_time: np.ndarray, rows: np.ndarray | None = None) -> dict[str, np.ndarray]:
    rows = np.arange(len(used)) if rows is None else rows
    need = float((used[rows] * run_time[rows]).sum())
    return {
        "under_provisioned_fraction": sim.under[rows].mean(axis=0),
        "allocated_over_used": sim.cost[rows].sum(axis=0) / need,
        "relative_slack": sim.slack[rows].mean(axis=0),
        "attempts_per_job": sim.attempts[rows].mean(axis=0),
    }


def at_target(under: np.ndarray, aou: np.ndarray, target: float) -> dict[str, Any]:
    """The trade-off curve's ``allocated_over_used`` where it crosses ``target`` under-provisioning.

    Interpolates linearly between the two knob settings that bracket the target; when no
    setting reaches it, reports the closest one with ``reached: false``.
    """
    order = np.argsort(under, kind="stable")
    u, a = under[order], aou[order]
    if target < u[0] or target > u[-1]:
        k = 0 if target < u[0] else len(u) - 1
        return {"under_provisioned_fraction": float(u[k]), "allocated_over_used": float(a[k]), "reached": False}
    hi = int(np.searchsorted(u, target, side="left"))
    if u[hi] == target or hi == 0:
        return {"under_provisioned_fraction": float(target), "allocated_over_used": float(a[hi]), "reached": True}
    lo = hi - 1
    t = (target - u[lo]) / (u[hi] - u[lo])
    return {"under_provisioned_fraction": float(target), "allocated_over_used": float(a[lo] + t * (a[hi] - a[lo])), "reached": True}


# ----------------------------------------------------------------------------- policies
@dataclass
class PolicyRun:
    name: str
    knob: str
    knobs: np.ndarray
    alloc: np.ndarray  # (n, K)
    escalate: Callable[[np.ndarray, np.ndarray], np.ndarray]
    default_index: int
    notes: dict[str, Any]
    cold: np.ndarray | None = None  # jobs whose workload had no finished run (adaptive reports them)


def user_request_policy(request: np.ndarray, resource: str) -> PolicyRun:
    alloc = request[:, None] * REQUEST_MULTIPLIERS[None, :]
    return PolicyRun(
        "user_request", "request_multiplier", REQUEST_MULTIPLIERS, alloc,
        lambda a, rows: a * USER_OOM_FACTOR, int(np.flatnonzero(REQUEST_MULTIPLIERS == 1.0)[0]), {},
    )


def _margin_policy(name: str, base: np.ndarray, request: np.ndarray, default_margin: float, escalate) -> PolicyRun:
    cold = ~np.isfinite(base)
    # A workload with no finished job yet keeps the user's request (the recommender has no
    # opinion); the knob's margin applies to it too, so the sweep can reach any risk level.
    base = np.where(cold, request, base)
    alloc = base[:, None] * (1 + MARGINS[None, :])
    default = int(np.argmin(np.abs(MARGINS - default_margin)))
    return PolicyRun(name, "margin", MARGINS, alloc, escalate, default, {"cold_start_jobs": int(cold.sum())})


def vpa_policy(keys, submit, end, used, request, resource: str) -> PolicyRun:
    memory = resource in ("memory", "gpu_memory")
    first, max_value = (FIRST_BUCKET_MEMORY, MAX_MEMORY) if memory else (FIRST_BUCKET_CPU, MAX_CPU)
    if resource in BANDWIDTH_RESOURCES:
        first, max_value = FIRST_BUCKET_BANDWIDTH, MAX_BANDWIDTH
    base = history_estimates(keys, submit, end, used, lambda: VpaState(first, max_value))
    return _margin_policy("vpa", base, request, VPA_MARGIN, lambda a, rows: oom_bump(a))


def autopilot_policy(keys, submit, end, used, request, resource: str) -> PolicyRun:
    base = history_estimates(keys, submit, end, used, MovingWindowMaxState)
    return _margin_policy("autopilot_moving_window", base, request, AUTOPILOT_MARGIN, lambda a, rows: oom_bump(a))


def with_default(table: JobTable, resource: str, default_request: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The request each policy sizes from: the trace's, else ``default_request``; and which jobs
    got the default (per job: a job with its own request keeps it)."""
    trace = table.requested.get(resource, np.full(len(table), np.nan))
    defaulted = ~(trace > 0)
    if default_request is None:
        return trace, np.zeros(len(table), dtype=bool)
    return np.where(defaulted, default_request, trace), defaulted


def pooled_quantile(values: np.ndarray, submit: np.ndarray, end: np.ndarray, q: float, jobs: np.ndarray,
                    refresh_every: int = 25) -> np.ndarray:
    """For each of ``jobs``, the ``q`` quantile of ``values`` over every job that ended before it
    was submitted (NaN while fewer than ``POOLED_MIN_JOBS`` have); refreshed every
    ``refresh_every`` finished jobs, as the conformal offsets are."""
    out = np.full(len(values), np.nan)
    known = np.flatnonzero(np.isfinite(values))
    order = known[np.argsort(end[known], kind="stable")]
    ends, vals = end[order], values[order]
    seen = (np.searchsorted(ends, submit[jobs], side="left") // refresh_every) * refresh_every
    cache: dict[int, float] = {}
    for j, c in zip(jobs, seen):
        if c < POOLED_MIN_JOBS:
            continue
        if c not in cache:
            cache[c] = float(np.quantile(vals[:c], q))
        out[j] = cache[c]
    return out


def pooled_history(table: JobTable, y: np.ndarray, jobs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median (log) and conformal offsets for ``jobs`` from every finished job, pooled across
    workloads and scaled by the job's processors when the trace has them (NaN median: too few
    finished jobs yet). The offsets come from this estimate's own residuals, one stratum."""
    n = len(table)
    size = np.zeros(n)
    if POOLED_SIZE_FEATURE in table.features and table.features[POOLED_SIZE_FEATURE].dtype.kind == "f":
        procs = table.features[POOLED_SIZE_FEATURE]
        size = np.where(procs > 0, np.log(np.where(procs > 0, procs, 1.0)), 0.0)
    # Residuals are needed for the jobs that end before the last of ``jobs`` is sized.
    horizon = float(table.submit[jobs].max()) if len(jobs) else -np.inf
    scope = np.flatnonzero(table.submit <= horizon)
    median = pooled_quantile(y - size, table.submit, table.end, 0.5, scope) + size
    residual = y - median
    offsets = conformal.online_offsets(np.zeros(n, dtype=np.int64), table.submit, table.end, residual)
    return median, offsets


def adaptive_policy(table: JobTable, resource: str, config: ReplayConfig, progress=None,
                    request: np.ndarray | None = None, defaulted: np.ndarray | None = None) -> PolicyRun:
    """Online profiler: periodic refits of the median model, online conformal offsets, and a
    cost-aware choice of quantile per job (expensive jobs get less headroom, cheap ones more).

    ``request`` is each job's request (the trace's, or the replay's default where ``defaulted``);
    by default the trace's own."""
    n = len(table)
    if request is None:
        request = table.requested[resource]
    if defaulted is None:
        defaulted = np.zeros(n, dtype=bool)
    y = target_values(table, resource)
    categories = learn_categories(table)  # codes in order of first appearance: the future cannot renumber the past
    static = static_block(table, categories)
    history = history_block(table, resource)
    design = np.column_stack([static, history])
    n_static = static.shape[1]
    names = [f.name for f in table.schema.features if f.kind == "numeric" or f.name in categories]
    categorical = np.array([nm in categories for nm in names] + [False] * history.shape[1], dtype=bool)

    median = np.full(n, np.nan)
    period = config.refit_days * 86400.0
    order_end = np.argsort(table.end, kind="stable")
    fits = 0
    t = float(table.submit.min())
    last = float(table.submit.max())
    while t <= last:
        upcoming = np.flatnonzero((table.submit >= t) & (table.submit < t + period))
        done = order_end[: np.searchsorted(table.end[order_end], t, side="left")]
        done = done[np.isfinite(y[done])][-config.max_train_rows :]
        if len(upcoming) and len(done) >= MIN_ROWS:
            model = fit_median_model(
                design[done], y[done], recency_weight(table.end[done], t, config.half_life_days),
                categorical, config.max_iter, config.learning_rate, config.random_state,
            )
            median[upcoming] = model.predict(design[upcoming])
            fits += 1
        if progress:
            progress(len(upcoming))
        t += period
    no_model = ~np.isfinite(median)
    median = np.where(no_model, np.log(request), median)  # before the first fit: the request
    residual = np.where(no_model, np.nan, y - median)
    n_levels = len(table.schema.levels)
    stratum = stratum_of(history, n_levels)
    offsets = conformal.online_offsets(stratum, table.submit, table.end, residual)
    # Before the first fit, a job with no request of its own would be sized from the bare
    # default, with offsets no residual has calibrated yet: months of jobs gambled on one
    # number, burning the risk budget. Size them instead from pooled history (every finished
    # job, per processor), calibrated on that estimate's own residuals, kept apart from the
    # model's so they do not widen its offsets after the first fit.
    pooled = np.zeros(n, dtype=bool)
    cold_default = np.flatnonzero(no_model & defaulted)
    if len(cold_default):
        pooled_median, pooled_offsets = pooled_history(table, y, cold_default)
        pooled[cold_default] = np.isfinite(pooled_median[cold_default])
        median = np.where(pooled, pooled_median, median)
        offsets = np.where(pooled[:, None], pooled_offsets, offsets)

    # Cost weight in fixed units (GiB or cores, times hours), from past runs only: a
    # normalisation over the whole trace would let future jobs move today's sizes.
    unit = 2.0**30 if resource in ("memory", "gpu_memory") else BANDWIDTH_COST_UNIT if resource in BANDWIDTH_RESOURCES else 1.0
    weight = np.exp(median) / unit * _expected_duration(table) / 3600.0
    risk = 1 - conformal.QUANTILES
    alloc = np.empty((n, len(PRICES)))
    for k, price in enumerate(PRICES):
        # Expected cost of sizing at each level: the allocation (plus about two more of it when
        # the job is killed and retried) against the price of the kill itself.
        objective = weight[:, None] * np.exp(offsets) * (1 + 2 * risk)[None, :] + price * risk[None, :]
        choice = np.argmin(objective, axis=1)
        alloc[:, k] = np.exp(median + offsets[np.arange(n), choice])
    top = np.exp(median + offsets[:, -1])

    def escalate(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.maximum(a * 2.0, top[rows])

    notes = {
        "refits": fits,
        "refit_days": config.refit_days,
        "sized_by_request_before_first_fit": int((no_model & ~pooled).sum()),
        "sized_by_pooled_history_before_first_fit": int(pooled.sum()),
        "stratum_jobs": {name: int((stratum == i).sum()) for i, name in enumerate(conformal.STRATA)},
    }
    default = int(np.flatnonzero(PRICES == DEFAULT_PRICE)[0])
    return PolicyRun("adaptive", "oom_price", PRICES, alloc, escalate, default, notes, cold=stratum == 0)


def _expected_duration(table: JobTable) -> np.ndarray:
    """Median of the workload's recent run times (finest level that has any), else the
    requested time, else one hour."""
    history = history_block(table, DURATION)
    width = len(STATS)
    med = STATS.index("med_k")
    est = np.full(len(table), np.nan)
    for level in range(len(table.schema.levels)):
        est = np.where(np.isfinite(est), est, history[:, level * width + med])
    est = np.exp(est)
    if "requested_time" in table.features:
        est = np.where(np.isfinite(est), est, table.features["requested_time"])
    return np.where(np.isfinite(est) & (est > 0), est, UNKNOWN_DURATION)


# ----------------------------------------------------------------------------- the replay
def replay(table: JobTable, config: ReplayConfig, progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    started = _time.perf_counter()
    resources = [r for r in config.resources if r in table.used and np.isfinite(table.used[r]).any()]
    if not resources:
        raise UserError(f"the trace has no usage for {', '.join(config.resources)}: nothing to replay")
    report: dict[str, Any] = {
        "jobs": len(table),
        "target_under": config.target_under,
        "population": {},
        "policies": {p: {} for p in POLICIES},
        "settings": {
            "refit_days": config.refit_days,
            "half_life_days": config.half_life_days,
            "default_request": dict(config.default_request),
            "knobs": {
                "user_request": REQUEST_MULTIPLIERS.tolist(),
                "vpa": MARGINS.tolist(),
                "autopilot_moving_window": MARGINS.tolist(),
                "adaptive": PRICES.tolist(),
            },
        },
    }
    for resource in resources:
        default = config.default_request.get(resource)
        rows, excluded = select_population(table, resource, default)
        report["population"][resource] = {"kept": int(len(rows)), "excluded": excluded, "default_request_jobs": 0}
        if len(rows) < MIN_ROWS:
            report["population"][resource]["skipped"] = f"fewer than {MIN_ROWS} jobs to replay"
            continue
        sub = table.take(rows).sorted_by_submit()
        used, rt = sub.used[resource], sub.run_time
        req, defaulted = with_default(sub, resource, default)
        report["population"][resource]["default_request_jobs"] = int(defaulted.sum())
        keys = sub.key_codes()
        tick = (lambda k: progress(resource, k)) if progress else None
        runs = [
            user_request_policy(req, resource),
            vpa_policy(keys, sub.submit, sub.end, used, req, resource),
            autopilot_policy(keys, sub.submit, sub.end, used, req, resource),
            adaptive_policy(sub, resource, config, tick, request=req, defaulted=defaulted),
        ]
        compressible = resource == "cpu" or resource in BANDWIDTH_RESOURCES  # throttled, not killed
        for run in runs:
            sim = simulate(run.alloc, used, rt, run.escalate, compressible)
            summary = summarise(sim, used, rt)
            entry = _entry(run, summary, config.target_under)
            if run.cold is not None:
                cold = np.flatnonzero(run.cold)
                entry["cold_start"] = {"jobs": int(len(cold)), "knob": float(run.knobs[run.default_index])}
                if len(cold):
                    cs = summarise(sim, used, rt, cold)
                    for k in ("under_provisioned_fraction", "allocated_over_used", "relative_slack"):
                        entry["cold_start"][k] = float(cs[k][run.default_index])
            report["policies"][run.name][resource] = entry
    report["seconds"] = round(_time.perf_counter() - started, 2)
    return report


def _entry(run: PolicyRun, summary: dict[str, np.ndarray], target: float) -> dict[str, Any]:
    d = run.default_index
    entry: dict[str, Any] = {k: float(v[d]) for k, v in summary.items()}
    entry["knob"] = {"name": run.knob, "default": float(run.knobs[d])}
    entry["tradeoff"] = [
        {
            "knob": float(run.knobs[k]),
            "under_provisioned_fraction": float(summary["under_provisioned_fraction"][k]),
            "allocated_over_used": float(summary["allocated_over_used"][k]),
        }
        for k in range(len(run.knobs))
    ]
    entry["at_target"] = at_target(summary["under_provisioned_fraction"], summary["allocated_over_used"], target)
    if run.notes:
        entry["notes"] = run.notes
    return entry

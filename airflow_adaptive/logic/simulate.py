"""Replay usage series through runtime sizing policies: what each would have reserved, and killed.

``replay`` (logic/replay.py) sizes jobs before they run from per-job records; this module also
replays what happens *while* a run runs, sample by sample. Pure: numpy and the deviation policy,
no I/O, no clock.

Rules (what makes the comparison fair):

* **Causal.** A run learns only from runs that ended before it started. With start times (MLflow,
  Prometheus) that is literal; the long CSV has none, so the k-th run of every stage is taken as
  concurrent with the k-th run of every other, and learns from runs of rank < k. A stage's own
  earlier runs come first; a stage with none is sized from every stage's finished runs pooled
  (their ``POOLED_QUANTILE`` peak). A run that nothing precedes is a **warm-up** run: it is history
  for the others and scored by no policy (no policy can size it; the report counts them).
* **Time.** A sample holds until the next one (the last one for the series' median interval).
  The limit in force at a sample is the one decided at the samples before it; usage above it
  is a **kill** for memory and GPU memory (the kernel's OOM killer, CUDA out of memory) and
  **throttling** for cpu and gpu. A kill charges what was reserved until then, and the run
  restarts from its start with the policy's escalation (``ESCALATION``).
* **Cost.** ``reserved_over_used`` = the limit in force integrated over time, over every attempt,
  / the usage integrated over time; ``requested_over_used`` the same with the request in force.
* **The monitor's clock.** The runtime policy runs at the series' own interval: its sample counts
  (2 samples short to raise, 30 idle to lower) are counts of the series' samples, its cooldowns
  (5 s / 60 s) are seconds of the series' time. At the shared GenAI trace's one-minute samples, a
  raise needs two minutes short and a release half an hour idle, where the 1 s monitor needs 2 s
  and 30 s: the simulation is the slow-sampling end of what the monitor does.

Each policy has one knob, its margin; the report sweeps it and compares the policies at the kill
count of ``static_history`` at its default (``at_kills``), as ``replay`` compares at a target.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.series import KILLING, SeriesSet, UsageSeries
from airflow_adaptive.logic.deviation import ACTUATION_S, Bounds, DeviationConfig, decide, escalate_after_oom, initial_state
from airflow_adaptive.logic.usage_profile import UsageShape, constant_shape, learn_shape, phases_for, start_estimate

POLICIES = ("static_peak", "static_history", "reactive", "profile")
MARGINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
DEFAULT_MARGIN = {"static_peak": 0.20, "static_history": 0.20, "reactive": 0.20, "profile": 0.20}
POOLED_QUANTILE = 0.9
USER_OOM_FACTOR = 2.0  # a user whose run was killed doubles its size (as in logic/replay.py)
MAX_ATTEMPTS = 30  # doubling reaches any need long before; a guard against a zero-sized start
ESCALATION = {
    "static_peak": f"the user doubles the limit (x{USER_OOM_FACTOR:g})",
    "static_history": f"the user doubles the limit (x{USER_OOM_FACTOR:g})",
    "reactive": "the operator's OOM retry: max(limit x oom_factor, peak seen + margin) (logic/deviation.py)",
    "profile": "the operator's OOM retry, as reactive",
}


@dataclass(frozen=True)
class SimulationConfig:
    margins: tuple[float, ...] = MARGINS
    policies: tuple[str, ...] = POLICIES
    #: The operator's headroom over the predicted upper at start (its ``sizing_margin``).
    sizing_margin: float = 0.10
    deviation: DeviationConfig = field(default_factory=DeviationConfig)

    def __post_init__(self) -> None:
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown policies {unknown}; known: {', '.join(POLICIES)}")
        if not self.margins or any(not m >= 0 for m in self.margins):
            raise ValueError(f"margins must be >= 0, got {self.margins}")


@dataclass(frozen=True)
class History:
    """What a run may know before it starts: peaks of the runs that ended before it."""

    own: tuple[float, ...]
    pooled: tuple[float, ...]
    own_runs: tuple[int, ...] = ()  # indices of the stage's own earlier runs (their series)

    @property
    def empty(self) -> bool:
        return not self.own and not self.pooled

    def estimate(self) -> ResourceEstimate:
        """The constant profile today's profiler gives a stage: the median and the covering
        (here: highest) peak of its own runs, or pooled quantiles for a stage with none."""
        if self.own:
            return ResourceEstimate(float(np.median(self.own)), float(max(self.own)))
        pooled = np.asarray(self.pooled, float)
        return ResourceEstimate(float(np.median(pooled)), float(np.quantile(pooled, POOLED_QUANTILE)))


@dataclass
class Tally:
    """One policy, one resource, one knob setting, summed over the scored runs."""

    runs: int = 0
    reserved: float = 0.0  # limit x seconds
    requested: float = 0.0
    used: float = 0.0
    samples: int = 0
    over_request: int = 0
    over_limit: int = 0  # cpu/gpu: throttled samples
    kills: int = 0
    killed_runs: int = 0
    resizes: int = 0
    raised_ahead: int = 0  # raises the prediction made before usage reached the old limit
    gave_up: int = 0

    def add(self, other: "Tally") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self, resource: str) -> dict[str, Any]:
        out = {
            "runs": self.runs,
            "reserved_over_used": self.reserved / self.used if self.used > 0 else None,
            "requested_over_used": self.requested / self.used if self.used > 0 else None,
            "over_request_fraction": self.over_request / self.samples if self.samples else 0.0,
            "kills": self.kills if resource in KILLING else 0,
            "killed_runs": self.killed_runs if resource in KILLING else 0,
            "kill_fraction": self.killed_runs / self.runs if self.runs and resource in KILLING else 0.0,
            "resizes": self.resizes,
            "raised_ahead": self.raised_ahead,
        }
        if resource not in KILLING:
            out["throttled_fraction"] = self.over_limit / self.samples if self.samples else 0.0
        if self.gave_up:
            out["gave_up_runs"] = self.gave_up
        return out


def durations(times: np.ndarray) -> np.ndarray:
    """How long each sample holds: until the next one; the last one for the median interval."""
    if len(times) == 1:
        return np.ones(1)
    gaps = np.diff(times)
    return np.append(gaps, float(np.median(gaps)))


# ----------------------------------------------------------------------------- history
def histories(series: SeriesSet, resource: str) -> list[History | None]:
    """Per run (in ``series.runs`` order), what it may learn from; None when it has no usage of
    ``resource``. Start times when every run has one, else ranks within the stage."""
    runs = series.runs
    peaks = [run.peak(resource) for run in runs]
    timed = all(run.start is not None for run in runs)
    if timed:
        ends = [run.start + run.duration for run in runs]
        key_start, key_end = [run.start for run in runs], ends
    else:
        rank: dict[str, int] = {}
        key_start = []
        for run in runs:
            key_start.append(rank.get(run.stage, 0))
            rank[run.stage] = key_start[-1] + 1
        key_end = [k + 0.5 for k in key_start]  # rank k has ended before rank k + 1 starts
    order = np.argsort(key_end, kind="stable")
    ends_sorted = np.asarray(key_end, float)[order]
    out: list[History | None] = []
    for i, run in enumerate(runs):
        if peaks[i] is None:
            out.append(None)
            continue
        before = order[: int(np.searchsorted(ends_sorted, key_start[i], side="right"))]
        own_runs = tuple(j for j in sorted(before) if runs[j].stage == run.stage and peaks[j] is not None)
        own = tuple(peaks[j] for j in own_runs)
        pooled = tuple(peaks[j] for j in before if peaks[j] is not None) if not own else ()
        out.append(History(own, pooled, own_runs))
    return out


# ----------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class Start:
    limit: float
    request: float


class Runtime:
    """The in-run policy: told each sample, it returns the (limit, request) in force after it."""

    def observe(self, time_s: float, used: float) -> tuple[float, float]:  # pragma: no cover - interface
        raise NotImplementedError

    resizes = 0
    raised_ahead = 0


class ReactiveRuntime(Runtime):
    """The monitor: the deviation policy on one resource, starting at the constant profile (with
    ``phases``: following them, as the monitor does with a time-varying profile).
    Requests follow a decision that carries one (the phases: what the run uses in its phase),
    else a decrease below them (a limit under the request is refused), and otherwise stay: the
    operator's Burstable pods move the limit, and the request only as the phases say."""

    def __init__(self, resource: str, start: Start, estimate: ResourceEstimate, config: DeviationConfig,
                 floor: float = 0.0, phases: tuple = ()) -> None:
        profile = PredictedProfile({resource: estimate}, coverage=0.99, phases={resource: phases} if phases else {})
        self.resource, self.config, self.request = resource, config, start.request
        self.state = initial_state({resource: start.limit}, profile)
        # A retry never releases below its escalated start: the kill showed the need is above the old limit.
        self.bounds = Bounds(minimum={resource: floor} if floor else {})
        self.resizes = self.raised_ahead = 0

    def observe(self, time_s: float, used: float) -> tuple[float, float]:
        self.state, decisions = decide(self.state, UsageSample(time_s, {self.resource: used}), self.config, self.bounds)
        self.resizes += sum(d.action in ("increase", "decrease") for d in decisions)
        self.raised_ahead += sum(d.action == "increase" and d.predicted for d in decisions)
        limit = self.state.tracks[self.resource].allocation
        for d in decisions:
            if d.request is not None:
                self.request = d.request
        self.request = min(self.request, limit)
        return limit, self.request


def simulate_run(times: np.ndarray, values: np.ndarray, start: Start, resource: str,
                 escalate: Callable[[float, float], Start], runtime: Callable[[Start, float], Runtime] | None = None) -> Tally:
    """Every attempt of one run until one completes (or ``MAX_ATTEMPTS``), charged as the module
    docstring says. ``runtime`` None: the start size holds for the whole attempt."""
    dt = durations(times)
    used = float(values @ dt)
    tally = Tally(runs=1, used=used)
    kills = resource in KILLING
    killed_at = 0.0
    for _ in range(MAX_ATTEMPTS):
        if runtime is None:
            k = _first_over(values, start.limit) if kills else None
            end = len(values) if k is None else k
            tally.reserved += start.limit * float(dt[:end].sum())
            tally.requested += start.request * float(dt[:end].sum())
            seen = values[: end + 1] if k is not None else values
            tally.samples += len(seen)
            tally.over_request += int((seen > start.request).sum())
            if not kills:
                tally.over_limit += int((values > start.limit).sum())
        else:
            k, live = None, runtime(start, killed_at)
            limit, request = start.limit, start.request
            for i in range(len(values)):
                v = float(values[i])
                tally.samples += 1
                tally.over_request += v > request
                if v > limit:
                    if kills:
                        k = i
                        break
                    tally.over_limit += 1
                limit, request = live.observe(float(times[i]), v)
                tally.reserved += limit * float(dt[i])
                tally.requested += request * float(dt[i])
            tally.resizes += live.resizes
            tally.raised_ahead += live.raised_ahead
        if k is None:
            return tally
        tally.kills += 1
        tally.killed_runs = 1
        start = escalate(start.limit if runtime is None else limit, float(values[: k + 1].max()))
        killed_at = start.limit  # the retry's start: the kill showed the need is above what it had
    tally.gave_up = 1
    return tally


def _first_over(values: np.ndarray, limit: float) -> int | None:
    over = np.flatnonzero(values > limit)
    return int(over[0]) if over.size else None


# ----------------------------------------------------------------------------- policies
def _user_doubles(limit: float, peak: float) -> Start:
    new = limit * USER_OOM_FACTOR if limit > 0 else peak * USER_OOM_FACTOR
    return Start(new, new)


def _operator_retry(deviation: DeviationConfig, start: Start) -> Callable[[float, float], Start]:
    """The operator's retry after a kill: max(limit x oom_factor, peak + margin); the request
    stays where it started (within the new limit)."""

    def escalate(limit: float, peak: float) -> Start:
        if limit <= 0:
            return _user_doubles(limit, peak)
        new = escalate_after_oom(limit, peak, deviation).new_limit
        return Start(new, min(start.request, new))

    return escalate


def policy_run(policy: str, margin: float, run: UsageSeries, resource: str, history: History,
               config: SimulationConfig, shape: UsageShape | None = None) -> Tally:
    """One scored run under ``policy`` with knob ``margin`` (``profile``: with the stage's
    ``shape`` learned from its earlier runs; None: one constant phase)."""
    times, values = run.usage[resource]
    if policy == "static_peak":
        size = float(values.max()) * (1 + margin)
        return simulate_run(times, values, Start(size, size), resource, _user_doubles)
    estimate = history.estimate()
    if policy == "static_history":
        size = estimate.upper * (1 + margin)
        return simulate_run(times, values, Start(size, size), resource, _user_doubles)
    if policy == "reactive":
        # The knob scales both headrooms in today's proportion: the start's over the predicted
        # upper (the operator's sizing_margin, 10%) and the monitor's over the peak so far (20%).
        deviation = replace(config.deviation, margin=margin)
        limit = estimate.upper * (1 + margin * config.sizing_margin / DEFAULT_MARGIN["reactive"])
        start = Start(limit, min(estimate.median, limit))
        escalate = _operator_retry(deviation, start)
        if resource not in deviation.resizable:  # gpu, gpu_memory: chosen once per run
            return simulate_run(times, values, start, resource, escalate)
        return simulate_run(times, values, start, resource, escalate,
                            lambda s, floor: ReactiveRuntime(resource, s, estimate, deviation, floor))
    if policy == "profile":
        # The product's own runtime (logic/deviation.py) with the stage's phases; it acts one
        # sample (+ a real kubelet's actuation) ahead of a predicted rise.
        lead = (float(np.median(np.diff(times))) if len(times) > 1 else 0.0) + ACTUATION_S
        # The knob scales the phases' headroom in today's proportion too (10% over an upper, 20% over a peak seen).
        deviation = replace(config.deviation, margin=margin, lead_s=lead,
                            phase_margin=margin * config.deviation.phase_margin / DEFAULT_MARGIN["profile"])
        shape = shape or constant_shape(resource, 0, [], "no shape given")
        phases, _ = phases_for({resource: shape}, {resource: estimate}, shape.duration_median)
        phases = phases.get(resource, ())
        if resource not in deviation.resizable:  # chosen once per run: the highest phase
            size = max((p.upper for p in phases), default=estimate.upper) * (1 + margin)
            return simulate_run(times, values, Start(size, size), resource, _user_doubles)
        first = start_estimate(phases, lead) or estimate
        limit = first.upper * (1 + margin * config.sizing_margin / DEFAULT_MARGIN["profile"])
        start = Start(limit, min(first.median, limit))
        return simulate_run(times, values, start, resource, _operator_retry(deviation, start),
                            lambda s, floor: ReactiveRuntime(resource, s, estimate, deviation, floor, phases))
    raise ValueError(f"unknown policy {policy!r}")


def stage_shape(series: SeriesSet, resource: str, history: History) -> UsageShape:
    """The stage's shape from its own earlier runs (their series)."""
    return learn_shape(resource, [series.runs[j].usage[resource] for j in history.own_runs])


# ----------------------------------------------------------------------------- the report
def at_kills(points: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """``reserved_over_used`` where a policy's sweep crosses ``target`` kills (interpolated between
    the two settings that bracket it). A sweep whose every setting kills fewer: its cheapest
    setting, ``reached``; one whose every setting kills more: its safest, not ``reached``."""
    pts = sorted(((p["kills"], p["reserved_over_used"]) for p in points if p["reserved_over_used"] is not None),
                 key=lambda kr: (kr[0], kr[1]))
    if not pts:
        return {"kills": None, "reserved_over_used": None, "reached": False}
    if target < pts[0][0]:
        return {"kills": pts[0][0], "reserved_over_used": pts[0][1], "reached": False}
    below = [(k, r) for k, r in pts if k <= target]
    above = [(k, r) for k, r in pts if k > target]
    lo = min(below, key=lambda kr: kr[1])
    if not above or lo[0] == target:
        return {"kills": lo[0], "reserved_over_used": lo[1], "reached": True}
    hi = min(above, key=lambda kr: (kr[0], kr[1]))
    t = (target - lo[0]) / (hi[0] - lo[0])
    return {"kills": float(target), "reserved_over_used": min(lo[1], lo[1] + t * (hi[1] - lo[1])), "reached": True}


def simulate(series: SeriesSet, config: SimulationConfig = SimulationConfig(),
             progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Every policy x resource x margin over every scored run; the report's ``policies`` hold
    each policy's figures at its default margin, its sweep and ``at_kills``."""
    resources = series.resources
    hist = {r: histories(series, r) for r in resources}
    scored = {r: [i for i, h in enumerate(hist[r]) if h is not None and not h.empty] for r in resources}
    warmup = {r: sum(1 for h in hist[r] if h is not None and h.empty) for r in resources}
    tallies: dict[tuple[str, str, float], Tally] = {}
    shapes: dict[tuple[str, int], UsageShape] = {}
    for policy in config.policies:
        margins = sorted({*config.margins, DEFAULT_MARGIN[policy]})
        for resource in resources:
            for margin in margins:
                total = Tally()
                for i in scored[resource]:
                    shape = None
                    if policy == "profile":
                        if (resource, i) not in shapes:
                            shapes[(resource, i)] = stage_shape(series, resource, hist[resource][i])
                        shape = shapes[(resource, i)]
                    total.add(policy_run(policy, margin, series.runs[i], resource, hist[resource][i], config, shape))
                tallies[(policy, resource, margin)] = total
                if progress is not None:
                    progress(len(scored[resource]))
    policies: dict[str, Any] = {}
    for policy in config.policies:
        policies[policy] = {}
        for resource in resources:
            default = tallies[(policy, resource, DEFAULT_MARGIN[policy])].summary(resource)
            sweep = [{"margin": m, **t.summary(resource)} for (p, r, m), t in sorted(tallies.items()) if p == policy and r == resource]
            policies[policy][resource] = {**default, "margin": DEFAULT_MARGIN[policy], "sweep": sweep}
    for resource in resources:
        if "static_history" not in config.policies:
            break
        target = policies["static_history"][resource]["kills"]
        for policy in config.policies:
            policies[policy][resource]["at_kills"] = at_kills(policies[policy][resource]["sweep"], target)
    intervals = [float(np.median(np.diff(t))) for run in series.runs for t, _ in run.usage.values() if len(t) > 1]
    return {
        "runs": len(series), "stages": len(series.stages), "samples": series.samples, "resources": resources,
        "scored_runs": {r: len(scored[r]) for r in resources}, "warmup_runs": warmup,
        "sampling_interval_s": float(np.median(intervals)) if intervals else None,
        "ordering": "start times" if all(run.start is not None for run in series.runs) else "rank within stage",
        "escalation": {p: ESCALATION[p] for p in config.policies},
        "policies": policies,
        "load": series.report.to_dict(),
    }


def total_work(series: SeriesSet, config: SimulationConfig) -> int:
    """Runs the simulation will score, summed over policies, resources and margins (for a progress bar)."""
    n = 0
    for resource in series.resources:
        runs = sum(1 for h in histories(series, resource) if h is not None and not h.empty)
        for policy in config.policies:
            n += runs * len({*config.margins, DEFAULT_MARGIN[policy]})
    return n

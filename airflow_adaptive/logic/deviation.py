"""The deviation policy: from the prediction and what the monitor sees, resize or hold.

Pure: the caller passes every sample and its time; the policy never reads a clock, a file or
a log. Every resource is judged on its own, so a stage short of memory and oversized on CPU
gets both decisions from one sample.

How a resource is judged (allocation = the limit in force):

- **short**: the raw usage is at ``up_threshold`` of the allocation, or memory that keeps
  growing at its last rate would reach the allocation within ``lookahead_samples``. Short for
  ``up_samples`` consecutive samples (not one: a single spike never resizes) and past the
  increase cooldown -> increase.
- **urgent** (the kernel warned that memory is about to hit its limit): increase now, no
  sustain, no cooldown.
- **oversized**: the smoothed usage is under ``down_threshold`` of the allocation for
  ``down_samples`` consecutive samples and past the decrease cooldown -> decrease; memory only
  when it is not growing, and never below the observed peak plus the margin.
- gpu and gpu_memory cannot change in place: a deviation from the prediction is a ``hold``
  with its reason, and the observed peak sizes the next attempt.

Defaults, and where they come from:

| knob | default | why |
|---|---|---|
| ``smoothing`` | 0.5 | EWMA weight of the newest sample: the smoothed value forgets a spike in ~3 samples |
| ``up_threshold`` | 0.90 | the v2 ``memory.high`` point and the v1 usage-threshold of the local runner; CPU at 90% of its quota is being throttled |
| ``up_samples`` | 2 | the issue's target: a sustained deviation resizes within 3 samples, a single spike never |
| ``lookahead_samples`` | 3 | growth confirmed over ``up_samples`` (2) still leaves one sample of room before the limit |
| ``down_threshold`` | 0.50 | VPA's recommender scales down only when the target is well under the request |
| ``down_samples`` | 30 | 30 s at 1 s sampling: a phase change, not a pause between batches |
| ``up_cooldown_s`` | 5 | lets a new limit show its effect before the next increase |
| ``down_cooldown_s`` | 60 | decreases are never urgent; flapping costs restarts of the kernel's reclaim |
| ``min_change`` | 0.10 | hysteresis: a change under 10% is noise, not worth a resize |
| ``max_step_up`` / ``max_step_down`` | 2.0 / 0.5 | at most double or halve per decision (Autopilot's limits move in bounded steps) |
| ``margin`` | 0.20 | headroom over the observed peak; the same 20% the Autopilot paper's recommenders use as a safety margin |
| ``cpu_step`` | 1.5 | throttled CPU hides its true demand, so it is probed up in steps |
| ``urgent_step`` | 1.5 | an urgent raise must clear the growth the kernel saw, in one step |
| ``oom_factor`` | 2.0 | after an OOM kill the true need is unknown; doubling is the escalation Borg/Autopilot-style retries use |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal, Mapping

from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.profile import PredictedProfile

Action = Literal["increase", "decrease", "hold"]


@dataclass(frozen=True)
class DeviationConfig:
    smoothing: float = 0.5
    up_threshold: float = 0.90
    up_samples: int = 2
    lookahead_samples: float = 3.0
    down_threshold: float = 0.50
    down_samples: int = 30
    up_cooldown_s: float = 5.0
    down_cooldown_s: float = 60.0
    min_change: float = 0.10
    max_step_up: float = 2.0
    max_step_down: float = 0.5
    margin: float = 0.20
    cpu_step: float = 1.5
    urgent_step: float = 1.5
    oom_factor: float = 2.0
    resizable: tuple[str, ...] = ("cpu", "memory")

    def __post_init__(self) -> None:
        checks = {
            "smoothing": 0 < self.smoothing <= 1,
            "up_threshold": 0 < self.up_threshold <= 1,
            "down_threshold": 0 <= self.down_threshold < self.up_threshold,
            "up_samples": self.up_samples >= 1,
            "down_samples": self.down_samples >= 1,
            "lookahead_samples": self.lookahead_samples >= 0,
            "up_cooldown_s": self.up_cooldown_s >= 0,
            "down_cooldown_s": self.down_cooldown_s >= 0,
            "min_change": 0 <= self.min_change < 1,
            "max_step_up": self.max_step_up > 1,
            "max_step_down": 0 < self.max_step_down < 1,
            "margin": self.margin >= 0,
            "cpu_step": self.cpu_step > 1,
            "urgent_step": self.urgent_step > 1,
            "oom_factor": self.oom_factor > 1,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            values = ", ".join(f"{n}={getattr(self, n)!r}" for n in wrong)
            raise ValueError(f"invalid deviation policy settings: {values} (see the table in logic/deviation.py)")


@dataclass(frozen=True)
class Bounds:
    """The user's request bounds the policy: nothing below ``minimum`` or above ``maximum``."""

    minimum: Mapping[str, float] = field(default_factory=dict)
    maximum: Mapping[str, float] = field(default_factory=dict)

    def clamp(self, resource: str, value: float) -> float:
        value = max(value, self.minimum.get(resource, 0.0))
        top = self.maximum.get(resource)
        return value if top is None else min(value, top)


@dataclass(frozen=True)
class ResourceDecision:
    resource: str
    action: Action
    old: float
    new: float
    reason: str


@dataclass(frozen=True)
class Track:
    """What the policy remembers of one resource."""

    allocation: float
    smoothed: float | None = None
    peak: float = 0.0
    last: float | None = None
    short_count: int = 0
    low_count: int = 0
    last_change: float | None = None


@dataclass(frozen=True)
class PolicyState:
    tracks: Mapping[str, Track]
    profile: PredictedProfile | None = None

    @property
    def allocation(self) -> dict[str, float]:
        return {r: t.allocation for r, t in self.tracks.items()}

    def with_allocation(self, resource: str, value: float, time: float) -> "PolicyState":
        """The caller learned the size really in force (e.g. the kernel refused a decrease)."""
        tracks = dict(self.tracks)
        tracks[resource] = replace(tracks.get(resource, Track(value)), allocation=value, last_change=time, short_count=0, low_count=0)
        return replace(self, tracks=tracks)


def initial_state(allocation: Mapping[str, float], profile: PredictedProfile | None = None) -> PolicyState:
    return PolicyState(tracks={r: Track(float(v)) for r, v in allocation.items()}, profile=profile)


def decide(
    state: PolicyState,
    sample: UsageSample,
    config: DeviationConfig,
    bounds: Bounds,
    *,
    urgent: frozenset[str] = frozenset(),
) -> tuple[PolicyState, list[ResourceDecision]]:
    """Judge every resource of ``sample``; the new state assumes increases and decreases apply."""
    tracks = dict(state.tracks)
    decisions: list[ResourceDecision] = []
    for resource, used in sample.values.items():
        track = tracks.get(resource, Track(0.0))
        track = _observe(track, used, config)
        decision = None
        if track.allocation <= 0:
            pass  # unlimited: observed for the summary, never resized
        elif resource not in config.resizable:
            decision = _fixed_resource(resource, track, used, state.profile)
        else:
            decision, track = _judge(resource, track, used, sample.time, config, bounds, state.profile, resource in urgent)
        tracks[resource] = track
        if decision is not None:
            decisions.append(decision)
    return replace(state, tracks=tracks), decisions


def _observe(track: Track, used: float, config: DeviationConfig) -> Track:
    smoothed = used if track.smoothed is None else config.smoothing * used + (1 - config.smoothing) * track.smoothed
    return replace(track, smoothed=smoothed, peak=max(track.peak, used))


def _judge(resource, track: Track, used, now, config, bounds, profile, urgent) -> tuple[ResourceDecision | None, Track]:
    alloc = track.allocation
    growth = 0.0 if track.last is None else used - track.last
    projected = used + max(0.0, growth) * config.lookahead_samples
    short = used >= config.up_threshold * alloc or (resource == "memory" and projected >= alloc)
    low = track.smoothed < config.down_threshold * alloc
    track = replace(track, last=used, short_count=track.short_count + 1 if short else 0, low_count=track.low_count + 1 if low else 0)
    since = math.inf if track.last_change is None else now - track.last_change
    predicted = _predicted(resource, profile)

    if urgent or (track.short_count >= config.up_samples and since >= config.up_cooldown_s):
        if resource == "memory":
            step = config.urgent_step if urgent else 1.0 + config.min_change
            want = max(alloc * step, track.peak * (1 + config.margin), projected * (1 + config.margin))
        else:
            want = alloc * config.cpu_step
        why = ("the kernel warned that memory is about to reach its limit" if urgent else
               f"{_fmt(resource, used)} used is {used / alloc:.0%} of the limit {_fmt(resource, alloc)} "
               f"for {track.short_count} samples")
        if resource == "memory" and growth > 0 and not urgent:
            why += f", growing {_fmt(resource, growth)} per sample"
        return _resize(resource, track, min(want, alloc * config.max_step_up), now, config, bounds, why + predicted)

    if track.low_count >= config.down_samples and since >= config.down_cooldown_s:
        if resource == "memory" and growth > 0:
            return None, track  # memory that is still growing is not safe to take away
        floor = track.peak if resource == "memory" else track.smoothed
        want = max(floor * (1 + config.margin), alloc * config.max_step_down)
        why = (f"smoothed {_fmt(resource, track.smoothed)} is under {config.down_threshold:.0%} of the limit "
               f"{_fmt(resource, alloc)} for {track.low_count} samples; peak {_fmt(resource, track.peak)}")
        return _resize(resource, track, want, now, config, bounds, why + predicted)
    return None, track


def _resize(resource, track: Track, want: float, now, config, bounds: Bounds, why: str) -> tuple[ResourceDecision | None, Track]:
    alloc = track.allocation
    new = bounds.clamp(resource, want)
    if want > alloc and new <= alloc * (1 + config.min_change / 2):
        top = bounds.maximum.get(resource, alloc)
        return ResourceDecision(resource, "hold", alloc, alloc, f"{resource} is short but at its bound {_fmt(resource, top)}"), track
    if abs(new - alloc) < config.min_change * alloc and not (alloc < new < want):
        return None, track  # hysteresis (but a short resource still gets the last bit up to its bound)
    if new < want:
        why += f"; capped at the bound {_fmt(resource, new)}"
    action: Action = "increase" if new > alloc else "decrease"
    track = replace(track, allocation=new, last_change=now, short_count=0, low_count=0)
    return ResourceDecision(resource, action, alloc, new, why), track


def _fixed_resource(resource: str, track: Track, used: float, profile: PredictedProfile | None) -> ResourceDecision | None:
    est = profile.resources.get(resource) if profile else None
    over_limit = used > track.allocation
    over_prediction = est is not None and used > est.upper
    if not (over_limit or over_prediction):
        return None
    what = f"above its allocation {_fmt(resource, track.allocation)}" if over_limit else f"above the predicted upper {_fmt(resource, est.upper)}"
    reason = f"{resource} {what}; GPUs cannot change in place, the observed peak sizes the next attempt"
    return ResourceDecision(resource, "hold", track.allocation, track.allocation, reason)


@dataclass(frozen=True)
class OomEscalation:
    new_limit: float
    capped: bool
    reason: str


def escalate_after_oom(limit_bytes: float, observed_peak_bytes: float | None, config: DeviationConfig,
                       max_bytes: float | None = None) -> OomEscalation:
    """Memory for the retry of a try that the kernel OOM-killed at ``limit_bytes``."""
    if not limit_bytes > 0:
        raise ValueError(f"the OOM-killed limit must be > 0 bytes, got {limit_bytes!r}")
    want = max(limit_bytes * config.oom_factor, (observed_peak_bytes or 0.0) * (1 + config.margin))
    if max_bytes is not None and limit_bytes >= max_bytes:
        return OomEscalation(float(max_bytes), True, f"OOM-killed at {_fmt('memory', limit_bytes)}, already the maximum "
                             f"{_fmt('memory', max_bytes)}: the stage cannot get more memory; raise its bound or shrink its data")
    new = want if max_bytes is None else min(want, max_bytes)
    reason = f"OOM-killed at {_fmt('memory', limit_bytes)}: retry with {_fmt('memory', new)} (x{config.oom_factor:g}"
    reason += f", capped at the maximum {_fmt('memory', max_bytes)})" if new < want else ")"
    return OomEscalation(float(new), new < want, reason)


def _predicted(resource: str, profile: PredictedProfile | None) -> str:
    est = profile.resources.get(resource) if profile else None
    if est is None:
        return ""
    return f" (predicted median {_fmt(resource, est.median)}, upper {_fmt(resource, est.upper)})"


def _fmt(resource: str, value: float) -> str:
    if resource in ("memory", "gpu_memory"):
        return f"{value / 2**30:.2f} GiB" if abs(value) >= 2**30 else f"{value / 2**20:.0f} MiB"
    if resource == "cpu":
        return f"{value:.2f} cores"
    return f"{value:.2f} GPUs"

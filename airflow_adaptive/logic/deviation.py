"""The deviation policy: while a stage runs, resize, hold, or leave each resource alone.

Pure and light: stdlib and the domain only (the monitor sidecar imports it and must stay small),
no clock (times are the samples'), no I/O, no logging. Every resource is judged on its own, so
one sample can raise memory and lower CPU. Allocation = the limit in force (0 or missing: none).

- **short**: raw usage at ``up_threshold`` of the allocation (CPU there is throttled), or memory
  that, growing at its last rate, reaches the limit within ``lookahead_samples``; short for
  ``up_samples`` samples in a row and past the increase cooldown -> increase. The spike filter
  is this count, not the EWMA: an EWMA slow enough to ignore one spike to 100% cannot climb from
  a normal level past 90% within 3 samples (alpha 0.5 from 40% reaches 83% at the 3rd).
- **urgent** (the kernel signalled memory pressure): increase now to max(limit x
  ``urgent_step``, peak + margin): no sustain, cooldown, step cap or hysteresis; bounds hold.
- **oversized**: the EWMA under ``down_threshold`` of the allocation for ``down_samples`` in a
  row and past the decrease cooldown -> decrease. Memory only when not growing over the window,
  never below peak + margin (a shortfall kills) nor below the predicted median (the run may not
  have reached its typical need yet). CPU's floor is the EWMA + margin: CPU peaks are one-sample
  spikes no later sample reaches, and a CPU shortfall only throttles.
- **Phases** (a profile that predicts how the need evolves, ``logic/usage_profile.py``): the
  prediction in force is the current phase's (elapsed time since the first sample). A predicted
  rise within ``lead_s`` raises the limit to that phase's upper + margin *before* it comes; a
  predicted fall releases down to it once the last sample (+ margin) fits under it and memory is
  not growing. Within a phase whose stage has a learned *step* (how far its usage jumps between
  two samples), the limit is the phase's peak so far + the larger of the margin and that step:
  raised the moment the next jump would no longer fit, released down to it after two samples.
  This is what lets a profile reserve less than the worst run's peak without waiting to be short
  (on the shared GenAI pods: 1.22x reserved/used at 30 kills, against static history's 1.34x). While usage is above the phase's upper + margin, that resource follows the
  reactive rules below alone (against the phase's estimate); back in the band, the phases again.
- **Disk bandwidth** (``disk_read``/``disk_write`` with a limit in force and in ``resizable``: the
  local runner's cgroup throttling): judged with CPU by ``logic/io_bottleneck.py`` over the last
  ``disk_samples`` samples. I/O-bound at the limit (mean rate at ``up_threshold`` of it, CPU with room)
  -> that limit x ``disk_step``, bounded by the maximum; a CPU-bound loader (CPU at its limit,
  disk below) is left to the CPU rule above, whose reason then names the loader. No cooldown but
  a fresh window: a raised limit shows at the next sample (the kernel re-times throttled I/O at
  once; a reader's rest ran at the new rate within 0.22 s), so after a raise the verdict waits
  for ``disk_samples`` samples taken at the new limit. Never lowered: a bandwidth cap reserves
  nothing, so a lower one would only slow the stage.
- The prediction: an increase goes straight to the predicted upper when usage is still within
  it (the model expects that much; no creeping); usage above the upper for ``up_samples`` is a
  ``hold`` that explains it, again at each ``min_change`` rise. gpu and gpu_memory cannot change
  in place: their deviations (from the upper or the allocation) are such holds, never resizes.

| knob | default | where it comes from |
|---|---|---|
| ``smoothing`` | 0.5 | EWMA weight of the newest sample: half-life of one sample, so one spike ends a low streak (it is evidence of need) but is forgotten within ~5 samples |
| ``up_threshold`` | 0.90 | the local runner's kernel warning point (v2 ``memory.high``, v1 usage threshold); CPU at 90% of its quota is being throttled |
| ``up_samples`` | 2 | the target "a sustained deviation resizes within 3 samples, a single spike never": 2 in a row |
| ``lookahead_samples`` | 3 | growth confirmed over 2 samples still leaves a sample of room before the limit |
| ``down_threshold`` | 0.50 | a decrease only when at least half the limit is idle: well apart from 0.90 (hysteresis band) |
| ``down_samples`` | 30 | 30 s at the 1 s sampling: a phase change, not a pause between batches |
| ``growth_window`` / ``growth_tolerance`` | 10 / 0.02 | memory is "growing" when the newer 5 samples average 2% above the older 5 (below is page-cache churn) |
| ``up_cooldown_s`` / ``down_cooldown_s`` | 5 / 60 | an increase shows its effect within seconds; decreases are never urgent and flapping costs reclaim (VPA waits far longer, in minutes). Memory still growing into its limit within the lookahead is raised inside the cooldown: the kill would come first |
| ``min_change`` | 0.10 | hysteresis: a change under 10% is noise, not worth a resize (a short resource may still take the last bit up to its bound) |
| ``max_step_up`` / ``max_step_down`` | 2.0 / 0.5 | at most double or halve per decision: one wrong sample cannot swing a limit far |
| ``margin`` | 0.20 | over the peak seen *so far*: a lower bound on the run's peak, so more than VPA's 15% over a whole history (logic/vpa.py) |
| ``cpu_step`` | 1.5 | throttled CPU hides its true demand; it is probed up in steps (2 steps = x2.25 > the x2 cap of one) |
| ``urgent_step`` | 2.0 | growth that outran the sampler keeps going: doubling needs log2(need/limit) urgent raises, as the OOM retry |
| ``oom_factor`` | 2.0 | a kill at the limit shows only that the need is above it; doubling reaches any need in log2 retries with at most 2x over-reservation, where VPA's x1.2 bump (logic/vpa.py) fits services that keep running, not a batch try that restarts from zero; doubling is also what users do (logic/replay.py) |
| ``resizable`` | cpu, memory | the resources Kubernetes in-place resize and cgroups can change while running |
| ``lead_s`` | 2 x interval + 0.3 s | a predicted rise is acted on this early: two samples (the one that sees it coming may land just after the resize was due) plus a resize's actuation (p99 0.27 s on a real kubelet); the runners derive it from their sampling interval (``for_interval``), 2.3 s when none is known |
| ``phase_margin`` | 0.10 | over a predicted phase's upper (already the profiler's covering quantile): the operator's sizing margin at start, not the 20% over a peak seen so far |
| ``disk_samples`` | 4 | disk rates are counted as requests are submitted (``/proc/<pid>/io``, and the v1 blkio counters alike, measured), and buffered reads are submitted a readahead window at a time: on this virtio disk (``read_ahead_kb`` 8192) a reader held at 4 MiB/s showed 8, 0, 8, 0 MiB/s at 1 s samples. Over 2 samples one window more or less moves the mean by 4 MiB/s, enough to call a reader that needs 1 MiB/s I/O-bound at 4; over 4 samples (4 s at the default interval) by 2 MiB/s, under the 10% band only from 8 MiB/s up. The price: a raise every 4 samples, not 2 |
| ``disk_step`` | 2.0 | a throttled stage's true bandwidth demand is unseen: probed up like CPU, but steeper, since a bandwidth cap reserves nothing (``logic/io_bottleneck.py``) |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, Mapping

from airflow_adaptive.domain.features import BANDWIDTH_RESOURCES, RESOURCES
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.profile import PredictedProfile, ResourceEstimate
from airflow_adaptive.domain.quantities import format_bandwidth
from airflow_adaptive.logic.io_bottleneck import DISK, IoBottleneckConfig, IoLimits, IoSample, classify

Action = Literal["increase", "decrease", "hold"]
GPU_RESOURCES = ("gpu", "gpu_memory")
ACTUATION_S = 0.3  # a resize's actuation on a real kubelet (p99 0.27 s, benchmarks/real_node.py)


@dataclass(frozen=True)
class DeviationConfig:
    smoothing: float = 0.5
    up_threshold: float = 0.90
    up_samples: int = 2
    lookahead_samples: float = 3.0
    down_threshold: float = 0.50
    down_samples: int = 30
    growth_window: int = 10
    growth_tolerance: float = 0.02
    up_cooldown_s: float = 5.0
    down_cooldown_s: float = 60.0
    min_change: float = 0.10
    max_step_up: float = 2.0
    max_step_down: float = 0.5
    margin: float = 0.20
    cpu_step: float = 1.5
    urgent_step: float = 2.0
    oom_factor: float = 2.0
    resizable: tuple[str, ...] = ("cpu", "memory")
    lead_s: float | None = None  # None: two samples + ACTUATION_S, once the interval is known
    phase_margin: float = 0.10
    disk_samples: int = 4
    disk_step: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "resizable", tuple(self.resizable))
        rules = {  # name: (holds, rule); NaN fails every comparison, so it is refused too
            "smoothing": (0 < self.smoothing <= 1, "in (0, 1]"),
            "up_threshold": (0 < self.up_threshold <= 1, "in (0, 1]"),
            "down_threshold": (0 <= self.down_threshold < self.up_threshold, "in [0, up_threshold)"),
            "up_samples": (self.up_samples >= 1, ">= 1"),
            "down_samples": (self.down_samples >= 1, ">= 1"),
            "lookahead_samples": (self.lookahead_samples >= 0, ">= 0"),
            "growth_window": (self.growth_window >= 2, ">= 2"),
            "growth_tolerance": (self.growth_tolerance >= 0, ">= 0"),
            "up_cooldown_s": (self.up_cooldown_s >= 0, ">= 0"),
            "down_cooldown_s": (self.down_cooldown_s >= self.up_cooldown_s, ">= up_cooldown_s"),
            "min_change": (0 <= self.min_change < 1, "in [0, 1)"),
            "max_step_up": (self.max_step_up > 1, "> 1"),
            "max_step_down": (0 < self.max_step_down < 1, "in (0, 1)"),
            "margin": (self.margin >= 0, ">= 0"),
            "cpu_step": (self.cpu_step > 1, "> 1"),
            "urgent_step": (self.urgent_step > 1, "> 1"),
            "oom_factor": (self.oom_factor > 1, "> 1"),
            "resizable": (all(r in RESOURCES for r in self.resizable), f"within {RESOURCES}"),
            "lead_s": (self.lead_s is None or self.lead_s >= 0, ">= 0 or None"),
            "phase_margin": (self.phase_margin >= 0, ">= 0"),
            "disk_samples": (self.disk_samples >= 1, ">= 1"),
            "disk_step": (self.disk_step > 1, "> 1"),
        }
        wrong = [f"{name}={getattr(self, name)!r} (must be {rule})" for name, (ok, rule) in rules.items() if not ok]
        if wrong:
            raise ValueError("invalid DeviationConfig: " + "; ".join(wrong))

    @property
    def lead(self) -> float:
        """Seconds ahead of a predicted rise to act (at 1 s samples when the interval is unknown)."""
        return self.lead_s if self.lead_s is not None else 2 * 1.0 + ACTUATION_S

    def for_interval(self, interval_s: float) -> "DeviationConfig":
        """This config for a monitor sampling every ``interval_s``: the lead time, unless set."""
        return self if self.lead_s is not None else replace(self, lead_s=2 * interval_s + ACTUATION_S)


@dataclass(frozen=True)
class Bounds:
    """The user's request bounds the policy; a missing minimum is 0, a missing maximum none."""

    minimum: Mapping[str, float] = field(default_factory=dict)
    maximum: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = [r for r, top in self.maximum.items() if not top >= self.minimum.get(r, 0.0)]
        if bad:
            raise ValueError(f"bounds for {bad}: the maximum must be >= the minimum and >= 0")

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
    predicted: bool = False  # made by following the predicted phases, not by observed usage
    #: With phases, on a decrease: the request (the scheduler's reservation) for what the run uses
    #: in the phase (its peak so far, or the predicted median; at most ``new``); None: the request
    #: is left as it is (every increase: the limit alone protects, without waiting for node room).
    request: float | None = None


@dataclass(frozen=True)
class Track:
    """What the policy remembers of one resource."""

    allocation: float  # the limit in force; 0 = none
    smoothed: float | None = None  # EWMA of usage
    peak: float = 0.0
    window: tuple[float, ...] = ()  # the last growth_window raw samples, oldest first
    short: int = 0  # samples in a row short of the allocation
    low: int = 0  # samples in a row with the EWMA under down_threshold
    over: int = 0  # samples in a row above the predicted upper (a fixed resource: or its allocation)
    noted: float = 0.0  # usage when that deviation was last explained (0: not yet)
    last_change: float | None = None
    off_profile: bool = False  # the last sample was above the phase's band: the reactive rules alone until it is back
    phase_start: float | None = None  # the start of the phase in force at the last sample (None: no phases)
    phase_peak: float = 0.0  # the highest sample since that phase began
    phase_since: float | None = None  # when this track entered that phase (the sample's time)
    phase_samples: int = 0  # samples in that phase so far
    shift: float = 0.0  # seconds the run is ahead of (+) or behind (-) its predicted phases, by its usage


@dataclass(frozen=True)
class PolicyState:
    tracks: Mapping[str, Track]
    profile: PredictedProfile | None = None
    started: float | None = None  # the first sample's time: elapsed time places the run in its phases
    #: the samples since the last disk limit change (the last ``disk_samples`` at most), for the I/O verdict
    io_window: tuple[IoSample, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tracks", MappingProxyType(dict(self.tracks)))

    @property
    def allocation(self) -> dict[str, float]:
        return {r: t.allocation for r, t in self.tracks.items()}

    def with_allocation(self, resource: str, value: float, time: float) -> "PolicyState":
        """The caller learned the size really in force (a refused or partly applied resize);
        it counts as a change, so the cooldown starts again and the streaks re-form."""
        old = self.tracks.get(resource, Track(value))
        return replace(self, tracks={**self.tracks, resource: replace(old, allocation=float(value), last_change=time, short=0, low=0)})


def initial_state(allocation: Mapping[str, float], profile: PredictedProfile | None = None,
                  started: float | None = None) -> PolicyState:
    """``started``: when the workload started, on the samples' clock (its process's start time),
    which places it in its phases; None: at the first sample."""
    return PolicyState({r: Track(float(v)) for r, v in allocation.items()}, profile, started)


def decide(
    state: PolicyState, sample: UsageSample, config: DeviationConfig, bounds: Bounds, *, urgent: frozenset[str] = frozenset()
) -> tuple[PolicyState, list[ResourceDecision]]:
    """Judge every resource of ``sample`` (and every urgent one); the new state assumes that the
    increases and decreases returned are applied. Holds come only with a deviation to explain."""
    tracks, decisions = dict(state.tracks), []
    started = sample.time if state.started is None else state.started
    disk = [r for r in DISK if r in config.resizable and tracks.get(r, Track(0.0)).allocation > 0]
    for r in [*sample.values, *sorted((set(urgent) & set(tracks)) - set(sample.values))]:
        if r in disk:
            continue  # judged with CPU, below
        track = tracks.get(r, Track(0.0))
        elapsed = sample.time - started
        phases = state.profile.phases.get(r) if state.profile is not None else None
        if phases and r in sample.values:
            track = replace(track, shift=_phase_clock(phases, elapsed, track, sample.values[r], config.margin))
        est, now, ahead = _prediction(state.profile, r, elapsed + track.shift, config.lead)
        waiting = now is not None and r in sample.values and _rise_unseen(phases, now, track, sample.values[r])
        decision, tracks[r] = _judge(r, track, sample.values.get(r), r in urgent, est, sample.time, config, bounds,
                                     now, ahead, waiting)
        if decision is not None:
            decisions.append(decision)
    io_window = state.io_window
    if disk:
        io_window = _judge_disk(disk, state.tracks.get("cpu"), tracks, decisions,
                                (*state.io_window, _io_sample(sample))[-max(config.disk_samples, config.up_samples):],
                                sample.time, config, bounds)
    return replace(state, tracks=tracks, started=started, io_window=io_window), decisions


def _io_sample(sample: UsageSample) -> IoSample:
    v = sample.values
    return IoSample(cpu=v.get("cpu"), disk_read=v.get("disk_read"), disk_write=v.get("disk_write"))


def _judge_disk(disk: list[str], cpu: Track | None, tracks: dict[str, Track], decisions: list[ResourceDecision],
                window, now: float, cfg: DeviationConfig, bounds: Bounds) -> tuple[IoSample, ...]:
    """Disk limits, judged with CPU (``logic/io_bottleneck``): raise a limit the stage is held at;
    name a CPU-bound loader in the CPU rule's increase. ``cpu``: its track as the samples saw it
    (before this sample's decisions). Updates ``tracks`` and ``decisions``; returns the I/O window
    to keep (empty after a raise: a fresh streak at the new limit)."""
    limits = IoLimits(cpu=cpu.allocation if cpu is not None and cpu.allocation > 0 else None,
                      **{r: tracks[r].allocation for r in disk})
    verdict = classify(window, limits, bounds.maximum,
                       IoBottleneckConfig(at_limit=cfg.up_threshold, cpu_samples=cfg.up_samples,
                                          disk_samples=cfg.disk_samples, disk_step=cfg.disk_step, cpu_step=cfg.cpu_step))
    for r in disk:
        used = getattr(window[-1], r) if window else None
        if used is not None:
            tracks[r] = replace(tracks[r], peak=max(tracks[r].peak, used))
    raised = False
    for up in verdict.raises:
        if up.resource in disk:
            tracks[up.resource] = replace(tracks[up.resource], allocation=up.new, last_change=now, short=0, low=0)
            decisions.append(ResourceDecision(up.resource, "increase", up.old, up.new, up.reason))
            raised = True
    for r in verdict.at_maximum:
        if r in disk:  # constant text: the monitor says each new hold reason once
            decisions.append(ResourceDecision(r, "hold", tracks[r].allocation, tracks[r].allocation,
                                              f"{r} at bound: I/O-bound at the limit {_fmt(r, tracks[r].allocation)}, "
                                              f"the maximum the request allows"))
    if verdict.bottleneck in ("cpu", "both"):
        for i, d in enumerate(decisions):
            if d.resource == "cpu" and d.action == "increase":
                decisions[i] = replace(d, reason=f"{verdict.reason}; {d.reason}")
    return () if raised else tuple(window)


def _phase_clock(phases, elapsed: float, t: Track, used: float, margin: float) -> float:
    """How far the run is ahead of (+) or behind (-) its predicted phases, corrected by its usage's
    signature: the clock alone drifts with the data, the node and a late monitor.

    - **early**: usage above the phase's band (upper + margin) and within a later, higher phase's
      upper: that phase has begun; the clock jumps to its start.
    - **late**: the clock is leaving a phase whose usage has not done what the next phase needs:
      a fall while usage is still above the next phase's band (within this one's), or a phase that
      rose above the one before (its median above the previous upper) while usage never did (the
      rise has not come, and the fall after it must not release yet). The clock waits at the
      phase's end, for at most the phase's own length, then moves on.
    """
    k = _phase_index(phases, elapsed + t.shift)
    if k >= 1 and t.phase_start == phases[k - 1].start_s:  # the clock leaves phase k - 1 at this sample
        was, now = phases[k - 1], phases[k]
        wait = max(was.end_s - 1e-6 - elapsed, -(was.end_s - was.start_s))
        if now.upper < was.upper and now.upper * (1 + margin) < used <= was.upper * (1 + margin):
            return wait  # a fall whose usage has not fallen yet
        if k >= 2 and was.median > phases[k - 2].upper and max(t.phase_peak, used) <= phases[k - 2].upper:
            return wait  # a rise (its median above the previous upper) that never came
    now = phases[k]
    if used > now.upper * (1 + margin):
        later = next((p for p in phases[k + 1:] if p.upper > now.upper and p.upper >= used), None)
        return t.shift if later is None else later.start_s - elapsed
    return t.shift


def _rise_unseen(phases, now, t: Track, used: float) -> bool:
    """``now`` rose above the phase before it (its median above that upper) and usage has not yet:
    the rise is still to come, so the phase's prediction holds, not the peak seen so far."""
    k = phases.index(now)
    if k == 0 or not now.median > phases[k - 1].upper:
        return False
    return max(t.phase_peak if t.phase_start == now.start_s else 0.0, used) <= phases[k - 1].upper


def _phase_index(phases, elapsed: float) -> int:
    return next((i for i, p in enumerate(phases) if elapsed < p.end_s), len(phases) - 1)


def _prediction(profile: PredictedProfile | None, r: str, elapsed: float, lead_s: float):
    """The estimate in force at ``elapsed`` (the phase's, else the constant profile's), the phase
    in force and the highest phase starting within ``lead_s`` (both None without phases)."""
    est = profile.resources.get(r) if profile else None
    phases = profile.phases.get(r) if profile is not None else None
    if not phases:
        return est, None, None
    now = next((p for p in phases if elapsed < p.end_s), phases[-1])
    ahead = max((p for p in phases if p.start_s <= elapsed + lead_s and (p.end_s > elapsed or p is phases[-1])),
                key=lambda p: p.upper, default=now)
    return ResourceEstimate(now.median, now.upper), now, ahead


def _judge(r, t: Track, used, urgent, est, now, cfg: DeviationConfig, bounds: Bounds, phase=None, ahead=None,
           waiting=False):
    resizable = r in cfg.resizable and t.allocation > 0
    if used is None:  # urgent without a sample this time: act on what is known
        return _urgent(r, t, now, cfg, bounds, est) if resizable else (None, t)
    alloc = t.allocation
    window = (*t.window, used)[-cfg.growth_window:]
    growth = _growth(window)
    projected = used + growth * cfg.lookahead_samples
    smoothed = used if t.smoothed is None else cfg.smoothing * used + (1 - cfg.smoothing) * t.smoothed
    short = resizable and (used >= cfg.up_threshold * alloc or (r == "memory" and projected >= alloc))
    low = resizable and smoothed < cfg.down_threshold * alloc
    over = (est is not None and used > est.upper) or (r not in cfg.resizable and 0 < alloc < used)
    left_band = ahead is not None and est is not None and used > est.upper * (1 + cfg.margin)
    same_phase = phase is not None and t.phase_start == phase.start_s
    t = replace(t, smoothed=smoothed, peak=max(t.peak, used), window=window, short=t.short + 1 if short else 0,
                low=t.low + 1 if low else 0, over=t.over + 1 if over else 0, noted=t.noted if over else 0.0,
                off_profile=left_band, phase_start=None if phase is None else phase.start_s,
                phase_peak=max(t.phase_peak, used) if same_phase else used,
                phase_since=t.phase_since if same_phase else now, phase_samples=t.phase_samples + 1 if same_phase else 1)
    since = math.inf if t.last_change is None else now - t.last_change
    if resizable and urgent:
        return _urgent(r, t, now, cfg, bounds, est)
    if resizable and ahead is not None and not left_band:
        decision, t2 = _follow_phases(r, t, used, phase, ahead, window, since, now, cfg, bounds, waiting)
        if decision is not None:
            if decision.action == "hold":
                return decision, t2
            # The request follows a phase down only: raising it needs the node's room (the resizer
            # reads the node, and a kubelet without room defers the whole resize), which must never
            # delay the limit that protects the run from the rise; on a busy real node it did.
            level = max(phase.median if ahead.step is None else 0.0, t2.phase_peak)
            request = min(decision.new, level) if decision.action == "decrease" else None
            return replace(decision, predicted=True, request=request), t2
    # Memory that will reach its limit within the lookahead cannot wait out the cooldown: the
    # kernel would OOM-kill first. A sidecar has no kernel warning to make it urgent (the local
    # runner does), so on a real kubelet steady growth of tens of MiB/s was killed inside the 5 s.
    outgrowing = r == "memory" and growth > 0 and projected >= alloc
    if t.short >= cfg.up_samples and (since >= cfg.up_cooldown_s or outgrowing):
        return _increase(r, t, used, growth, projected, est, now, cfg, bounds)
    if t.low >= cfg.down_samples and since >= cfg.down_cooldown_s and not (r == "memory" and _growing(window, cfg)):
        decision, t = _decrease(r, t, est, now, cfg, bounds)
        if decision is not None:
            return decision, t
    explain = r not in cfg.resizable or (alloc > 0 and not t.short)  # a short limit is not "room"
    if explain and t.over >= cfg.up_samples and used > t.noted * (1 + cfg.min_change):
        return _explain(r, t, used, est, cfg), replace(t, noted=used)
    return None, t


def _follow_phases(r, t: Track, used, phase, ahead, window, since, now, cfg: DeviationConfig, bounds: Bounds,
                   waiting: bool = False):
    """The limit the phases call for: ahead of a predicted rise, the rising phase's upper +
    ``phase_margin``; within a phase whose step was learned, the phase's peak so far + the larger
    of the margin and that step (room for the next jump, not for the worst run's peak); otherwise
    the phase's upper + ``phase_margin``. Raise to it at once; release to it once it is below the
    limit, the last change is settled and memory is not growing. Nothing: the reactive rules
    decide."""
    alloc = t.allocation
    # A learned step sizes the room above what the phase has reached, once it has reached its
    # level: in a phase whose rise has not come yet (the workload a little behind the clock), the
    # phase's upper holds; released to the loading level there, a real stage was OOM-killed.
    stepped = ahead.step is not None and ahead.upper <= phase.upper and not waiting
    want = (max(t.phase_peak * (1 + cfg.margin), t.phase_peak + ahead.step) if stepped
            else ahead.upper * (1 + cfg.phase_margin))

    def basis() -> str:  # built only for a decision: this runs at every sample
        if stepped:
            return (f"the phase from {phase.start_s:.0f} s: its peak so far {_fmt(r, t.phase_peak)} + the larger of "
                    f"{cfg.margin:.0%} and its learned step {_fmt(r, ahead.step)}")
        return f"the predicted phase from {ahead.start_s:.0f} s (upper {_fmt(r, ahead.upper)} + {cfg.phase_margin:.0%})"

    # With a learned step, a jump of that size must always fit: raise as soon as it would not,
    # however small the change (the hysteresis is the margin already in ``want``).
    jump_fits = not stepped or t.phase_peak + ahead.step <= alloc
    if want > alloc * (1 + cfg.min_change) or (want > alloc and not jump_fits):
        return _resize(r, t, want, now, cfg, bounds, f"{r}: ahead of {basis()}; usage {_fmt(r, used)}",
                       hysteresis=jump_fits)
    floor = max(want, used * (1 + cfg.margin))
    # The cooldown keeps a change from being undone at once; a limit last set for an earlier phase
    # (raised ahead of this one) has nothing to be undone in this one. At the run's start one
    # sample is no evidence; after a predicted fall, the prediction and the sample agree.
    settled = since >= cfg.up_cooldown_s or (t.last_change is not None and t.last_change < t.phase_since)
    evidence = t.phase_samples >= cfg.up_samples or phase.start_s > 0
    if (floor < alloc * (1 - cfg.min_change) and settled and evidence
            and not (r == "memory" and _growing(window, cfg))):
        return _resize(r, t, floor, now, cfg, bounds, f"{r}: {basis()} needs less; usage {_fmt(r, used)} + "
                       f"{cfg.margin:.0%} fits, not growing")
    return None, t


def _growth(window: tuple[float, ...]) -> float:
    """Growth per sample: the last step, or the mean over the window when that is more and the
    window grew in at least two steps. Allocators grow in lumps (a batch, a 16 MiB block) that land
    between samples: the last step alone alternates between a jump and zeros, and each zero broke
    the streak that raises in time. One jump followed by a plateau is not sustained growth."""
    if len(window) < 2:
        return 0.0
    last = window[-1] - window[-2]
    steps = [window[i] - window[i - 1] for i in range(1, len(window))]
    sustained = sum(d > 0 for d in steps) >= 2
    mean = (window[-1] - window[0]) / len(steps) if sustained else 0.0
    return max(0.0, last, mean)


def _urgent(r, t: Track, now, cfg, bounds, est):
    pressure = (f"urgent: the kernel signalled {r} pressure at the limit {_fmt(r, t.allocation)} (memory.high, usage "
                f"threshold or tasks paused under OOM)")
    floor = max(t.allocation * (1 + cfg.min_change), t.peak * (1 + cfg.margin))
    if est is not None and est.upper * (1 + cfg.margin) > floor:
        # Below the covering prediction the stage is growing as predicted: go straight to it (with
        # the margin) rather than double, which overshoots; a later warning still doubles.
        want = est.upper * (1 + cfg.margin)
        why = f"{pressure}; up to the predicted upper {_fmt(r, est.upper)} + {cfg.margin:.0%}, now"
    else:
        want = max(t.allocation * cfg.urgent_step, t.peak * (1 + cfg.margin))
        why = f"{pressure}; x{cfg.urgent_step:g} or peak {_fmt(r, t.peak)} + {cfg.margin:.0%}, now"
    return _resize(r, t, want, now, cfg, bounds, why + _predicted(r, est), hysteresis=False)


def _increase(r, t: Track, used, growth, projected, est, now, cfg, bounds):
    alloc = t.allocation
    why = f"{r} {_fmt(r, used)} is {used / alloc:.0%} of the limit {_fmt(r, alloc)} for {t.short} samples"
    if r == "memory":  # peak or projected growth + margin, and at least a change worth making
        want = max(alloc * (1 + cfg.min_change), t.peak * (1 + cfg.margin), projected * (1 + cfg.margin))
        why += f", growing {_fmt(r, growth)} per sample" if growth > 0 else ""
    else:  # throttled at its quota: the true demand cannot be seen, so probe up in steps
        want = alloc * cfg.cpu_step
        why += f": throttled, true demand unseen, x{cfg.cpu_step:g}"
    if est is not None and used <= est.upper and est.upper > want:
        want, why = est.upper, why + "; up to the predicted upper"
    return _resize(r, t, min(want, alloc * cfg.max_step_up), now, cfg, bounds, why + _predicted(r, est, used))


def _decrease(r, t: Track, est, now, cfg, bounds):
    if r == "memory":
        floor, basis = t.peak * (1 + cfg.margin), f"peak {_fmt(r, t.peak)} + {cfg.margin:.0%}"
        if est is not None and est.median > floor:
            floor, basis = est.median, "the predicted median (the run may not have reached it yet)"
    else:
        floor, basis = t.smoothed * (1 + cfg.margin), f"smoothed use + {cfg.margin:.0%}"
    why = (f"{r} smoothed {_fmt(r, t.smoothed)} is under {cfg.down_threshold:.0%} of the limit {_fmt(r, t.allocation)} "
           f"for {t.low} samples{', not growing' if r == 'memory' else ''}; floor {_fmt(r, floor)} = {basis}")
    return _resize(r, t, max(floor, t.allocation * cfg.max_step_down), now, cfg, bounds, why + _predicted(r, est))


def _resize(r, t: Track, want, now, cfg, bounds: Bounds, why, hysteresis=True):
    alloc, top = t.allocation, bounds.maximum.get(r)
    new = bounds.clamp(r, want)
    if want > alloc and new <= alloc:  # constant text: a caller says each new reason once
        return ResourceDecision(r, "hold", alloc, alloc, f"{r} at bound: needs more than the limit {_fmt(r, alloc)}, "
                                f"the maximum the request allows is {_fmt(r, top)}"), t
    if hysteresis and abs(new - alloc) < cfg.min_change * alloc and not (alloc < new == top):
        return None, t
    if new < want:
        why += f"; capped at the bound {_fmt(r, new)} (wanted {_fmt(r, want)})"
    elif new > want:
        why += f"; held at the minimum {_fmt(r, new)}"
    t = replace(t, allocation=new, last_change=now, short=0, low=0)
    return ResourceDecision(r, "increase" if new > alloc else "decrease", alloc, new, why), t


def _explain(r, t: Track, used, est: ResourceEstimate | None, cfg) -> ResourceDecision:
    over = [f"exceeds predicted upper {_fmt(r, est.upper)}"] if est is not None and used > est.upper else []
    if r not in cfg.resizable and 0 < t.allocation < used:
        over.append(f"exceeds its allocation {_fmt(r, t.allocation)}")
    if r in GPU_RESOURCES:
        tail = "GPU allocation cannot change in place; the observed peak sizes the next try"
    elif r not in cfg.resizable:
        tail = f"{r} is not resized in place by this policy"
    else:
        tail = f"the limit {_fmt(r, t.allocation)} still has room"
    return ResourceDecision(r, "hold", t.allocation, t.allocation, f"{r} {_fmt(r, used)} {' and '.join(over)}; {tail}")


def _growing(window: tuple[float, ...], cfg: DeviationConfig) -> bool:
    """Newer half of the window on average above the older half by more than the tolerance."""
    half = len(window) // 2
    if half == 0:
        return False
    older, newer = sum(window[:half]) / half, sum(window[-half:]) / half
    return newer > older * (1 + cfg.growth_tolerance)


@dataclass(frozen=True)
class OomEscalation:
    new_limit: float
    capped: bool
    reason: str


def escalate_after_oom(limit_bytes: float, observed_peak_bytes: float | None, config: DeviationConfig,
                       max_bytes: float | None = None) -> OomEscalation:
    """Memory for the next try of a stage the kernel OOM-killed at ``limit_bytes``:
    max(limit x ``oom_factor``, peak + margin), capped at ``max_bytes``."""
    if not limit_bytes > 0:
        raise ValueError(f"the OOM-killed limit must be > 0 bytes, got {limit_bytes!r} (no limit: nothing to escalate)")
    if observed_peak_bytes is not None and not observed_peak_bytes >= 0:
        raise ValueError(f"the observed peak must be >= 0 bytes, got {observed_peak_bytes!r}")
    killed = f"OOM-killed at {_fmt('memory', limit_bytes)}"
    if max_bytes is not None and limit_bytes >= max_bytes:
        return OomEscalation(float(max_bytes), True, f"{killed}, already the maximum {_fmt('memory', max_bytes)}: the stage "
                             "cannot get more memory; raise its maximum or make it need less")
    want = max(limit_bytes * config.oom_factor, (observed_peak_bytes or 0.0) * (1 + config.margin))
    new = want if max_bytes is None else min(want, max_bytes)
    reason = f"{killed}: retry with {_fmt('memory', new)} (x{config.oom_factor:g} or peak + {config.margin:.0%})"
    if new < want:
        reason += f", capped at the maximum {_fmt('memory', max_bytes)} (wanted {_fmt('memory', want)})"
    return OomEscalation(float(new), new < want, reason)


def _predicted(r: str, est: ResourceEstimate | None, used: float | None = None) -> str:
    if est is None:
        return ""
    text = f"; predicted median {_fmt(r, est.median)}, upper {_fmt(r, est.upper)}"
    if used is not None and est.upper > 0:
        text += f" (usage {used / est.upper:.0%} of the upper)"
    return text


def _fmt(r: str, value: float | None) -> str:
    if value is None:
        return "none"
    if r in ("memory", "gpu_memory"):
        value, unit = (value / 2**30, "GiB") if abs(value) >= 2**30 else (value / 2**20, "MiB")
    elif r in BANDWIDTH_RESOURCES:
        return format_bandwidth(value)
    else:
        unit = {"cpu": "cores"}.get(r, "GPUs")
    return f"{value:.2f}".rstrip("0").rstrip(".") + f" {unit}"

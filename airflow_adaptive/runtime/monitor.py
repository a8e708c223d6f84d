"""The monitor loop: sample -> aggregate -> decide -> signal -> log, each step named and timed.

The same loop runs inside the local runner (in-process channel) and as the Kubernetes sidecar
(log-line channel). A failed step is logged and the loop goes on: a monitor fault never touches
the workload.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from airflow_adaptive.domain.observation import UsageAccumulator, UsageSample
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.domain.stage_run import ObservedSummary, OomEvent
from airflow_adaptive.logic.deviation import Bounds, DeviationConfig, decide, initial_state
from airflow_adaptive.runtime.channels import SignalChannel
from airflow_adaptive.runtime.sampling import WorkloadSampler

log = logging.getLogger(__name__)

STEPS = ("sample", "aggregate", "decide", "signal", "log")


class UsageLog(Protocol):
    """What the monitor needs of a usage logger (``runtime/usage_logging.BackgroundUploader`` fits)."""

    def log_sample(self, sample: UsageSample) -> None: ...

    def maybe_flush(self) -> object: ...

    def log_summary(self, summary: ObservedSummary) -> object: ...

    def close(self, timeout_s: float) -> object: ...


@dataclass
class StepTimes:
    """Cumulative seconds per loop step, and the slowest single step: the loop's own cost."""

    total: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))
    worst: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STEPS, 0.0))

    def add(self, step: str, seconds: float) -> None:
        self.total[step] += seconds
        self.worst[step] = max(self.worst[step], seconds)


class Monitor:
    def __init__(
        self,
        sampler: WorkloadSampler,
        channel: SignalChannel,
        allocation: dict[str, float],
        *,
        profile: PredictedProfile | None = None,
        config: DeviationConfig | None = None,
        bounds: Bounds | None = None,
        usage_log: UsageLog | None = None,
        container: str = "",
        keep_samples: bool = False,
        started: float | None = None,
        interval_s: float | None = None,
    ) -> None:
        """``started``: when the workload started (Unix seconds): where its predicted phases count
        from; None: from the first sample. ``interval_s``: the sampling interval, which sets how
        early a predicted rise is acted on (``DeviationConfig.for_interval``)."""
        self.sampler = sampler
        self.channel = channel
        self.profile = profile
        self.config = config or DeviationConfig()
        if interval_s is not None:
            self.config = self.config.for_interval(interval_s)
        self.bounds = bounds or Bounds(minimum={}, maximum={})
        self.usage_log = usage_log
        self.container = container
        self.state = initial_state(allocation, profile, started)
        self.usage = UsageAccumulator()
        self.samples: list[UsageSample] | None = [] if keep_samples else None
        self.signals: list[ResizeSignal] = []
        self.times = StepTimes()
        self.start_time = time.time()
        self._sequence = 0
        self._explained: dict[str, str] = {}

    def step(self, urgent: Iterable[str] = ()) -> list[ResizeSignal]:
        """One tick; ``urgent`` names resources the kernel says are about to hit their limit."""
        sample = self._timed("sample", self.sampler.sample)
        if sample is None:
            return []
        self._timed("aggregate", lambda: self._aggregate(sample))
        decisions = self._timed("decide", lambda: self._decide(sample, frozenset(urgent))) or []
        sent = self._timed("signal", lambda: self._signal(decisions, sample.time)) or []
        if self.usage_log is not None:
            self._timed("log", lambda: self._log(sample))
        return sent

    def _timed(self, name: str, fn: Callable):
        t0 = time.perf_counter()
        try:
            return fn()
        except Exception:  # noqa: BLE001 - a monitor fault must never end the loop (or the workload)
            log.exception("monitor step %r failed; continuing", name)
            return None
        finally:
            self.times.add(name, time.perf_counter() - t0)

    def _aggregate(self, sample: UsageSample) -> None:
        self.usage.add(sample)
        if self.samples is not None:
            self.samples.append(sample)

    def _decide(self, sample: UsageSample, urgent: frozenset[str]):
        self.state, decisions = decide(self.state, sample, self.config, self.bounds, urgent=urgent)
        return decisions

    def _signal(self, decisions, now: float) -> list[ResizeSignal]:
        sent = []
        for d in decisions:
            if d.action == "hold":
                if self._explained.get(d.resource) != d.reason:  # say each new reason once
                    self._explained[d.resource] = d.reason
                    log.info("hold %s at %s: %s", d.resource, d.old, d.reason)
                continue
            signal = ResizeSignal(d.resource, float(d.old), float(d.new), d.reason, now, self._sequence, self.container,
                                  None if d.request is None else float(d.request))
            self._sequence += 1
            try:
                in_force = self.channel.send(signal)
            except Exception as exc:  # noqa: BLE001 - the channel is I/O; report and keep the old size
                log.warning("resize %s -> %s not delivered (%s); keeping %s", d.resource, d.new, exc, d.old)
                in_force = None
            if in_force is None:
                self.state = self.state.with_allocation(d.resource, float(d.old), now)
                continue
            if in_force != d.new:
                self.state = self.state.with_allocation(d.resource, float(in_force), now)
            self.signals.append(signal)
            sent.append(signal)
        return sent

    def _log(self, sample: UsageSample) -> None:
        self.usage_log.log_sample(sample)
        self.usage_log.maybe_flush()

    def allocation(self, resource: str) -> float | None:
        return self.state.allocation.get(resource)

    def summary(self, outcome: str, oom_events: list[OomEvent] | None = None, extra_peak: dict[str, float] | None = None,
                io: dict[str, float] | None = None) -> ObservedSummary:
        """``io``: the try's measured I/O totals (``domain/stage_run.IO_TOTALS``), if any."""
        peak = dict(self.usage.peak)
        for r, v in (extra_peak or {}).items():
            peak[r] = max(peak.get(r, 0.0), v)
        return ObservedSummary(
            start_time=self.start_time, end_time=time.time(), outcome=outcome,
            peak=peak, mean=self.usage.mean(), oom_events=list(oom_events or []), io=dict(io or {}),
        )

    def finish(self, summary: ObservedSummary, timeout_s: float = 10.0) -> None:
        """Send the summary to the usage log and close it; failures are logged, never raised."""
        if self.usage_log is None:
            return
        try:
            self.usage_log.log_summary(summary)
            self.usage_log.close(timeout_s)
        except Exception:  # noqa: BLE001
            log.exception("could not hand the stage summary to the usage log")
        worst = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in self.times.worst.items())
        log.info("monitor loop: %d samples; slowest steps: %s", self.usage.count, worst)

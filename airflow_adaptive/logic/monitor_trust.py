"""Which of the monitor's lines to believe. Pure: lines and arrival times in, decisions out.

Threat model: the workload shares the monitor's UID and PID namespace (that is how the monitor
reads it), so it can write into the monitor's stdout (``/proc/<monitor>/fd/1``), or trace it. Every
line read from that log is untrusted input. What a forger can still do within these rules: bring a
resize forward within the user's maximum (a few a minute at most), or hide usage by writing the
monitor's next sequence number first (then the monitor's own line conflicts and is counted). It
cannot take a stage past the user's maximum, resize it more often than the rate allows, fill
MLflow, or crash the operator; and any line rejected marks the run ``untrusted``, which
retraining leaves out.

| rule | the line is dropped and counted as | why |
|---|---|---|
| names a protocol kind but is not well formed (JSON, types, resources, over 8 KiB) | ``malformed`` | the monitor writes only what ``domain/monitor_protocol.py`` defines |
| newer protocol version | ``unknown_version`` (warned once) | the monitor image is newer than the operator: upgrade the operator |
| resize sequence not the next one (after a gap), or a different line under a sequence already seen | ``out_of_sequence`` / ``conflict`` | the monitor numbers 0, 1, 2...; a reconnect repeats lines identically, nothing else does |
| a resize above the user's maximum | ``above_maximum`` | the user's limit is the bound, whoever asks |
| more than ``max_resizes_per_minute`` resizes, ``max_samples_per_minute`` samples in a minute | ``rate_limited`` | the monitor's policy resizes a few times a minute at most and samples once an interval |
| a time more than a day away from now | ``bad_time`` | MLflow's time axis is not the workload's to set |
| a second, different summary | ``conflict`` | one summary per monitor process |
| a line of an earlier monitor process (``boot``) after a newer one spoke, or a ninth boot | ``stale_boot`` / ``too_many_boots`` | a restarted monitor (the kubelet restarts a native sidecar that dies) numbers from 0 again under a new boot; the old process is gone |

| knob | default | why |
|---|---|---|
| ``max_resizes_per_minute`` | 12 | the policy's cooldown (5 s) allows 12 raises a minute of one resource at the most; real runs use a handful |
| ``max_samples_per_minute`` | 240 | 4 samples a second: the fastest interval the operator sets is 0.25 s |
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Mapping

from airflow_adaptive.domain.monitor_protocol import MalformedLine, SummaryLine, UnknownVersion, UsageLine, parse_with_boot
from airflow_adaptive.domain.signals import MonitorStatus, ResizeSignal

DAY_S = 86400.0
MAX_BOOTS = 8  # monitor restarts a follower follows; a crash loop beyond this is not a monitor any more


@dataclass(frozen=True)
class TrustConfig:
    maximum: Mapping[str, float] = field(default_factory=dict)  # the user's limits: cpu cores, memory bytes
    max_resizes_per_minute: int = 12
    max_samples_per_minute: int = 240


@dataclass
class MonitorLines:
    """What a follower has accepted from one monitor, and what it rejected (the counts say why)."""

    config: TrustConfig = field(default_factory=TrustConfig)
    last_sequence: int | None = None
    signals: list[ResizeSignal] = field(default_factory=list)  # accepted, in order (the last few only)
    samples: list[UsageLine] = field(default_factory=list)      # accepted, not yet handed to the writer
    summary: SummaryLine | None = None
    statuses: list[MonitorStatus] = field(default_factory=list)
    rejected: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)  # one per reason, for the task log
    sample_count: int = 0
    _seen: dict[tuple[str, str, int], str] = field(default_factory=dict)  # (kind, boot, seq) -> digest: repeats
    _boot: str | None = None
    _boots: list[str] = field(default_factory=list)
    _refused: set = field(default_factory=set)  # digests of unparseable lines already counted
    _signal_times: deque = field(default_factory=deque)
    _sample_times: deque = field(default_factory=deque)
    _last_sample_seq: int = -1

    @property
    def untrusted(self) -> bool:
        return bool(self.rejected)

    def read(self, line: str, now: float) -> ResizeSignal | None:
        """Take one log line; the resize signal to apply now, if it is one and believable."""
        try:
            parsed = parse_with_boot(line)
        except (UnknownVersion, MalformedLine) as exc:
            digest = hashlib.sha256(line.strip().encode()).hexdigest()[:16]
            if digest in self._refused or len(self._refused) >= 100_000:
                return None  # a reconnect re-reads a line already counted
            self._refused.add(digest)
            if isinstance(exc, UnknownVersion):
                return self._reject("unknown_version", f"a line of {exc}: upgrade the operator to read it")
            return self._reject("malformed", f"a malformed monitor line: {exc}")
        if parsed is None:
            return None
        message, boot = parsed
        if not self._enter(boot):
            return None
        if isinstance(message, ResizeSignal):
            return self._signal(message, line, now)
        if isinstance(message, UsageLine):
            self._sample(message, line, now)
        elif isinstance(message, SummaryLine):
            self._summary(message, line)
        elif len(self.statuses) < 16 and message not in self.statuses:
            self.statuses.append(message)
        return None

    def take_samples(self) -> list[UsageLine]:
        """The samples accepted since the last call (the writer's batch)."""
        out, self.samples = self.samples, []
        return out

    # ---- rules ---------------------------------------------------------------------------------
    def _enter(self, boot: str) -> bool:
        """Whether a line of monitor process ``boot`` may be read: the current one, or a new one
        (a restart: its sequences start again); never an earlier one."""
        if boot == self._boot:
            return True
        if boot in self._boots:
            self._reject("stale_boot", f"a line of an earlier monitor process ({boot or 'unnamed'})")
            return False
        if len(self._boots) >= MAX_BOOTS:
            self._reject("too_many_boots", f"more than {MAX_BOOTS} monitor processes")
            return False
        if self._boot is not None:  # a restart; the resumed sequence applied to the first only
            self.last_sequence, self._last_sample_seq = None, -1
        self._boot = boot
        self._boots.append(boot)
        return True

    def _repeat(self, kind: str, seq: int, line: str) -> bool | None:
        """True: an identical repeat (a reconnect); False: new; None: a conflicting line."""
        digest = hashlib.sha256(line.strip().encode()).hexdigest()[:16]
        key = (kind, self._boot or "", seq)
        seen = self._seen.get(key)
        if seen is None:
            if len(self._seen) < 100_000:  # bounded: beyond this, repeats are only told by sequence
                self._seen[key] = digest
            return False
        return True if seen == digest else None

    def _signal(self, signal: ResizeSignal, line: str, now: float) -> ResizeSignal | None:
        repeat = self._repeat("resize", signal.sequence, line)
        if repeat is None:
            return self._reject("conflict", f"resize sequence {signal.sequence} seen before with other content")
        if repeat or (self.last_sequence is not None and signal.sequence <= self.last_sequence):
            return None  # a reconnect re-reads lines already handled
        expected = 0 if self.last_sequence is None else self.last_sequence + 1
        if signal.sequence != expected and self.last_sequence is not None:
            return self._reject("out_of_sequence", f"resize sequence {signal.sequence} after {self.last_sequence}")
        if abs(signal.time - now) > DAY_S:
            return self._reject("bad_time", f"a resize dated {signal.time:.0f}, more than a day from now")
        # In order from here on: the sequence moves on even if the content is refused, so the
        # monitor's next signal is still in sequence.
        self.last_sequence = signal.sequence
        top = self.config.maximum.get(signal.resource, 0.0)
        if top > 0 and signal.new > top * (1 + 1e-9):
            return self._reject("above_maximum", f"a resize of {signal.resource} to {signal.new:g}, above the user's "
                                                 f"maximum {top:g}")
        if not self._within_rate(self._signal_times, self.config.max_resizes_per_minute, now):
            return self._reject("rate_limited", f"more than {self.config.max_resizes_per_minute} resizes in a minute")
        self.signals = [*self.signals[-31:], signal]
        return signal

    def _sample(self, usage: UsageLine, line: str, now: float) -> None:
        repeat = self._repeat("usage", usage.seq, line)
        if repeat is None:
            self._reject("conflict", f"usage sample {usage.seq} seen before with other content")
            return
        if repeat or usage.seq <= self._last_sample_seq:
            return
        if abs(usage.sample.time - now) > DAY_S or not math.isfinite(usage.sample.time):
            self._reject("bad_time", f"a usage sample dated {usage.sample.time:.0f}, more than a day from now")
            return
        if not self._within_rate(self._sample_times, self.config.max_samples_per_minute, now):
            self._reject("rate_limited", f"more than {self.config.max_samples_per_minute} usage samples in a minute")
            return
        self._last_sample_seq = usage.seq
        self.samples.append(usage)
        self.sample_count += 1

    def _summary(self, summary: SummaryLine, line: str) -> None:
        repeat = self._repeat("summary", 0, line)
        if repeat is None:
            self._reject("conflict", "a second, different summary")
        elif not repeat:
            self.summary = summary

    @staticmethod
    def _within_rate(times: deque, limit: int, now: float) -> bool:
        while times and now - times[0] >= 60.0:
            times.popleft()
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    def _reject(self, why: str, note: str) -> None:
        if why not in self.rejected:
            self.notes.append(note)
        self.rejected[why] += 1
        return None

"""Is a running stage held back by its disk bandwidth limit, by its CPU limit, or by neither?

Pure: plain dataclasses in and out, stdlib only (the deviation policy, which the monitor sidecar
imports, calls it), no clock, no I/O. The local runner limits a stage's disk bandwidth with
cgroup throttling (``adapters/cgroups/throttle.py``); a stage that reads as fast as its limit
lets it may want more, or may be a loader that spends its time decompressing and parsing, where
more bandwidth would sit idle and more CPU is what helps. The verdict: CPU over the last
``cpu_samples`` samples, every one at its limit (the deviation policy's streak); a disk
direction over the last ``disk_samples``, every one measured and their **mean** at the limit.
The mean, because a rate is counted in whole requests as they are submitted (before the
throttle delays them), and a request that lands just after a sample moves from one interval to
the next: at 2 MiB/s in 256 KiB requests and 0.5 s samples, an interval sees 3 or 5 requests
instead of 4 (75%, 125%); buffered reads come a readahead window at a time (8 MiB on this
virtio disk: 8, 0, 8, 0 MiB/s under a 4 MiB/s limit). The mean over the window cancels that,
and a throttled stage cannot run above its limit to fake a mean for long.

| seen | verdict | raise |
|---|---|---|
| a disk direction at its limit (mean rate >= ``at_limit`` x limit), CPU below its limit, and (where measured) the stage waiting on I/O | ``disk``: I/O-bound at the limit | that direction's limit x ``disk_step``, at most the user's maximum |
| CPU at its limit, every limited disk direction below its limit (or no disk limit) | ``cpu``: a CPU-bound loader | CPU x ``cpu_step``, at most the maximum |
| both at their limits | ``both`` | both: raising one alone leaves the other binding |
| neither at its limit but the stage waiting on I/O for ``device_io_wait`` of the time | ``device``: the disk itself is slow | nothing: no limit of ours holds it back |
| otherwise | ``none`` | nothing |

A disk direction at its limit while the stage, where I/O wait is measured, waits under
``min_io_wait`` of the time is not I/O-bound: it reads at the limit's pace by its own design.

| knob | default | where it comes from |
|---|---|---|
| ``at_limit`` | 0.90 | the deviation policy's ``up_threshold``: CPU at 90% of its quota is throttled; measured here, a stage reading with ``O_DIRECT`` under a 2 MiB/s limit read 2.00 MiB/s (100%), so 90% leaves room for sampling jitter and a chunk in flight |
| ``cpu_samples`` | 2 | the deviation policy's ``up_samples``: a sustained bottleneck, not one busy interval |
| ``disk_samples`` | 4 | the deviation policy's ``disk_samples`` (its docstring: one readahead window more or less moves a 4-sample mean by a quarter of what it moves a 2-sample one) |
| ``disk_step`` | 2.0 | a throttled stage's true demand is unseen (as CPU's): it is probed up; doubling reaches any need in log2(need/limit) raises, and a bandwidth cap is not a reservation (nothing idles locally when it is high), so the steeper step of the two |
| ``cpu_step`` | 1.5 | the deviation policy's ``cpu_step`` (its CPU rule makes the CPU raise at runtime) |
| ``min_io_wait`` | 0.10 | a stage throttled on synchronous reads sleeps most of each interval in the throttle; under a tenth it is not waiting on the disk |
| ``device_io_wait`` | 0.50 | over half the time waiting on I/O with no limit of ours at its edge: the device is the bottleneck |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

from airflow_adaptive.domain.quantities import format_bandwidth

Bottleneck = Literal["disk", "cpu", "both", "device", "none"]
DISK: tuple[str, ...] = ("disk_read", "disk_write")
_WORD = {"disk_read": "read", "disk_write": "write"}


@dataclass(frozen=True)
class IoSample:
    """One sample's figures; None where not measured."""

    cpu: float | None = None  # cores in use
    disk_read: float | None = None  # bytes/s read from storage since the previous sample
    disk_write: float | None = None  # bytes/s sent to storage
    io_wait: float | None = None  # seconds waited for block I/O per wall second, summed over tasks (may pass 1)


@dataclass(frozen=True)
class IoLimits:
    """The limits in force; None where there is none."""

    cpu: float | None = None  # cores
    disk_read: float | None = None  # bytes/s
    disk_write: float | None = None


@dataclass(frozen=True)
class IoBottleneckConfig:
    at_limit: float = 0.90
    cpu_samples: int = 2
    disk_samples: int = 4
    disk_step: float = 2.0
    cpu_step: float = 1.5
    min_io_wait: float = 0.10
    device_io_wait: float = 0.50

    def __post_init__(self) -> None:
        rules = {
            "at_limit": (0 < self.at_limit <= 1, "in (0, 1]"),
            "cpu_samples": (self.cpu_samples >= 1, ">= 1"),
            "disk_samples": (self.disk_samples >= 1, ">= 1"),
            "disk_step": (self.disk_step > 1, "> 1"),
            "cpu_step": (self.cpu_step > 1, "> 1"),
            "min_io_wait": (self.min_io_wait >= 0, ">= 0"),
            "device_io_wait": (self.device_io_wait >= 0, ">= 0"),
        }
        wrong = [f"{name}={getattr(self, name)!r} (must be {rule})" for name, (ok, rule) in rules.items() if not ok]
        if wrong:
            raise ValueError("invalid IoBottleneckConfig: " + "; ".join(wrong))


@dataclass(frozen=True)
class Raise:
    resource: str  # "cpu", "disk_read" or "disk_write"
    old: float
    new: float
    reason: str


@dataclass(frozen=True)
class IoVerdict:
    bottleneck: Bottleneck
    reason: str  # what was seen, with the numbers, and what follows
    raises: tuple[Raise, ...] = ()
    #: bottlenecked resources already at the user's maximum: nothing to raise (the reason says so)
    at_maximum: tuple[str, ...] = ()


def classify(samples: Sequence[IoSample], limits: IoLimits, maximum: Mapping[str, float] | None = None,
             config: IoBottleneckConfig = IoBottleneckConfig()) -> IoVerdict:
    """The verdict over the latest ``samples`` (oldest first), and the raises it calls for, each
    bounded by ``maximum`` (resource -> highest value; a missing one: unbounded)."""
    maximum = maximum or {}
    samples = list(samples)
    cpu_window = samples[-config.cpu_samples:] if len(samples) >= config.cpu_samples else []
    disk_window = samples[-config.disk_samples:] if len(samples) >= config.disk_samples else []
    window = max(cpu_window, disk_window, key=len)  # what the reason's figures are taken over
    if not window:
        need = min(config.cpu_samples, config.disk_samples)
        return IoVerdict("none", f"{len(samples)} of {need} samples so far: no verdict yet")
    wait = _mean([s.io_wait for s in window])
    cpu_limit = limits.cpu if limits.cpu and limits.cpu > 0 else None
    cpu_at = bool(cpu_window) and cpu_limit is not None and all(
        s.cpu is not None and s.cpu >= config.at_limit * cpu_limit for s in cpu_window)
    at_disk_limit = [r for r in DISK if disk_window and _at(disk_window, r, getattr(limits, r), config)]
    waiting = wait is None or wait >= config.min_io_wait
    disk_bound = at_disk_limit if waiting else []

    cpu_text = _cpu_text(window, cpu_limit)
    disk_text = _disk_text(window, limits)
    wait_text = "" if wait is None else f", waiting on I/O {wait:.0%} of the time"
    seen = f"over {len(window)} samples: {cpu_text}; {disk_text}{wait_text}"

    if at_disk_limit and not waiting:
        return IoVerdict("none", f"disk at its limit but not I/O-bound ({seen}): it waits on I/O under "
                                 f"{config.min_io_wait:.0%} of the time, so the limit is not holding it back; nothing to raise")
    capped: list[str] = []
    if disk_bound and cpu_at:
        kind: Bottleneck = "both"
        why = (f"both CPU and disk at their limits ({seen}): raising the disk limit{'s' if len(disk_bound) > 1 else ''} "
               f"and CPU, since raising either alone would leave the other binding")
    elif disk_bound:
        kind = "disk"
        why = (f"I/O-bound at the disk {' and '.join(_WORD[r] for r in disk_bound)} limit ({seen}): raising the disk "
               f"limit, not CPU, which has room")
    elif cpu_at:
        kind = "cpu"
        why = (f"CPU-bound loader ({seen}): raising CPU, not the disk limit, "
               + ("which the stage does not reach (more bandwidth would sit idle)" if _any_disk_limit(limits)
                  else "as no disk limit is set"))
    elif wait is not None and wait >= config.device_io_wait:
        return IoVerdict("device", f"waiting on the disk itself ({seen}): no limit of ours is reached, so nothing to "
                                   f"raise; the device (or other users of it) is the bottleneck")
    else:
        return IoVerdict("none", f"no bottleneck at a limit ({seen})")

    proposals = [(r, float(getattr(limits, r)), config.disk_step, "a throttled stage's true demand is unseen")
                 for r in disk_bound]
    if kind in ("cpu", "both"):
        proposals.append(("cpu", float(cpu_limit), config.cpu_step, "throttled CPU hides its true demand"))
    planned = []
    for r, old, step, basis in proposals:
        want, top = old * step, maximum.get(r)
        new = want if top is None else min(want, top)
        if new <= old:
            capped.append(r)
            continue
        bound = f"capped at the maximum {_fmt(r, top)}" if new < want else ("no maximum" if top is None else f"maximum {_fmt(r, top)}")
        planned.append((r, old, new, f"{r} {_fmt(r, old)} -> {_fmt(r, new)} (x{step:g}: {basis}; {bound})"))
    if capped:
        why += "; " + ", ".join(f"{r} is already at its maximum {_fmt(r, maximum[r])}" for r in capped)
    raises = [Raise(r, old, new, f"{why}; {detail}") for r, old, new, detail in planned]
    return IoVerdict(kind, why, tuple(raises), tuple(capped))


def _at(window: Sequence[IoSample], r: str, limit: float | None, config: IoBottleneckConfig) -> bool:
    """Every sample measured and their mean at the limit (see the module's docstring: why the mean)."""
    rates = [getattr(s, r) for s in window]
    if not limit or limit <= 0 or any(v is None for v in rates):
        return False
    return sum(rates) / len(rates) >= config.at_limit * limit


def _any_disk_limit(limits: IoLimits) -> bool:
    return any(getattr(limits, r) for r in DISK)


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def _cpu_text(window: Sequence[IoSample], limit: float | None) -> str:
    used = _mean([s.cpu for s in window])
    if used is None:
        return "cpu not measured"
    if limit is None:
        return f"cpu {used:.2f} cores (no limit)"
    return f"cpu {used:.2f} of {limit:.2f} cores ({used / limit:.0%})"


def _disk_text(window: Sequence[IoSample], limits: IoLimits) -> str:
    parts = []
    for r in DISK:
        rate, limit = _mean([getattr(s, r) for s in window]), getattr(limits, r)
        if limit:
            parts.append(f"disk {_WORD[r]} {'not measured' if rate is None else _fmt(r, rate)} of its limit "
                         f"{_fmt(r, limit)}" + ("" if rate is None else f" ({rate / limit:.0%})"))
        elif rate:  # a direction with no limit and no traffic says nothing
            parts.append(f"disk {_WORD[r]} {_fmt(r, rate)} (no limit)")
    return ", ".join(parts) or "disk not measured"


def _fmt(r: str, value: float) -> str:
    if r == "cpu":
        return f"{value:.2f}".rstrip("0").rstrip(".") + " cores"
    return format_bandwidth(value)


__all__ = ["Bottleneck", "DISK", "IoBottleneckConfig", "IoLimits", "IoSample", "IoVerdict", "Raise", "classify"]

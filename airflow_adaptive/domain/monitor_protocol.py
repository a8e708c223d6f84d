"""What the monitor sidecar tells the operator, one JSON line each on its stdout (read through
``pods/log``): resize signals, usage samples, its summary and status events. The operator (the
sync follower, or the trigger in deferrable mode) is the only writer of the stage's MLflow run, so
the monitor needs no MLflow address, credentials, network or spool.

| kind | fields | at most |
|---|---|---|
| ``airflow-adaptive/resize`` | ``ResizeSignal`` (``sequence`` 0, 1, 2, ...) | a few a minute |
| ``airflow-adaptive/usage`` | ``seq``, ``time``, ``source``, ``values`` (resource -> amount) | one per sampling interval |
| ``airflow-adaptive/summary`` | ``start_time``, ``end_time``, ``peak``, ``mean``, ``oom_kills``, ``io`` (optional: I/O totals, ``IO_TOTALS``) | one per try |
| ``airflow-adaptive/monitor-status`` | ``event``, ``reason``, ``time`` | a handful |

Every line carries ``"v": PROTOCOL_VERSION`` and ``"boot"``, an id the monitor draws when it
starts: a native sidecar that dies is restarted by the kubelet and numbers its lines from 0 again,
and the boot tells that restart from a forged repeat. A line without ``v`` is version 1, without
``boot`` of boot "" (monitor images built before either existed sent resize lines only). An operator that meets a newer version
drops the line and says so once: the monitor image and the operator are upgraded separately.

Parsing here is about form only; whether a well-formed line is *believable* (its sequence, its
rate, its size against the user's maximum) is decided in ``logic/monitor_trust.py``: the workload
shares the monitor's UID and PID namespace and can write into the monitor's stdout.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.features import RESOURCES
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.signals import LINE_VERSION, SIGNAL_MARKER, STATUS_MARKER, MonitorStatus, ResizeSignal

PROTOCOL_VERSION = LINE_VERSION
USAGE_MARKER = "airflow-adaptive/usage"
SUMMARY_MARKER = "airflow-adaptive/summary"
KINDS = (SIGNAL_MARKER, USAGE_MARKER, SUMMARY_MARKER, STATUS_MARKER)
MAX_LINE_CHARS = 8192  # a real line is under 1 KiB; longer is not the monitor's
# The operator marks the workload container with this variable (=<container name>); the sidecar
# finds the workload process by it (runtime/sidecar.py). Here because both sides must agree.
WORKLOAD_ENV = "AIRFLOW_ADAPTIVE_WORKLOAD"


@dataclass(frozen=True)
class UsageLine:
    seq: int
    sample: UsageSample


@dataclass(frozen=True)
class SummaryLine:
    start_time: float
    end_time: float
    peak: Mapping[str, float]
    mean: Mapping[str, float]
    oom_kills: int
    io: Mapping[str, float] = field(default_factory=dict)


def summary_metrics(summary: "SummaryLine | None") -> dict[str, float] | None:
    """The monitor's summary as the stage run's metrics (times, peaks, means); None without one."""
    from airflow_adaptive.domain.stage_run import METRIC_END, METRIC_START, io_metrics, observed_metric

    if summary is None:
        return None
    metrics = {METRIC_START: summary.start_time, METRIC_END: summary.end_time}
    metrics.update({observed_metric(r, "peak"): v for r, v in summary.peak.items()})
    metrics.update({observed_metric(r, "mean"): v for r, v in summary.mean.items()})
    metrics.update(io_metrics(summary.io))
    return metrics


MonitorLine = Union[ResizeSignal, UsageLine, SummaryLine, MonitorStatus]


class MalformedLine(ValueError):
    """A line that claims to be the monitor's and is not well formed."""


class UnknownVersion(ValueError):
    """A line of a protocol version newer than this operator knows."""


def new_boot() -> str:
    """This monitor process's boot id."""
    return secrets.token_hex(6)


def signal_line(signal: ResizeSignal, boot: str = "") -> str:
    return _dump({**signal.to_dict(), "boot": boot})


def status_line(status: MonitorStatus, boot: str = "") -> str:
    return _dump({"kind": STATUS_MARKER, "v": PROTOCOL_VERSION, "boot": boot, "event": status.event,
                  "reason": status.reason, "time": status.time})


def usage_line(seq: int, sample: UsageSample, boot: str = "") -> str:
    return _dump({"kind": USAGE_MARKER, "v": PROTOCOL_VERSION, "boot": boot, "seq": seq, "time": sample.time,
                  "source": sample.source, "values": dict(sample.values)})


def summary_line(start_time: float, end_time: float, peak: Mapping[str, float], mean: Mapping[str, float],
                 oom_kills: int, boot: str = "", io: Mapping[str, float] | None = None) -> str:
    data = {"kind": SUMMARY_MARKER, "v": PROTOCOL_VERSION, "boot": boot, "start_time": start_time,
            "end_time": end_time, "peak": dict(peak), "mean": dict(mean), "oom_kills": oom_kills}
    if io:
        data["io"] = dict(io)
    return _dump(data)


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def parse_line(line: str) -> MonitorLine | None:
    """The monitor's message on one log line; None for ordinary log text (see :func:`parse_with_boot`)."""
    parsed = parse_with_boot(line)
    return parsed[0] if parsed else None


def parse_with_boot(line: str) -> tuple[MonitorLine, str] | None:
    """The monitor's message on one log line and the boot that wrote it; None for ordinary log text.

    Raises :class:`MalformedLine` for a line that names one of the protocol's kinds but is not a
    well-formed message of it, :class:`UnknownVersion` for a newer protocol version.
    """
    text = line.strip()
    if not text.startswith("{") or not any(k in text for k in KINDS):
        return None
    if len(text) > MAX_LINE_CHARS:
        raise MalformedLine(f"a {len(text)}-character line (at most {MAX_LINE_CHARS})")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # also an int of 4300+ digits, or [[[[... nested past the stack
        raise MalformedLine(f"not JSON ({getattr(exc, 'msg', None) or str(exc)[:80]})") from None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None  # JSON that merely mentions a kind (the workload's own logging, say)
    version = data.get("v", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        raise MalformedLine(f"protocol version {version!r} is not an integer")
    if version > PROTOCOL_VERSION:
        raise UnknownVersion(f"protocol version {version} (this operator reads up to {PROTOCOL_VERSION})")
    boot = data.get("boot", "")
    if not isinstance(boot, str) or len(boot) > 64:
        raise MalformedLine(f"boot {str(boot)[:70]!r} is not a short text")
    try:
        return _PARSERS[data["kind"]](data), boot
    except (KeyError, TypeError, ValueError, OverflowError, UserError) as exc:  # Overflow: float(10**400)
        raise MalformedLine(f"{data['kind']}: {exc}") from None


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _amounts(value: Any, what: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object")
    unknown = [k for k in value if k not in RESOURCES]
    if unknown:
        raise ValueError(f"{what} has unknown resources {unknown[:3]}")
    return {k: _number(v, f"{what}.{k}") for k, v in value.items()}


def _signal(data: Mapping[str, Any]) -> ResizeSignal:
    for name in ("old", "new", "time"):
        _number(data.get(name), name)
    if isinstance(data.get("sequence"), bool) or not isinstance(data.get("sequence"), int):
        raise ValueError("sequence must be an integer")
    return ResizeSignal.from_dict(data)


def _usage(data: Mapping[str, Any]) -> UsageLine:
    seq = data["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"seq must be an integer >= 0, got {seq!r}")
    sample = UsageSample(time=_number(data["time"], "time"), values=_amounts(data["values"], "values"), step=seq,
                         source=str(data.get("source", ""))[:32])
    return UsageLine(seq, sample)


def _summary(data: Mapping[str, Any]) -> SummaryLine:
    kills = data.get("oom_kills", 0)
    if isinstance(kills, bool) or not isinstance(kills, int) or kills < 0:
        raise ValueError(f"oom_kills must be an integer >= 0, got {kills!r}")
    from airflow_adaptive.domain.stage_run import IO_TOTALS  # stage_run imports this module's neighbours

    io = data.get("io", {})
    if not isinstance(io, dict) or any(k not in IO_TOTALS for k in io):
        raise ValueError(f"io must be an object of {IO_TOTALS}")
    return SummaryLine(_number(data["start_time"], "start_time"), _number(data["end_time"], "end_time"),
                       _amounts(data.get("peak", {}), "peak"), _amounts(data.get("mean", {}), "mean"), kills,
                       {k: _number(v, f"io.{k}") for k, v in io.items()})


def _status(data: Mapping[str, Any]) -> MonitorStatus:
    event, reason = data["event"], data["reason"]
    if not isinstance(event, str) or not isinstance(reason, str):
        raise ValueError("event and reason must be text")
    return MonitorStatus(event[:64], reason[:1000], _number(data["time"], "time"))


_PARSERS = {SIGNAL_MARKER: _signal, USAGE_MARKER: _usage, SUMMARY_MARKER: _summary, STATUS_MARKER: _status}

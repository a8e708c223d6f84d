"""The resize signal: the one message the monitor sends to a Resource Manager.

It travels in-process (local runner) or as one JSON line on the monitor's log stream, read by
the operator through ``pods/log``; so it must round-trip through JSON unchanged.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, Mapping

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.features import RESOURCES

Direction = Literal["increase", "decrease"]

#: Marker that lets a reader pick signal lines out of a log stream that also carries other text.
SIGNAL_MARKER = "airflow-adaptive/resize"
#: The version of the monitor's line protocol (``domain/monitor_protocol.py``) every line carries.
LINE_VERSION = 1


@dataclass(frozen=True)
class ResizeSignal:
    """Resize ``resource`` from ``old`` to ``new`` (resource units: cores, bytes, GPUs). ``request``:
    where the scheduler's reservation should follow (a profile's phases: what the run uses now),
    at most ``new``; None: the request stays (and only a line with one carries the key)."""

    resource: str
    old: float
    new: float
    reason: str
    time: float  # Unix seconds when the monitor decided
    sequence: int  # per-monitor counter: a reader applies each sequence number once, in order
    container: str = ""
    request: float | None = None

    def __post_init__(self) -> None:
        if self.resource not in RESOURCES:
            raise ValueError(f"unknown resource {self.resource!r}; known: {RESOURCES}")
        for name in ("old", "new", "time"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"resize signal {name} must be a non-negative number, got {value!r}")
        if self.new == self.old:
            raise ValueError("a resize signal must change the size")
        if self.sequence < 0:
            raise ValueError(f"sequence must be >= 0, got {self.sequence}")
        if self.request is not None and not (isinstance(self.request, (int, float)) and 0 <= self.request <= self.new):
            raise ValueError(f"resize signal request must be a number in [0, new={self.new:g}], got {self.request!r}")

    @property
    def direction(self) -> Direction:
        return "increase" if self.new > self.old else "decrease"

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": SIGNAL_MARKER, "v": LINE_VERSION, **asdict(self)}
        if self.request is None:
            del out["request"]
        return out

    def to_line(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ResizeSignal":
        try:
            return cls(
                resource=str(data["resource"]),
                old=float(data["old"]),
                new=float(data["new"]),
                reason=str(data["reason"]),
                time=float(data["time"]),
                sequence=int(data["sequence"]),
                container=str(data.get("container", "")),
                request=None if data.get("request") is None else float(data["request"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # Overflow: int(1e999), float(10**400)
            raise UserError(f"malformed resize signal {dict(data)!r}: {exc}") from exc


def parse_signal_line(line: str) -> ResizeSignal | None:
    """The signal on one log line, or None when the line is not a signal (ordinary log text)."""
    text = line.strip()
    if not text.startswith("{") or SIGNAL_MARKER not in text:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, a 4300+ digit int, nested past the stack
        return None
    if not isinstance(data, dict) or data.get("kind") != SIGNAL_MARKER:
        return None
    return ResizeSignal.from_dict(data)


#: Marker of the monitor's status lines: what it tells the operator besides resize signals.
STATUS_MARKER = "airflow-adaptive/monitor-status"
#: The monitor cannot read the workload (another UID, no shared PID namespace, no workload at all):
#: it stays up without sampling (a native sidecar that exits is restarted), so the stage runs at
#: its planned size with in-place resizing off.
UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class MonitorStatus:
    """One status event of the monitor, e.g. ``unavailable`` with the reason a person can act on."""

    event: str
    reason: str
    time: float

"""Where the monitor's resize signals go (the pluggable channel).

| channel | used by | effect |
|---|---|---|
| ``InProcessChannel`` | the local runner | calls the Resource Manager directly; returns the size in force |
| ``LogLineChannel`` | the Kubernetes sidecar | one JSON line per signal on stdout; the operator reads them through ``pods/log``, so the monitor needs no Kubernetes API rights |
| ``RecommendOnlyChannel`` | shadow mode, monitor-only runs | logs what it would do, changes nothing |

``send`` returns the size now in force (``signal.new`` when the channel cannot know better), or
None when the Resource Manager refused, so the policy keeps the old allocation.
"""

from __future__ import annotations

import logging
import sys
from typing import Callable, Protocol, TextIO

from airflow_adaptive.domain.signals import ResizeSignal

log = logging.getLogger(__name__)


class SignalChannel(Protocol):
    name: str

    def send(self, signal: ResizeSignal) -> float | None: ...


class InProcessChannel:
    name = "in-process"

    def __init__(self, apply: Callable[[ResizeSignal], float | None]) -> None:
        self._apply = apply

    def send(self, signal: ResizeSignal) -> float | None:
        return self._apply(signal)


class LogLineChannel:
    name = "stdout"

    def __init__(self, stream: TextIO | None = None, boot: str = "") -> None:
        self._stream = stream
        self.boot = boot  # this monitor process's id on its lines (domain/monitor_protocol.py)

    def send(self, signal: ResizeSignal) -> float | None:
        from airflow_adaptive.domain.monitor_protocol import signal_line

        stream = self._stream or sys.stdout
        stream.write(signal_line(signal, self.boot) + "\n")
        stream.flush()  # the reader follows the log stream; a buffered line is a late resize
        return signal.new


class RecommendOnlyChannel:
    name = "recommend"

    def send(self, signal: ResizeSignal) -> float | None:
        log.info("recommend (no change made): %s %s -> %s: %s", signal.resource, signal.old, signal.new, signal.reason)
        return signal.new


def channel_named(name: str, apply: Callable[[ResizeSignal], float | None] | None = None, boot: str = "") -> SignalChannel:
    if name == "stdout":
        return LogLineChannel(boot=boot)
    if name == "recommend":
        return RecommendOnlyChannel()
    if name == "in-process" and apply is not None:
        return InProcessChannel(apply)
    raise ValueError(f"unknown signal channel {name!r}; choose stdout or recommend")

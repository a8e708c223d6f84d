"""Follow the monitor sidecar's log (``pods/log``, ``follow=true``) and hand over its resize signals.

The monitor has no API rights: its signals are JSON lines on stdout (``domain/signals.py``). A
follow stream drops (API server restarts, idle timeouts, load balancers); the follower
reconnects with ``sinceSeconds`` a little before the last line it saw and drops signals it has
already handed over (by sequence number), so each signal is handed over once, in order. It
stops when the monitor has ended for good (the pod has ended; the pod is gone) or when asked.

The sync follower (a thread in the operator) and the async one (the deferrable trigger) differ
only in how they call the API: what a line means (``SignalCursor`` over ``MonitorLines``), where
to reconnect from, and whether an error ends the follow (``keep_following_after``) are shared.

| knob | default | why |
|---|---|---|
| ``read_timeout_s`` | 60 | an idle stream is re-opened at least this often, so a half-open connection cannot hang the follower; the monitor also logs, so a healthy stream is rarely idle that long |
| ``retry_delay_s`` | 2 | between reconnects (and while the sidecar is still starting: the API answers 400 until it runs) |
| ``SINCE_SLACK_S`` | 5 | re-read this much before the last line seen: covers clock skew and lines in flight; duplicates are dropped by sequence |
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from airflow_adaptive.adapters.kubernetes.pod_spec import container_terminated
from airflow_adaptive.adapters.kubernetes.resize import api_errors, api_message, api_status
from airflow_adaptive.domain.signals import MonitorStatus, ResizeSignal
from airflow_adaptive.logic.monitor_trust import MonitorLines

log = logging.getLogger(__name__)

SINCE_SLACK_S = 5
CONNECT_TIMEOUT_S = 10


class LineSplitter:
    """Bytes from a stream into whole text lines; a partial line waits for the rest."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes | str) -> list[str]:
        data = self._pending + (chunk.encode() if isinstance(chunk, str) else chunk)
        *lines, self._pending = data.split(b"\n")
        return [line.decode("utf-8", errors="replace") for line in lines]

    def flush(self) -> list[str]:
        """What is left once the stream has ended (a last line with no newline)."""
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", errors="replace")] if rest else []


@dataclass
class SignalCursor:
    """Where the follower stands: what it accepted from the monitor (``MonitorLines``: the last
    sequence handed over, usage samples, summary, status, lines rejected) and when the last line came."""

    monitor: MonitorLines = field(default_factory=MonitorLines)
    last_line_at: float | None = None

    @property
    def last_sequence(self) -> int | None:
        return self.monitor.last_sequence

    @property
    def statuses(self) -> list[MonitorStatus]:
        return self.monitor.statuses

    def saw_line(self, now: float) -> None:
        self.last_line_at = now

    def since_seconds(self, now: float) -> int | None:
        """``sinceSeconds`` for the next connection: None (from the start) until a line was seen."""
        if self.last_line_at is None:
            return None
        return max(1, math.ceil(now - self.last_line_at) + SINCE_SLACK_S)

    def signals_in(self, lines: list[str], now: float) -> list[ResizeSignal]:
        out = []
        notes, statuses = len(self.monitor.notes), len(self.monitor.statuses)
        for line in lines:
            self.saw_line(now)
            signal = self.monitor.read(line, now)
            if signal is not None:
                out.append(signal)
        for note in self.monitor.notes[notes:]:  # each reason once; the counts go to the stage run
            log.warning("dropped a line of the monitor's log: %s (the run will be tagged untrusted)", note)
        for status in self.monitor.statuses[statuses:]:
            log.warning("the monitor says %s: %s", status.event, status.reason)
        return out


def _cursor(last_sequence: int | None, monitor: MonitorLines | None) -> SignalCursor:
    monitor = monitor if monitor is not None else MonitorLines()
    if last_sequence is not None:
        monitor.last_sequence = last_sequence
    return SignalCursor(monitor)


def _log_kwargs(pod: str, namespace: str, container: str, since: int | None, read_timeout_s: float) -> dict[str, Any]:
    kwargs = {"name": pod, "namespace": namespace, "container": container, "follow": True,
              "_preload_content": False, "_request_timeout": (CONNECT_TIMEOUT_S, read_timeout_s)}
    if since is not None:
        kwargs["since_seconds"] = since
    return kwargs


def _stream_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, asyncio.TimeoutError]
    try:
        import urllib3.exceptions

        errors.append(urllib3.exceptions.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import aiohttp

        errors.append(aiohttp.ClientError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


def pod_gone(exc: BaseException) -> bool:
    """After a failed read of the pod: True when it is gone (404); an API server that does not
    answer, or any other refusal, leaves it unknown, so following goes on."""
    return api_status(exc) == 404


def keep_following_after(exc: BaseException, where: str) -> bool:
    """After a failed connection to the monitor's log: False when following must end (the pod
    is gone); else the follower retries (the sidecar still starting answers 400, an API server
    restarting answers nothing)."""
    if pod_gone(exc):
        log.info("pod of %s is gone; stop following its monitor", where)
        return False
    if api_status(exc) is None:
        log.info("API server did not answer for %s (%s); retrying", where, exc)
    else:
        log.debug("cannot follow %s yet: %s", where, api_message(exc))
    return True


# --- sync --------------------------------------------------------------------------------


class _Follower:
    def __init__(self, core: Any, namespace: str, pod: str, container: str, on_signal: Callable[[ResizeSignal], Any],
                 stop_event: threading.Event, read_timeout_s: float, retry_delay_s: float, last_sequence: int | None,
                 monitor: MonitorLines | None = None) -> None:
        self.core, self.namespace, self.pod, self.container = core, namespace, pod, container
        self.on_signal, self.stop_event = on_signal, stop_event
        self.read_timeout_s, self.retry_delay_s = read_timeout_s, retry_delay_s
        self.cursor = _cursor(last_sequence, monitor)
        self._response: Any = None

    def run(self) -> int | None:
        while not self.stop_event.is_set():
            if not self._stream_once() or self._finished():
                break
            self.stop_event.wait(self.retry_delay_s)
        return self.cursor.last_sequence

    def close(self) -> None:
        """Unblock a read in progress (from another thread): shut the socket down under it.

        ``response.close()`` would wait for the reader's buffer lock; a socket shutdown makes
        the blocked read return at once. Without a socket at hand, the read timeout bounds the wait.
        """
        sock = getattr(getattr(self._response, "connection", None), "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # already closed
                pass

    def _stream_once(self) -> bool:
        """One connection; False when following must end (the pod is gone)."""
        since = self.cursor.since_seconds(time.time())
        try:
            self._response = self.core.read_namespaced_pod_log(
                **_log_kwargs(self.pod, self.namespace, self.container, since, self.read_timeout_s))
        except (*api_errors(), *_stream_errors()) as exc:
            return keep_following_after(exc, f"{self.namespace}/{self.pod}[{self.container}]")
        splitter = LineSplitter()
        try:
            if self.stop_event.is_set():  # stop() came while connecting
                return False
            for chunk in self._response.stream(4096, decode_content=True):
                self._hand_over(splitter.feed(chunk))
                if self.stop_event.is_set():
                    return False
            self._hand_over(splitter.flush())
        except Exception as exc:
            if self.stop_event.is_set():  # stop() closed the stream under the read
                return False
            if not isinstance(exc, _stream_errors()):
                raise
            log.info("log stream of %s/%s[%s] dropped (%s); reconnecting", self.namespace, self.pod, self.container, exc)
        finally:
            response, self._response = self._response, None
            try:
                response.release_conn()
            except Exception:  # noqa: BLE001 - already closed
                pass
        return True

    def _hand_over(self, lines: list[str]) -> None:
        for signal in self.cursor.signals_in(lines, time.time()):
            self.on_signal(signal)

    def _finished(self) -> bool:
        try:
            return container_terminated(self.core.read_namespaced_pod(name=self.pod, namespace=self.namespace), self.container)
        except (*api_errors(), *_stream_errors()) as exc:
            return pod_gone(exc)


def follow_signals(core_v1_api: Any, namespace: str, pod: str, container: str,
                   on_signal: Callable[[ResizeSignal], Any], stop_event: threading.Event, *,
                   read_timeout_s: float = 60.0, retry_delay_s: float = 2.0, last_sequence: int | None = None,
                   monitor: MonitorLines | None = None) -> int | None:
    """Hand each new signal on ``container``'s log to ``on_signal`` until it ends or ``stop_event`` is set.

    ``monitor`` (optional) collects what else the monitor said (usage samples, summary, status)
    and what was rejected, under its trust rules (the user's maximum among them).
    Returns the last sequence handed over (pass it back as ``last_sequence`` to resume).
    An exception from ``on_signal`` ends the follow and propagates.
    """
    return _Follower(core_v1_api, namespace, pod, container, on_signal, stop_event, read_timeout_s, retry_delay_s,
                     last_sequence, monitor).run()


class SignalFollowerThread(threading.Thread):
    """``follow_signals`` in a daemon thread; ``stop()`` ends it promptly, even mid-read."""

    def __init__(self, core_v1_api: Any, namespace: str, pod: str, container: str,
                 on_signal: Callable[[ResizeSignal], Any], **kwargs: Any) -> None:
        super().__init__(name=f"adaptive-signals-{pod}", daemon=True)
        self.stop_event = threading.Event()
        self._follower = _Follower(core_v1_api, namespace, pod, container, on_signal, self.stop_event,
                                   kwargs.pop("read_timeout_s", 60.0), kwargs.pop("retry_delay_s", 2.0),
                                   kwargs.pop("last_sequence", None), kwargs.pop("monitor", None))
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        self.error: BaseException | None = None

    @property
    def last_sequence(self) -> int | None:
        return self._follower.cursor.last_sequence

    @property
    def monitor_statuses(self) -> list[MonitorStatus]:
        return list(self._follower.cursor.statuses)

    @property
    def monitor(self) -> MonitorLines:
        return self._follower.cursor.monitor

    def run(self) -> None:
        try:
            self._follower.run()
        except BaseException as exc:  # noqa: BLE001 - kept for the owner to inspect; a thread cannot raise
            self.error = exc
            log.exception("following resize signals of %s/%s stopped", self._follower.namespace, self._follower.pod)

    def drain(self, timeout_s: float, quiet_s: float = 1.0) -> None:
        """Wait until the follower has read the log to its end: it ended by itself (a finished
        container's stream closes), or no line came for ``quiet_s``; at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.is_alive() and time.monotonic() < deadline:
            last = self._follower.cursor.last_line_at
            if last is not None and time.time() - last >= quiet_s:
                return
            self.join(0.1)

    def stop(self, timeout: float | None = 10.0) -> None:
        self.stop_event.set()
        self._follower.close()
        if self.is_alive():
            self.join(timeout)


# --- async (kubernetes_asyncio, for the trigger) -------------------------------------------


async def follow_signals_async(core_v1_api: Any, namespace: str, pod: str, container: str,
                               on_signal: Callable[[ResizeSignal], Awaitable[Any] | Any],
                               stop_event: asyncio.Event | None = None, *, read_timeout_s: float = 60.0,
                               retry_delay_s: float = 2.0, last_sequence: int | None = None,
                               monitor: MonitorLines | None = None) -> int | None:
    """``follow_signals`` on a ``kubernetes_asyncio`` ``CoreV1Api``; ``on_signal`` may be async.

    Cancelling the task that runs it closes the stream.
    """
    stop_event = stop_event or asyncio.Event()
    cursor = _cursor(last_sequence, monitor)
    while not stop_event.is_set():
        since = cursor.since_seconds(time.time())
        try:
            response = await core_v1_api.read_namespaced_pod_log(**_log_kwargs(pod, namespace, container, since, read_timeout_s))
        except (*api_errors(), *_stream_errors()) as exc:
            if not keep_following_after(exc, f"{namespace}/{pod}[{container}]"):
                break
        else:
            await _read_async(response, cursor, on_signal, stop_event, f"{namespace}/{pod}[{container}]")
        if stop_event.is_set() or await _finished_async(core_v1_api, namespace, pod, container):
            break
        try:
            await asyncio.wait_for(stop_event.wait(), retry_delay_s)
        except asyncio.TimeoutError:
            pass
    return cursor.last_sequence


async def _read_async(response: Any, cursor: SignalCursor, on_signal: Callable, stop_event: asyncio.Event, where: str) -> None:
    splitter = LineSplitter()
    try:
        async for chunk in response.content.iter_any():
            for signal in cursor.signals_in(splitter.feed(chunk), time.time()):
                result = on_signal(signal)
                if inspect.isawaitable(result):
                    await result
            if stop_event.is_set():
                return
        for signal in cursor.signals_in(splitter.flush(), time.time()):
            result = on_signal(signal)
            if inspect.isawaitable(result):
                await result
    except _stream_errors() as exc:
        log.info("log stream of %s dropped (%s); reconnecting", where, exc)
    finally:
        response.release()


async def _finished_async(core: Any, namespace: str, pod: str, container: str) -> bool:
    try:
        return container_terminated(await core.read_namespaced_pod(name=pod, namespace=namespace), container)
    except (*api_errors(), *_stream_errors()) as exc:
        return pod_gone(exc)

"""Usage logging that survives an MLflow outage: every record goes to a local spool file first.

The monitor sidecar samples once a second. :class:`SpoolingRunLogger` appends each sample to an
append-only spool file at once (no network), and uploads what the server has not acknowledged
in batches (every ``batch_interval_s``, through :class:`~.rest.MlflowRestClient`). Like the
REST client, this module imports only the standard library and :mod:`airflow_adaptive.domain`.

Spool format (``<spool>``, JSON lines, UTF-8, one record a line, never rewritten)::

    {"run_id": "<run>", "metrics": [{"key": "usage.cpu", "value": 1.5, "timestamp": 1700000000123, "step": 7}, ...]}
    {"run_id": "<run>", "metrics": [...summary...], "tags": [{"key": "airflow_adaptive.outcome", "value": "success"}],
     "artifacts": [{"path": "oom_events.json", "data_b64": "..."}]}

Optional keys of a record: ``metrics``, ``params``, ``tags`` (lists in log-batch shape) and
``artifacts``. ``<spool>.offset`` holds ``{"offset": N}``: the byte offset after the last
record MLflow acknowledged, replaced atomically (write a temp file, ``os.replace``) after each
acknowledged batch. Everything after it is pending.

Sending a batch again is safe: MLflow's SQL store ignores a metric row identical to one it has
(same key, timestamp, step and value: the primary key; ``_log_metrics`` catches the
IntegrityError and inserts only the rows it lacks), tags are upserts, and an identical param is
accepted again. So a batch whose answer was lost (server killed after the commit) is re-sent
without creating duplicates.

A line that does not parse (the last line of a spool whose writer crashed mid-write) is skipped
with a log line; a logger that opens a spool whose last line is cut off first ends it with a
newline, so its own records stay readable.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import threading
import time
from typing import Any, Callable, Iterator

from airflow_adaptive.adapters.mlflow.rest import (
    ArtifactStoreUnsupported,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
    MlflowRequestError,
    MlflowRestClient,
    MlflowUnavailable,
    RunNotFound,
)
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.stage_run import OOM_EVENTS_ARTIFACT, TAG_OUTCOME, ObservedSummary, usage_metric

log = logging.getLogger(__name__)

OFFSET_SUFFIX = ".offset"
MAX_BACKOFF_S = 60.0
#: MLflow error codes that refuse one record for good (sending it again cannot help): such a
#: record is passed over with a log line. Any other refusal (404 without an MLflow error code,
#: 401/403...) stops the upload and keeps everything pending.
POISON_ERROR_CODES = frozenset({"INVALID_PARAMETER_VALUE", "INVALID_STATE", "BAD_REQUEST", "RESOURCE_LIMIT_EXCEEDED"})


def _is_poison(exc: MlflowRequestError) -> bool:
    if isinstance(exc, RunNotFound):
        return False
    return isinstance(exc, ArtifactStoreUnsupported) or exc.error_code in POISON_ERROR_CODES


def offset_path(spool_path: str | os.PathLike[str]) -> str:
    return os.fspath(spool_path) + OFFSET_SUFFIX


def read_offset(spool_path: str | os.PathLike[str]) -> int:
    """The acknowledged byte offset of a spool (0 when there is no offset file yet)."""
    path = offset_path(spool_path)
    try:
        with open(path, encoding="utf-8") as f:
            offset = int(json.load(f)["offset"])
    except FileNotFoundError:
        return 0
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("offset file %s is unreadable (%s); uploading %s from its start (MLflow ignores "
                    "metric rows it already has)", path, exc, spool_path)
        return 0
    return max(0, offset)


def write_offset(spool_path: str | os.PathLike[str], offset: int) -> None:
    """Persist the acknowledged offset atomically (temp file in the same folder, then rename)."""
    path = offset_path(spool_path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"offset": int(offset)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sample_record(run_id: str, sample: UsageSample) -> dict[str, Any]:
    """The spool record of one usage sample: ``usage.<resource>`` at the sample's step and time."""
    ts = int(round(sample.time * 1000))
    return {
        "run_id": run_id,
        "metrics": [
            {"key": usage_metric(r), "value": float(v), "timestamp": ts, "step": int(sample.step)}
            for r, v in sorted(sample.values.items())
        ],
    }


def summary_record(run_id: str, summary: ObservedSummary) -> dict[str, Any]:
    """The spool record of a try's summary: summary metrics, the outcome tag, ``oom_events.json``."""
    ts = int(round(summary.end_time * 1000))
    events = json.dumps([e.to_dict() for e in summary.oom_events], indent=2).encode("utf-8")
    return {
        "run_id": run_id,
        "metrics": [{"key": k, "value": float(v), "timestamp": ts, "step": 0} for k, v in summary.metrics().items()],
        "tags": [{"key": TAG_OUTCOME, "value": summary.outcome}],
        "artifacts": [{"path": OOM_EVENTS_ARTIFACT, "data_b64": base64.b64encode(events).decode("ascii")}],
    }


class _Line:
    __slots__ = ("start", "end", "record")

    def __init__(self, start: int, end: int, record: dict[str, Any] | None) -> None:
        self.start, self.end, self.record = start, end, record


def _iter_lines(path: str, offset: int, *, final: bool) -> Iterator[_Line]:
    """Records from ``offset`` on. ``record`` is None for a line that was skipped (logged here).

    A last line without a newline is left alone (it may still be written) unless ``final``:
    then it is a record cut off by a crash, skipped with a log line.
    """
    with open(path, "rb") as f:
        f.seek(offset)
        pos = offset
        for raw in iter(f.readline, b""):
            start, pos = pos, pos + len(raw)
            if not raw.endswith(b"\n"):
                if final:
                    log.warning("skipping the cut-off last line of %s (bytes %d-%d, %d bytes; the writer "
                                "stopped mid-write)", path, start, pos, len(raw))
                    yield _Line(start, pos, None)
                return
            text = raw.strip()
            if not text:
                yield _Line(start, pos, None)
                continue
            try:
                record = json.loads(text)
                if not isinstance(record, dict) or not isinstance(record.get("run_id"), str):
                    raise ValueError("not a spool record (an object with a run_id)")
            except ValueError as exc:
                log.warning("skipping an unreadable line of %s (bytes %d-%d: %s); a writer probably "
                            "stopped mid-write", path, start, pos, exc)
                yield _Line(start, pos, None)
                continue
            yield _Line(start, pos, record)


class _Batch:
    def __init__(self) -> None:
        self.run_id: str | None = None
        self.metrics: list[dict[str, Any]] = []
        self.params: list[dict[str, Any]] = []
        self.tags: list[dict[str, Any]] = []
        self.lines: list[_Line] = []

    def fits(self, record: dict[str, Any]) -> bool:
        if not self.lines:
            return True
        return (
            record["run_id"] == self.run_id
            and len(self.metrics) + len(record.get("metrics", ())) <= MAX_METRICS_PER_BATCH
            and len(self.params) + len(record.get("params", ())) <= MAX_PARAMS_PER_BATCH
            and len(self.tags) + len(record.get("tags", ())) <= MAX_TAGS_PER_BATCH
        )

    def add(self, line: _Line) -> None:
        rec = line.record or {}
        self.run_id = rec.get("run_id", self.run_id)
        self.metrics += rec.get("metrics", [])
        self.params += rec.get("params", [])
        self.tags += rec.get("tags", [])
        self.lines.append(line)


class UploadStats:
    """What one upload pass did."""

    def __init__(self) -> None:
        self.records = 0
        self.metrics = 0
        self.skipped = 0  # unreadable lines
        self.rejected = 0  # records MLflow refused for good (see POISON_ERROR_CODES)
        self.offset = 0  # the acknowledged offset after this pass (kept when it stops early)

    def __repr__(self) -> str:
        return (f"UploadStats(records={self.records}, metrics={self.metrics}, skipped={self.skipped}, "
                f"rejected={self.rejected})")


def _send_record_parts(client: MlflowRestClient, run_id: str, metrics, params, tags, artifacts) -> None:
    if metrics or params or tags:
        client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    for art in artifacts:
        client.upload_artifact(run_id, art["path"], base64.b64decode(art["data_b64"]))


def _upload(path: str, client: MlflowRestClient, offset: int, *, final: bool, stats: UploadStats) -> int:
    """Upload everything after ``offset``; returns the new acknowledged offset (also persisted).

    Raises MlflowUnavailable, RunNotFound or another MlflowRequestError with the offset
    persisted (and in ``stats.offset``) up to the last acknowledged batch. Records MLflow
    refuses for good (see POISON_ERROR_CODES) are logged and passed over.
    """
    batch = _Batch()
    acked = stats.offset = offset

    def ack(new_offset: int) -> None:
        nonlocal acked
        if new_offset != acked:
            write_offset(path, new_offset)
            acked = stats.offset = new_offset

    def send(b: _Batch) -> None:
        if not b.lines:
            return
        good = [ln for ln in b.lines if ln.record is not None]
        if good:
            try:
                _send_record_parts(client, b.run_id or "", b.metrics, b.params, b.tags, [])
            except (MlflowRequestError, KeyError, TypeError, ValueError) as exc:  # the latter: a malformed record
                if isinstance(exc, MlflowRequestError) and not _is_poison(exc):
                    raise
                if len(good) == 1:
                    _reject(good[0], path, stats, exc)
                else:  # find the record(s) it refuses, send the others
                    for ln in good:
                        single = _Batch()
                        single.add(ln)
                        send(single)
                    ack(b.lines[-1].end)
                    return
            else:
                stats.records += len(good)
                stats.metrics += len(b.metrics)
        ack(b.lines[-1].end)

    for line in _iter_lines(path, offset, final=final):
        if line.record is None:
            if line.end - line.start > 1:
                stats.skipped += 1
            batch.lines.append(line)
            continue
        rec = line.record
        if rec.get("artifacts"):
            send(batch)
            batch = _Batch()
            try:
                _send_record_parts(client, rec["run_id"], rec.get("metrics", []), rec.get("params", []),
                                   rec.get("tags", []), rec["artifacts"])
            except (MlflowRequestError, KeyError, TypeError, ValueError) as exc:  # the latter: a malformed record
                if isinstance(exc, MlflowRequestError) and not _is_poison(exc):
                    raise
                _reject(line, path, stats, exc)
            else:
                stats.records += 1
                stats.metrics += len(rec.get("metrics", []))
            ack(line.end)
            continue
        if not batch.fits(rec):
            send(batch)
            batch = _Batch()
        batch.add(line)
    send(batch)
    return acked


def _reject(line: _Line, path: str, stats: UploadStats, exc: Exception | None = None) -> None:
    stats.rejected += 1
    log.error("MLflow refused the record at bytes %d-%d of %s%s; passing over it (it stays in the spool file)",
              line.start, line.end, path, f" ({exc})" if exc else "")


def upload_pending(spool_path: str | os.PathLike[str], client: MlflowRestClient) -> UploadStats:
    """Upload what a spool left by an earlier process still holds (after its ``.offset``).

    Raises :class:`~.rest.MlflowUnavailable` when the server does not answer,
    :class:`~.rest.RunNotFound` when the spool's run is not on it (and another
    :class:`~.rest.MlflowRequestError` for a refusal that is not about one record); what was
    acknowledged before stays acknowledged. A cut-off last line is skipped with a log line.
    """
    path = os.fspath(spool_path)
    stats = UploadStats()
    if not os.path.exists(path):
        return stats
    offset = _checked_offset(path)
    _upload(path, client, offset, final=True, stats=stats)
    if stats.records or stats.skipped or stats.rejected:
        log.info("uploaded %d spooled records (%d metrics) from %s to %s%s", stats.records, stats.metrics,
                 path, client.tracking_uri,
                 f"; skipped {stats.skipped} unreadable and {stats.rejected} refused" if stats.skipped or stats.rejected else "")
    return stats


def _checked_offset(path: str) -> int:
    offset = read_offset(path)
    size = os.path.getsize(path) if os.path.exists(path) else 0
    if offset > size:
        log.warning("offset %d of %s is past its end (%d bytes): the spool was replaced; uploading it from "
                    "its start (MLflow ignores metric rows it already has)", offset, path, size)
        return 0
    return offset


class SpoolingRunLogger:
    """Log a stage try's usage to its MLflow run, through a local spool file. Never loses a sample.

    ``log_sample`` only appends to the spool; ``maybe_flush`` uploads when ``batch_interval_s``
    has passed (or, during an outage, when the backoff has); ``flush`` uploads now. Unavailability
    never raises: the first failure logs one warning, the recovery one info line.
    """

    def __init__(
        self,
        client: MlflowRestClient,
        run_id: str,
        spool_path: str | os.PathLike[str],
        *,
        batch_interval_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.spool_path = os.fspath(spool_path)
        self.batch_interval_s = float(batch_interval_s)
        self.max_backoff_s = max(float(max_backoff_s), self.batch_interval_s)
        self.clock = clock
        self._write_lock = threading.Lock()  # appends never wait for the network
        self._flush_lock = threading.RLock()
        folder = os.path.dirname(os.path.abspath(self.spool_path))
        os.makedirs(folder, exist_ok=True)
        self._file = open(self.spool_path, "ab")
        self._end_cut_off_line()
        self._offset = _checked_offset(self.spool_path)
        self._next_attempt = self.clock() + self.batch_interval_s
        self._backoff = 0.0
        self._down_since: float | None = None
        self._outage_stats: UploadStats | None = None
        self._run_missing: str | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"SpoolingRunLogger(run_id={self.run_id!r}, spool={self.spool_path!r}, client={self.client!r})"

    # -- spooling ------------------------------------------------------------------------

    def _end_cut_off_line(self) -> None:
        size = self._file.tell() or os.path.getsize(self.spool_path)
        if size == 0:
            return
        with open(self.spool_path, "rb") as f:
            f.seek(size - 1)
            last = f.read(1)
        if last != b"\n":
            log.warning("the last line of %s is cut off (its writer stopped mid-write); it will be skipped",
                        self.spool_path)
            self._append_raw(b"\n")

    def _append_raw(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=True).encode("utf-8") + b"\n"
        with self._write_lock:
            if self.closed:
                raise ValueError(f"{self!r} is closed")
            self._append_raw(line)  # one write of the whole line: a crash cuts at most this line

    def log_sample(self, sample: UsageSample) -> None:
        """Append the sample to the spool (no network)."""
        if sample.values:
            self._append(sample_record(self.run_id, sample))

    def log_summary(self, summary: ObservedSummary) -> bool:
        """Spool the summary (metrics, outcome tag, ``oom_events.json``), then flush; True when uploaded."""
        self._append(summary_record(self.run_id, summary))
        return self.flush()

    # -- uploading -----------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        return max(0, os.path.getsize(self.spool_path) - self._offset)

    @property
    def acknowledged_offset(self) -> int:
        return self._offset

    def check(self) -> dict[str, Any]:
        """The run, from the server: raises RunNotFound for a wrong run id, MlflowUnavailable when down."""
        return self.client.get_run(self.run_id)

    def maybe_flush(self) -> bool | None:
        """Upload if a batch is due (None when none is: no request was made)."""
        if self.clock() < self._next_attempt:
            return None
        return self.flush()

    def flush(self, client: MlflowRestClient | None = None) -> bool:
        """Upload everything not yet acknowledged; False (never raises) when MLflow is unavailable."""
        with self._flush_lock:
            if self._run_missing is not None:
                return False
            now = self.clock()
            if self.pending_bytes == 0:
                self._next_attempt = now + self.batch_interval_s
                self._recovered(now)
                return True
            stats = self._outage_stats or UploadStats()
            try:
                self._offset = _upload(self.spool_path, client or self.client, self._offset, final=False, stats=stats)
            except RunNotFound as exc:
                self._offset = stats.offset
                self._run_missing = str(exc)
                log.error("%s; usage stays in %s only (no more uploads from this logger)", exc, self.spool_path)
                return False
            except (MlflowUnavailable, MlflowRequestError) as exc:
                self._offset = stats.offset
                self._unavailable(now, exc, stats)
                return False
            self._next_attempt = now + self.batch_interval_s
            if self._down_since is not None:
                self._outage_stats = stats
            self._recovered(now)
            return True

    def _unavailable(self, now: float, exc: MlflowUnavailable | MlflowRequestError, stats: UploadStats) -> None:
        self._backoff = min(self.max_backoff_s, max(self.batch_interval_s, self._backoff * 2) if self._backoff else self.batch_interval_s)
        self._next_attempt = now + self._backoff
        if self._down_since is None:
            self._down_since = now
            self._outage_stats = stats
            # Unavailable is an outage (warning); a refusal is a configuration problem (error).
            level = logging.WARNING if isinstance(exc, MlflowUnavailable) else logging.ERROR
            what = "is unavailable" if level == logging.WARNING else "refuses the upload"
            log.log(level, "MLflow %s (%s); usage of run %s stays in %s and is uploaded when it answers "
                    "again (retrying with backoff up to %g s)", what, exc, self.run_id, self.spool_path,
                    self.max_backoff_s)
        else:
            self._outage_stats = stats

    def _recovered(self, now: float) -> None:
        self._backoff = 0.0
        if self._down_since is None:
            return
        stats = self._outage_stats or UploadStats()
        log.info("MLflow at %s answers again after %.0f s: uploaded %d spooled records (%d metrics) of run %s "
                 "from %s", self.client.tracking_uri, now - self._down_since, stats.records, stats.metrics,
                 self.run_id, self.spool_path)
        self._down_since = None
        self._outage_stats = None

    def close(self, timeout_s: float = 10.0) -> bool:
        """Flush until everything is uploaded or ``timeout_s`` passes; True when nothing is left."""
        deadline = time.monotonic() + max(0.0, float(timeout_s))
        done = False
        while True:
            remaining = deadline - time.monotonic()
            client = self.client
            with_timeout = getattr(client, "with_timeout", None)
            if with_timeout is not None and remaining > 0:
                client = with_timeout(min(client.timeout_s, remaining))
            if self.flush(client):
                done = True
                break
            if self._run_missing is not None or remaining <= 0.05:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        with self._flush_lock, self._write_lock:
            pending = self.pending_bytes
            if not self.closed:
                self._file.close()
                self.closed = True
        if not done:
            log.warning("%d bytes of usage records of run %s were not uploaded to %s; they stay in %s (acknowledged "
                        "up to the offset in %s) and are uploaded by the next logger or upload_pending() on that spool",
                        pending, self.run_id, self.client.tracking_uri, self.spool_path, offset_path(self.spool_path))
        return done

    def __enter__(self) -> "SpoolingRunLogger":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.closed:
            self.close(0)

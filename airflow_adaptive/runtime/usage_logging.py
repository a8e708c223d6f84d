"""The stage run's usage log for the monitor: spool first, upload in the background.

The monitor thread only appends to the spool (``adapters/mlflow/spool.py``); a daemon thread
uploads through MLflow's REST API. So a slow or dead MLflow server never delays a sample, a
resize decision or the runner's reaction to a kernel memory warning, and no sample is lost: what
MLflow did not acknowledge stays in the spool, and a restarted monitor resumes from it.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from airflow_adaptive.adapters.mlflow.rest import (
    MlflowAuthError, MlflowRequestError, MlflowRestClient, MlflowUnavailable, RunNotFound,
)
from airflow_adaptive.adapters.mlflow.spool import SpoolingRunLogger
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.stage_run import ObservedSummary

log = logging.getLogger(__name__)

#: How often the uploader thread asks the spool whether a batch (or a retry) is due.
POLL_S = 1.0


class BackgroundUploader:
    def __init__(self, logger: SpoolingRunLogger, poll_s: float = POLL_S) -> None:
        self.logger = logger
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(poll_s,), name="usage-upload", daemon=True)
        # Started by the first sample, i.e. after the workload was forked: no thread may run
        # while the runner forks with a preexec_fn.
        self._started = False

    @property
    def spool_path(self) -> str:
        return self.logger.spool_path

    def _run(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            try:
                self.logger.maybe_flush()
            except Exception:  # noqa: BLE001 - uploads must never end the thread; the spool keeps the data
                log.exception("usage upload failed; the samples stay in %s", self.logger.spool_path)

    def log_sample(self, sample: UsageSample) -> None:
        self.logger.log_sample(sample)
        if not self._started:
            self._started = True
            self._thread.start()

    def maybe_flush(self) -> None:
        """Uploads are the thread's job; the monitor loop never waits for the network."""

    def _halt(self) -> None:
        self._stop.set()
        if self._started:
            self._thread.join(timeout=30)

    def log_summary(self, summary: ObservedSummary) -> bool:
        # Spooled at once (appends never wait for an upload in flight), then flushed: a sidecar
        # killed at the end of its grace period still leaves the summary in the spool.
        self._stop.set()
        return self.logger.log_summary(summary)

    def close(self, timeout_s: float = 10.0) -> bool:
        self._halt()
        return self.logger.close(timeout_s)


def open_usage_log(tracking_uri: str, run_id: str, spool_dir: str, *, strict: bool = True) -> BackgroundUploader | None:
    """The usage log of run ``run_id``; its spool is ``<spool_dir>/<run_id>.jsonl``.

    ``strict`` (``airflow-adaptive run``, before the workload starts): a run id the server does
    not know, or refused credentials, is the user's error. Not strict (the sidecar): it is logged
    and the samples stay in the spool, because a monitor fault must never stop the workload.
    An unreachable server is never an error: samples are spooled until it answers.
    """
    client = MlflowRestClient(tracking_uri)
    spool = Path(spool_dir) / f"{run_id}.jsonl"
    try:
        logger = SpoolingRunLogger(client, run_id, spool)
    except OSError as exc:
        message = f"cannot write the usage spool {spool}: {exc.strerror}; point --spool-dir (AIRFLOW_ADAPTIVE_SPOOL) at a writable directory"
        if strict:
            raise UserError(message) from exc
        log.error("%s; usage is not logged to MLflow", message)
        return None
    try:
        logger.check()
    except (RunNotFound, MlflowAuthError) as exc:
        if strict:
            raise
        log.error("%s; usage samples are kept in %s", exc, spool)
    except MlflowRequestError as exc:
        message = f"MLflow at {tracking_uri} refused to show run {run_id}: {exc}"
        if strict:
            raise UserError(message) from exc
        log.error("%s; usage samples are kept in %s", message, spool)
    except MlflowUnavailable as exc:
        log.warning("MLflow at %s does not answer (%s); usage samples are spooled to %s and uploaded when it answers",
                    tracking_uri, exc, spool)
    return BackgroundUploader(logger)


class StdoutUsageLog:
    """The monitor sidecar's usage log on Kubernetes: each sample, and the summary, as a protocol
    line on stdout beside the resize signals (``domain/monitor_protocol.py``). The operator reads
    them through ``pods/log`` and is the only writer of the stage run: the monitor needs no MLflow
    address, credentials, network or spool, and a sample is never lost to an unreachable server."""

    def __init__(self, write=None, boot: str = "") -> None:
        import sys

        self.boot = boot
        self._write = write or (lambda line: (sys.stdout.write(line + "\n"), sys.stdout.flush()))
        self._seq = 0

    def log_sample(self, sample: UsageSample) -> None:
        from airflow_adaptive.domain.monitor_protocol import usage_line

        self._write(usage_line(self._seq, sample, self.boot))
        self._seq += 1

    def maybe_flush(self) -> None:
        return None

    def log_summary(self, summary: ObservedSummary) -> bool:
        from airflow_adaptive.domain.monitor_protocol import summary_line

        self._write(summary_line(summary.start_time, summary.end_time, summary.peak, summary.mean, len(summary.oom_events),
                                 self.boot, io=summary.io))
        return True

    def close(self, timeout_s: float = 10.0) -> bool:
        return True

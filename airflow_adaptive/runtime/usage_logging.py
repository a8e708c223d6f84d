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

from airflow_adaptive.adapters.mlflow.rest import MlflowAuthError, MlflowRestClient, MlflowUnavailable, RunNotFound
from airflow_adaptive.adapters.mlflow.spool import SpoolingRunLogger
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
        self._thread.start()

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

    def maybe_flush(self) -> None:
        """Uploads are the thread's job; the monitor loop never waits for the network."""

    def _halt(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def log_summary(self, summary: ObservedSummary) -> bool:
        self._halt()
        return self.logger.log_summary(summary)

    def close(self, timeout_s: float = 10.0) -> bool:
        self._halt()
        return self.logger.close(timeout_s)


def open_usage_log(tracking_uri: str, run_id: str, spool_dir: str, *, strict: bool = True) -> BackgroundUploader:
    """The usage log of run ``run_id``; its spool is ``<spool_dir>/<run_id>.jsonl``.

    ``strict`` (``airflow-adaptive run``, before the workload starts): a run id the server does
    not know, or refused credentials, is the user's error. Not strict (the sidecar): it is logged
    and the samples stay in the spool, because a monitor fault must never stop the workload.
    An unreachable server is never an error: samples are spooled until it answers.
    """
    client = MlflowRestClient(tracking_uri)
    spool = Path(spool_dir) / f"{run_id}.jsonl"
    logger = SpoolingRunLogger(client, run_id, spool)
    try:
        logger.check()
    except (RunNotFound, MlflowAuthError) as exc:
        if strict:
            raise
        log.error("%s; usage samples are kept in %s", exc, spool)
    except MlflowUnavailable as exc:
        log.warning("MLflow at %s does not answer (%s); usage samples are spooled to %s and uploaded when it answers",
                    tracking_uri, exc, spool)
    return BackgroundUploader(logger)

"""A local ``mlflow server`` process (SQLite store, proxied artifacts) that can be stopped and
started again on the same port and store: for the tests, the benchmarks and the embedded default.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MLFLOW = Path(sys.executable).parent / "mlflow"
START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict[str, str]:
    """The server's environment: no tracking URI of ours, and no MLflow job runner. MLflow 3 starts
    eight huey worker processes (~240 MiB each) for its GenAI jobs by default; nothing here runs
    such jobs, and they tripled a server's start-up cost on this 2-core machine."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    return env


class LocalMlflowServer:
    """``mlflow server`` on 127.0.0.1, its store and artifacts under ``folder``, its log in ``server.log``."""

    def __init__(self, folder: str | os.PathLike[str], port: int | None = None) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start and wait until ``/health`` answers; RuntimeError (with the log's tail) otherwise."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                 "--backend-store-uri", f"sqlite:///{self.folder}/db.sqlite",
                 "--artifacts-destination", str(self.folder / "artifacts")],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True,
                env=server_env(),
            )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self.uri
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not answer /health in {timeout_s:.0f} s: {self.log_tail()}")
            time.sleep(0.3)

    def stop(self) -> None:
        """Stop the server and its children, and wait until nothing listens on the port."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn/job-runner children
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # children may linger on the port
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    break
            time.sleep(0.2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self) -> str:
        try:
            return (self.folder / "server.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

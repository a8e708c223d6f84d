"""A small MLflow client over the REST API 2.0, for processes that cannot afford ``import mlflow``.

The monitor sidecar lives in 60 MiB and 1% of a core; ``import mlflow`` alone costs ~166 MiB
resident. This module imports only the standard library (``urllib.request``, ``json``) and
:mod:`airflow_adaptive.domain`, never ``mlflow``, ``requests`` or ``numpy``.

Endpoints and limits, as the MLflow 3.x server defines them (``mlflow/server/handlers.py``,
``mlflow/protos/service.proto``, ``mlflow/utils/validation.py``):

| call | endpoint | notes |
|---|---|---|
| :meth:`MlflowRestClient.get_run` | ``GET /api/2.0/mlflow/runs/get?run_id=`` | ``{"run": {"info", "data"}}`` |
| :meth:`~MlflowRestClient.log_batch` | ``POST /api/2.0/mlflow/runs/log-batch`` | per request: 1000 metrics, 100 params, 100 tags, 1000 entities, 1 MB of JSON |
| :meth:`~MlflowRestClient.set_terminated` | ``POST /api/2.0/mlflow/runs/update`` | ``status``, ``end_time`` (ms) |
| :meth:`~MlflowRestClient.upload_artifact` | ``PUT /api/2.0/mlflow-artifacts/artifacts/<path>`` | the server's artifact proxy |
| :meth:`~MlflowRestClient.create_run` | ``POST /api/2.0/mlflow/runs/create`` | |
| :meth:`~MlflowRestClient.get_experiment_by_name` | ``GET /api/2.0/mlflow/experiments/get-by-name`` | |
| :meth:`~MlflowRestClient.create_experiment` | ``POST /api/2.0/mlflow/experiments/create`` | |
| :meth:`~MlflowRestClient.metric_history` | ``GET /api/2.0/mlflow/metrics/get-history`` | paged |
| :meth:`~MlflowRestClient.search_runs` | ``POST /api/2.0/mlflow/runs/search`` | paged, newest first |
| :meth:`~MlflowRestClient.set_tag` | ``POST /api/2.0/mlflow/runs/set-tag`` | |
| :meth:`~MlflowRestClient.get_model_version_by_alias` | ``GET /api/2.0/mlflow/registered-models/alias`` | the alias resolved now |
| :meth:`~MlflowRestClient.get_model_version` | ``GET /api/2.0/mlflow/model-versions/get`` | |

Errors, so that callers can decide what to retry:

| error | when | retry? |
|---|---|---|
| :class:`MlflowUnavailable` | connection refused or reset, timeout, DNS failure, HTTP 5xx, HTTP 429 | yes, with backoff |
| :class:`RunNotFound` (a ``UserError``) | ``RESOURCE_DOES_NOT_EXIST`` for a run id | no: wrong run id or wrong server |
| :class:`MlflowAuthError` (a ``UserError``) | HTTP 401 / 403 | no: fix the credentials |
| :class:`MlflowRequestError` | any other 4xx (e.g. ``INVALID_PARAMETER_VALUE``) | no |

Authentication follows MLflow's own client: ``MLFLOW_TRACKING_USERNAME`` and
``MLFLOW_TRACKING_PASSWORD`` (or the ``[mlflow]`` section of ``~/.mlflow/credentials``) give
HTTP Basic auth, else ``MLFLOW_TRACKING_TOKEN`` a Bearer token; ``MLFLOW_TRACKING_INSECURE_TLS``
and ``MLFLOW_TRACKING_SERVER_CERT_PATH`` shape TLS verification.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import mimetypes
import os
import posixpath
import socket
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator, Mapping, Sequence

from airflow_adaptive.domain.errors import UserError

#: MLflow 3 opens an experiment without this tag in its GenAI view (traces, no run table or charts);
#: ``custom_model_development`` is the UI's kind for classic ML training runs (values: MLflow's
#: ``ExperimentKind`` in its UI bundle: genai_development, custom_model_development, ...).
EXPERIMENT_KIND_TAGS = {"mlflow.experimentKind": "custom_model_development"}

API = "/api/2.0/mlflow"
ARTIFACTS_API = "/api/2.0/mlflow-artifacts/artifacts"

# Server-side limits of one log-batch request (mlflow/utils/validation.py, MLflow 3.x).
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_REQUEST_BYTES = 1_000_000  # MAX_BATCH_LOG_REQUEST_SIZE; we stay below it with headroom
REQUEST_BYTES_BUDGET = 900_000

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
HISTORY_PAGE = 25_000


class MlflowRestError(Exception):
    """Base of the errors this client raises."""


class MlflowUnavailable(MlflowRestError):
    """The server did not answer usefully (refused, timed out, 5xx, 429): try again later."""


class MlflowRequestError(MlflowRestError):
    """The server answered and refused the request (4xx): sending it again will not help."""

    def __init__(self, message: str, *, status: int | None = None, error_code: str | None = None, url: str = ""):
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.url = url


class MlflowAuthError(MlflowRequestError, UserError):
    """HTTP 401/403: the credentials are missing or wrong."""


class RunNotFound(MlflowRequestError, UserError):
    """The run id does not exist on this tracking server."""

    def __init__(self, run_id: str, tracking_uri: str, detail: str = ""):
        message = (
            f"MLflow run {run_id!r} does not exist on the tracking server {tracking_uri}"
            + (f" ({detail})" if detail else "")
            + ": pass the run id the operator created for this stage, and point the tracking URI "
            "at the server that holds it"
        )
        super().__init__(message, status=404, error_code="RESOURCE_DOES_NOT_EXIST")
        self.run_id = run_id
        self.tracking_uri = tracking_uri


class ArtifactStoreUnsupported(MlflowRequestError, UserError):
    """The run's artifact root is neither the server's artifact proxy nor a local path."""


def _metric_value(value: float) -> float | str:
    """JSON has no NaN/Infinity; protobuf's JSON mapping takes them as strings."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def wire_metric(metric: Mapping[str, Any]) -> dict[str, Any]:
    """One metric as log-batch wants it: ``key``, ``value``, ``timestamp`` (int ms), ``step`` (int)."""
    return {
        "key": str(metric["key"]),
        "value": _metric_value(metric["value"]),
        "timestamp": int(metric["timestamp"]),
        "step": int(metric.get("step", 0)),
    }


def _wire_kv(item: Mapping[str, Any]) -> dict[str, str]:
    return {"key": str(item["key"]), "value": str(item["value"])}


def iter_batches(
    metrics: Sequence[Mapping[str, Any]] = (),
    params: Sequence[Mapping[str, Any]] = (),
    tags: Sequence[Mapping[str, Any]] = (),
) -> Iterator[dict[str, list[dict[str, Any]]]]:
    """Split entities into request bodies within the server's per-request limits, in order."""
    limits = {"metrics": MAX_METRICS_PER_BATCH, "params": MAX_PARAMS_PER_BATCH, "tags": MAX_TAGS_PER_BATCH}
    current: dict[str, list[dict[str, Any]]] = {"metrics": [], "params": [], "tags": []}
    size = total = 0
    # Params first: a param is write-once, so a conflicting one should fail before anything else.
    items = [("params", _wire_kv(p)) for p in params] + [("metrics", wire_metric(m)) for m in metrics]
    items += [("tags", _wire_kv(t)) for t in tags]
    for kind, item in items:
        item_size = len(json.dumps(item)) + 2
        if total and (
            len(current[kind]) >= limits[kind] or total >= MAX_ENTITIES_PER_BATCH or size + item_size > REQUEST_BYTES_BUDGET
        ):
            yield current
            current = {"metrics": [], "params": [], "tags": []}
            size = total = 0
        current[kind].append(item)
        size += item_size
        total += 1
    if total:
        yield current


def _read_credentials_file() -> tuple[str | None, str | None]:
    path = os.path.expanduser("~/.mlflow/credentials")
    if not os.path.exists(path):
        return None, None
    import configparser

    config = configparser.ConfigParser()
    try:
        config.read(path)
    except configparser.Error:
        return None, None
    if "mlflow" not in config:
        return None, None
    section = config["mlflow"]
    return section.get("mlflow_tracking_username"), section.get("mlflow_tracking_password")


def auth_header(environ: Mapping[str, str] | None = None) -> str | None:
    """The ``Authorization`` header MLflow's own client would send, or None."""
    env = os.environ if environ is None else environ
    file_user, file_password = _read_credentials_file() if environ is None else (None, None)
    username = env.get("MLFLOW_TRACKING_USERNAME") or file_user
    password = env.get("MLFLOW_TRACKING_PASSWORD") or file_password
    if username and password:
        return "Basic " + base64.standard_b64encode(f"{username}:{password}".encode()).decode("ascii")
    token = env.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return f"Bearer {token}"
    return None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def normalize_tracking_uri(tracking_uri: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash, or a ``UserError``."""
    uri = (tracking_uri or "").strip()
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        shown = uri.split("?", 1)[0] or "(empty)"
        if parsed.password:  # a database URI may carry credentials: never print them
            shown = shown.replace(f":{parsed.password}@", ":***@")
        raise UserError(
            f"MLflow tracking URI {shown!r} is not an http(s) URI: usage is logged through an MLflow "
            "server's REST API, so set the tracking URI to the server, e.g. http://mlflow:5000"
        )
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, parsed.path.rstrip("/"), "", ""))


class MlflowRestClient:
    """MLflow tracking over HTTP with the standard library only. See the module docstring."""

    def __init__(self, tracking_uri: str, timeout_s: float = 5.0) -> None:
        self.tracking_uri = normalize_tracking_uri(tracking_uri)
        self.timeout_s = float(timeout_s)
        self._auth = auth_header()
        self._ssl_context: ssl.SSLContext | None = None
        if self.tracking_uri.startswith("https://"):
            if _truthy(os.environ.get("MLFLOW_TRACKING_INSECURE_TLS")):
                self._ssl_context = ssl._create_unverified_context()
            elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
                self._ssl_context = ssl.create_default_context(cafile=os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"])
        self._artifact_roots: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"MlflowRestClient({self.tracking_uri!r}, timeout_s={self.timeout_s})"

    def with_timeout(self, timeout_s: float) -> "MlflowRestClient":
        """The same client with another per-request timeout (shares the artifact-root cache)."""
        clone = object.__new__(MlflowRestClient)
        clone.__dict__.update(self.__dict__)
        clone.timeout_s = max(0.05, float(timeout_s))
        return clone

    # -- transport -----------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> bytes:
        headers = {"Accept": "application/json", "User-Agent": "airflow-adaptive-rest"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._auth:
            headers["Authorization"] = self._auth
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        shown = url.split("?", 1)[0]
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s, context=self._ssl_context) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, shown) from None
        except urllib.error.URLError as exc:
            raise MlflowUnavailable(f"MLflow at {self.tracking_uri} did not answer {method} {shown}: {exc.reason}") from exc
        except (TimeoutError, socket.timeout) as exc:
            raise MlflowUnavailable(
                f"MLflow at {self.tracking_uri} did not answer {method} {shown} within {self.timeout_s:g} s"
            ) from exc
        except (ConnectionError, http.client.HTTPException, OSError) as exc:
            raise MlflowUnavailable(f"MLflow at {self.tracking_uri} broke off {method} {shown}: {exc!r}") from exc

    def _http_error(self, exc: urllib.error.HTTPError, url: str) -> MlflowRestError:
        try:
            raw = exc.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        finally:
            exc.close()
        error_code = message = None
        try:
            payload = json.loads(raw.decode("utf-8", "replace")) if raw else {}
            if isinstance(payload, dict):
                error_code = payload.get("error_code")
                message = payload.get("message")
        except ValueError:
            pass
        detail = message or raw.decode("utf-8", "replace").strip()[:300] or exc.reason
        status = exc.code
        if status >= 500 or status == 429:
            return MlflowUnavailable(f"MLflow at {self.tracking_uri} answered HTTP {status} to {url}: {detail}")
        if status in (401, 403):
            return MlflowAuthError(
                f"MLflow at {self.tracking_uri} refused the credentials (HTTP {status}: {detail}); set "
                "MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, to ones "
                "this server accepts",
                status=status, error_code=error_code, url=url,
            )
        if status == 404 and not error_code:
            return MlflowRequestError(
                f"{url} is not an MLflow REST endpoint (HTTP 404): does the tracking URI "
                f"{self.tracking_uri} point at an MLflow server (including any path prefix)?",
                status=status, url=url,
            )
        return MlflowRequestError(
            f"MLflow at {self.tracking_uri} refused {url} (HTTP {status} {error_code or ''}): {detail}",
            status=status, error_code=error_code, url=url,
        )

    def _call(self, method: str, endpoint: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = self.tracking_uri + API + endpoint
        body = None
        if method == "GET":
            if payload:
                url += "?" + urllib.parse.urlencode(
                    {k: v for k, v in payload.items() if v is not None}, doseq=True
                )
        else:
            body = json.dumps(payload or {}, allow_nan=False).encode("utf-8")
        raw = self._send(method, url, body=body, content_type=None if body is None else "application/json")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise MlflowRequestError(
                f"{url.split('?', 1)[0]} did not answer JSON: does the tracking URI {self.tracking_uri} point "
                "at an MLflow server?", url=url,
            ) from exc
        return data if isinstance(data, dict) else {}

    def _run_call(self, run_id: str, method: str, endpoint: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return self._call(method, endpoint, payload)
        except MlflowRequestError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" and not isinstance(exc, RunNotFound):
                raise RunNotFound(run_id, self.tracking_uri) from None
            raise

    # -- runs ----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run as the server returns it: ``{"info": {...}, "data": {"metrics", "params", "tags"}}``."""
        run = self._run_call(run_id, "GET", "/runs/get", {"run_id": run_id}).get("run", {})
        info = run.get("info", {})
        if info.get("artifact_uri"):
            self._artifact_roots[run_id] = info["artifact_uri"]
        return run

    def create_run(
        self,
        experiment_id: str,
        tags: Mapping[str, str] | None = None,
        *,
        run_name: str | None = None,
        start_time_ms: int | None = None,
    ) -> dict[str, Any]:
        """A new RUNNING run; returns it like :meth:`get_run` (``run["info"]["run_id"]``)."""
        import time

        payload: dict[str, Any] = {
            "experiment_id": str(experiment_id),
            "start_time": int(start_time_ms if start_time_ms is not None else time.time() * 1000),
            "tags": [_wire_kv({"key": k, "value": v}) for k, v in (tags or {}).items()],
        }
        if run_name:
            payload["run_name"] = run_name
        run = self._call("POST", "/runs/create", payload).get("run", {})
        info = run.get("info", {})
        if info.get("run_id") and info.get("artifact_uri"):
            self._artifact_roots[info["run_id"]] = info["artifact_uri"]
        return run

    def log_batch(
        self,
        run_id: str,
        metrics: Sequence[Mapping[str, Any]] = (),
        params: Sequence[Mapping[str, Any]] = (),
        tags: Sequence[Mapping[str, Any]] = (),
    ) -> int:
        """Log metrics (``key, value, timestamp`` ms, ``step``), params and tags; returns requests sent.

        Split into as many requests as the server's limits need, sent in order; if one fails,
        the ones before it are committed (MLflow's SQL store ignores an identical metric row
        sent again, so re-sending the whole call is safe).
        """
        sent = 0
        for body in iter_batches(metrics, params, tags):
            self._run_call(run_id, "POST", "/runs/log-batch", {"run_id": run_id, **body})
            sent += 1
        return sent

    def set_terminated(self, run_id: str, status: str = "FINISHED", end_time_ms: int | None = None) -> dict[str, Any]:
        """End the run with ``status`` (FINISHED, FAILED, KILLED...) at ``end_time_ms``."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status must be one of {RUN_STATUSES}, got {status!r}")
        import time

        end = int(end_time_ms if end_time_ms is not None else time.time() * 1000)
        payload = {"run_id": run_id, "status": status, "end_time": end}
        return self._run_call(run_id, "POST", "/runs/update", payload).get("run_info", {})

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        """Every logged value of one metric: dicts with ``key, value, timestamp, step``."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            page = self._run_call(
                run_id, "GET", "/metrics/get-history",
                {"run_id": run_id, "metric_key": key, "max_results": HISTORY_PAGE, "page_token": token},
            )
            for m in page.get("metrics", []):
                out.append({
                    "key": m.get("key", key),
                    "value": float(m.get("value", 0.0)),
                    "timestamp": int(m.get("timestamp", 0)),
                    "step": int(m.get("step", 0)),
                })
            token = page.get("next_page_token")
            if not token:
                return out

    def search_runs(self, experiment_ids: Sequence[str], filter_string: str = "", max_results: int = 1000) -> list[dict[str, Any]]:
        """Runs matching ``filter_string`` (MLflow's search syntax), newest first, all pages."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            payload: dict[str, Any] = {"experiment_ids": [str(e) for e in experiment_ids], "filter": filter_string,
                                       "max_results": max_results, "order_by": ["attributes.start_time DESC"]}
            if token:
                payload["page_token"] = token
            page = self._call("POST", "/runs/search", payload)
            out.extend(page.get("runs", []))
            token = page.get("next_page_token")
            if not token:
                return out

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self._run_call(run_id, "POST", "/runs/set-tag", {"run_id": run_id, "key": key, "value": str(value)})

    # -- model registry --------------------------------------------------------------------

    def get_model_version_by_alias(self, name: str, alias: str) -> dict[str, Any]:
        """The model version ``alias`` points to now (``version``, ``run_id``, ``source``, ``tags``...)."""
        return self._call("GET", "/registered-models/alias", {"name": name, "alias": alias}).get("model_version", {})

    def get_model_version(self, name: str, version: str) -> dict[str, Any]:
        return self._call("GET", "/model-versions/get", {"name": name, "version": str(version)}).get("model_version", {})

    # -- experiments ---------------------------------------------------------------------

    def get_experiment_by_name(self, name: str) -> dict[str, Any] | None:
        """The experiment (``experiment_id``, ``name``, ...) or None when there is none."""
        try:
            return self._call("GET", "/experiments/get-by-name", {"experiment_name": name}).get("experiment")
        except MlflowRequestError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def create_experiment(self, name: str, artifact_location: str | None = None) -> str:
        """A new experiment (a classic-ML one: ``EXPERIMENT_KIND_TAGS``); returns its id."""
        payload: dict[str, Any] = {"name": name, "tags": [{"key": k, "value": v} for k, v in EXPERIMENT_KIND_TAGS.items()]}
        if artifact_location:
            payload["artifact_location"] = artifact_location
        return str(self._call("POST", "/experiments/create", payload)["experiment_id"])

    def ensure_experiment(self, name: str) -> str:
        """The id of the experiment called ``name``, created when missing."""
        found = self.get_experiment_by_name(name)
        if found:
            return str(found["experiment_id"])
        try:
            return self.create_experiment(name)
        except MlflowRequestError as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":  # somebody else just made it
                return str(self.get_experiment_by_name(name)["experiment_id"])  # type: ignore[index]
            raise

    # -- artifacts -----------------------------------------------------------------------

    def artifact_root(self, run_id: str) -> str:
        if run_id not in self._artifact_roots:
            self.get_run(run_id)
        root = self._artifact_roots.get(run_id)
        if not root:
            raise MlflowRequestError(f"MLflow at {self.tracking_uri} gave no artifact URI for run {run_id!r}")
        return root

    def upload_artifact(self, run_id: str, path: str, data: bytes) -> str:
        """Store ``data`` as artifact ``path`` of the run; returns where it went.

        Through the server's artifact proxy when the run's artifact root is
        ``mlflow-artifacts:/...``; written in place when it is a local path.
        """
        rel = _check_artifact_path(path)
        root = self.artifact_root(run_id)
        parsed = urllib.parse.urlsplit(root)
        if parsed.scheme == "mlflow-artifacts":
            base = urllib.parse.urlsplit(self.tracking_uri)
            netloc = parsed.netloc or base.netloc
            full = posixpath.normpath(f"{base.path}/{ARTIFACTS_API}/{parsed.path}/{rel}")
            url = urllib.parse.urlunsplit((base.scheme, netloc, urllib.parse.quote(full), "", ""))
            content_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
            try:
                self._send("PUT", url, body=bytes(data), content_type=content_type)
            except MlflowRequestError as exc:
                if exc.status == 404 and not exc.error_code:
                    raise ArtifactStoreUnsupported(
                        f"MLflow at {self.tracking_uri} does not proxy artifacts ({url} answered 404): start "
                        "the server with --serve-artifacts / --artifacts-destination",
                        status=404, url=url,
                    ) from None
                raise
            return f"{root.rstrip('/')}/{rel}"
        if parsed.scheme in ("", "file") and (parsed.scheme == "file" or os.path.isabs(root)):
            local_root = urllib.request.url2pathname(parsed.path) if parsed.scheme == "file" else root
            target = os.path.join(local_root, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".upload-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(bytes(data))
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return target
        raise ArtifactStoreUnsupported(
            f"run {run_id!r} keeps its artifacts at {root}, which this client cannot write to: it uploads "
            "through the MLflow server's artifact proxy (mlflow-artifacts:/, start the server with "
            "--artifacts-destination) or to a local path"
        )


def _check_artifact_path(path: str) -> str:
    rel = str(path).replace("\\", "/").strip("/")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ValueError(f"artifact path must be a relative path inside the run's artifacts, got {path!r}")
    return "/".join(parts)


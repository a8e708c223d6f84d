"""Registering profilers in MLflow and loading the one an alias points to, fast.

The operator sizes a stage from ``models:/job-profiler@champion`` in a fresh worker process,
so loading must be cheap and a promotion must take effect at once:

* the alias is resolved with ``get_model_version_by_alias`` on **every** call (one registry
  round trip), never cached;
* the resolved version's pickle is cached on disk under ``<home>/model-cache/<tracking uri
  hash>/<name>/<version>/profiler.pkl`` (a version's artifacts never change) and in memory;
  only a cache miss downloads anything. ``mlflow.pyfunc.load_model`` (environment checks,
  model-directory copies) stays off this path; the pickle it would unpickle is the same.

Registry failures become :class:`RegistryError` messages that say what to do. Reads fail fast
when the registry does not answer (no retry storm, short timeout) unless the user set
MLflow's own ``MLFLOW_HTTP_REQUEST_*`` variables.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from airflow_adaptive.adapters.mlflow import store
from airflow_adaptive.domain.errors import ModelNotFound, RegistryError
from airflow_adaptive.domain.stage_run import TAG_FEATURE_SCHEMA

DEFAULT_NAME = "job-profiler"
DEFAULT_URI = f"models:/{DEFAULT_NAME}@champion"
EXPERIMENT = "airflow-adaptive-profiler"
PROFILER_FILE = "profiler.pkl"
#: Reads give up after one quick retry and this many seconds per request.
FAST_FAIL_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_MISSING_CODES = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_memory: dict[tuple[str, str, str], Any] = {}


# ----------------------------------------------------------------------------- errors
@contextlib.contextmanager
def _fail_fast() -> Iterator[None]:
    """Short timeouts and no backoff for registry reads (MLflow reads these per request)."""
    added = {k: v for k, v in FAST_FAIL_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


_CAUSES = ("Connection refused", "timed out", "Name or service not known", "No route to host", "Max retries exceeded")


def _no_answer(uri: str, exc: BaseException) -> RegistryError:
    text = str(exc)
    cause = next((c for c in _CAUSES if c in text), text.splitlines()[0][:200] if text else type(exc).__name__)
    return RegistryError(
        f"the MLflow registry at {uri} did not answer ({cause}): start the MLflow server, or point "
        f"MLFLOW_TRACKING_URI at a running one (unset it to use the embedded store under {store.home()})"
    )


def _missing(name: str, alias: str | None, version: str | None, uri: str) -> RegistryError:
    what = f"no alias '{alias}'" if alias else f"no version {version}"
    return ModelNotFound(
        f"model '{name}' has {what} in the registry at {uri}: train and register one with "
        f"`airflow-adaptive train --trace ... --register {name}`"
        + (f", then `set_alias('{name}', '{alias}', <version>)` if it is not promoted" if alias else "")
    )


@contextlib.contextmanager
def _registry_errors(uri: str, name: str, alias: str | None = None, version: str | None = None) -> Iterator[None]:
    """Translate MLflow/network failures into RegistryError (missing thing vs no answer)."""
    from mlflow.exceptions import MlflowException

    try:
        with _fail_fast():
            yield
    except RegistryError:
        raise
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            raise _missing(name, alias, version, uri) from exc
        raise _no_answer(uri, exc) from exc
    except OSError as exc:  # requests' ConnectionError/Timeout derive from it
        raise _no_answer(uri, exc) from exc


# ----------------------------------------------------------------------------- aliases
def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/name@alias`` or ``models:/name/<version>`` -> (name, alias, version)."""
    match = _URI.match(uri)
    if not match:
        raise RegistryError(f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>")
    return match["name"], match["alias"], match["version"]


def resolve_alias(name: str, alias: str, client: Any = None) -> str:
    """The version ``alias`` points to now (asked of the registry every time)."""
    client = client or store.client()
    with _registry_errors(client.tracking_uri, name, alias=alias):
        return str(client.get_model_version_by_alias(name, alias).version)


def set_alias(name: str, alias: str, version: str | int) -> None:
    client = store.client()
    with _registry_errors(client.tracking_uri, name, version=str(version)):
        client.set_registered_model_alias(name, alias, str(version))


# ----------------------------------------------------------------------------- loading
def cache_path(tracking: str, name: str, version: str) -> Path:
    digest = hashlib.sha256(tracking.encode()).hexdigest()[:16]
    return store.home() / "model-cache" / digest / name / str(version) / PROFILER_FILE


def _download(client: Any, name: str, version: str, target: Path) -> None:
    """Fetch the version's ``artifacts/profiler.pkl`` into ``target`` (atomically)."""
    from mlflow.artifacts import download_artifacts

    # One small file: MLflow's progress bar goes to stderr, which the Airflow UI shows as an
    # ERROR line in the task log. A user's own setting is kept.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    with _registry_errors(client.tracking_uri, name, version=version):
        root = client.get_model_version_download_uri(name, version)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            local = download_artifacts(
                artifact_uri=f"{root.rstrip('/')}/artifacts/{PROFILER_FILE}",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            os.replace(local, target)


def load_profiler(uri: str = DEFAULT_URI) -> tuple[Any, str]:
    """The profiler ``uri`` names and its version: alias resolved now, artifact from cache.

    Against an MLflow server the alias is resolved over REST and a cached version is read
    without importing mlflow (the operator's 1 s sizing budget); only a cache miss, or a local
    store (SQLite, files), goes through MLflow's client.
    """
    from airflow_adaptive.adapters.mlflow.profiler_pickle import read_profiler

    name, alias, version = parse_model_uri(uri)
    tracking = store.tracking_uri()
    client = None
    if alias and store.is_remote(tracking):
        version = _resolve_alias_rest(tracking, name, alias)
    elif alias:
        client = store.client(tracking)
        version = resolve_alias(name, alias, client)
    key = (tracking, name, str(version))
    if key in _memory:
        return _memory[key], str(version)
    path = cache_path(*key)
    if not path.exists():
        _download(client or store.client(tracking), name, str(version), path)
    profiler = read_profiler(path)
    _memory[key] = profiler
    return profiler, str(version)


def _resolve_alias_rest(tracking: str, name: str, alias: str) -> str:
    from airflow_adaptive.adapters.mlflow.rest import MlflowRequestError, MlflowRestClient, MlflowUnavailable

    rest = MlflowRestClient(tracking, timeout_s=float(FAST_FAIL_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"]))
    try:
        found = rest.get_model_version_by_alias(name, alias)
    except MlflowUnavailable as exc:
        raise _no_answer(tracking, exc) from exc
    except MlflowRequestError as exc:
        if exc.error_code in _MISSING_CODES or exc.status == 404:
            raise _missing(name, alias, None, tracking) from exc
        raise RegistryError(f"the MLflow registry at {tracking} refused to resolve {name}@{alias}: {exc}") from exc
    if not found.get("version"):
        raise _missing(name, alias, None, tracking)
    return str(found["version"])


# ----------------------------------------------------------------------------- logging
def log_profiler(
    profiler: Any,
    name: str = DEFAULT_NAME,
    metrics: Mapping[str, float] | None = None,
    plot_path: str | None = None,
    register: bool = True,
    experiment: str = EXPERIMENT,
) -> tuple[str, str | None]:
    """Log ``profiler`` as a pyfunc run (schema, params, metrics, plot) and register it.

    Returns ``(run_id, version)``; ``version`` is None when ``register`` is False. The new
    version gets no alias: promotion is a separate, deliberate step (:func:`set_alias`).
    """
    import mlflow
    from mlflow.models import infer_signature

    from airflow_adaptive.adapters.mlflow.pyfunc_model import (
        ARTIFACT_KEY,
        ProfilerPyfunc,
        dump_profiler,
        example_frame,
        predict_frame,
    )

    uri = store.configure()
    client = store.client(uri)
    with _registry_errors(uri, name):  # also a quick "is anyone there" before the uploads
        experiment_id = store.ensure_experiment(client, experiment)
    example = example_frame(profiler)
    signature = infer_signature(example, predict_frame(profiler, example))
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id) as run:
        pickled = Path(tmp) / PROFILER_FILE
        dump_profiler(profiler, pickled)
        mlflow.set_tag(TAG_FEATURE_SCHEMA, profiler.schema_.id)
        mlflow.log_params({k: str(v) for k, v in profiler.get_params().items()})
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_dict(profiler.schema_.to_dict(), "feature_schema.json")
        if plot_path:
            mlflow.log_artifact(plot_path)
        info = mlflow.pyfunc.log_model(
            name="profiler",
            python_model=ProfilerPyfunc(),
            artifacts={ARTIFACT_KEY: str(pickled)},
            signature=signature,
            input_example=example,
            # Explicit, so MLflow does not load the model in a subprocess to guess them.
            pip_requirements=_requirements(),
            registered_model_name=name if register else None,
        )
    version = getattr(info, "registered_model_version", None)
    return run.info.run_id, (str(version) if version is not None else None)


def _requirements() -> list[str]:
    """Pinned third-party versions the pickle needs. ``airflow-adaptive`` itself is left out on
    purpose: it is not on a public index, so the serving image must install it (see pyfunc_model)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for dist in ("mlflow", "scikit-learn", "numpy", "pandas"):
        try:
            out.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            pass
    return out

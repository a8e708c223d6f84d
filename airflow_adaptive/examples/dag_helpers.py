"""What the example DAGs share: their run-time params and the templated ``container_resources``
that lets run conf override the author's request (how ``airflow-adaptive demo`` plays the
static baselines)."""

from __future__ import annotations

from typing import Any, Mapping

N_FEATURES = 32  # columns of the generated data; see examples/pipeline.py


def pipeline_params(default_rows: int, workdir: str) -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "data_rows": Param(default_rows, type="integer", minimum=1000, description="rows of generated training data"),
        "sizing_mode": Param("adaptive", enum=["adaptive", "shadow", "off"]),
        "resources": Param({}, type="object", description="per-task override of container_resources"),
        "workdir": Param(workdir, type="string"),
        "seed": Param(0, type="integer"),
    }


def templated_resources(task_id: str, request: Mapping[str, Mapping[str, str]]) -> dict:
    """Templated: the run conf's ``resources.<task>`` when given, else the author's ``request``."""
    return {kind: {r: f"{{{{ params.resources.get('{task_id}', {{}}).get('{kind}', {{}}).get('{r}', '{v}') }}}}"
                   for r, v in request[kind].items()} for kind in ("requests", "limits")}


def pipeline_features(algorithm: str) -> dict[str, Any]:
    """The stage's features in the ``stage/1`` schema, from the run's params."""
    return {"algorithm": algorithm, "framework": "sklearn", "data_rows": "{{ params.data_rows }}",
            "data_bytes": f"{{{{ params.data_rows * {N_FEATURES} * 8 }}}}", "n_features": N_FEATURES, "epochs": 1}


#: The stage's working directory: one per DAG run.
WORKDIR_ARG = "{{ params.workdir }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"

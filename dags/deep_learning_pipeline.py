"""Deep-learning stages sized by airflow-adaptive: a ResNet and a transformer language model.

Two independent ``AdaptiveTrainingOperator`` stages (``airflow_adaptive/examples/deep_learning.py``,
PyTorch: the ``dl`` extra) train on generated data. Their memory follows the features their author
declares -- parameters, batch size, image size or sequence length, precision, optimizer -- as
``benchmarks/deep_learning_memory.py`` measured; run conf changes the batch size, the sizes and the
precision from run to run, which is what one fixed ``container_resources`` cannot follow.

The architecture (width, depth) is fixed per task, so the ``parameters`` feature is computed when
the DAG is parsed, without importing PyTorch (``parameter_count``); the stage prints the count it
really built, and the tests check the two agree.

``--device auto``: on a node with a GPU (and a pod that requests one) the same command trains on
CUDA, and GPU memory is then what grows with the batch.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_adaptive.adapters.mlflow.store import home
from airflow_adaptive.examples.dag_helpers import WORKDIR_ARG, templated_resources
from airflow_adaptive.examples.deep_learning import PRECISIONS, Config, OPTIMIZERS, parameter_count
from airflow_adaptive.operators import AdaptiveTrainingOperator

IMAGE = "ghcr.io/airflow-adaptive/pipeline:0.1.0"
#: The architecture of each task (fixed: it sets the parameter count) and the run param that is its
#: size feature. Requests are the author's own guess (prior) and ceiling (bound): peak RSS measured
#: 0.9-1.4 GiB at the grid's sizes on CPU (benchmarks/results/deep_learning_memory.json).
STAGES = {
    "train_resnet": (Config(arch="resnet", batch_size=32, width=32, depth=18, classes=10), "image_size",
                     {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}),
    "train_transformer": (Config(arch="transformer", batch_size=16, width=128, depth=2, heads=4, vocab=1024), "sequence_length",
                          {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}),
}


def _arguments(config: Config, size_feature: str) -> list[str]:
    arch = ["--width", str(config.width), "--depth", str(config.depth)]
    arch += ["--classes", str(config.classes)] if config.arch == "resnet" else ["--heads", str(config.heads), "--vocab", str(config.vocab)]
    return [*arch, "--batch-size", "{{ params.batch_size }}", f"--{size_feature.replace('_', '-')}", f"{{{{ params.{size_feature} }}}}",
            "--precision", "{{ params.precision }}", "--optimizer", "{{ params.optimizer }}", "--steps", "{{ params.steps }}",
            "--seed", "{{ params.seed }}", "--device", "auto", "--workdir", f"{WORKDIR_ARG}/{config.arch}"]


def _features(config: Config, size_feature: str) -> dict:
    return {"algorithm": config.algorithm, "framework": "pytorch", "model_family": config.arch,
            "parameters": parameter_count(config), "batch_size": "{{ params.batch_size }}",
            size_feature: f"{{{{ params.{size_feature} }}}}", "precision": "{{ params.precision }}",
            "optimizer": "{{ params.optimizer }}", "world_size": 1, "epochs": 1}


with DAG(
    dag_id="deep_learning_pipeline",
    description="a ResNet and a transformer, each stage sized by the Job Profiler from its features",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["airflow-adaptive", "example", "deep-learning"],
    default_args={"retries": 1, "retry_delay": timedelta(seconds=1)},
    params={
        "batch_size": Param(32, type="integer", minimum=1, maximum=1024, description="samples per step"),
        "image_size": Param(32, type="integer", minimum=8, maximum=512, description="ResNet input side (pixels)"),
        "sequence_length": Param(64, type="integer", minimum=2, maximum=4096, description="transformer tokens per sample"),
        "precision": Param("fp32", enum=list(PRECISIONS), description="fp16 needs a GPU"),
        "optimizer": Param("adam", enum=list(OPTIMIZERS)),
        "steps": Param(10, type="integer", minimum=0, maximum=10_000),
        "sizing_mode": Param("adaptive", enum=["adaptive", "shadow", "off"]),
        "resources": Param({}, type="object", description="per-task override of container_resources"),
        "workdir": Param(str(home() / "deep-learning-data"), type="string"),
        "seed": Param(0, type="integer"),
    },
) as dag:
    for task_id, (config, size_feature, request) in STAGES.items():
        AdaptiveTrainingOperator(
            task_id=task_id,
            image=IMAGE,
            cmds=["python", "-m", "airflow_adaptive.examples.deep_learning", config.arch],
            arguments=_arguments(config, size_feature),
            features=_features(config, size_feature),
            container_resources=templated_resources(task_id, request),
            sizing_mode="{{ params.sizing_mode }}",
            env_vars={"OMP_NUM_THREADS": "2"},
        )

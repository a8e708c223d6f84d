"""Runs stages through the operator's local path (``operators/local.run_stage_locally``, the local
Resource Manager with its default GPU reader) in this one process, with the stand-in NVML
library on ``LD_LIBRARY_PATH`` (pynvml loads it once per process), and prints what each try
handed to its stage-run writer as JSON on stdout.

argv[1] is a JSON plan::

    {"stages": [{"task_id": "train", "cmd": [...], "features": {...}}, ...], "interval_s": 0.2}

Output: ``{"runs": [{"task_id", "features", "metrics" (the summary's stage-run metrics),
"usage" (sample values), "xcom", "log" ([level, message] of airflow_adaptive's loggers)}]}``.
Only the Airflow operator object is replaced, by the attributes the local path reads.
"""

from __future__ import annotations

import json
import logging
import sys
from types import SimpleNamespace


from log_collect import Collect  # noqa: E402 (beside this script: its folder is on sys.path)


class _RunLog:
    """What ``StageRunLog`` is asked to write for one try."""

    def __init__(self) -> None:
        self.usage, self.metrics, self.summary, self.oom = [], {}, None, []

    def log_usage(self, run_id, samples) -> None:
        self.usage.extend(dict(s.values) for s in samples)

    def log_resizes(self, run_id, resizes) -> None:
        pass

    def log_metrics(self, run_id, metrics) -> None:
        self.metrics.update(metrics)

    def record_oom(self, run_id, events, peak=None) -> None:
        self.oom.extend(e.to_dict() for e in events)

    def finish(self, run_id, summary) -> None:
        self.summary = summary


def main() -> None:
    plan = json.loads(sys.argv[1])
    collect = Collect()
    logger = logging.getLogger("airflow_adaptive")
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    logger.propagate = False

    from airflow_adaptive.domain.resources import ResourceVector
    from airflow_adaptive.logic.sizing import ContainerSize
    from airflow_adaptive.logic.stage_plan import StagePlan
    from airflow_adaptive.operators.local import run_stage_locally
    from airflow_adaptive.operators.try_state import StageRunRef, TryState

    runs = []
    for i, stage in enumerate(plan["stages"]):
        collect.records = []
        requests = ResourceVector(cpu=1.0, memory=256 * 2**20)
        limits = ResourceVector(cpu=1.0, memory=1024 * 2**20)
        stage_plan = StagePlan(mode="adaptive", size=ContainerSize(requests, limits, None, ()), policy_size=None,
                               requested=requests, limited=limits, profile=None)
        operator = SimpleNamespace(
            log=logging.getLogger("airflow_adaptive.task"), image="unused", task_id=stage["task_id"],
            policy=SimpleNamespace(maximum=None), cmds=stage["cmd"][:1], arguments=stage["cmd"][1:],
            monitor_interval=float(plan.get("interval_s", 0.2)), base_container_name="base", env_vars=None,
        )
        xcom = {}
        context = {"ti": SimpleNamespace(dag_id="gpu_stages", xcom_push=lambda key, value: xcom.__setitem__(key, value))}
        state = TryState(try_number=1, stage_run=StageRunRef(f"run-{i}", "file:///unused", "stages"))
        run_log = _RunLog()
        result = run_stage_locally(operator, context, stage_plan, state, run_log)
        runs.append({
            "task_id": stage["task_id"], "features": stage.get("features", {}), "exit_code": result.exit_code,
            "metrics": run_log.summary.metrics() if run_log.summary else None,
            "usage": run_log.usage, "xcom": xcom.get("adaptive_run"), "log": collect.records,
        })
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()

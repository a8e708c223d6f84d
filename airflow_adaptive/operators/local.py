"""The operator's local path: a stage's command under the local Resource Manager.

Used when no Kubernetes is configured (the embedded default). The command is the task's
``cmds`` + ``arguments``, run in the worker's Python environment; the plan's limits are the
cgroup's starting limits, its bounds the user's limits, and in ``adaptive`` mode the monitor
resizes in place. Afterwards the usage series, the resizes, an OOM kill (before Airflow can
retry) and the summary go to the stage's MLflow run.

Each try runs in a scratch directory of its own, created empty and removed afterwards: its
working directory and its ``TMPDIR``, as a container's writable layer is a pod's. What the stage
leaves there is its ephemeral storage, measured by the runner's walks (``ephemeral_storage``);
data that must outlive the try goes to a path the task names (the example pipeline's
``--workdir``), as on Kubernetes it goes to a volume.

GPUs: the runner samples NVML for the workload's own processes (``runtime/gpu.py``), so
``gpu`` and ``gpu_memory`` reach the usage series and the observed peaks the profiler learns
from; on a worker without NVML the task log says so once and no GPU usage is recorded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.domain.quantities import format_memory
from airflow_adaptive.domain.stage_run import ObservedSummary
from airflow_adaptive.logic.deviation import Bounds
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.logic.stage_plan import StagePlan, local_allocation
from airflow_adaptive.operators.try_state import TryState


@dataclass
class LocalResult:
    exit_code: int
    oom_killed: bool
    limit_text: str
    summary: dict[str, Any]


@dataclass
class _CapturedUsage:
    """The monitor's usage log in memory: the operator writes it to MLflow after the run, through
    whichever backend the tracking URI needs (the runner's REST spool needs a server)."""

    samples: list[UsageSample] = field(default_factory=list)
    summary: ObservedSummary | None = None

    def log_sample(self, sample: UsageSample) -> None:
        self.samples.append(sample)

    def maybe_flush(self) -> None:
        pass

    def log_summary(self, summary: ObservedSummary) -> bool:
        self.summary = summary
        return True

    def close(self, timeout_s: float = 10.0) -> bool:
        return True


def _host_limits() -> tuple[float, float]:
    return float(os.cpu_count() or 1), float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def run_stage_locally(operator, context, plan: StagePlan, state: TryState, run_log=None) -> LocalResult:
    """Run the task's command under the local Resource Manager; ``run_log`` (a ``StageRunLog``)
    writes the try's usage to ``state.stage_run`` afterwards (none: nothing is recorded)."""
    log = operator.log
    log.info("no Kubernetes configured: running the stage's command under the local Resource Manager; "
             "image %s is not used (the worker's own Python environment runs it)", operator.image)
    host_cpu, host_memory = _host_limits()
    start, maximum = local_allocation(plan, ResourceVector(cpu=host_cpu, memory=host_memory), operator.policy.maximum)
    cpu, memory = start.cpu, start.memory
    if not (plan.size.requests.memory or plan.size.limits.memory):
        log.warning("task '%s' has no memory request or prediction: starting at the host's %s", operator.task_id, format_memory(host_memory))
    ti = context["ti"]
    scratch = tempfile.mkdtemp(prefix=f"airflow-adaptive-{ti.dag_id}.{operator.task_id}.try{state.try_number}-")
    try:
        return _run_in(scratch, operator, plan, state, run_log, cpu, memory, maximum, ti)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # the try's ephemeral storage goes with it, as a pod's


def _run_in(scratch: str, operator, plan: StagePlan, state: TryState, run_log, cpu: float, memory: float,
            maximum: dict[str, float], ti) -> LocalResult:
    from airflow_adaptive.operators.training import python_command
    from airflow_adaptive.runtime.local_runner import RunSpec, run_local

    log = operator.log
    spec = RunSpec(
        command=python_command(operator.cmds, operator.arguments), cpu=cpu, memory=memory,
        profile=plan.profile, resize=plan.resizable, interval_s=operator.monitor_interval,
        bounds=Bounds(minimum={"memory": plan.memory_floor} if plan.memory_floor else {}, maximum=maximum), container=operator.base_container_name,
        try_number=state.try_number, workdir=scratch,
    )
    usage = _CapturedUsage()
    scratch_env = {"TMPDIR": scratch, "TMP": scratch, "TEMP": scratch}
    report = run_local(spec, usage_log=usage, env={**os.environ, **scratch_env, **_env(operator)})
    for r in report.resizes:
        log.info("resize %s %s -> %s: %s", r["resource"], r["old"], r["new"], r["reason"])
    _emit_metrics(plan, report, usage, ti.dag_id, operator.task_id)
    summary = {
        "exit_code": report.exit_code, "oom_killed": report.oom_killed, "mode": report.mode,
        "peak_memory_bytes": report.peak_memory_bytes, "resizes": len(report.resizes),
        "reserved_memory_byte_seconds": report.reserved_memory_byte_seconds,
        "reserved_cpu_core_seconds": report.reserved_cpu_core_seconds,
        "duration_seconds": report.duration_seconds, "final_allocation": report.final_allocation,
        "started_with": {"cpu": cpu, "memory": memory},
    }
    gpu_peak = {r: v for r, v in (usage.summary.peak if usage.summary else {}).items() if r in ("gpu", "gpu_memory")}
    if gpu_peak:
        summary["peak_gpu"] = gpu_peak
        log.info("stage %s: peak GPU use %.2f GPUs, %s GPU memory", operator.task_id, gpu_peak.get("gpu", 0.0),
                 format_memory(gpu_peak["gpu_memory"]) if "gpu_memory" in gpu_peak else "unknown")
    ti.xcom_push(key="adaptive_run", value=summary)
    log.info("stage %s: %s, peak memory %s, %d resize(s), %s reserved", operator.task_id,
             "OOM-killed" if report.oom_killed else f"exit {report.exit_code}", format_memory(report.peak_memory_bytes),
             len(report.resizes), f"{report.reserved_memory_byte_seconds / 2**30:.2f} GiB-s")
    if state.stage_run is not None and run_log is not None:
        _log_to_mlflow(operator.log, run_log, state.stage_run.run_id, usage, report, {"cpu": cpu, "memory": memory})
    return LocalResult(report.exit_code, report.oom_killed, format_memory(report.final_allocation.get("memory", memory)), summary)


def _emit_metrics(plan: StagePlan, report, usage: _CapturedUsage, dag_id: str, task_id: str) -> None:
    """The try's resizes, OOM kill and peaks against the prediction (``airflow_adaptive/metrics.py``)."""
    from airflow_adaptive import metrics

    metrics.record(metrics.resize_outcomes, report.resizes)
    if report.oom_killed:
        metrics.record(metrics.oom_kill, "kernel", dag_id, task_id)
    peak = usage.summary.peak if usage.summary else {"memory": report.peak_memory_bytes}
    metrics.record(metrics.profile_vs_observed, plan.profile, peak, dag_id, task_id)


def _env(operator) -> dict[str, str]:
    """The task's ``env_vars`` (plain name/value pairs) for the child process."""
    out = {}
    for item in operator.env_vars or []:
        name = getattr(item, "name", None) or (item.get("name") if isinstance(item, dict) else None)
        value = getattr(item, "value", None) if not isinstance(item, dict) else item.get("value")
        if name and value is not None:
            out[name] = value
    if isinstance(operator.env_vars, dict):
        out.update(operator.env_vars)
    return out


def _log_to_mlflow(log, run_log, run_id: str, usage: _CapturedUsage, report, started: dict[str, float]) -> None:
    try:
        run_log.log_usage(run_id, usage.samples)
        run_log.log_resizes(run_id, report.resizes)
        run_log.log_metrics(run_id, {
            "reserved.memory_byte_seconds": report.reserved_memory_byte_seconds,
            "reserved.cpu_core_seconds": report.reserved_cpu_core_seconds,
            **{f"final.{r}": v for r, v in report.final_allocation.items()},
            **{f"started.{r}": v for r, v in started.items()},
        })
        if usage.summary is not None:
            if usage.summary.oom_events:
                run_log.record_oom(run_id, usage.summary.oom_events, usage.summary.peak.get("memory"))
            run_log.finish(run_id, usage.summary)
    except Exception as exc:  # noqa: BLE001 - the stage's outcome must not depend on MLflow
        log.warning("cannot write the stage's usage to MLflow run %s (%s); the run report is in XCom 'adaptive_run'", run_id, exc)

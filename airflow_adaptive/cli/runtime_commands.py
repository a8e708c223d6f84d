"""``airflow-adaptive run`` (the local Resource Manager) and ``airflow-adaptive monitor`` (the sidecar).

Both import only the lean runtime modules: the sidecar's budget is 60 MiB resident.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.quantities import cpu_cores, memory_bytes

log = logging.getLogger("airflow_adaptive.cli")


def load_profile(source: str, stage: str | None = None, where: str = "--profile") -> PredictedProfile:
    """A profile from a file path or inline JSON: a bare profile, or ``predict``'s {stage: profile}."""
    from airflow_adaptive.adapters.files import is_file, parse_json, read_text

    text = source
    if not source.lstrip().startswith("{"):
        if not is_file(source):
            raise UserError(f"{where} {source[:200]}: no such file; write one with `airflow-adaptive predict`")
        text = read_text(source, f"{where} {source}")
    data = parse_json(text, f"{where} {source[:80]}")
    if isinstance(data, dict) and "resources" not in data:
        stages = {k: v for k, v in data.items() if isinstance(v, dict)}
        if stage is None and len(stages) == 1:
            data = next(iter(stages.values()))
        elif stage in stages:
            data = stages[stage]
        else:
            raise UserError(f"{where}: holds stages {sorted(stages)}; pick one with --stage")
    try:
        return PredictedProfile.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:  # Overflow: float(10**400)
        raise UserError(f"{where}: not a predicted profile ({type(exc).__name__}: {exc}); "
                        "expected {\"coverage\": ..., \"resources\": {\"memory\": {\"median\": ..., \"upper\": ...}}}") from exc


def _memory_bytes(text: str, flag: str) -> float:
    """A memory flag in bytes, as a float: an amount past float range (1e1000) is a user's mistake."""
    try:
        return float(memory_bytes(text, flag))
    except OverflowError:
        raise UserError(f"{flag}: {text!r} is too large to be a memory amount") from None


def _allocation(args, profile: PredictedProfile | None) -> tuple[float, float]:
    cpu = cpu_cores(args.cpu, "--cpu") if args.cpu is not None else None
    memory = _memory_bytes(args.memory, "--memory") if args.memory is not None else None
    if profile is not None:
        if cpu is None and "cpu" in profile.resources:
            cpu = profile.resources["cpu"].upper
        if memory is None and "memory" in profile.resources:
            memory = profile.resources["memory"].upper
    if cpu is None or memory is None:
        missing = " and ".join(n for n, v in (("--cpu", cpu), ("--memory", memory)) if v is None)
        raise UserError(f"give {missing} (e.g. --cpu 2 --memory 1Gi), or a --profile that predicts it")
    if not cpu > 0 or not memory > 0:
        raise UserError(f"limits must be greater than 0: --cpu {cpu}, --memory {memory:.0f} bytes")
    return cpu, memory


#: Bandwidths beyond this are a mistake (the kernel's rule files hold a u64; 2**62 B/s is 4 EiB/s).
MAX_BANDWIDTH = 2**62


def _bandwidth(text: str, flag: str) -> float:
    """A disk bandwidth flag in bytes/s: a Kubernetes quantity of bytes, "/s" optional (8Mi, 8Mi/s, 500k)."""
    amount = memory_bytes(text[:-2] if text.endswith("/s") else text, flag)
    if amount > MAX_BANDWIDTH:
        raise UserError(f"{flag}: {text!r} is too large to be a disk bandwidth (bytes/s)")
    if amount < 1:
        raise UserError(f"{flag}: {text!r} must be at least 1 byte/s (e.g. 8Mi for 8 MiB/s)")
    return float(amount)


def _disk_limits(args) -> dict[str, float]:
    """``--disk-read-limit`` / ``--disk-write-limit`` (run only): resource -> bytes/s."""
    out = {}
    for r, flag, attr in (("disk_read", "--disk-read-limit", "disk_read_limit"),
                          ("disk_write", "--disk-write-limit", "disk_write_limit")):
        text = getattr(args, attr, None)
        if text is not None:
            out[r] = _bandwidth(text, flag)
    return out


def _bounds(args):
    from airflow_adaptive.logic.deviation import Bounds

    maximum = {
        "cpu": cpu_cores(args.max_cpu, "--max-cpu") if args.max_cpu else float(os.cpu_count() or 1),
        "memory": _memory_bytes(args.max_memory, "--max-memory") if args.max_memory else _host_memory(),
    }
    minimum = {"memory": _memory_bytes(args.min_memory, "--min-memory")} if args.min_memory else {}
    if minimum and minimum["memory"] > maximum["memory"]:
        raise UserError(f"--min-memory {args.min_memory} is above --max-memory ({maximum['memory']:.0f} bytes)")
    start = _disk_limits(args)
    for r, flag, attr in (("disk_read", "--max-disk-read", "max_disk_read"), ("disk_write", "--max-disk-write", "max_disk_write")):
        text = getattr(args, attr, None)
        if text is None:
            continue
        limit_flag = flag.replace("--max-", "--") + "-limit"
        if r not in start:
            raise UserError(f"{flag} bounds the raises of {limit_flag}: give {limit_flag} too")
        maximum[r] = _bandwidth(text, flag)
        if maximum[r] < start[r]:
            raise UserError(f"{flag} {text} is below {limit_flag} ({start[r]:.0f} bytes/s)")
    return Bounds(minimum=minimum, maximum=maximum)


def _host_memory() -> float:
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _usage_log(args, strict: bool = True):
    """The stage run's usage log; ``strict`` (run) refuses a bad run id before the workload starts,
    the sidecar logs it and keeps its samples in the spool (a monitor fault never stops the workload)."""
    if not args.run_id:
        return None
    if not args.mlflow_uri:
        raise UserError("--run-id needs --mlflow-uri (or MLFLOW_TRACKING_URI): where is the MLflow server?")
    from airflow_adaptive.runtime.usage_logging import open_usage_log

    return open_usage_log(args.mlflow_uri, args.run_id, args.spool_dir, strict=strict)


def cmd_run(args) -> int:
    from airflow_adaptive.runtime.local_runner import RunSpec, run_local

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    profile = load_profile(args.profile, args.stage) if args.profile else None
    cpu, memory = _allocation(args, profile)
    require = args.require_cgroups or os.environ.get("AIRFLOW_ADAPTIVE_REQUIRE_CGROUPS") == "1"
    disk = _disk_limits(args)
    spec = RunSpec(command=command, cpu=cpu, memory=memory, profile=profile, resize=not args.no_resize,
                   interval_s=args.interval, bounds=_bounds(args), require_cgroups=require,
                   disk_read_bps=disk.get("disk_read"), disk_write_bps=disk.get("disk_write"))
    # GPUs: the runner opens NVML for the workload's processes itself (runtime/gpu.py).
    report = run_local(spec, usage_log=_usage_log(args))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
    state = "OOM-killed" if report.oom_killed else f"exit {report.exit_code}"
    print(f"airflow-adaptive run: {state}; {len(report.resizes)} resize(s); peak memory "
          f"{report.peak_memory_bytes / 2**20:.0f} MiB; {report.mode}", file=sys.stderr)
    return report.exit_code


def cmd_monitor(args) -> int:
    from airflow_adaptive.domain.monitor_protocol import WORKLOAD_ENV
    from airflow_adaptive.runtime.channels import channel_named
    from airflow_adaptive.runtime.gpu import workload_gpu_reader
    from airflow_adaptive.runtime.sidecar import SidecarSpec, run_sidecar

    profile = load_profile(args.profile, args.stage) if args.profile else None
    cpu, memory = _allocation(args, profile)
    marker = args.workload_env or f"{WORKLOAD_ENV}={args.container or 'base'}"
    spec = SidecarSpec(allocation={"cpu": cpu, "memory": memory}, profile=profile, target_pid=args.target_pid,
                       workload_marker=marker, interval_s=args.interval, wait_s=args.wait,
                       container=args.container or "base", bounds=_bounds(args))
    if args.pod:
        log.info("monitor for pod %s/%s container %s", args.namespace, args.pod, spec.container)
    from airflow_adaptive.domain.monitor_protocol import new_boot

    boot = new_boot()  # tells this process's lines from a restarted monitor's
    usage_log = _usage_log(args, strict=False)
    if usage_log is None and args.channel in ("stdout", "recommend"):
        from airflow_adaptive.runtime.usage_logging import StdoutUsageLog

        usage_log = StdoutUsageLog(boot=boot)  # the operator reads the samples with the signals and writes the run
    return run_sidecar(spec, channel_named(args.channel, boot=boot), usage_log=usage_log, gpu_for=workload_gpu_reader,
                       boot=boot)


def _env(name: str, default=None):
    return os.environ.get(name, default)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _common(p: argparse.ArgumentParser, env: bool) -> None:
    e = _env if env else (lambda name, default=None: default)
    p.add_argument("--cpu", default=e("AIRFLOW_ADAPTIVE_CPU"), help="CPU limit at start, cores or Kubernetes quantity (2, 500m)")
    p.add_argument("--memory", default=e("AIRFLOW_ADAPTIVE_MEMORY"), help="memory limit at start (1Gi, 512Mi, bytes)")
    p.add_argument("--profile", default=e("AIRFLOW_ADAPTIVE_PROFILE"), help="predicted profile: JSON file or inline JSON (`airflow-adaptive predict` output)")
    p.add_argument("--stage", help="which stage of a multi-stage profile file")
    p.add_argument("--max-cpu", default=e("AIRFLOW_ADAPTIVE_MAX_CPU"), help="upper bound for resizes (default: the host's cores)")
    p.add_argument("--max-memory", default=e("AIRFLOW_ADAPTIVE_MAX_MEMORY"), help="upper bound for resizes (default: the host's memory)")
    p.add_argument("--min-memory", default=e("AIRFLOW_ADAPTIVE_MIN_MEMORY"),
                   help="lower bound for memory decreases (a retry after an OOM kill: its escalated limit)")
    p.add_argument("--interval", type=_positive_float, default=e("AIRFLOW_ADAPTIVE_INTERVAL", "1.0"), help="sampling interval in seconds (default 1)")
    p.add_argument("--mlflow-uri", default=_env("MLFLOW_TRACKING_URI"), help="MLflow server (http[s]://...) for usage logging")
    p.add_argument("--run-id", default=_env("AIRFLOW_ADAPTIVE_RUN_ID"), help="the stage's MLflow run id; usage goes there")
    p.add_argument("--spool-dir", default=_env("AIRFLOW_ADAPTIVE_SPOOL", ".airflow-adaptive/spool"), help="where samples wait while MLflow does not answer")


def add_parsers(sub) -> None:
    p = sub.add_parser("run", help="run a command in its own cgroup with predicted limits, resized in place",
                       usage="airflow-adaptive run --cpu 2 --memory 1Gi [--profile PROFILE.json] [--no-resize] [--disk-read-limit 8Mi] [--json OUT.json] -- CMD ARGS...")
    _common(p, env=False)
    p.add_argument("--no-resize", action="store_true", help="keep the starting limits (observe and recommend only)")
    p.add_argument("--json", metavar="OUT.json", help="write the machine-readable run report")
    p.add_argument("--require-cgroups", action="store_true", help="fail instead of running monitor-only without cgroups")
    p.add_argument("--disk-read-limit", metavar="BYTES/S",
                   help="disk read bandwidth limit at start (8Mi = 8 MiB/s) on the disk holding the working directory; "
                        "raised in place while the stage is held at it")
    p.add_argument("--disk-write-limit", metavar="BYTES/S",
                   help="disk write bandwidth limit at start; on cgroup v1 only writes the stage itself sends to the disk "
                        "(O_DIRECT, fsync) are limited, not buffered writes the kernel writes back later")
    p.add_argument("--max-disk-read", metavar="BYTES/S", help="upper bound for raises of --disk-read-limit (default: none)")
    p.add_argument("--max-disk-write", metavar="BYTES/S", help="upper bound for raises of --disk-write-limit (default: none)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="CMD", help="the command, after --")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("monitor", help="the monitor sidecar: sample the workload container, emit resize signals")
    _common(p, env=True)
    p.add_argument("--pod", default=_env("POD_NAME"), help="pod name (for the log)")
    p.add_argument("--namespace", default=_env("POD_NAMESPACE"), help="pod namespace (for the log)")
    p.add_argument("--container", default=_env("AIRFLOW_ADAPTIVE_CONTAINER"), help="the workload container's name (default base)")
    p.add_argument("--channel", choices=("stdout", "recommend"), default=_env("AIRFLOW_ADAPTIVE_CHANNEL", "stdout"),
                   help="stdout: JSON signal lines for the operator to read via pods/log; recommend: log only")
    p.add_argument("--target-pid", type=int, help="monitor this PID instead of searching by environment marker")
    p.add_argument("--workload-env", default=_env("AIRFLOW_ADAPTIVE_WORKLOAD_ENV"), help="KEY=VALUE marking the workload process (default AIRFLOW_ADAPTIVE_WORKLOAD=<container>)")
    p.add_argument("--wait", type=_positive_float, default=120.0, help="seconds to wait for the workload to appear")
    p.set_defaults(func=cmd_monitor)

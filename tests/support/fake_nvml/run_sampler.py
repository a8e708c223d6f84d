"""Runs NvmlSampler in its own process (pynvml loads libnvidia-ml.so.1 once per process) and
prints what happened as JSON on stdout.

argv[1] is a JSON plan::

    {"device_uuids": null | [...], "devices_of_pid": null | <pid>,
     "workload_pid": null | <pid>, "proc": "/proc",
     "steps": [{"config": "<text for $FAKE_NVML_CONFIG>"}, {"sample": [pids]}, ...],
     "close": true}

``workload_pid``: the sidecar's reader, ``runtime.gpu.workload_gpu_reader(pid, proc)``.

Output: ``{"opened": bool, "devices": [...], "samples": [...], "log": [[level, message], ...],
"lookups": [NVML symbols pynvml looked up]}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys


from log_collect import Collect  # noqa: E402 (beside this script: its folder is on sys.path)


def main() -> None:
    plan = json.loads(sys.argv[1])
    collect = Collect()
    for name in ("airflow_adaptive.adapters.nvml", "airflow_adaptive.runtime.gpu"):
        logger = logging.getLogger(name)
        logger.addHandler(collect)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    import pynvml

    lookups: list[str] = []
    original = pynvml._nvmlGetFunctionPointer

    def recording(name):
        lookups.append(name)
        return original(name)

    pynvml._nvmlGetFunctionPointer = recording

    from airflow_adaptive.adapters.nvml import NvmlSampler, visible_devices_of

    config = os.environ.get("FAKE_NVML_CONFIG")
    out: dict = {"opened": False, "devices": [], "samples": [], "visible": None}

    def run_config_steps_until_sample(steps):
        rest = list(steps)
        while rest and "config" in rest[0]:
            with open(config, "w") as f:
                f.write(rest.pop(0)["config"])
        return rest

    steps = run_config_steps_until_sample(plan.get("steps", []))
    device_uuids = plan.get("device_uuids")
    if plan.get("devices_of_pid") is not None:
        device_uuids = visible_devices_of(int(plan["devices_of_pid"]))
        out["visible"] = device_uuids
    if plan.get("workload_pid") is not None:
        from airflow_adaptive.runtime.gpu import workload_gpu_reader

        sampler = workload_gpu_reader(int(plan["workload_pid"]), plan.get("proc", "/proc"))
    else:
        sampler = NvmlSampler.open(device_uuids)
    if sampler is not None:
        out["opened"] = True
        out["devices"] = sampler.device_uuids
        for step in steps:
            if "config" in step:
                with open(config, "w") as f:
                    f.write(step["config"])
            else:
                out["samples"].append(sampler.sample(step["sample"]))
        if plan.get("close", True):
            sampler.close()
    out["log"] = collect.records
    out["lookups"] = sorted(set(lookups))
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Benchmark: an ephemeral-storage eviction on the real node, then the larger retry.

On the real node (kubelet 1.37, containerd, runc; ``harness/local_node.py``) each round starts a
pod whose container writes ``--write-mib`` MiB into its writable layer (``/tmp``) and holds it,
under an ``ephemeral-storage`` limit below that (``--limit-mib``). The kubelet's eviction manager
evicts it; the product's pure reading of the pod's status (``logic/eviction.read_eviction``) names
the cause and the limit, and the retry gets that limit x the deviation policy's ``oom_factor``
(what ``logic/stage_plan.escalate_storage`` gives a retry with no user bound in the way), with
the same workload, held long enough for two of the kubelet's checks.

| measured | meaning |
|---|---|
| ``container_started_s`` | pod created -> the workload's container started (its status's ``startedAt``, in whole seconds, hence a start up to 1 s "before" the pod; the write takes under a second after it) |
| ``evicted_s`` | pod created -> phase ``Failed``, reason ``Evicted`` (polled every 0.2 s) |
| ``after_start_s`` | the container's start -> the eviction: about how long a stage runs past its limit before the kubelet acts (containerd refreshes a snapshot's usage every 10 s, the eviction manager looks every 10 s) |
| retry | its limit, and whether it ``Succeeded`` |

Writes ``benchmarks/results/ephemeral-eviction.json`` and prints a table. Needs root. Run:
``.venv/bin/python benchmarks/ephemeral_eviction.py [--rounds 3]`` (about 4 minutes here, node
images cached).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "ephemeral-eviction.json"

from real_node import wait  # noqa: E402 - the real-node benchmark's poll (this script's folder is on sys.path)
MIB = 2**20


def storage_pod(name: str, image: str, write_mib: int, hold_s: float, limit_bytes: float) -> dict:
    from harness.local_node import NODE_NAME, TOLERATION

    script = (f"import os, time\nwith open('/tmp/scratch.bin', 'wb') as f:\n    block = os.urandom(1 << 20)\n"
              f"    for _ in range({write_mib}):\n        f.write(block)\n    f.flush()\n    os.fsync(f.fileno())\n"
              f"print('written', time.time(), flush=True)\ntime.sleep({hold_s})\n")
    limit = f"{int(limit_bytes // MIB)}Mi"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        "tolerations": [TOLERATION], "nodeSelector": {"kubernetes.io/hostname": NODE_NAME},
        "containers": [{"name": "base", "image": image, "imagePullPolicy": "IfNotPresent", "command": ["python3", "-c", script],
                        "resources": {"requests": {"cpu": "250m", "memory": "64Mi", "ephemeral-storage": limit},
                                      "limits": {"cpu": "1", "memory": "128Mi", "ephemeral-storage": limit}}}]}}


def container_started(status) -> float | None:
    """When the workload's container started (Unix seconds), from the pod's status."""
    for c in status.container_statuses or []:
        state = c.state
        started = (state.running and state.running.started_at) or (state.terminated and state.terminated.started_at)
        if c.name == "base" and started:
            return started.timestamp()
    return None


def one_round(core, ns: str, image: str, i: int, write_mib: int, limit_mib: int) -> dict:
    from airflow_adaptive.logic.deviation import DeviationConfig
    from airflow_adaptive.logic.eviction import read_eviction

    name = f"evict-{i}"
    t0 = time.time()
    core.create_namespaced_pod(ns, storage_pod(name, image, write_mib, 60, limit_mib * MIB))
    started = None

    def status():
        nonlocal started
        st = core.read_namespaced_pod(name, ns).status
        started = started or container_started(st)
        return st

    st = wait(status, lambda s: s.phase in ("Failed", "Succeeded"), timeout_s=120, interval_s=0.2)
    evicted_s = time.time() - t0
    eviction = read_eviction(st.phase, st.reason, st.message)
    if eviction is None or not eviction.storage_limit:
        raise SystemExit(f"round {i}: the pod ended {st.phase}/{st.reason} ({st.message!r}), not evicted for its limit")
    new_limit = eviction.limit_bytes * DeviationConfig().oom_factor
    retry = f"retry-{i}"
    t1 = time.time()
    core.create_namespaced_pod(ns, storage_pod(retry, image, write_mib, 25, new_limit))
    rs = wait(lambda: core.read_namespaced_pod(retry, ns).status, lambda s: s.phase in ("Failed", "Succeeded"),
              timeout_s=180, interval_s=0.2)
    for pod in (name, retry):
        core.delete_namespaced_pod(pod, ns, grace_period_seconds=0)
    return {"write_mib": write_mib, "limit_mib": limit_mib, "cause": eviction.cause, "message": eviction.message.strip(),
            "limit_read_bytes": eviction.limit_bytes, "container_started_s": round(started - t0, 2) if started else None,
            "evicted_s": round(evicted_s, 2), "after_start_s": round(t0 + evicted_s - started, 2) if started else None,
            "retry_limit_mib": new_limit / MIB, "retry_phase": rs.phase, "retry_reason": rs.reason,
            "retry_s": round(time.time() - t1, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-mib", type=int, default=100)
    parser.add_argument("--limit-mib", type=int, default=64)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the real node needs root")
    from kubernetes import client

    from harness.local_node import RealNode

    out = subprocess.run(["bash", str(ROOT / "tools" / "node" / "build.sh")], check=True, capture_output=True, text=True)
    images = json.loads(Path(out.stdout.strip().splitlines()[-1]).read_text())
    result = {"write_mib": args.write_mib, "limit_mib": args.limit_mib, "rounds": []}
    with tempfile.TemporaryDirectory() as tmp:
        node = RealNode(tmp, images=images)
        node.start()
        try:
            with node.api_client() as api:
                core = client.CoreV1Api(api)
                core.create_namespace({"metadata": {"name": "bench"}})
                wait(lambda: [s.metadata.name for s in core.list_namespaced_service_account("bench").items],
                     lambda names: "default" in names, timeout_s=60, interval_s=0.2)
                for i in range(args.rounds):
                    result["rounds"].append(one_round(core, "bench", images["stage"]["ref"], i, args.write_mib, args.limit_mib))
                    print(f"[eviction] round {i}: {result['rounds'][-1]}", flush=True)
        finally:
            node.stop()
    after = [r["after_start_s"] for r in result["rounds"] if r["after_start_s"] is not None]
    result["after_start_s_median"] = statistics.median(after) if after else None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


def table(r: dict) -> str:
    lines = ["| round | wrote | limit | cause (read from the status) | container started | evicted | evicted after the start | retry limit | retry |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, x in enumerate(r["rounds"]):
        lines.append(f"| {i} | {x['write_mib']} MiB | {x['limit_mib']} MiB | {x['cause']} | {x['container_started_s']} s | "
                     f"{x['evicted_s']} s | {x['after_start_s']} s | {x['retry_limit_mib']:g} MiB | {x['retry_phase']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

"""The real node (kubelet 1.37, containerd, runc, CNI; ``harness/local_node.py``):
how long it takes to get one, and what in-place resizing costs on a real kubelet.

| phase | what happens | what is reported |
|---|---|---|
| images | ``tools/node/images.py`` into an empty cache (mmdebstrap, layers, OCI archives), then again (cached) | seconds, archive sizes |
| node | ``RealNode.start()`` with the binaries and images cached: sandbox, control plane, containerd, image import, kubelet until the node is Ready | seconds per part |
| pod start | ``--pods`` stage pods (workload + native monitor sidecar), one at a time | create -> Running, create -> workload started (p50, max) |
| resize | a stage pod whose monitor container prints ``--resizes`` memory signals, one every ``--every-s``; the operator's follower (``SignalFollowerThread``) and ``PodResizer`` apply them | signal line written (its time) -> the container's ``memory.limit_in_bytes`` changed (polled every 2 ms): p50, p99, max; and -> status resources updated |
| monitor overhead | the real monitor (1 s sampling) beside a steady 100 MiB workload for ``--overhead-s`` | the monitor container's CPU (its cgroup's ``cpuacct.usage``) as a share of one core, its peak memory (``memory.max_usage_in_bytes``) |

The signal clock is the monitor's ``time.time()`` and the cgroup's change is seen by this process's
``time.time()``: the same machine's clock. The signals are the protocol lines the monitor prints
(``domain/monitor_protocol.py``), written by a script in the monitor's image so their number and
pace are fixed; the path from the line to the cgroup is the product's (``pods/log`` through the API
server and the kubelet, the follower, the plan, ``pods/resize``, the kubelet's actuation).

Writes ``benchmarks/results/real-node.json`` and prints a table. Needs root. Run:
``.venv/bin/python benchmarks/real_node.py`` (about 3 minutes on 2 cores, images cached).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "real-node.json"
MIB = 2**20

SIGNALLER = r"""
import json, secrets, sys, time
n, every, start = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
boot = secrets.token_hex(6)
time.sleep(3)  # let the follower connect; the lines wait in the log anyway
old = start
for i in range(n):
    new = old + 16 * 2**20
    print(json.dumps({"kind": "airflow-adaptive/resize", "v": 1, "resource": "memory", "old": old, "new": new,
                      "reason": "benchmark", "time": time.time(), "sequence": i, "container": "base", "boot": boot}),
          flush=True)
    old = new
    time.sleep(every)
time.sleep(600)  # a native sidecar that exits is restarted: stay up until the pod is deleted
"""


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def build_images(cache: Path, pause: Path) -> dict:
    t0 = time.monotonic()
    subprocess.run([sys.executable, str(ROOT / "tools" / "node" / "images.py"), "--cache", str(cache), "--pause", str(pause)],
                   check=True, stdout=subprocess.DEVNULL)
    cold = time.monotonic() - t0
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "node" / "images.py"), "--cache", str(cache), "--pause", str(pause)],
                         check=True, capture_output=True, text=True)
    warm = time.monotonic() - t0
    images = json.loads(out.stdout)
    sizes = {name: round(Path(i["archive"]).stat().st_size / MIB, 1) for name, i in images.items()}
    return {"cold_s": round(cold, 1), "cached_s": round(warm, 2), "archive_mib": sizes}


def stage_pod(name: str, images: dict, args: list[str], memory_mib: int, monitor_cmd: list[str] | None = None,
              interval_s: float = 1.0) -> dict:
    from kubernetes import client
    from kubernetes.client import ApiClient

    from harness.local_node import NODE_NAME, TOLERATION
    from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod
    from airflow_adaptive.domain.resources import ResourceVector
    from airflow_adaptive.logic.sizing import ContainerSize

    base = client.V1Pod(metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(
        restart_policy="Never", termination_grace_period_seconds=1, automount_service_account_token=False,
        security_context=client.V1PodSecurityContext(run_as_user=1000, run_as_group=1000),
        containers=[client.V1Container(name="base", image=images["stage"]["ref"], image_pull_policy="IfNotPresent",
                                       command=["python3", *args])]))
    size = ContainerSize(ResourceVector(cpu=0.5, memory=memory_mib * MIB), ResourceVector(cpu=0.5, memory=memory_mib * MIB), None, ())
    kwargs = {"command": tuple(monitor_cmd)} if monitor_cmd else {}
    monitor = MonitorSidecar(image=images["monitor"]["ref"], interval_s=interval_s, **kwargs)
    pod = ApiClient().sanitize_for_serialization(shape_pod(base, container="base", size=size, monitor=monitor, run_id=None,
                                                           tracking_uri=None, profile_json=None,
                                                           maximum=ResourceVector(cpu=1, memory=2048 * MIB)))
    pod["spec"]["tolerations"] = [TOLERATION]
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": NODE_NAME}
    for c in pod["spec"]["initContainers"]:
        c["imagePullPolicy"] = "IfNotPresent"
    return pod


def wait(read, check, timeout_s: float = 120.0, interval_s: float = 0.02):
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout_s} s; last: {value!r:.500}")
        time.sleep(interval_s)


def started(pod, container: str = "base") -> bool:
    return any(s.name == container and s.state and s.state.running for s in pod.status.container_statuses or [])


def pod_starts(core, ns: str, images: dict, n: int) -> dict:
    running, workload = [], []
    for i in range(n):
        name = f"start-{i}"
        t0 = time.monotonic()
        core.create_namespaced_pod(ns, stage_pod(name, images, ["-c", "import time; time.sleep(2)"], 128))
        wait(lambda: core.read_namespaced_pod(name, ns), lambda p: p.status.phase == "Running")
        running.append(time.monotonic() - t0)
        wait(lambda: core.read_namespaced_pod(name, ns), started)
        workload.append(time.monotonic() - t0)
        core.delete_namespaced_pod(name, ns, grace_period_seconds=0)
    return {"pods": n, "running_p50_s": round(statistics.median(running), 2), "running_max_s": round(max(running), 2),
            "workload_started_p50_s": round(statistics.median(workload), 2), "workload_started_max_s": round(max(workload), 2)}


def resizes(node, core, ns: str, images: dict, n: int, every_s: float) -> dict:
    from airflow_adaptive.adapters.kubernetes.resize import PodResizer
    from airflow_adaptive.adapters.kubernetes.signal_follower import SignalFollowerThread
    from airflow_adaptive.logic.monitor_trust import MonitorLines, TrustConfig

    start_mib = 128
    pod = stage_pod("resize", images, ["-c", "import time; time.sleep(600)"], start_mib,
                    monitor_cmd=["python3", "-c", SIGNALLER, str(n), str(every_s), str(start_mib * MIB)])
    core.create_namespaced_pod(ns, pod)
    live = wait(lambda: core.read_namespaced_pod("resize", ns), lambda p: started(p) and p.status.phase == "Running")
    limit_file = node.container_cgroup(live, "base", "memory") / "memory.limit_in_bytes"
    changes: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        last = None
        while not stop.is_set():
            try:
                value = int(limit_file.read_text())
            except OSError:
                return
            if value != last:
                changes.append((time.time(), value))
                last = value
            time.sleep(0.002)

    status_seen: dict[int, float] = {}

    def watch_status() -> None:
        # A watch, not polling: 100 reads a second would load the API server it measures.
        from kubernetes import watch

        from airflow_adaptive.domain.resources import ResourceVector

        w = watch.Watch()
        while not stop.is_set():
            try:
                for event in w.stream(core.list_namespaced_pod, ns, field_selector="metadata.name=resize", timeout_seconds=5):
                    p = event["object"]
                    base = next((s for s in (p.status.container_statuses or []) if s.name == "base"), None)
                    if base and base.resources and base.resources.limits:
                        mem = int(ResourceVector.from_kubernetes(base.resources.limits, "status").memory)
                        status_seen.setdefault(mem, time.time())
                    if stop.is_set():
                        w.stop()
            except Exception:  # noqa: BLE001 - the pod was deleted at the end, or the stream dropped
                if stop.is_set():
                    return

    resizer, outcomes = PodResizer(core), []
    threads = [threading.Thread(target=poll, daemon=True), threading.Thread(target=watch_status, daemon=True)]
    for t in threads:
        t.start()
    # One resize a second is above the trust rules' 12 a minute (logic/monitor_trust.py): raised
    # here, where the lines are the benchmark's own, so that 25 resizes take 25 s, not 2 minutes.
    follower = SignalFollowerThread(core, ns, "resize", "adaptive-monitor",
                                    lambda s: outcomes.append((s, resizer.apply(ns, "resize", "base", s))),
                                    read_timeout_s=30, retry_delay_s=0.2,
                                    monitor=MonitorLines(TrustConfig(max_resizes_per_minute=120)))
    follower.start()
    try:
        wait(lambda: len(outcomes), lambda k: k >= n, timeout_s=60 + n * every_s * 3)
        wait(lambda: changes[-1][1] if changes else 0, lambda v: v >= start_mib * MIB + n * 16 * MIB, timeout_s=30)
    finally:
        follower.stop()
        stop.set()
        for t in threads:
            t.join(2)
        core.delete_namespaced_pod("resize", ns, grace_period_seconds=0)
    to_cgroup, to_status, by_sequence = [], [], []
    for signal, outcome in outcomes:
        seen = next((t for t, v in changes if v >= int(signal.new) - 4096), None)
        if seen is not None:
            to_cgroup.append((seen - signal.time) * 1000)
            by_sequence.append([signal.sequence, round(to_cgroup[-1], 1), outcome.attempts])
        st = next((t for v, t in sorted(status_seen.items()) if v >= int(signal.new) - 4096), None)
        if st is not None:
            to_status.append((st - signal.time) * 1000)
    return {"resizes": len(outcomes), "applied": sum(o.status in ("applied", "capped") for _, o in outcomes),
            "signal_to_cgroup_ms": {"p50": round(percentile(to_cgroup, 0.5), 1), "p99": round(percentile(to_cgroup, 0.99), 1),
                                    "max": round(max(to_cgroup), 1), "n": len(to_cgroup),
                                    "by_sequence": by_sequence},  # [sequence, ms, API attempts]
            "signal_to_status_ms": {"p50": round(percentile(to_status, 0.5), 1), "p99": round(percentile(to_status, 0.99), 1),
                                    "n": len(to_status)},
            "every_s": every_s}


def monitor_overhead(node, core, ns: str, images: dict, seconds: float) -> dict:
    pod = stage_pod("steady", images, ["-m", "airflow_adaptive.examples.workloads", "steady", "--mib", "100",
                                        "--seconds", str(seconds + 20)], 256, interval_s=1.0)
    core.create_namespaced_pod(ns, pod)
    live = wait(lambda: core.read_namespaced_pod("steady", ns),
                lambda p: started(p) and any(s.name == "adaptive-monitor" and s.state and s.state.running
                                             for s in p.status.init_container_statuses or []))
    time.sleep(8)  # past the monitor's start-up (imports): the budget is for the loop
    live = core.read_namespaced_pod("steady", ns)  # the container now running (a restart changes its id)
    monitor_status = next(s for s in live.status.init_container_statuses if s.name == "adaptive-monitor")
    if monitor_status.restart_count:
        log = core.read_namespaced_pod_log("steady", ns, container="adaptive-monitor", previous=True, tail_lines=20)
        raise RuntimeError(f"the monitor restarted {monitor_status.restart_count} time(s); its last log:\n{log}")
    cpu = node.container_cgroup(live, "adaptive-monitor", "cpuacct") / "cpuacct.usage"
    mem = node.container_cgroup(live, "adaptive-monitor", "memory")
    c0, t0 = int(cpu.read_text()), time.monotonic()
    time.sleep(seconds)
    c1, t1 = int(cpu.read_text()), time.monotonic()
    peak = int((mem / "memory.max_usage_in_bytes").read_text())
    procs = [int(p) for p in (mem / "cgroup.procs").read_text().split()]
    rss = max((_rss(p) for p in procs), default=0)
    log = core.read_namespaced_pod_log("steady", ns, container="adaptive-monitor")
    samples = sum(1 for line in log.splitlines() if '"airflow-adaptive/usage"' in line)
    core.delete_namespaced_pod("steady", ns, grace_period_seconds=0)
    return {"seconds": seconds, "interval_s": 1.0, "cpu_share_of_one_core": round((c1 - c0) / 1e9 / (t1 - t0), 4),
            "cgroup_peak_mib": round(peak / MIB, 1), "process_rss_mib": round(rss / MIB, 1), "usage_lines": samples,
            "budget": {"cpu_share": 0.01, "memory_mib": 60}}


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=5)
    parser.add_argument("--resizes", type=int, default=25)
    parser.add_argument("--every-s", type=float, default=1.0)
    parser.add_argument("--overhead-s", type=float, default=60.0)
    parser.add_argument("--no-cold-images", action="store_true", help="skip building the images into an empty cache")
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the real node needs root")
    from kubernetes import client

    from harness.local_node import RealNode

    node_cache = Path(os.environ.get("AIRFLOW_ADAPTIVE_NODE_CACHE", Path.home() / ".cache" / "airflow-adaptive" / "node"))
    out = subprocess.run(["bash", str(ROOT / "tools" / "node" / "build.sh")], check=True, capture_output=True, text=True)
    images = json.loads(Path(out.stdout.strip().splitlines()[-1]).read_text())
    result = {"machine": {"cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()}}
    if not args.no_cold_images:
        with tempfile.TemporaryDirectory() as tmp:
            result["images"] = build_images(Path(tmp), node_cache / "pause")
    with tempfile.TemporaryDirectory() as tmp:
        node = RealNode(tmp, images=images)
        t0 = time.monotonic()
        node.start()
        result["node"] = {"ready_s": round(time.monotonic() - t0, 2), **{k: round(v, 2) for k, v in node.timings.items()}}
        try:
            with node.api_client() as api:
                core = client.CoreV1Api(api)
                core.create_namespace({"metadata": {"name": "bench"}})
                wait(lambda: [s.metadata.name for s in core.list_namespaced_service_account("bench").items],
                     lambda names: "default" in names)
                result["pod_start"] = pod_starts(core, "bench", images, args.pods)
                result["resize"] = resizes(node, core, "bench", images, args.resizes, args.every_s)
                result["monitor_overhead"] = monitor_overhead(node, core, "bench", images, args.overhead_s)
        finally:
            t0 = time.monotonic()
            node.stop()
            result["node"]["stop_s"] = round(time.monotonic() - t0, 2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)


def print_table(r: dict) -> None:
    rows = []
    if "images" in r:
        rows.append(("images, empty cache", f"{r['images']['cold_s']} s", f"cached {r['images']['cached_s']} s; "
                     + ", ".join(f"{k} {v} MiB" for k, v in r["images"]["archive_mib"].items())))
    n = r["node"]
    rows.append(("node Ready (binaries, images cached)", f"{n['ready_s']} s",
                 f"control plane {n['control_plane_s']} s, containerd + image import {n['containerd_and_images_s']} s, "
                 f"kubelet {n['kubelet_ready_s']} s; stop {n.get('stop_s')} s"))
    p = r["pod_start"]
    rows.append(("pod create -> Running", f"p50 {p['running_p50_s']} s", f"max {p['running_max_s']} s; workload started p50 "
                 f"{p['workload_started_p50_s']} s, max {p['workload_started_max_s']} s ({p['pods']} pods)"))
    z = r["resize"]
    rows.append(("resize: signal line -> cgroup limit", f"p50 {z['signal_to_cgroup_ms']['p50']} ms",
                 f"p99 {z['signal_to_cgroup_ms']['p99']} ms, max {z['signal_to_cgroup_ms']['max']} ms "
                 f"({z['signal_to_cgroup_ms']['n']} resizes; target p99 <= 300 ms)"))
    rows.append(("resize: signal line -> status resources", f"p50 {z['signal_to_status_ms']['p50']} ms",
                 f"p99 {z['signal_to_status_ms']['p99']} ms"))
    m = r["monitor_overhead"]
    rows.append(("monitor in its container", f"{m['cpu_share_of_one_core'] * 100:.2f}% of a core",
                 f"cgroup peak {m['cgroup_peak_mib']} MiB, RSS {m['process_rss_mib']} MiB (budget 1%, 60 MiB)"))
    width = max(len(a) for a, _, _ in rows)
    print(f"{'measure':<{width}}  {'value':<16}  detail")
    for a, b, c in rows:
        print(f"{a:<{width}}  {b:<16}  {c}")


if __name__ == "__main__":
    main()

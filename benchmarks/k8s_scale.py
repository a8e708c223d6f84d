"""Scale of the Kubernetes path: 500 concurrent adaptive pods sized, started, resized in place and
completed on a real control plane (etcd, kube-apiserver 1.37, controller-manager, scheduler) whose
nodes are kwok's (``harness/local_cluster.py``).

| phase | what happens | what is reported |
|---|---|---|
| start | ``LocalCluster`` with ``--nodes`` kwok nodes of 32 cpu / 128Gi | seconds until nodes are Ready |
| create | ``--pods`` pods shaped by ``shape_pod`` (workload ``base`` + native ``adaptive-monitor`` sidecar), created concurrently | pods accepted per second; time until all are scheduled (real scheduler) and Running (kwok) |
| resize, burst | one memory-increase ``ResizeSignal`` per pod, all at once, each through ``AsyncPodResizer.apply`` (the Resource Manager of the deferrable trigger: read the pod, plan, read the node and its pods only when a request grows, patch ``pods/resize``) | round trip signal read -> resize emulated (p50/p95/p99/max), ``apply()`` alone, the emulation's share; the Resource Manager's CPU |
| resize, paced | one more signal per pod per round, spread evenly at each of ``--rates`` per second (signals as monitors send them) | the same |
| idle | nothing happens for ``--idle-s`` (between create and resize) | each component's CPU with the pods Running |
| complete | the pods' ``complete-after`` annotation shortened to 1s (the workload ends) | time until all are Succeeded; namespace deletion |

Round trip: from just before ``apply()`` (the signal has been read) until a watch on the namespace's
pods sees ``status.containerStatuses[base].resources.limits.memory`` equal the new limit, i.e. the
emulated kubelet has actuated it. The watch runs in a child process reading raw JSON, so its
parsing neither competes for the Resource Manager's event loop nor counts in its CPU; both clocks
are ``CLOCK_MONOTONIC``. A paced signal counts from its due time, so a Resource Manager too busy
to start on it is charged the wait. Its parts: ``apply()`` (read, plan, patch; it ends when the
patch's answer is decoded, which under load can be after the emulation already actuated it),
spec seen -> ``PodResizeInProgress`` and ``PodResizeInProgress`` -> actuated (kwok's two stages).

CPU: the Resource Manager's is this process's user+system time over the phase (``getrusage``),
less the thread that reads the watcher's lines; the control plane's processes and the watcher are
read with psutil; ``machine_busy_cores`` is the whole machine's (other engineers' clusters
included: figures from a shared 2-core machine).

Investigation switches (the default run is the product as shipped): ``--no-read-node`` (the
resizer does not read the node and its pods for the room), ``--kwok-parallelism``,
``--scheduler-qps``.

Writes ``benchmarks/results/k8s-scale.json`` and prints a table. Target: resize round trip p99 <= 1 s
with 500 pods. Run: ``.venv/bin/python benchmarks/k8s_scale.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import platform
import resource
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # harness/ (the local control plane) lives at the repository root
RESULTS = ROOT / "benchmarks" / "results" / "k8s-scale.json"
GI = 2**30
TARGET_P99_S = 1.0
WATCHER_NICE = -10  # the watcher's scheduling priority when allowed (root); 0 otherwise
CONTAINER = "base"
# Pod shapes (requests cpu, memory; limits are twice the requests: Burstable, as sized stages are).
# 20 pods per 32-cpu/128Gi node use at most 21 cpu and 42Gi of requests, so all fit and resizes are feasible.
SHAPES = ((0.5, 1 * GI), (1.0, 1 * GI), (0.5, 2 * GI), (1.0, 2 * GI))


# ---- the watcher (child process) ----------------------------------------------------------------
def watch_main(server: str, ca: str, namespace: str) -> None:
    """Follow the namespace's pods; print one JSON line per change of what the benchmark times.

    The API server closes a watch whose reader falls behind (its cacher's dispatch budget); on a
    2-core machine busy with 500 pods that happens to a Python reader. Like client-go's reflector,
    the watch is then resumed from the last resourceVersion seen (the missed events are replayed,
    timestamped late: a restart can only make the figures worse); each restart is reported.
    """
    url = urllib.parse.urlparse(server)
    ctx = ssl.create_default_context(cafile=ca)
    headers = {"Authorization": f"Bearer {os.environ['K8S_SCALE_TOKEN']}", "Accept": "application/json"}
    last: dict[str, tuple] = {}
    rv = None
    first = True
    while True:
        conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
        query = "watch=true&timeoutSeconds=3600&allowWatchBookmarks=true" + (f"&resourceVersion={rv}" if rv else "")
        conn.request("GET", f"/api/v1/namespaces/{namespace}/pods?{query}", headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            print(json.dumps({"error": f"watch answered {resp.status}: {resp.read()[:500]!r}"}), flush=True)
            return
        print(json.dumps({"ready" if first else "restart": time.monotonic(), "resource_version": rv}), flush=True)
        first = False
        buf = b""
        while True:
            data = resp.read1(1 << 16)
            if not data:
                break
            t = time.monotonic()
            *lines, buf = (buf + data).split(b"\n")
            out = []
            for line in lines:
                if not line.strip():
                    continue
                event = json.loads(line)
                pod = event.get("object") or {}
                meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
                if event.get("type") == "ERROR":
                    print(json.dumps({"error": f"watch error: {pod}"}), flush=True)
                    return
                rv = meta.get("resourceVersion") or rv
                name = meta.get("name")
                if event.get("type") == "BOOKMARK" or not name:
                    continue
                spec_mem = next((((c.get("resources") or {}).get("limits") or {}).get("memory")
                                 for c in spec.get("containers") or [] if c.get("name") == CONTAINER), None)
                status_mem = next((((c.get("resources") or {}).get("limits") or {}).get("memory")
                                   for c in status.get("containerStatuses") or [] if c.get("name") == CONTAINER), None)
                in_progress = any(c.get("type") == "PodResizeInProgress" and c.get("status") == "True"
                                  for c in status.get("conditions") or [])
                pending = next((c.get("reason") or "pending" for c in status.get("conditions") or []
                                if c.get("type") == "PodResizePending" and c.get("status") == "True"), None)
                state = (event.get("type"), status.get("phase"), spec.get("nodeName"), spec_mem, status_mem,
                         in_progress, pending)
                if last.get(name) != state:
                    last[name] = state
                    out.append(json.dumps([t, name, *state]))
            if out:
                print("\n".join(out), flush=True)
        conn.close()


class Tracker:
    """The pods as the watcher last saw them, every change with its time, and waits on predicates."""

    FIELDS = ("type", "phase", "node", "spec_mem", "status_mem", "in_progress", "pending")

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lock = threading.Lock()
        self.events: list[tuple[float, str, dict]] = []
        self.state: dict[str, dict] = {}
        self.waiters: list[tuple[Callable[[str, dict], bool], set, set, threading.Event]] = []
        self.ready = threading.Event()
        self.error: str | None = None
        self.thread_cpu_s = 0.0
        self.restarts: list[float] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            data = json.loads(raw)
            if isinstance(data, dict):
                if "error" in data:
                    self.error = data["error"]
                    print(f"watcher: {self.error}", file=sys.stderr, flush=True)
                if "restart" in data:
                    self.restarts.append(data["restart"])
                self.ready.set()
                continue
            t, name, *values = data
            st = dict(zip(self.FIELDS, values))
            with self.lock:
                self.events.append((t, name, st))
                self.state[name] = st
                for pred, wanted, seen, done in self.waiters:
                    if name in wanted and name not in seen and pred(name, st):
                        seen.add(name)
                        if len(seen) >= len(wanted):
                            done.set()
            self.thread_cpu_s = time.thread_time()
        self.ready.set()

    def wait_all(self, names: list[str], pred: Callable[[str, dict], bool], timeout_s: float) -> bool:
        """Wait until ``pred(name, state)`` has held once for every pod in ``names``."""
        wanted = set(names)
        done = threading.Event()
        with self.lock:
            seen = {n for n, st in self.state.items() if n in wanted and pred(n, st)}
            if seen >= wanted:
                return True
            entry = (pred, wanted, seen, done)
            self.waiters.append(entry)
        ok = done.wait(timeout_s)
        with self.lock:
            self.waiters.remove(entry)
        return ok

    def since(self, t0: float) -> list[tuple[float, str, dict]]:
        with self.lock:
            return [e for e in self.events if e[0] >= t0]


# ---- helpers ------------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """The q-quantile, nearest-rank on the sorted values (p99 of 500 is the 495th)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(q * len(xs) + 0.5)) - 1))
    return xs[k]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    if not ms:
        return {"n": 0}
    return {"n": len(ms), "p50": round(pct(ms, 0.50), 1), "p95": round(pct(ms, 0.95), 1),
            "p99": round(pct(ms, 0.99), 1), "max": round(max(ms), 1), "mean": round(statistics.fmean(ms), 1)}


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuMeter:
    """CPU seconds over a phase: this process (less the watcher-reading thread), each control-plane
    process, the watcher, and the whole machine."""

    def __init__(self, procs: dict[str, int], tracker: Tracker) -> None:
        import psutil

        self.psutil = psutil
        self.procs = {name: psutil.Process(pid) for name, pid in procs.items()}
        self.tracker = tracker

    def _read(self) -> dict[str, Any]:
        out = {"self": self_cpu_s(), "reader": self.tracker.thread_cpu_s, "wall": time.monotonic()}
        for name, p in self.procs.items():
            try:
                c = p.cpu_times()
                out[name] = c.user + c.system
            except self.psutil.Error:
                out[name] = float("nan")
        m = self.psutil.cpu_times()
        out["machine_busy"] = m.user + m.system + getattr(m, "nice", 0) + getattr(m, "irq", 0) + getattr(m, "softirq", 0)
        return out

    def start(self) -> None:
        self.t0 = self._read()

    def stop(self, work_items: int | None = None) -> dict[str, Any]:
        t1 = self._read()
        d = {k: t1[k] - self.t0[k] for k in t1}
        wall = d.pop("wall")
        rm = d.pop("self") - d.pop("reader")
        busy = d.pop("machine_busy")
        ours = rm + sum(d.values()) + (t1["reader"] - self.t0["reader"])
        out = {"wall_s": round(wall, 3),
               "resource_manager_cpu_s": round(rm, 3),
               "resource_manager_cores": round(rm / wall, 3) if wall > 0 else None,
               "processes_cpu_s": {k: round(v, 3) for k, v in d.items()},
               "machine_busy_cores": round(busy / wall, 3) if wall > 0 else None,
               # what else ran on the machine meanwhile (other engineers' tests): busy less ours
               "outside_load_cores": round(max(0.0, busy - ours) / wall, 3) if wall > 0 else None}
        if work_items:
            out["cpu_ms_per_item"] = {"resource_manager": round(rm / work_items * 1000, 2),
                                      **{k: round(v / work_items * 1000, 2) for k, v in d.items()},
                                      "all": round(ours / work_items * 1000, 2)}
        return out


def pod_bodies(namespace: str, n: int, run: str) -> list[tuple[dict, int]]:
    """The pods the operator would create: ``shape_pod`` on a KPO-like pod; (body, memory limit)."""
    from kubernetes import client as k8s

    from harness.local_cluster import COMPLETE_AFTER
    from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, shape_pod
    from airflow_adaptive.domain.resources import ResourceVector
    from airflow_adaptive.logic.sizing import ContainerSize

    monitor = MonitorSidecar(image="registry.example/airflow-adaptive:1", env={"AIRFLOW_ADAPTIVE_NVML": "0"})
    api = k8s.ApiClient()
    out = []
    for i in range(n):
        cpu, mem = SHAPES[i % len(SHAPES)]
        size = ContainerSize(ResourceVector(cpu=cpu, memory=mem), ResourceVector(cpu=2 * cpu, memory=2 * mem), None,
                             ("k8s_scale benchmark",))
        pod = k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=f"stage-{i:04d}", namespace=namespace,
                                      labels={"app": "k8s-scale", "run": run},
                                      annotations={COMPLETE_AFTER: "30m"}),
            spec=k8s.V1PodSpec(restart_policy="Never", containers=[
                k8s.V1Container(name=CONTAINER, image="python:3.11", command=["python", "train.py"])]))
        shaped = shape_pod(pod, container=CONTAINER, size=size, monitor=monitor, run_id=f"{run}-{i}",
                           tracking_uri="http://mlflow:5000", profile_json=None)
        out.append((api.sanitize_for_serialization(shaped), int(2 * mem)))
    return out


# ---- the benchmark ------------------------------------------------------------------------------
async def run_phases(cluster, args, result: dict, tracker_box: list) -> None:
    from kubernetes_asyncio import client as aclient

    from harness.local_cluster import COMPLETE_AFTER
    from airflow_adaptive.adapters.kubernetes.resize import AsyncPodResizer
    from airflow_adaptive.domain.quantities import parse_quantity
    from airflow_adaptive.domain.signals import ResizeSignal

    cfg = aclient.Configuration()
    cfg.host = cluster.server
    cfg.ssl_ca_cert = str(cluster.workdir / "certs" / "apiserver.crt")
    # kubernetes_asyncio reads the token under "BearerToken" (the sync client's "authorization"
    # key is silently ignored: the requests go out anonymous).
    cfg.api_key = {"BearerToken": cluster.token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    cfg.connection_pool_maxsize = args.connections
    api = aclient.ApiClient(cfg)
    core = aclient.CoreV1Api(api)
    ns = f"scale-{uuid.uuid4().hex[:6]}"
    try:
        version = await aclient.VersionApi(api).get_code()
        result["machine"]["kube_version"] = version.git_version
        await core.create_namespace({"metadata": {"name": ns}})
        t = time.monotonic()
        while True:  # the ServiceAccount admission plugin refuses pods until "default" exists
            sas = await core.list_namespaced_service_account(ns)
            if any(sa.metadata.name == "default" for sa in sas.items):
                break
            if time.monotonic() - t > 30:
                raise RuntimeError("no default service account after 30 s")
            await asyncio.sleep(0.1)

        env = {**os.environ, "K8S_SCALE_TOKEN": cluster.token}
        watcher = subprocess.Popen([sys.executable, __file__, "--watch", cluster.server,
                                    str(cluster.workdir / "certs" / "apiserver.crt"), ns],
                                   stdout=subprocess.PIPE, text=True, env=env)
        try:  # the instrument keeps up (it uses ~0.1 s of CPU per phase): fewer late timestamps, fewer restarts
            os.setpriority(os.PRIO_PROCESS, watcher.pid, WATCHER_NICE)
            result["watcher_nice"] = WATCHER_NICE
        except OSError:
            result["watcher_nice"] = 0
        tracker = Tracker(watcher)
        tracker_box.append(tracker)
        if not tracker.ready.wait(30) or tracker.error:
            raise RuntimeError(f"the pod watch did not start: {tracker.error}")
        procs = {p.name: p.proc.pid for p in cluster._procs}
        procs["watcher"] = watcher.pid
        meter = CpuMeter(procs, tracker)

        bodies = pod_bodies(ns, args.pods, ns)
        names = [b["metadata"]["name"] for b, _ in bodies]
        limits = {b["metadata"]["name"]: lim for b, lim in bodies}

        # -- phase 1: create ----------------------------------------------------------------------
        print(f"creating {args.pods} pods in {ns} ...", flush=True)
        sem = asyncio.Semaphore(args.connections)
        accepted: dict[str, float] = {}
        create_lat: list[float] = []

        async def create(body: dict) -> None:
            async with sem:
                t1 = time.monotonic()
                await core.create_namespaced_pod(ns, body)
                t2 = time.monotonic()
            accepted[body["metadata"]["name"]] = t2
            create_lat.append(t2 - t1)

        meter.start()
        t_create = time.monotonic()
        await asyncio.gather(*(create(b) for b, _ in bodies))
        t_accepted = time.monotonic()
        running = await asyncio.to_thread(tracker.wait_all, names, lambda _, st: st["phase"] == "Running", args.timeout)
        t_running = time.monotonic()
        cpu = meter.stop(args.pods)
        if not running:
            seen = Counter((st["phase"], bool(st["node"])) for st in tracker.state.values())
            listed = (await core.list_namespaced_pod(ns)).items
            api_view = Counter((p.status.phase, bool(p.spec.node_name)) for p in listed)
            raise RuntimeError(f"not all pods Running after {args.timeout} s: (phase, scheduled) counts in the watch "
                               f"{dict(seen)}, in a list {dict(api_view)}")
        first_seen: dict[str, dict[str, float]] = {}
        for t, name, st in tracker.since(t_create):
            d = first_seen.setdefault(name, {})
            if st["node"] and "scheduled" not in d:
                d["scheduled"] = t
            if st["phase"] == "Running" and "running" not in d:
                d["running"] = t
        result["create"] = {
            "pods": args.pods,
            "api_accept_s": round(t_accepted - t_create, 3),
            "pods_created_per_s": round(args.pods / (t_accepted - t_create), 1),
            "create_call_ms": summary_ms(create_lat),
            "all_scheduled_s": round(max(d["scheduled"] for d in first_seen.values()) - t_create, 3),
            "all_running_s": round(t_running - t_create, 3),
            "pods_running_per_s": round(args.pods / (t_running - t_create), 1),
            "accepted_to_running_ms": summary_ms([first_seen[n]["running"] - accepted[n] for n in names]),
            "nodes_used": len({tracker.state[n]["node"] for n in names}),
            "watch_restarts": sum(t_create <= r <= t_running for r in tracker.restarts),
            "cpu": cpu,
        }
        print(f"  accepted in {t_accepted - t_create:.2f} s, all Running in {t_running - t_create:.2f} s", flush=True)

        # -- idle: what 500 running pods cost the control plane with nothing happening ------------
        meter.start()
        await asyncio.sleep(args.idle_s)
        idle = meter.stop()
        result["idle"] = {"wall_s": idle["wall_s"], "resource_manager_cores": idle["resource_manager_cores"],
                          "processes_cores": {k: round(v / idle["wall_s"], 3) for k, v in idle["processes_cpu_s"].items()},
                          "outside_load_cores": idle["outside_load_cores"]}
        idle_cores = idle["resource_manager_cores"] + sum(result["idle"]["processes_cores"].values())

        # -- phase 2: resize ----------------------------------------------------------------------
        resizer = AsyncPodResizer(core, read_node=not args.no_read_node)

        async def resize_round(label: str, seq: int, rate: float) -> dict[str, Any]:
            targets = {n: limits[n] + seq * GI for n in names}
            starts: dict[str, float] = {}
            applied: dict[str, float] = {}
            outcomes: Counter = Counter()
            messages: dict[str, str] = {}
            lag: list[float] = []

            async def one(name: str, delay: float) -> None:
                # The signal is read at its due time; a Resource Manager too busy to start on it
                # then is late, and that lateness is part of the round trip.
                due = t0 + delay
                if due > time.monotonic():
                    await asyncio.sleep(due - time.monotonic())
                lag.append(time.monotonic() - due)
                sig = ResizeSignal(resource="memory", old=float(targets[name] - GI), new=float(targets[name]),
                                   reason="memory use above the allocation's threshold (k8s_scale)", time=time.time(),
                                   sequence=seq, container=CONTAINER)
                starts[name] = due
                out = await resizer.apply(ns, name, CONTAINER, sig)
                applied[name] = time.monotonic()
                outcomes[out.status] += 1
                if out.status not in ("applied", "capped"):
                    messages.setdefault(out.status, out.message)

            print(f"  resize round {label}: {len(names)} signals" + (f" at {rate:g}/s" if rate else " at once"),
                  flush=True)
            meter.start()
            t0 = time.monotonic()
            parsed: dict[str, int] = {}

            def done(name: str, st: dict) -> bool:
                q = st["status_mem"]
                if q is None:
                    return False
                if q not in parsed:
                    parsed[q] = int(parse_quantity(q))
                return parsed[q] == targets[name]

            waiting = asyncio.create_task(asyncio.to_thread(tracker.wait_all, names, done, args.timeout))
            await asyncio.gather(*(one(n, (i / rate) if rate else 0.0) for i, n in enumerate(names)))
            t_applied = time.monotonic()
            ok = await waiting
            t_end = time.monotonic()
            cpu = meter.stop(len(names))
            # less what the same components burn idle over the same time (heartbeats, resyncs)
            cpu["cpu_ms_per_resize_net_of_idle"] = round(
                cpu["cpu_ms_per_item"]["all"] - idle_cores * cpu["wall_s"] / len(names) * 1000, 2)
            rt, spec_seen, in_prog, actuate = [], [], [], []
            per_pod: dict[str, dict[str, float]] = {}
            for t, name, st in tracker.since(t0):
                d = per_pod.setdefault(name, {})
                if st["spec_mem"] and int(parse_quantity(st["spec_mem"])) == targets[name] and "spec" not in d:
                    d["spec"] = t
                if st["in_progress"] and "in_progress" not in d:
                    d["in_progress"] = t
                if st["status_mem"] and int(parse_quantity(st["status_mem"])) == targets[name] and "actuated" not in d:
                    d["actuated"] = t
            missing = [n for n in names if "actuated" not in per_pod.get(n, {})]
            for n in names:
                d = per_pod.get(n, {})
                if "actuated" in d:
                    rt.append(d["actuated"] - starts[n])
                if "spec" in d and "in_progress" in d:
                    in_prog.append(d["in_progress"] - d["spec"])
                if "in_progress" in d and "actuated" in d:
                    actuate.append(d["actuated"] - d["in_progress"])
                if "spec" in d:
                    spec_seen.append(d["spec"] - starts[n])
            out = {
                "signals": len(names), "rate_per_s": rate or None, "outcomes": dict(outcomes),
                "not_actuated": len(missing), "all_actuated": ok and not missing,
                "round_trip_ms": summary_ms(rt),
                "apply_ms": summary_ms([applied[n] - starts[n] for n in names]),
                "start_lag_ms": summary_ms(lag),
                "signal_to_spec_in_watch_ms": summary_ms(spec_seen),
                "spec_to_in_progress_ms": summary_ms(in_prog),
                "in_progress_to_actuated_ms": summary_ms(actuate),
                "all_applied_s": round(t_applied - t0, 3),
                "all_actuated_s": round(t_end - t0, 3),
                "watch_restarts": sum(t0 <= r <= t_end for r in tracker.restarts),
                "cpu": cpu,
            }
            if messages:
                out["messages"] = messages
            print(f"    round trip p50 {out['round_trip_ms'].get('p50')} ms, p99 {out['round_trip_ms'].get('p99')} ms; "
                  f"apply p99 {out['apply_ms'].get('p99')} ms; outcomes {dict(outcomes)}", flush=True)
            return out

        rounds = [("burst", 0.0)] + [(f"paced {r:g}/s", r) for r in args.rates]
        result["resize_rounds"] = []
        for seq, (label, rate) in enumerate(rounds, start=1):
            result["resize_rounds"].append({"round": label, **await resize_round(label, seq, rate)})

        # -- phase 3: complete --------------------------------------------------------------------
        print("  completing the pods ...", flush=True)
        meter.start()
        t0 = time.monotonic()
        patch = {"metadata": {"annotations": {COMPLETE_AFTER: "1s"}}}

        async def finish(name: str) -> None:
            async with sem:
                await core.patch_namespaced_pod(name, ns, patch)

        await asyncio.gather(*(finish(n) for n in names))
        t_patched = time.monotonic()
        ok = await asyncio.to_thread(tracker.wait_all, names, lambda _, st: st["phase"] == "Succeeded", args.timeout)
        t_done = time.monotonic()
        result["complete"] = {"all_patched_s": round(t_patched - t0, 3), "all_succeeded_s": round(t_done - t0, 3),
                              "all_succeeded": ok,
                              "watch_restarts": sum(t0 <= r <= t_done for r in tracker.restarts),
                              "phases": dict(Counter(tracker.state[n]["phase"] for n in names)),
                              "cpu": meter.stop(len(names))}
        print(f"    all Succeeded in {t_done - t0:.2f} s", flush=True)
    finally:
        t0 = time.monotonic()
        try:
            await core.delete_namespace(ns)
            while True:
                try:
                    await core.read_namespace(ns)
                except aclient.ApiException as exc:
                    if exc.status == 404:
                        result["namespace_deleted_s"] = round(time.monotonic() - t0, 3)
                        break
                    raise
                if time.monotonic() - t0 > 120:
                    result["namespace_deleted_s"] = None
                    break
                await asyncio.sleep(0.2)
        finally:
            await api.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--nodes", type=int, default=25, help="kwok nodes of 32 cpu / 128Gi")
    parser.add_argument("--rates", type=lambda text: [float(x) for x in text.split(",") if x.strip()], default=[10.0, 25.0],
                        help="signals per second of each paced round after the burst, comma-separated ('' for none)")
    parser.add_argument("--connections", type=int, default=100, help="the async client's connection pool")
    parser.add_argument("--no-read-node", action="store_true", help="resize without reading the node (no room cap)")
    parser.add_argument("--kwok-parallelism", type=int, default=0,
                        help="kwok's podPlayStageParallelism (0: LocalCluster's, i.e. kwok's default 4)")
    parser.add_argument("--scheduler-qps", type=int, default=0,
                        help="kube-scheduler --kube-api-qps (burst twice that; 0: LocalCluster's, 500)")
    parser.add_argument("--idle-s", type=float, default=5.0, help="seconds of idle CPU measured before the resizes")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each phase")
    parser.add_argument("--json", type=Path, default=RESULTS)
    parser.add_argument("--watch", nargs=3, metavar=("SERVER", "CA", "NAMESPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.watch:
        watch_main(*args.watch)
        return

    from harness.local_cluster import VERSIONS, LocalCluster, NodeShape

    class Cluster(LocalCluster):
        """``LocalCluster`` as is, or with kwok's pod stage parallelism (``--kwok-parallelism``) or the
        scheduler's client rate limit (``--scheduler-qps``) changed, for finding where the time goes;
        the default run uses the stock cluster."""

        def _spawn(self, name: str, argv: list[str]):
            if name == "kwok" and args.kwok_parallelism:
                config = Path(argv[argv.index("--config") + 1])
                options = {"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
                           # kwok does not default the options of a KwokConfiguration it reads: all are given.
                           "options": {"podPlayStageParallelism": args.kwok_parallelism, "nodePlayStageParallelism": 4,
                                       "nodeLeaseParallelism": 4, "podsOnNodeSyncParallelism": 1,
                                       "enableDebuggingHandlers": True, "enableProfilingHandler": True,
                                       "enableContentionProfiling": False, "manageAllNodes": False,
                                       "enablePodsOnNodeSyncListPager": True,
                                       "enablePodsOnNodeSyncStreamWatch": False}}
                config.write_text(config.read_text() + "---\n" + json.dumps(options) + "\n")
            if name == "kube-scheduler" and args.scheduler_qps:
                argv = [*argv, f"--kube-api-qps={args.scheduler_qps}", f"--kube-api-burst={2 * args.scheduler_qps}"]
            return super()._spawn(name, argv)

    t_all = time.monotonic()
    result: dict[str, Any] = {
        "pods": args.pods,
        "nodes": {"count": args.nodes, "cpu": "32", "memory": "128Gi", "emulated_by": "kwok"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "control_plane": VERSIONS, "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                    "note": "one shared machine: the control plane, kwok, the watcher and this process share its cores, "
                            "and other engineers' test clusters may run beside them"},
        "connections": args.connections, "read_node": not args.no_read_node,
        "kwok_pod_play_stage_parallelism": args.kwok_parallelism or "default (4)",
        "scheduler_kube_api_qps": args.scheduler_qps or "LocalCluster's (500)",
        "target": {"round_trip_p99_s": TARGET_P99_S},
    }
    nodes = [NodeShape(f"kwok-node-{i:02d}", cpu="32", memory="128Gi") for i in range(args.nodes)]
    tracker_box: list[Tracker] = []
    with tempfile.TemporaryDirectory(prefix="k8s-scale-") as tmp:
        cluster = Cluster(Path(tmp) / "cluster", nodes=nodes)
        try:
            cluster.start()
            result["cluster_start_s"] = round(cluster.started_in_s, 3)
            print(f"control plane with {args.nodes} kwok nodes up in {cluster.started_in_s:.2f} s", flush=True)
            asyncio.run(run_phases(cluster, args, result, tracker_box))
        finally:
            for tracker in tracker_box:
                tracker.proc.terminate()
                try:
                    tracker.proc.wait(10)
                except subprocess.TimeoutExpired:
                    tracker.proc.kill()
            cluster.stop()
    result["total_wall_s"] = round(time.monotonic() - t_all, 1)
    result["target"]["met"] = {z["round"]: z["round_trip_ms"].get("p99", math.inf) <= TARGET_P99_S * 1000
                               for z in result["resize_rounds"]}
    # The most this machine drains: every signal at once, resizes emulated per second.
    burst = result["resize_rounds"][0]
    result["burst_resizes_per_s"] = round(burst["signals"] / burst["all_actuated_s"], 1)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)


def print_table(r: dict) -> None:
    c = r["create"]
    print()
    print(f"{r['pods']} pods on {r['nodes']['count']} kwok nodes, {r['machine']['cpus']} cores, {r['machine'].get('kube_version')}; "
          f"read_node={r['read_node']}")
    print(f"{'cluster start (s)':<44} {r['cluster_start_s']:>9.2f}")
    print(f"{'pods created per second (API accepted)':<44} {c['pods_created_per_s']:>9.1f}")
    print(f"{'all scheduled / all Running (s)':<44} {c['all_scheduled_s']:>9.2f} {c['all_running_s']:>9.2f}")
    for z in r["resize_rounds"]:
        print(f"-- resize {z['round']}: {z['signals']} signals, outcomes {z['outcomes']}, all emulated after {z['all_actuated_s']:.1f} s")
        print(f"{'':<44} {'p50':>9} {'p95':>9} {'p99':>9} {'max':>9}")
        for label, k in (("round trip: signal -> emulated (ms)", "round_trip_ms"), ("  apply(): API accepted (ms)", "apply_ms"),
                         ("  spec -> PodResizeInProgress (ms)", "spec_to_in_progress_ms"),
                         ("  PodResizeInProgress -> actuated (ms)", "in_progress_to_actuated_ms")):
            q = z[k]
            print(f"{label:<44} {q.get('p50', 0):>9.1f} {q.get('p95', 0):>9.1f} {q.get('p99', 0):>9.1f} {q.get('max', 0):>9.1f}")
        cpu = z["cpu"]
        per = ", ".join(f"{k} {v:.1f}" for k, v in cpu["cpu_ms_per_item"].items())
        print(f"  Resource Manager {cpu['resource_manager_cpu_s']:.2f} cpu-s ({cpu['resource_manager_cores']:.2f} cores); "
              f"CPU ms per resize: {per}")
        print(f"  machine busy {cpu['machine_busy_cores']:.2f} cores, of which outside load {cpu['outside_load_cores']:.2f}; "
              f"watch restarts {z['watch_restarts']}")
    print(f"{'all Succeeded after completion (s)':<44} {r['complete']['all_succeeded_s']:>9.2f}")
    print(f"{'namespace deleted (s)':<44} {r.get('namespace_deleted_s') or float('nan'):>9.2f}")
    print(f"{'resizes emulated per second, burst':<44} {r['burst_resizes_per_s']:>9.1f}")
    i = r["idle"]
    print(f"idle with {r['pods']} pods Running: " + ", ".join(f"{k} {v:.2f}" for k, v in i["processes_cores"].items())
          + " cores")
    met = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["target"]["met"].items())
    print(f"target round trip p99 <= {r['target']['round_trip_p99_s']} s: {met}; whole run {r['total_wall_s']:.0f} s")


if __name__ == "__main__":
    main()

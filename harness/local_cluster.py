"""A real Kubernetes control plane on loopback for the tests and benchmarks, in the spirit of
controller-runtime's envtest: etcd, kube-apiserver, kube-controller-manager and kube-scheduler
built from source (``tools/control-plane/build.sh``), with kwok standing in for the kubelets.

What is real and what is emulated:

| part | real | emulated by kwok's Stages (``emulation/stages.yaml`` and the per-node stages below) |
|---|---|---|
| API validation, admission, RBAC, quota, ``pods/resize``, ``pods/log`` routing | yes | |
| scheduling against node capacity, taints, affinity | yes | |
| nodes (capacity, GPU labels, heartbeats) | objects are real | kwok keeps them Ready |
| pod start, completion, exit code, ``OOMKilled`` | | from the pod's annotations |
| in-place resize actuation and its conditions | | status follows spec when the pod's requests fit the node's allocatable; ``PodResizePending``/``Infeasible`` when not |
| container logs | served through the real ``pods/log`` API | from files named by kwok ``Logs`` objects |

Start it with :meth:`LocalCluster.start`; it writes an admin kubeconfig and always stops every
process in :meth:`LocalCluster.stop`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from airflow_adaptive.adapters.mlflow.local_server import free_port
from airflow_adaptive.domain.quantities import parse_quantity

log = logging.getLogger(__name__)

VERSIONS = "k8s-v1.37.2-etcd-v3.7.3-kwok-v0.8.0-helm-v4.3.1"
BUILD_SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "control-plane" / "build.sh"
STAGES = Path(__file__).with_name("emulation") / "stages.yaml"
START_TIMEOUT_S = 60

# Annotations the emulation reads from a pod (they mean nothing to a real kubelet).
EMULATION = "emulation.airflow-adaptive.io"
COMPLETE_AFTER = f"{EMULATION}/complete-after"   # Go duration after the pod started, e.g. "3s"
EXIT_CODE = f"{EMULATION}/exit-code"             # the workload containers' exit code, default 0
EXIT_REASON = f"{EMULATION}/reason"              # e.g. OOMKilled; default Completed / Error
KWOK_NODE = "kwok.x-k8s.io/node"                 # kwok manages nodes with this annotation = fake
GPU_LABEL = "nvidia.com/gpu.product"
EMULATION_CRDS = ("logs", "clusterlogs")  # kwok's CRDs for serving container logs from files

# The controllers the tests need: namespace deletion, default service accounts, garbage
# collection, quota status, and node lifecycle (it lifts the not-ready taint the API server puts on
# a new node once kwok reports it Ready). The rest are left out: on 2 cores every idle controller
# costs the API server CPU, and without taint-eviction a restarted API server evicts nothing.
CONTROLLERS = ",".join([
    "namespace-controller", "serviceaccount-controller", "garbage-collector-controller",
    "resourcequota-controller", "node-lifecycle-controller", "pod-garbage-collector-controller",
])


def default_bin_dir() -> Path:
    cache = Path(os.environ.get("AIRFLOW_ADAPTIVE_K8S_CACHE", Path.home() / ".cache" / "airflow-adaptive" / "control-plane"))
    return Path(os.environ.get("AIRFLOW_ADAPTIVE_K8S_BIN", cache / VERSIONS / "bin"))


@dataclass(frozen=True)
class NodeShape:
    """One kwok node: allocatable equals capacity (no system reservations to model)."""

    name: str
    cpu: str
    memory: str
    gpus: int = 0
    gpu_type: str | None = None
    pods: int = 110
    labels: Mapping[str, str] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": str(self.pods)}
        if self.gpus:
            resources["nvidia.com/gpu"] = str(self.gpus)
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "type": "kwok", **self.labels}
        if self.gpu_type:
            labels[GPU_LABEL] = self.gpu_type
        # GPU nodes are tainted as GPU operators do; the ExtendedResourceToleration admission
        # plugin lets pods that ask for nvidia.com/gpu tolerate it, so CPU pods stay off them.
        taints = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}] if self.gpus else []
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels, "annotations": {KWOK_NODE: "fake"}},
            "spec": {"taints": taints},
            "status": {"capacity": resources, "allocatable": dict(resources)},
        }


DEFAULT_NODES = (
    NodeShape("cpu-node-0", cpu="8", memory="32Gi"),
    NodeShape("cpu-node-1", cpu="8", memory="32Gi"),
    NodeShape("gpu-node-0", cpu="32", memory="128Gi", gpus=4, gpu_type="NVIDIA-A100-SXM4-40GB"),
)


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message names the component and its log's tail."""


@dataclass
class _Process:
    name: str
    proc: subprocess.Popen
    log_path: Path

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def spawn(name: str, argv: list[str], workdir: Path, pass_fds=()) -> _Process:
    """Start ``argv`` in a session of its own (so it can be stopped with its children), its output
    in ``workdir/logs/<name>.log``."""
    log_path = workdir / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
                                pass_fds=tuple(pass_fds))
    return _Process(name, proc, log_path)


def stop_process_groups(procs: list, *, timeout_s: float) -> None:
    """SIGTERM the process group of each of ``procs`` (objects with ``.proc``), newest first, then wait
    for each, SIGKILL whatever outlives ``timeout_s``; empties ``procs``."""
    for p in reversed(procs):
        try:
            os.killpg(p.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    for p in reversed(procs):
        try:
            p.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()
    procs.clear()


class LocalCluster:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok under ``workdir``.

    ``emulated`` is true when its kubelets are kwok's Stages (tests of the emulation check this).
    """

    def __init__(self, workdir: str | os.PathLike[str], *, bin_dir: str | os.PathLike[str] | None = None,
                 nodes: Iterable[NodeShape] = DEFAULT_NODES, kwok: bool = True, address: str = "127.0.0.1",
                 wrap: Iterable[str] = (), controllers_extra: Iterable[str] = ()) -> None:
        """``address`` is where every component listens and the API server advertises itself;
        ``wrap`` prefixes each component's command (``nsenter --net=...`` for the real node's
        namespace); ``kwok=False`` leaves the nodes to real kubelets. Ports listed in
        ``host_ports`` (inner port -> host loopback port, filled before :meth:`start`) are what the
        host's clients use instead: the address of a cluster in a network namespace is not
        reachable from the host (``harness/netns_forward.py``)."""
        self.workdir = Path(workdir)
        self.bin_dir = Path(bin_dir) if bin_dir else default_bin_dir()
        self.nodes = tuple(nodes)
        self.kwok = kwok
        self.address = address
        self.wrap = list(wrap)
        self.controllers = ",".join([CONTROLLERS, *controllers_extra])
        self.emulated = kwok
        self.kubeconfig = self.workdir / "kubeconfig"  # the host's clients (tests, helm, Airflow)
        self.component_kubeconfig = self.workdir / "kubeconfig-components"  # components beside the API server
        self.port = free_port()
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.host_ports: dict[int, int] = {}
        self.token = secrets.token_hex(16)
        self._procs: list[_Process] = []
        self.started_in_s: float | None = None

    @property
    def server(self) -> str:
        """The API server as the host's clients reach it."""
        return self._url("https", self.port)

    def _url(self, scheme: str, port: int) -> str:
        """How the host reaches ``port``: loopback, or the loopback port forwarded to it. Never
        the cluster's own address when that is not loopback: the host has no route there but
        its default one, and test traffic must not leave the machine."""
        if port in self.host_ports:
            return f"{scheme}://127.0.0.1:{self.host_ports[port]}"
        if self.address != "127.0.0.1":
            raise RuntimeError(f"port {port} of {self.address} is not forwarded to the host's loopback "
                               "(host_ports); the host may only reach the cluster through 127.0.0.1")
        return f"{scheme}://{self.address}:{port}"

    # ---- life cycle ---------------------------------------------------------------------------
    def start(self) -> "LocalCluster":
        needed = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler") + (("kwok",) if self.kwok else ())
        missing = [b for b in needed
                   if not (self.bin_dir / b).is_file()]
        if missing:
            raise ControlPlaneError(f"{', '.join(missing)} not found in {self.bin_dir}; build them with "
                                    f"`bash {BUILD_SCRIPT}` (the README's test command does this)")
        t0 = time.monotonic()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._write_credentials()
            self._start_etcd()
            self._start_apiserver()
            self._write_kubeconfig()
            if self.kwok:
                self._install_emulation_crds()
            self._spawn("kube-controller-manager", [
                "--kubeconfig", str(self.component_kubeconfig), "--leader-elect=false", "--controllers", self.controllers,
                "--root-ca-file", str(self.workdir / "certs" / "apiserver.crt"),
                "--bind-address", "127.0.0.1", "--secure-port", str(free_port()),
                "--authentication-skip-lookup", "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics"])
            self._spawn("kube-scheduler", [
                "--kubeconfig", str(self.component_kubeconfig), "--leader-elect=false",
                # Its default 50 requests/s paced binding 500 pods to 8 s (kwokctl raises it too).
                "--kube-api-qps", "500", "--kube-api-burst", "1000",
                "--bind-address", "127.0.0.1", "--secure-port", str(free_port()), "--authentication-skip-lookup"])
            if self.kwok:
                self._start_kwok()
                self._register_nodes()
        except BaseException:
            self.stop()
            raise
        self.started_in_s = time.monotonic() - t0
        log.info("control plane up at %s in %.1f s", self.server, self.started_in_s)
        return self

    def stop(self) -> None:
        """Stop every process, newest first (kwok before the API server, the API server before etcd)."""
        stop_process_groups(self._procs, timeout_s=15)

    def kill_apiserver(self) -> None:
        """Make the API server go away abruptly (the fault tests); :meth:`restart_apiserver` brings it back."""
        p = next(p for p in self._procs if p.name == "kube-apiserver")
        os.killpg(p.proc.pid, signal.SIGKILL)
        p.proc.wait()
        self._procs.remove(p)

    def restart_apiserver(self) -> None:
        self._start_apiserver()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- clients ------------------------------------------------------------------------------
    def api_client(self, token: str | None = None):
        """A kubernetes ``ApiClient``: admin, or the holder of ``token`` (a service account's)."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.workdir / "certs" / "apiserver.crt")
        cfg.api_key = {"authorization": f"Bearer {token or self.token}"}
        return client.ApiClient(cfg)

    def logs_file(self, namespace: str, pod: str, container: str) -> Path:
        """The file the emulated kubelet serves as ``container``'s log (create it with :meth:`serve_logs`)."""
        return self.workdir / "container-logs" / namespace / pod / f"{container}.log"

    def serve_logs(self, api_client: Any, namespace: str, pod: str, containers: Iterable[str]) -> dict[str, Path]:
        """Create the kwok ``Logs`` object that makes ``pods/log`` read each container's file."""
        from kubernetes import client

        files = {}
        for c in containers:
            path = self.logs_file(namespace, pod, c)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            files[c] = path
        body = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {"name": pod, "namespace": namespace},
                "spec": {"logs": [{"containers": [c], "logsFile": str(p), "follow": True} for c, p in files.items()]}}
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "kwok.x-k8s.io", "v1alpha1", namespace, "logs", body)
        return files

    def serve_namespace_logs(self, api_client: Any, namespace: str, container: str, path: Path) -> None:
        """Serve ``path`` as the log of ``container`` in every pod of ``namespace`` (pods whose names
        are not known in advance, such as those KubernetesPodOperator names)."""
        from kubernetes import client

        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        body = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs",
                "metadata": {"name": f"{namespace}-{container}"},
                "spec": {"selector": {"matchNamespaces": [namespace]},
                         "logs": [{"containers": [container], "logsFile": str(path), "follow": True}]}}
        client.CustomObjectsApi(api_client).create_cluster_custom_object("kwok.x-k8s.io", "v1alpha1", "clusterlogs", body)

    # ---- components ---------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> _Process:
        p = spawn(name, [*self.wrap, str(self.bin_dir / name), *args], self.workdir)
        self._procs.append(p)
        return p

    def _wait(self, p: _Process, url: str, *, ca: Path | None = None, token: str | None = None,
              timeout_s: float = START_TIMEOUT_S) -> None:
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
        deadline = time.monotonic() + timeout_s
        last = ""
        while True:
            if p.proc.poll() is not None:
                raise ControlPlaneError(f"{p.name} exited with {p.proc.returncode}:\n{p.tail()}")
            try:
                req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
                with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except OSError as exc:
                last = str(exc)
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"{p.name} did not answer {url} in {timeout_s:.0f} s ({last}):\n{p.tail()}")
            time.sleep(0.1)

    def _write_credentials(self) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        sa_key = certs / "sa.key"
        if not sa_key.exists():
            subprocess.run(["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True)
        # One admin identity for the components and the tests; service accounts get real tokens
        # from the TokenRequest API, so RBAC is exercised with them, not with this one.
        (certs / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        if self.address != "127.0.0.1" and not (certs / "apiserver.crt").exists():
            # The API server's own self-signed certificate names its advertised address only; the
            # host's clients come through 127.0.0.1, the pods through the service address.
            names = ",".join([f"IP:{self.address}", "IP:127.0.0.1", "IP:10.96.0.1", "DNS:localhost", "DNS:kubernetes",
                              "DNS:kubernetes.default", "DNS:kubernetes.default.svc"])
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
                            "-keyout", str(certs / "apiserver.key"), "-out", str(certs / "apiserver.crt"),
                            "-subj", "/CN=kube-apiserver", "-addext", f"subjectAltName={names}"],
                           check=True, capture_output=True)

    def _start_etcd(self) -> None:
        self.etcd_url = f"http://{self.address}:{self.etcd_port}"
        peer = f"http://{self.address}:{self.etcd_peer_port}"
        p = self._spawn("etcd", [
            "--data-dir", str(self.workdir / "etcd"), "--listen-client-urls", self.etcd_url,
            "--advertise-client-urls", self.etcd_url, "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}",
            # A test cluster's data is thrown away: fsync would only slow every write down.
            "--unsafe-no-fsync", "--log-level", "warn"])
        self._wait(p, f"{self._url('http', self.etcd_port)}/health")

    def _start_apiserver(self) -> None:
        certs = self.workdir / "certs"
        p = self._spawn("kube-apiserver", [
            "--etcd-servers", self.etcd_url, "--bind-address", self.address, "--secure-port", str(self.port),
            *(["--advertise-address", self.address] if self.address != "127.0.0.1" else []),
            "--cert-dir", str(certs), "--token-auth-file", str(certs / "tokens.csv"),
            *(["--tls-cert-file", str(certs / "apiserver.crt"), "--tls-private-key-file", str(certs / "apiserver.key")]
              if (certs / "apiserver.key").exists() else []),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(certs / "sa.key"),
            "--service-account-signing-key-file", str(certs / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/24", "--authorization-mode", "RBAC",
            "--enable-admission-plugins", "ExtendedResourceToleration",
            # kwok's kubelet endpoint is on loopback under the node's InternalIP.
            "--kubelet-preferred-address-types", "InternalIP",
            # The scale benchmark runs 500 pods' worth of writes from one client.
            "--max-requests-inflight", "1000", "--max-mutating-requests-inflight", "500",
            "--profiling=false"])
        self._wait_apiserver(p)

    def _wait_apiserver(self, p: _Process) -> None:
        # The API server writes its self-signed serving certificate (and its CA) on start.
        crt = self.workdir / "certs" / "apiserver.crt"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not crt.exists():
            if p.proc.poll() is not None or time.monotonic() > deadline:
                raise ControlPlaneError(f"kube-apiserver wrote no serving certificate:\n{p.tail()}")
            time.sleep(0.1)
        self._wait(p, f"{self.server}/readyz", ca=crt, token=self.token)

    def _write_kubeconfig(self) -> None:
        ca = (self.workdir / "certs" / "apiserver.crt").read_text()
        for path, server in ((self.kubeconfig, self.server), (self.component_kubeconfig, f"https://{self.address}:{self.port}")):
            config = {
                "apiVersion": "v1", "kind": "Config", "current-context": "local",
                "clusters": [{"name": "local", "cluster": {
                    "server": server, "certificate-authority-data": base64.b64encode(ca.encode()).decode()}}],
                "users": [{"name": "admin", "user": {"token": self.token}}],
                "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
            }
            path.write_text(yaml.safe_dump(config))
            path.chmod(0o600)

    def _install_emulation_crds(self) -> None:
        from kubernetes import client, utils

        with self.api_client() as api:
            ext = client.ApiextensionsV1Api(api)
            for plural in EMULATION_CRDS:
                crd = self.bin_dir.parent / "crds" / f"kwok.x-k8s.io_{plural}.yaml"
                if not crd.exists():
                    raise ControlPlaneError(f"{crd} is missing; run `bash {BUILD_SCRIPT}`")
                utils.create_from_yaml(api, str(crd))
            deadline = time.monotonic() + 30
            for plural in EMULATION_CRDS:
                while True:
                    got = ext.read_custom_resource_definition(f"{plural}.kwok.x-k8s.io")
                    if any(c.type == "Established" and c.status == "True" for c in (got.status.conditions or [])):
                        break
                    if time.monotonic() > deadline:
                        raise ControlPlaneError(f"kwok's {plural} CRD was not established in 30 s")
                    time.sleep(0.1)

    def _start_kwok(self) -> None:
        config = self.workdir / "kwok.yaml"
        docs = list(yaml.safe_load_all(STAGES.read_text().replace("__NO_RESIZE_UNDER_WAY__", NO_RESIZE_UNDER_WAY)))
        docs += [doc for n in self.nodes for doc in resize_stages(n)]
        config.write_text(yaml.safe_dump_all(docs))
        node_port = free_port()
        p = self._spawn("kwok", [
            "--kubeconfig", str(self.component_kubeconfig), "--config", str(config),
            "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE}=fake",
            "--node-ip", "127.0.0.1", "--node-port", str(node_port),
            "--server-address", f"127.0.0.1:{node_port}", "--enable-crds", "Logs,ClusterLogs",
            "--cidr", "10.244.0.0/16"])
        self._wait(p, f"http://127.0.0.1:{node_port}/healthz")

    def _register_nodes(self) -> None:
        from kubernetes import client

        with self.api_client() as api:
            core = client.CoreV1Api(api)
            for n in self.nodes:
                core.create_node(n.manifest())
            deadline = time.monotonic() + 30
            while True:
                ready = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items
                         if any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))}
                if ready >= {n.name for n in self.nodes}:
                    return
                if time.monotonic() > deadline:
                    raise ControlPlaneError(f"kwok did not make nodes Ready in 30 s (ready: {sorted(ready)}):\n"
                                            f"{self._procs[-1].tail()}")
                time.sleep(0.1)


def cri_log_line(text: str, stream: str = "stdout", at: datetime | None = None) -> str:
    """One line in the CRI log format the kubelet (and kwok) read container logs from."""
    stamp = (at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {text}\n"


# ---- per-node resize emulation ------------------------------------------------------------------
# jq: a Kubernetes quantity as a number (bytes, or cores), for comparing requests with allocatable.
_JQ_QUANTITY = (
    'def qty: if . == null then 0 else (tostring | capture("^(?<n>[0-9.]+)(?<s>[a-zA-Z]*)$") '
    '| (.n | tonumber) * ({"": 1, "m": 0.001, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, '
    '"Ki": 1024, "Mi": 1048576, "Gi": 1073741824, "Ti": 1099511627776}[.s])) end; '
)
_POD_REQUEST = ('([.spec.containers[], (.spec.initContainers[]? | select(.restartPolicy == "Always")) '
                '| .resources.requests.{res} | qty] | add)')


def _quantity(text: str) -> float:
    return float(parse_quantity(text))


def resize_stages(node: NodeShape) -> list[dict[str, Any]]:
    """The two stages that decide a resize on ``node``: start it when the pod's requests fit the
    node's allocatable (the kubelet's feasibility check), else mark it ``PodResizePending``/
    ``Infeasible``. Deferred (fits the node but not beside the other pods) is not emulated."""
    exceeds = _JQ_QUANTITY + (f'{_POD_REQUEST.format(res="cpu")} > {_quantity(node.cpu)} or '
                              f'{_POD_REQUEST.format(res="memory")} > {_quantity(node.memory)}')
    no_resize_in_progress = {"key": '[.status.conditions[]? | select(.type == "PodResizeInProgress")] | length',
                             "operator": "In", "values": ["0"]}
    # The node test first: kwok stops at the first expression that fails, so the stages of the
    # other nodes cost one comparison each.
    base = [{"key": ".spec.nodeName", "operator": "In", "values": [node.name]},
            {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
            {"key": ".status.phase", "operator": "In", "values": ["Running"]},
            {"key": RESIZE_WANTED, "operator": "In", "values": ["true"]}]
    infeasible_msg = (f"Node didn't have enough capacity for the resized pod (node {node.name}: "
                      f"cpu {node.cpu}, memory {node.memory}; emulated by kwok)")
    return [
        _stage(f"pod-resize-infeasible-{node.name}", base + [
            {"key": exceeds, "operator": "In", "values": ["true"]},
            {"key": '[.status.conditions[]? | select(.type == "PodResizePending" and .reason == "Infeasible")] | length',
             "operator": "In", "values": ["0"]},
            no_resize_in_progress],
            "{{ $now := Now }}\nconditions:\n"
            "- type: PodResizePending\n  status: \"True\"\n  reason: Infeasible\n"
            f"  message: {json.dumps(infeasible_msg)}\n  lastProbeTime: {{{{ $now | Quote }}}}\n"
            "  lastTransitionTime: {{ $now | Quote }}\n"
            "- type: PodResizeInProgress\n  $patch: delete\n"),
        _stage(f"pod-resize-start-{node.name}", base + [
            {"key": exceeds, "operator": "In", "values": ["false"]},
            no_resize_in_progress],
            "{{ $now := Now }}\nconditions:\n"
            "- type: PodResizeInProgress\n  status: \"True\"\n"
            "  lastProbeTime: {{ $now | Quote }}\n  lastTransitionTime: {{ $now | Quote }}\n"
            "- type: PodResizePending\n  $patch: delete\n"),
    ]


# jq: true while some container's spec resources differ from what its status says is applied.
RESIZE_WANTED = (
    '([.spec.containers[] | {n: .name, r: (.resources.requests // {}), l: (.resources.limits // {})}] | sort_by(.n)) '
    '!= ([.status.containerStatuses[]? | {n: .name, r: (.resources.requests // {}), l: (.resources.limits // {})}] '
    '| sort_by(.n))'
)
# jq: the pod may complete: nothing to resize, or what was asked for is pending (Infeasible), and
# no resize is being actuated.
NO_RESIZE_UNDER_WAY = (
    f'((({RESIZE_WANTED}) | not) or ([.status.conditions[]? | select(.type == "PodResizePending")] | length > 0)) '
    'and ([.status.conditions[]? | select(.type == "PodResizeInProgress")] | length == 0)'
)


def _stage(name: str, expressions: list[dict[str, Any]], status_template: str) -> dict[str, Any]:
    return {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": name},
            "spec": {"resourceRef": {"apiGroup": "v1", "kind": "Pod"},
                     "selector": {"matchExpressions": expressions},
                     "next": {"patches": [{"subresource": "status", "root": "status", "template": status_template}]}}}

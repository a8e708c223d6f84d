"""A real Kubernetes node for the tests: kubelet, containerd, runc and CNI, in a network namespace
of its own with the control plane it registers with (a kind-like node without Docker).

Layout (all traffic stays on the host's loopback or inside the namespaces the node creates):

    host                              netns airflow-adaptive-node
    test process ─ 127.0.0.1:<p> ─┐   aa-node0 (veth, both ends here) 198.18.250.2: the InternalIP, the
                                  └─> netns_forward ─> API server's address; etcd, kube-apiserver,
                                                       controller-manager, scheduler, containerd,
                                                       kubelet; CNI bridge cni0 198.18.251.1/24,
                                                       one network namespace per pod

No address, link or route is added to the host: the node's addresses live on an interface in
its own namespace, and the tests reach the API server (and etcd's health check) through
listening sockets on the host's 127.0.0.1 that a forwarder running inside the namespace serves
(``harness/netns_forward.py``). The namespace has no route out, so nothing in it (a
pull of a mistyped image, a DNS lookup) can leave the machine; containerd's registry
configuration also sends every pull to a loopback port that refuses it.

The kubelet runs with the cgroupfs driver under one cgroup root of its own
(``/airflow-adaptive-node``), cgroup v1 as this machine has it (``failCgroupV1: false``) and v2
where the host offers it. It is registered with the taint ``airflow-adaptive.io/real-node``, so only
pods that tolerate it (the real-node tests') land there, never a kwok test's.

What the node changes on the host, and how it is put back (:meth:`NodeSandbox.clean`, run before
start, so a killed earlier run is cleaned too, and on stop):

| change | where | undone by |
|---|---|---|
| network namespace | ``/run/netns/airflow-adaptive-node`` (its interfaces and the pods' bridge inside) | deleting the namespace |
| pod network namespaces | ``/run/netns/cni-*`` made by containerd | unmounting and removing those the ledger names |
| sysctls the kubelet sets | ``vm.overcommit_memory``, ``kernel.panic``, ``kernel.panic_on_oops`` | the values saved in the ledger before the start |
| cgroups | ``<controller>/airflow-adaptive-node/...`` | killing their processes, removing them deepest first |
| mounts | container root filesystems, shm, the kubelet's volumes under the state directories | unmounting everything under them, deepest first |
| files | ``/var/lib/airflow-adaptive-node``, ``/run/airflow-adaptive-node``, ``/run/containerd``, ``/var/lib/cni``, ``/var/lib/kubelet/device-plugins`` (a kubelet constant), ``/var/log/containers`` links | removed; directories that existed before are kept |

The ledger (``/var/lib/airflow-adaptive-node.ledger.json``) is written before anything changes, so
a run killed at any point leaves what the next run needs to undo it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from harness.local_cluster import ControlPlaneError, LocalCluster, spawn, stop_process_groups

log = logging.getLogger(__name__)

NETNS = "airflow-adaptive-node"
NODE_IF, NODE_PEER = "aa-node0", "aa-node1"
NODE_ADDR = "198.18.250.2"  # RFC 2544's benchmarking range: on a dummy interface inside the namespace only
POD_CIDR = "198.18.251.0/24"
NODE_NAME = "real-node-0"
TAINT_KEY = "airflow-adaptive.io/real-node"
TAINT = {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": TAINT_KEY, "operator": "Equal", "value": "true", "effect": "NoSchedule"}
STATE = Path("/var/lib/airflow-adaptive-node")
RUN = Path("/run/airflow-adaptive-node")
LEDGER = Path("/var/lib/airflow-adaptive-node.ledger.json")
CGROUP_ROOT = "airflow-adaptive-node"
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
# Paths outside our own directories that containerd 1.6 and the kubelet write to, whatever their
# configuration says: shim sockets, pod network namespaces, container log links.
# /var/lib/kubelet/device-plugins is a constant of the kubelet's device manager, whatever --root-dir says.
SHARED_PATHS = (Path("/run/containerd"), Path("/run/netns"), Path("/var/log/containers"), Path("/var/lib/cni"),
                Path("/var/lib/kubelet"))
REFUSING_REGISTRY = "http://127.0.0.1:9"  # the discard port: nothing listens, every pull is refused at once
# Run by path, not ``-m``: the forwarder needs only the stdlib, whatever the child's sys.path.
NETNS_FORWARD = Path(__file__).with_name("netns_forward.py")
NODE_START_TIMEOUT_S = 90
# The node keeps the machine's 2 cores but only this much memory for pods (system-reserved takes
# the rest): small enough that a test can fill it with requests and see the kubelet defer a resize.
ALLOCATABLE_MEMORY = "3Gi"


class NodeError(ControlPlaneError):
    """The real node could not start or stop cleanly; the message says which part and why."""


def _run(*cmd: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NodeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    if proc.returncode != 0 and not quiet:
        log.debug("`%s` -> %d: %s", " ".join(cmd), proc.returncode, proc.stderr.strip())
    return proc


# ---- host state ---------------------------------------------------------------------------------
def cgroup_mounts() -> list[Path]:
    """Each cgroup hierarchy's mount point (v1: one per controller set; v2: the unified one)."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype = right.split()[0] if right else ""
        if fstype in ("cgroup", "cgroup2"):
            mounts.append(Path(left.split()[4]))
    return mounts


def mounts_under(prefixes: Iterable[Path]) -> list[str]:
    """Mount points under any of ``prefixes``, deepest first (the order to unmount them)."""
    roots = [str(p).rstrip("/") + "/" for p in prefixes]
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if any((point + "/").startswith(r) for r in roots):
            points.append(point)
    return sorted(set(points), key=lambda p: p.count("/"), reverse=True)


def _is_mount_point(path: Path) -> bool:
    return str(path) in {line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()}


@dataclass
class Ledger:
    """What a run changed outside its own directories, saved before it changes it."""

    sysctls: dict[str, str]
    existed: list[str]           # shared paths that were there before the node started
    pod_netns: list[str]         # /run/netns entries present before (everything else new is ours)

    @classmethod
    def read(cls) -> "Ledger | None":
        try:
            data = json.loads(LEDGER.read_text())
            return cls(dict(data["sysctls"]), list(data["existed"]), list(data["pod_netns"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @classmethod
    def take(cls) -> "Ledger":
        netns = Path("/run/netns")
        return cls(sysctls={k: Path("/proc/sys", k).read_text().strip() for k in KUBELET_SYSCTLS},
                   existed=[str(p) for p in SHARED_PATHS if p.exists()],
                   pod_netns=sorted(p.name for p in netns.iterdir()) if netns.is_dir() else [])

    def write(self) -> None:
        LEDGER.parent.mkdir(parents=True, exist_ok=True)
        LEDGER.write_text(json.dumps({"sysctls": self.sysctls, "existed": self.existed, "pod_netns": self.pod_netns}))


class NodeSandbox:
    """The host state of the real node: created by :meth:`create`, always undone by :meth:`clean`."""

    def create(self) -> None:
        self.clean()  # a killed earlier run's leftovers first
        Ledger.take().write()
        for d in (STATE, RUN):
            d.mkdir(parents=True, exist_ok=True)
        for mount in cgroup_mounts():
            if (mount / "cgroup.controllers").exists() and mount.name == "unified":
                continue  # a v2 hierarchy beside v1 (hybrid): the kubelet uses v1
            (mount / CGROUP_ROOT).mkdir(exist_ok=True)
        _run("ip", "netns", "add", NETNS)
        # The kubelet refuses a loopback node IP: the node's address is on an interface inside the
        # namespace (a veth pair with both ends there: this kernel has no dummy driver); nothing is
        # added to the host's interfaces or routes.
        for cmd in (("ip", "link", "set", "lo", "up"), ("ip", "link", "add", NODE_IF, "type", "veth", "peer", "name", NODE_PEER),
                    ("ip", "addr", "add", f"{NODE_ADDR}/32", "dev", NODE_IF), ("ip", "link", "set", NODE_PEER, "up"),
                    ("ip", "link", "set", NODE_IF, "up")):
            _run("ip", "netns", "exec", NETNS, *cmd)

    def clean(self) -> None:
        ledger = Ledger.read()
        self._kill_processes()
        for point in mounts_under([STATE, RUN, Path("/run/containerd")]):
            _run("umount", "-l", point, check=False)
        netns_dir = Path("/run/netns")
        if netns_dir.is_dir():
            before = set(ledger.pod_netns) if ledger else set()
            for entry in netns_dir.iterdir():
                if entry.name.startswith("cni-") and entry.name not in before:
                    _run("umount", "-l", str(entry), check=False, quiet=True)
                    entry.unlink(missing_ok=True)
        if (netns_dir / NETNS).exists():
            _run("ip", "netns", "del", NETNS, check=False)
        self._remove_cgroups()
        for d in (STATE, RUN):
            shutil.rmtree(d, ignore_errors=True)
        containers_log = Path("/var/log/containers")
        if containers_log.is_dir():
            for link in containers_log.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(str(STATE)):
                    link.unlink()
        if ledger is not None:
            for path in SHARED_PATHS:
                if str(path) not in ledger.existed and path.exists():
                    if path == netns_dir:
                        # other users' namespaces may have appeared meanwhile: keep the directory then
                        if any(netns_dir.iterdir()):
                            continue
                        # `ip netns add` makes /run/netns a (shared) mount of itself
                        while _is_mount_point(netns_dir) and _run("umount", str(netns_dir), check=False).returncode == 0:
                            pass
                    shutil.rmtree(path, ignore_errors=True)
            for key, value in ledger.sysctls.items():
                try:
                    Path("/proc/sys", key).write_text(value)
                except OSError as exc:
                    log.warning("could not restore sysctl %s=%s: %s", key, value, exc)
            LEDGER.unlink(missing_ok=True)

    @staticmethod
    def _kill_processes() -> None:
        """Every process of the node: its daemons (named by our paths), the shims, the containers
        (in our cgroups), and anything else in its network namespace."""
        ours = (str(STATE), str(RUN))
        try:
            netns_ino = os.stat(f"/run/netns/{NETNS}").st_ino
        except OSError:
            netns_ino = None
        victims: set[int] = set()
        for _ in range(20):
            victims.clear()
            for pid_dir in Path("/proc").iterdir():
                if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                    continue
                try:
                    cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
                    in_ns = netns_ino is not None and os.stat(pid_dir / "ns" / "net").st_ino == netns_ino
                except OSError:
                    continue
                if in_ns or any(p in cmdline for p in ours):
                    victims.add(int(pid_dir.name))
            for mount in cgroup_mounts():
                root = mount / CGROUP_ROOT
                if root.is_dir():
                    for procs in root.rglob("cgroup.procs"):
                        try:
                            victims.update(int(x) for x in procs.read_text().split())
                        except (OSError, ValueError):
                            pass
            victims.discard(os.getpid())
            if not victims:
                return
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        raise NodeError(f"processes of an earlier node would not die: {sorted(victims)}")

    @staticmethod
    def _remove_cgroups() -> None:
        for mount in cgroup_mounts():
            root = mount / CGROUP_ROOT
            if not root.is_dir():
                continue
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                root.rmdir()
            except OSError as exc:
                log.warning("could not remove cgroup %s: %s", root, exc)


#: The node's addresses and the service range: nothing on the host may send to them (they exist
#: only inside the node's namespace, and the host has no route there but its default one).
GUARDED = (f"{NODE_ADDR}/32", POD_CIDR, "10.96.0.0/24")
GUARD_CHAIN = "AIRFLOW-ADAPTIVE-GUARD"


class HostEgressGuard:
    """While the node runs: the host's OUTPUT rejects (and counts) packets to ``GUARDED``, so a
    test that tried to reach the node other than through 127.0.0.1 fails instead of sending
    traffic out of the machine. Removed on exit, also on failure; entering removes a stale one
    (a killed earlier run's) first."""

    def __enter__(self) -> "HostEgressGuard":
        self.remove()
        _run("iptables", "-w", "-N", GUARD_CHAIN)
        for cidr in GUARDED:
            _run("iptables", "-w", "-A", GUARD_CHAIN, "-d", cidr, "-j", "REJECT")
        _run("iptables", "-w", "-I", "OUTPUT", "1", "-j", GUARD_CHAIN)
        return self

    def packets(self) -> dict[str, int]:
        """Packets rejected so far, by destination range."""
        out = _run("iptables", "-w", "-L", GUARD_CHAIN, "-n", "-v", "-x", check=False, quiet=True).stdout
        rows = [line.split() for line in out.splitlines()[2:] if line.split()]
        return {row[8]: int(row[0]) for row in rows if len(row) > 8}

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @staticmethod
    def remove() -> None:
        while _run("iptables", "-w", "-D", "OUTPUT", "-j", GUARD_CHAIN, check=False, quiet=True).returncode == 0:
            pass
        _run("iptables", "-w", "-F", GUARD_CHAIN, check=False, quiet=True)
        _run("iptables", "-w", "-X", GUARD_CHAIN, check=False, quiet=True)


def namespace_routes() -> list[str]:
    """The node namespace's routes: its own address and the pods' range, and no way out."""
    return sorted(_run(*netns_exec(), "ip", "route", "show", "table", "all", check=False, quiet=True).stdout.splitlines())


def host_snapshot() -> dict[str, Any]:
    """What the node may change on the host, as it is now: to compare before start and after stop."""
    netns = Path("/run/netns")
    links = _run("ip", "-o", "link", "show", check=False, quiet=True).stdout
    addresses = _run("ip", "-o", "addr", "show", check=False, quiet=True).stdout
    routes = _run("ip", "route", "show", "table", "all", check=False, quiet=True).stdout
    return {
        "addresses": sorted(line.split()[3] for line in addresses.splitlines() if len(line.split()) > 3),
        "routes": sorted(routes.splitlines()),
        "sysctls": {k: Path("/proc/sys", k).read_text().strip() for k in KUBELET_SYSCTLS},
        "netns": sorted(p.name for p in netns.iterdir()) if netns.is_dir() else None,
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines() if ":" in line),
        "cgroups": sorted(str(m / CGROUP_ROOT) for m in cgroup_mounts() if (m / CGROUP_ROOT).exists()),
        "mounts": mounts_under([STATE, RUN, Path("/run/containerd"), Path("/run/netns"), Path("/var/lib/kubelet")]),
        "paths": sorted(str(p) for p in (*SHARED_PATHS, STATE, RUN, LEDGER) if p.exists()),
        "iptables": sorted(_run("iptables", "-w", "-S", check=False, quiet=True).stdout.splitlines()),
    }


# ---- the node -----------------------------------------------------------------------------------
def netns_exec() -> list[str]:
    """The prefix that runs a command in the node's network namespace only (``ip netns exec``
    would also give it a mount namespace of its own, hiding the kubelet's mounts from containerd)."""
    return ["nsenter", f"--net=/run/netns/{NETNS}", "--"]


class RealNode:
    """A control plane and one real kubelet node in the node's namespace; ``images`` (name ->
    {ref, archive}) are imported into containerd before the kubelet starts."""

    emulated = False

    def __init__(self, workdir: str | os.PathLike[str], *, bin_dir: str | os.PathLike[str] | None = None,
                 images: dict[str, dict[str, str]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.images = dict(images or {})
        self.sandbox = NodeSandbox()
        self.cluster = LocalCluster(self.workdir / "control-plane", bin_dir=bin_dir, nodes=(), kwok=False,
                                    address=NODE_ADDR, wrap=netns_exec(),
                                    controllers_extra=("root-ca-certificate-publisher-controller",))
        self.kubeconfig = self.cluster.kubeconfig
        self.bin_dir = self.cluster.bin_dir
        self.timings: dict[str, float] = {}
        self._daemons: list[Any] = []

    # the cluster's client interface
    def api_client(self, token: str | None = None):
        return self.cluster.api_client(token)

    def start(self) -> "RealNode":
        if not (self.bin_dir / "kubelet").is_file():
            raise NodeError(f"kubelet not found in {self.bin_dir}; build it with `bash tools/control-plane/build.sh`")
        for tool in ("containerd", "containerd-shim-runc-v2", "ctr", "runc", "nsenter", "ip"):
            if shutil.which(tool) is None:
                raise NodeError(f"{tool} is not installed; `bash tools/node/build.sh` installs the node's packages")
        t0 = time.monotonic()
        try:
            self.sandbox.create()
            self._start_forwarder()
            self.cluster.start()
            self.timings["control_plane_s"] = time.monotonic() - t0
            t1 = time.monotonic()
            self._start_containerd()
            self._import_images()
            self.timings["containerd_and_images_s"] = time.monotonic() - t1
            t2 = time.monotonic()
            self._start_kubelet()
            self._wait_ready()
            self.timings["kubelet_ready_s"] = time.monotonic() - t2
        except BaseException:
            self.stop()
            raise
        self.timings["node_ready_s"] = time.monotonic() - t0
        log.info("real node %s ready in %.1f s", NODE_NAME, self.timings["node_ready_s"])
        return self

    def stop(self) -> None:
        stop_process_groups(self._daemons, timeout_s=10)
        self.cluster.stop()
        self.sandbox.clean()

    def __enter__(self) -> "RealNode":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- paths a test reads --------------------------------------------------------------------
    @property
    def containerd_socket(self) -> Path:
        return RUN / "containerd.sock"

    def container_cgroup(self, pod: Any, container: str, controller: str = "memory") -> Path:
        """The cgroup directory of ``container`` of ``pod`` (a live V1Pod) on this host."""
        statuses = list(pod.status.container_statuses or []) + list(pod.status.init_container_statuses or [])
        cid = next(s.container_id for s in statuses if s.name == container).split("://", 1)[1]
        mount = next(m for m in cgroup_mounts() if m.name == controller or controller in m.name.split(","))
        found = list((mount / CGROUP_ROOT).rglob(cid))
        if not found:
            raise NodeError(f"no {controller} cgroup for container {container} ({cid[:12]}) under {mount / CGROUP_ROOT}")
        return found[0]

    def log_tail(self, name: str, chars: int = 4000) -> str:
        p = next((p for p in self._daemons if p.name == name), None)
        return p.tail(chars) if p else ""

    # ---- components ----------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], pass_fds: tuple[int, ...] | list[int] = ()):
        p = spawn(name, [*netns_exec(), *argv], self.workdir, pass_fds=pass_fds)
        self._daemons.append(p)
        return p

    def _start_forwarder(self) -> None:
        """Host loopback ports for the API server and etcd (its health check), served from inside
        the namespace: the host's clients never need an address of the node's."""
        listeners, specs = [], []
        for inner in (self.cluster.port, self.cluster.etcd_port):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(128)
            listeners.append(sock)
            specs.append(f"{sock.fileno()}={NODE_ADDR}:{inner}")
            self.cluster.host_ports[inner] = sock.getsockname()[1]
        try:
            self._spawn("netns-forward", [sys.executable, str(NETNS_FORWARD), *specs],
                        pass_fds=[s.fileno() for s in listeners])
        finally:
            for sock in listeners:  # the forwarder holds them now
                sock.close()

    def _start_containerd(self) -> None:
        cni_conf = RUN / "cni" / "net.d"
        cni_conf.mkdir(parents=True)
        (cni_conf / "10-airflow-adaptive.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": "airflow-adaptive-node",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_CIDR}]],
                          "dataDir": str(RUN / "cni" / "ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ]}))
        hosts = RUN / "certs.d"
        # Every registry, named or not (_default), resolves to a loopback port that refuses.
        for registry in ("_default", "docker.io", "ghcr.io", "registry.k8s.io", "quay.io", "localhost"):
            (hosts / registry).mkdir(parents=True)
            (hosts / registry / "hosts.toml").write_text(
                f'server = "{REFUSING_REGISTRY}"\n\n[host."{REFUSING_REGISTRY}"]\n  capabilities = ["pull", "resolve"]\n')
        pause = self.images.get("pause", {}).get("ref", "localhost/airflow-adaptive/pause:3.10")
        config = RUN / "containerd.toml"
        config.write_text(f"""version = 2
root = "{STATE / 'containerd'}"
state = "{RUN / 'containerd'}"
[grpc]
  address = "{self.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_unprivileged_ports = false
  # This machine's root lacks CAP_SYS_RESOURCE, so runc may not lower a container's
  # oom_score_adj (the kubelet asks -998 for sandboxes, -997 for Guaranteed containers): keep
  # them at containerd's own value or above, as rootless setups do.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
""")
        p = self._spawn("containerd", ["containerd", "--config", str(config)])
        deadline = time.monotonic() + 30
        while _run("ctr", "--address", str(self.containerd_socket), "version", check=False, quiet=True).returncode != 0:
            if p.proc.poll() is not None or time.monotonic() > deadline:
                raise NodeError(f"containerd did not start:\n{p.tail()}")
            time.sleep(0.1)

    def _import_images(self) -> None:
        for name, image in self.images.items():
            t0 = time.monotonic()
            _run("ctr", "--address", str(self.containerd_socket), "-n", "k8s.io", "images", "import", image["archive"])
            self.timings[f"import_{name}_s"] = time.monotonic() - t0

    def _start_kubelet(self) -> None:
        kdir = STATE / "kubelet"
        kdir.mkdir(parents=True, exist_ok=True)
        config = RUN / "kubelet.yaml"
        config.write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}",
            "failSwapOn": False,
            "address": NODE_ADDR, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": True}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "podLogsDir": str(STATE / "pod-logs"),
            "registerWithTaints": [TAINT],
            "systemReserved": {"memory": _system_reserved_memory()},
            "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "maxPods": 30, "resolvConf": "", "serializeImagePulls": False,
            # Status reaches the API server quickly: the tests (and the resize latency) read it there.
            "syncFrequency": "5s", "nodeStatusUpdateFrequency": "5s",
        }))
        self._spawn("kubelet", [
            str(self.bin_dir / "kubelet"), "--config", str(config), "--kubeconfig", str(self.cluster.component_kubeconfig),
            "--root-dir", str(kdir), "--cert-dir", str(kdir / "pki"), "--node-ip", NODE_ADDR, "--hostname-override", NODE_NAME,
            "--node-labels", "type=real,airflow-adaptive.io/real-node=true", "--v", "2"])

    def _wait_ready(self) -> None:
        from kubernetes import client

        kubelet = self._daemons[-1]
        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        with self.api_client() as api:
            core = client.CoreV1Api(api)
            while True:
                if kubelet.proc.poll() is not None:
                    raise NodeError(f"the kubelet exited with {kubelet.proc.returncode}:\n{kubelet.tail()}")
                try:
                    node = core.read_node(NODE_NAME)
                    if any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or []):
                        return
                except client.ApiException as exc:
                    if exc.status != 404:
                        raise
                if time.monotonic() > deadline:
                    raise NodeError(f"node {NODE_NAME} not Ready after {NODE_START_TIMEOUT_S} s:\n{kubelet.tail()}")
                time.sleep(0.2)


def _system_reserved_memory() -> str:
    total = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total = int(line.split()[1]) * 1024
    from airflow_adaptive.domain.quantities import parse_quantity

    reserved = max(0, total - int(parse_quantity(ALLOCATABLE_MEMORY)) - 50 * 2**20)  # 50Mi: the eviction threshold
    return f"{reserved // 2**20}Mi"

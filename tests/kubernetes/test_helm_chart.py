"""The Helm chart (helm/airflow-adaptive) against a real API server.

* ``helm lint`` passes for the shipped variants, and fails on a bad value naming the field's path
  (the chart's values.schema.json): an invalid Kubernetes quantity, an out-of-range threshold, a
  typo'd key, an unpinned image tag.
* ``helm template`` output is accepted by the API server, object by object, in a server-side dry
  run with strict field validation (a misspelt or misplaced field is an error, not dropped), and
  the MLflow pod passes the ``restricted`` Pod Security Standard's admission.
* ``helm install`` creates what the chart promises, and RBAC is checked with SubjectAccessReviews
  as the service accounts themselves (user ``system:serviceaccount:<ns>:<sa>`` with the groups a
  real token carries): the worker may do exactly what the operator needs, in its namespace; the
  training account may do nothing at all.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from airflow_adaptive.adapters.mlflow.local_server import free_port

pytestmark = [pytest.mark.kubernetes]

CHART = Path(__file__).resolve().parents[2] / "helm" / "airflow-adaptive"
RELEASE = "adaptive"
WORKER = f"{RELEASE}-worker"
TRAINING = f"{RELEASE}-training"
MLFLOW = f"{RELEASE}-mlflow"
HELM_TIMEOUT_S = 120


@dataclass(frozen=True)
class Helm:
    binary: Path
    kubeconfig: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *args, "--kubeconfig", str(self.kubeconfig)],
                              capture_output=True, text=True, env=self.env, timeout=HELM_TIMEOUT_S)

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, f"helm {' '.join(args)} exited {done.returncode}:\n{done.stderr}{done.stdout}"
        return done.stdout


@pytest.fixture(scope="session")
def helm(kube_cluster, tmp_path_factory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = {**os.environ}
    for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):  # nothing written in $HOME
        env[var] = str(home / var.lower())
    binary = kube_cluster.bin_dir / "helm"
    assert binary.is_file(), f"no helm in {kube_cluster.bin_dir}"
    return Helm(binary, kube_cluster.kubeconfig, env)


@pytest.fixture
def install(helm, namespace):
    """``install(*helm_args)`` installs the chart as RELEASE into the test's namespace; uninstalled
    afterwards (the ClusterRole and its binding are cluster-scoped: deleting the namespace would
    leave them behind)."""
    installed = False

    def _install(*args: str) -> str:
        nonlocal installed
        out = helm.ok("install", RELEASE, str(CHART), "--namespace", namespace, *args)
        installed = True
        return out

    yield _install
    if installed:  # a test may have uninstalled it already: then this one fails, unchecked
        helm.run("uninstall", RELEASE, "--namespace", namespace)


def manifests(helm: Helm, namespace: str, *args: str) -> list[dict]:
    out = helm.ok("template", RELEASE, str(CHART), "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(out) if doc]


API_GROUPS = {"deployments": "apps", "roles": "rbac.authorization.k8s.io", "rolebindings": "rbac.authorization.k8s.io"}


def sar(api, namespace_of_sa: str, sa: str, verb: str, resource: str, *, namespace: str | None = None,
        subresource: str | None = None) -> bool:
    """Whether the service account may do it, as the API server's authorizer answers. ``namespace``
    None asks about a cluster-scoped resource, or about all namespaces at once."""
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{namespace_of_sa}:{sa}",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{namespace_of_sa}", "system:authenticated"],
        resource_attributes=client.V1ResourceAttributes(verb=verb, resource=resource, subresource=subresource,
                                                        group=API_GROUPS.get(resource, ""), namespace=namespace)))
    return client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed


def check_access(api, namespace: str, sa: str, table: list[tuple]) -> list[str]:
    """Every row (verb, resource, subresource, namespace, expected) that the authorizer answers otherwise."""
    wrong = []
    for verb, resource, subresource, where, expected in table:
        got = sar(api, namespace, sa, verb, resource, namespace=where, subresource=subresource)
        if got != expected:
            what = f"{resource}/{subresource}" if subresource else resource
            wrong.append(f"{sa} {verb} {what} in {where or 'all namespaces / cluster'}: "
                         f"{'allowed' if got else 'denied'}, expected {'allowed' if expected else 'denied'}")
    return wrong


# ----------------------------------------------------------------------------- lint


FOLLOWER_VALUES = ["--set", "executorFollower.enabled=true", "--set", "executorFollower.image.repository=registry.example.com/airflow"]


@pytest.mark.parametrize("values", [
    pytest.param([], id="defaults"),
    pytest.param(["--set", "mlflow.enabled=true"], id="mlflow-sqlite"),
    pytest.param(["--set", "mlflow.enabled=true", "--set", "mlflow.backendStore.existingSecret=mlflow-db",
                  "--set", "mlflow.image.tag=v3.17.2-full"], id="mlflow-postgresql"),
    pytest.param(FOLLOWER_VALUES, id="executor-follower"),
    pytest.param(["--set", "rbac.nodeFit=false", "--set", "defaults.mlflowTrackingUri=https://mlflow.example.com",
                  "--set", "defaults.qualityBar.minTrainingRecords=null", "--set-json", "defaults.sizing.margin=0.25",
                  "--set-json", "defaults.qualityBar.maxAllocatedOverUsed=2.5"], id="no-node-fit-external-mlflow"),
])
def test_helm_lint_passes(helm, values):
    out = helm.ok("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out


BAD_VALUES = [
    # (--set-string / --set argument, the field path helm must name, a fragment of the message)
    (("--set-string", "mlflow.resources.limits.memory=12 GB"), "/mlflow/resources/limits/memory", "12 GB"),
    (("--set-string", "mlflow.resources.requests.cpu=lots"), "/mlflow/resources/requests/cpu", "lots"),
    (("--set-string", "mlflow.persistence.size=1gb"), "/mlflow/persistence/size", "1gb"),
    (("--set", "mlflow.resources.limits.cpu=-1"), "/mlflow/resources/limits/cpu", "minimum"),
    (("--set", "defaults.sizing.margin=11"), "/defaults/sizing/margin", "maximum"),
    # --set passes a fraction as a string ("got string, want number"): fractions go in with --set-json.
    (("--set-json", "defaults.qualityBar.maxUnderProvisionedFraction=1.5"), "/defaults/qualityBar/maxUnderProvisionedFraction", "maximum"),
    (("--set", "defaults.monitor.interval=0.5"), "/defaults/monitor/interval", "got string, want number"),
    (("--set", "defaults.sizing.mode=aggressive"), "/defaults/sizing/mode", "must be one of 'adaptive', 'shadow', 'off'"),
    (("--set", "mlflow.image.tag=latest"), "/mlflow/image/tag", "'not' failed"),  # pinned, never latest
    (("--set", "mlflow.runAsUser=0"), "/mlflow/runAsUser", "minimum"),
    (("--set", "defaults.mlflowTrackingUri=sqlite:///mlflow.db"), "/defaults/mlflowTrackingUri", "does not match pattern"),  # pods cannot reach it
    (("--set", "mlflow.enable=true"), "/mlflow", "enable"),  # a typo is an error, not a value silently ignored
    (("--set", "executorFollower.image.tag=latest"), "/executorFollower/image/tag", "'not' failed"),
]


@pytest.mark.parametrize("command", ["lint", "template"])
@pytest.mark.parametrize("setting,path,fragment", BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_invalid_values_fail_naming_the_field(helm, command, setting, path, fragment):
    args = [command, *(["--strict"] if command == "lint" else [RELEASE]), str(CHART), "--set", "mlflow.enabled=true", *setting]
    done = helm.run(*args)
    output = done.stderr + done.stdout
    assert done.returncode != 0, f"helm {command} accepted {setting}:\n{output}"
    assert f"at '{path}'" in output, output
    assert fragment in output, output


def test_valid_quantities_in_every_form_pass_the_schema_and_the_api_server(helm, kube_cluster, namespace):
    """The schema's quantity pattern is no stricter than it should be: a plain number, an exponent
    and a binary suffix render, and the API server takes the Deployment with them."""
    docs = manifests(helm, namespace, "--set", "mlflow.enabled=true", "--set", "mlflow.resources.requests.cpu=0.5",
                     "--set-string", "mlflow.resources.limits.memory=1.5e9", "--set-string", "mlflow.persistence.size=500Gi")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert (str(resources["requests"]["cpu"]), resources["limits"]["memory"]) == ("0.5", "1.5e9")
    with kube_cluster.api_client() as api:
        created = client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment, dry_run="All")
    assert created.spec.template.spec.containers[0].resources.limits["memory"] == "1500e6"


# ----------------------------------------------------------------------------- server-side validation


@pytest.mark.parametrize("values", [
    pytest.param([], id="defaults"),
    pytest.param(["--set", "mlflow.enabled=true"], id="mlflow-sqlite"),
    pytest.param(["--set", "mlflow.enabled=true", "--set", "mlflow.backendStore.existingSecret=mlflow-db",
                  "--set", "mlflow.persistence.storageClassName=fast", "--set", "mlflow.allowedHosts={mlflow.example.com}"],
                 id="mlflow-postgresql"),
    pytest.param(["--set", "rbac.nodeFit=false"], id="no-node-fit"),
    pytest.param(FOLLOWER_VALUES, id="executor-follower"),
])
def test_rendered_manifests_pass_a_server_side_dry_run(helm, kube_cluster, namespace, values):
    docs = manifests(helm, namespace, *values)
    with kube_cluster.api_client() as api:
        dynamic = DynamicClient(api)
        for doc in docs:
            resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            where = {"namespace": namespace} if resource.namespaced else {}
            # Strict: an unknown or duplicated field fails instead of being dropped with a warning.
            resource.create(body=doc, query_params=[("dryRun", "All"), ("fieldValidation", "Strict")], **where)
    kinds = sorted(d["kind"] for d in docs)
    expected = ["ConfigMap", "Role", "RoleBinding", "ServiceAccount", "ServiceAccount"]
    if "rbac.nodeFit=false" not in values:
        expected += ["ClusterRole", "ClusterRoleBinding"]
    if "mlflow.enabled=true" in values:
        expected += ["Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount"]
    if values == FOLLOWER_VALUES:
        expected += ["Deployment", "Role", "RoleBinding", "ServiceAccount"]
    assert kinds == sorted(expected)


def test_mlflow_pod_is_admitted_under_the_restricted_pod_security_standard(helm, kube_cluster, namespace):
    """The Deployment's pod, created (dry run) as a Pod in a namespace that enforces ``restricted``:
    the PodSecurity admission plugin refuses any pod that is not hardened."""
    docs = manifests(helm, namespace, "--set", "mlflow.enabled=true")
    template = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mlflow-psa", **template["metadata"]}, "spec": template["spec"]}
    with kube_cluster.api_client() as api:
        core = client.CoreV1Api(api)
        # The ServiceAccount admission plugin refuses a pod whose account does not exist.
        for account in (d for d in docs if d["kind"] == "ServiceAccount"):
            core.create_namespaced_service_account(namespace, account)
        core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
        core.create_namespaced_pod(namespace, pod, dry_run="All")
        # The check bites: the same pod with root allowed is refused.
        spec = template["spec"]
        weakened = {**pod, "spec": {**spec, "securityContext": {**spec["securityContext"], "runAsNonRoot": False},
                                    "containers": [{**c, "securityContext": {**c["securityContext"], "runAsNonRoot": False}}
                                                   for c in spec["containers"]]}}
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(namespace, weakened, dry_run="All")
        assert refused.value.status == 403 and "restricted" in refused.value.body


def test_external_database_uri_comes_from_the_secret_and_never_the_command_line(helm, namespace):
    docs = manifests(helm, namespace, "--set", "mlflow.enabled=true", "--set", "mlflow.backendStore.existingSecret=mlflow-db",
                     "--set", "mlflow.backendStore.existingSecretKey=url")
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"] == {"name": "MLFLOW_BACKEND_STORE_URI",
                                               "valueFrom": {"secretKeyRef": {"name": "mlflow-db", "key": "url"}}}
    assert not any("backend-store" in a or "sqlite" in a for a in container["command"] + container["args"])


def test_the_rendered_mlflow_command_serves_the_service_names_and_refuses_other_hosts(helm, namespace, tmp_path):
    """No kubelet runs the MLflow pod here, so its rendered command and environment are run as a
    process with this environment's mlflow (the version the image tag pins), paths moved to
    tmp_path: the flags must be ones `mlflow server` takes, /health must answer (the probes), the
    Service's names must pass MLflow's Host check and another name must not."""
    docs = manifests(helm, namespace, "--set", "mlflow.enabled=true", "--set", "mlflow.workers=1",
                     "--set", "mlflow.allowedHosts={mlflow.example.com}")
    container = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"][0]
    mlflow = Path(sys.executable).parent / "mlflow"
    port = free_port()
    data, home = tmp_path / "volume", tmp_path / "home"  # the PVC at /mlflow, the emptyDir at /tmp
    home.mkdir()
    moved = lambda text: str(home) if text == "/tmp" else text.replace("/mlflow/", f"{data}/")  # noqa: E731
    args = [moved(a) for a in container["args"]] + ["--host=127.0.0.1", f"--port={port}"]  # click: the last one wins
    env = {"PATH": os.environ["PATH"], **{e["name"]: moved(e["value"]) for e in container["env"]}}
    assert container["command"] == ["mlflow", "server"]
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([str(mlflow), "server", *args], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def status(path: str, host: str) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": host})
            return conn.getresponse().status
        finally:
            conn.close()

    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"mlflow server exited {proc.returncode}: {(tmp_path / 'server.log').read_text()[-3000:]}"
            try:
                if status("/health", "10.1.2.3:5000") == 200:  # a probe: Host is the pod IP
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.5)
        api = "/api/2.0/mlflow/experiments/search?max_results=1"
        for host in (MLFLOW, f"{MLFLOW}:5000", f"{MLFLOW}.{namespace}.svc:5000", f"{MLFLOW}.{namespace}.svc.cluster.local:5000",
                     "mlflow.example.com", "localhost:5000"):
            assert status(api, host) == 200, host
        for host in ("attacker.example.com", f"{MLFLOW}.other-namespace.svc:5000", "10.1.2.3:5000"):
            assert status(api, host) == 403, host
        assert (data / "mlflow.db").is_file()  # SQLite on the volume
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- install


def test_install_creates_the_accounts_defaults_and_mlflow_server(install, kube_cluster, namespace):
    install("--set", "mlflow.enabled=true")
    with kube_cluster.api_client() as api:
        core, rbac, apps = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.AppsV1Api(api)
        assert core.read_namespaced_service_account(TRAINING, namespace).automount_service_account_token is False
        assert core.read_namespaced_service_account(WORKER, namespace).automount_service_account_token is True
        assert core.read_namespaced_service_account(MLFLOW, namespace).automount_service_account_token is False

        # No Role or ClusterRole is bound to the training account (nor to MLflow's).
        bound = {(s.kind, s.name, s.namespace) for b in rbac.list_namespaced_role_binding(namespace).items for s in b.subjects or []}
        bound |= {(s.kind, s.name, s.namespace) for b in rbac.list_cluster_role_binding().items for s in b.subjects or []}
        assert ("ServiceAccount", WORKER, namespace) in bound
        assert ("ServiceAccount", TRAINING, namespace) not in bound
        assert ("ServiceAccount", MLFLOW, namespace) not in bound

        data = core.read_namespaced_config_map(f"{RELEASE}-defaults", namespace).data
        assert data["MLFLOW_TRACKING_URI"] == f"http://{MLFLOW}.{namespace}.svc:5000"
        assert data["AIRFLOW_ADAPTIVE_MODEL_URI"] == "models:/job-profiler@champion"
        assert data["AIRFLOW_ADAPTIVE_TRAINING_SERVICE_ACCOUNT"] == TRAINING
        assert data["AIRFLOW_ADAPTIVE_ENABLED"] == "true" and data["AIRFLOW_ADAPTIVE_RUNNER"] == "kubernetes"

        container = apps.read_namespaced_deployment(MLFLOW, namespace).spec.template.spec.containers[0]
        hosts = next(a for a in container.args if a.startswith("--allowed-hosts=")).split("=", 1)[1].split(",")
        for name in (MLFLOW, f"{MLFLOW}.{namespace}", f"{MLFLOW}.{namespace}.svc", f"{MLFLOW}.{namespace}.svc.cluster.local"):
            assert name in hosts and f"{name}:5000" in hosts
        ctx = container.security_context
        assert (ctx.read_only_root_filesystem, ctx.allow_privilege_escalation, ctx.run_as_non_root) == (True, False, True)
        assert ctx.capabilities.drop == ["ALL"] and ctx.seccomp_profile.type == "RuntimeDefault"
        assert container.resources.limits["memory"] and container.resources.requests["cpu"]
        assert core.read_namespaced_service(MLFLOW, namespace).spec.ports[0].port == 5000
        assert core.read_namespaced_persistent_volume_claim(MLFLOW, namespace).spec.resources.requests["storage"] == "10Gi"


def test_uninstall_removes_the_cluster_scoped_binding(helm, install, kube_cluster, namespace):
    install()
    name = f"{namespace}-{RELEASE}-node-fit"
    with kube_cluster.api_client() as api:
        rbac = client.RbacAuthorizationV1Api(api)
        assert rbac.read_cluster_role_binding(name).subjects[0].name == WORKER
        helm.ok("uninstall", RELEASE, "--namespace", namespace)
        with pytest.raises(client.ApiException) as gone:
            rbac.read_cluster_role_binding(name)
        assert gone.value.status == 404
        assert not sar(api, namespace, WORKER, "list", "nodes")


# ----------------------------------------------------------------------------- RBAC, for real

OTHER = "default"  # another namespace: the worker's rights stop at its own


def worker_rows(ns: str) -> list[tuple]:
    """(verb, resource, subresource, namespace (None: cluster-scoped / all namespaces), allowed?)"""
    return [
        ("create", "pods", None, ns, True),
        ("get", "pods", None, ns, True),
        ("list", "pods", None, ns, True),
        ("watch", "pods", None, ns, True),
        ("patch", "pods", None, ns, True),
        ("delete", "pods", None, ns, True),
        ("get", "pods", "log", ns, True),
        ("patch", "pods", "resize", ns, True),
        ("get", "events", None, ns, True),
        ("list", "events", None, ns, True),
        ("watch", "events", None, ns, True),
        # denied in its own namespace
        ("update", "pods", None, ns, False),
        ("deletecollection", "pods", None, ns, False),
        ("update", "pods", "resize", ns, False),
        ("create", "pods", "exec", ns, False),
        ("get", "pods", "exec", ns, False),
        ("create", "pods", "eviction", ns, False),
        ("patch", "pods", "status", ns, False),
        ("create", "events", None, ns, False),
        ("get", "secrets", None, ns, False),
        ("list", "secrets", None, ns, False),
        ("watch", "secrets", None, ns, False),
        ("get", "configmaps", None, ns, False),
        ("create", "serviceaccounts", "token", ns, False),
        ("create", "rolebindings", None, ns, False),
        ("patch", "roles", None, ns, False),
        ("create", "deployments", None, ns, False),
        ("create", "persistentvolumeclaims", None, ns, False),
        ("create", "resourcequotas", None, ns, False),
        # other namespaces and the cluster
        ("create", "pods", None, OTHER, False),
        ("delete", "pods", None, OTHER, False),
        ("patch", "pods", None, OTHER, False),
        ("get", "pods", "log", OTHER, False),
        ("patch", "pods", "resize", OTHER, False),
        ("get", "secrets", None, OTHER, False),
        ("list", "secrets", None, None, False),
        ("patch", "nodes", None, None, False),
        ("update", "nodes", None, None, False),
        ("delete", "nodes", None, None, False),
        ("create", "namespaces", None, None, False),
    ]


def node_fit_rows(ns: str, allowed: bool) -> list[tuple]:
    """The rows rbac.nodeFit switches, and around them what stays denied even when it is on."""
    switched = [
        ("get", "nodes", None, None),
        ("list", "nodes", None, None),
        ("list", "pods", None, None),  # all namespaces: the pods on a node
        ("list", "resourcequotas", None, ns),
        ("list", "limitranges", None, ns),
    ]
    beyond = [  # the cluster-wide read is list (and get for nodes), nothing more
        ("get", "pods", None, OTHER, False),
        ("watch", "pods", None, None, False),
        ("watch", "nodes", None, None, False),
        ("get", "resourcequotas", None, ns, False),
        ("update", "resourcequotas", None, ns, False),
        ("get", "limitranges", None, ns, False),
    ]
    return [(*row, allowed) for row in switched] + beyond


def granted(rules) -> set[tuple[str, str, str]]:
    return {(g, r, v) for rule in rules for g in rule.api_groups or [] for r in rule.resources or [] for v in rule.verbs}


WORKER_ROLE = {("", "pods", v) for v in ("get", "list", "watch", "create", "delete", "patch")} | {
    ("", "pods/log", "get"), ("", "pods/resize", "patch"), ("", "events", "get"), ("", "events", "list"), ("", "events", "watch")}
NODE_FIT_ROLE = {("", "resourcequotas", "list"), ("", "limitranges", "list")}
NODE_FIT_CLUSTER_ROLE = {("", "nodes", "get"), ("", "nodes", "list"), ("", "pods", "list")}


def test_worker_may_do_what_the_operator_needs_in_its_namespace_and_nothing_else(install, kube_cluster, namespace):
    install()
    with kube_cluster.api_client() as api:
        wrong = check_access(api, namespace, WORKER, worker_rows(namespace) + node_fit_rows(namespace, allowed=True))
        rbac = client.RbacAuthorizationV1Api(api)
        # Beyond the sampled questions: the rules are exactly these, no wildcard, no resourceNames games.
        assert granted(rbac.read_namespaced_role(WORKER, namespace).rules) == WORKER_ROLE | NODE_FIT_ROLE
        assert granted(rbac.read_cluster_role(f"{namespace}-{RELEASE}-node-fit").rules) == NODE_FIT_CLUSTER_ROLE
    assert not wrong, "\n".join(wrong)


def test_without_node_fit_the_worker_reads_no_nodes_and_no_other_pods(install, kube_cluster, namespace):
    install("--set", "rbac.nodeFit=false")
    with kube_cluster.api_client() as api:
        wrong = check_access(api, namespace, WORKER, worker_rows(namespace) + node_fit_rows(namespace, allowed=False))
        assert granted(client.RbacAuthorizationV1Api(api).read_namespaced_role(WORKER, namespace).rules) == WORKER_ROLE
    assert not wrong, "\n".join(wrong)


def test_training_account_may_do_nothing(install, kube_cluster, namespace):
    install("--set", "mlflow.enabled=true")
    rows = [(verb, resource, sub) for verb in ("get", "list", "watch", "create", "patch", "delete")
            for resource, sub in (("pods", None), ("pods", "log"), ("pods", "resize"), ("pods", "exec"), ("events", None),
                                  ("configmaps", None), ("secrets", None), ("serviceaccounts", None), ("services", None),
                                  ("persistentvolumeclaims", None), ("resourcequotas", None), ("limitranges", None))]
    table = [(verb, resource, sub, where, False) for verb, resource, sub in rows for where in (namespace, OTHER, None)]
    table += [(verb, "nodes", None, None, False) for verb in ("get", "list", "watch", "patch")]
    table += [("create", "serviceaccounts", "token", namespace, False)]
    with kube_cluster.api_client() as api:
        wrong = check_access(api, namespace, TRAINING, table) + check_access(api, namespace, MLFLOW, table)
        # The SubjectAccessReviews can say yes: the same questions about the worker get some.
        assert sar(api, namespace, WORKER, "get", "pods", namespace=namespace)
    assert not wrong, "\n".join(wrong)


FOLLOWER = f"{RELEASE}-executor-follower"
FOLLOWER_ROLE = {("", "pods", v) for v in ("get", "list", "watch", "patch")} | {("", "pods/log", "get"), ("", "pods/resize", "patch")}


def test_the_executor_follower_may_follow_and_resize_pods_in_its_namespace_and_nothing_else(install, kube_cluster, namespace):
    install(*FOLLOWER_VALUES)
    table = [(verb, "pods", None, namespace, verb in ("get", "list", "watch", "patch")) for verb in ("get", "list", "watch", "patch", "create", "delete")]
    table += [("get", "pods", "log", namespace, True), ("patch", "pods", "resize", namespace, True),
              ("create", "pods", "exec", namespace, False), ("get", "secrets", None, namespace, False),
              ("patch", "pods", "resize", OTHER, False), ("get", "pods", "log", OTHER, False), ("list", "nodes", None, None, True)]
    with kube_cluster.api_client() as api:
        wrong = check_access(api, namespace, FOLLOWER, table)
        rbac = client.RbacAuthorizationV1Api(api)
        assert granted(rbac.read_namespaced_role(FOLLOWER, namespace).rules) == FOLLOWER_ROLE
        deployment = client.AppsV1Api(api).read_namespaced_deployment(FOLLOWER, namespace)
    assert not wrong, "\n".join(wrong)
    assert deployment.spec.replicas == 1 and deployment.spec.strategy.type == "Recreate"
    (container,) = deployment.spec.template.spec.containers
    assert container.command[:3] == ["airflow-adaptive", "-v", "follow-executor-pods"] and namespace in container.command


def test_the_executor_follower_needs_the_workers_image(helm, namespace):
    done = helm.run("template", RELEASE, str(CHART), "--namespace", namespace, "--set", "executorFollower.enabled=true")
    assert done.returncode != 0 and "executorFollower.image.repository" in done.stderr, done.stderr

"""``airflow-adaptive follow-executor-pods``: the executor-pod follower as a long-running process
(the chart's ``executorFollower`` Deployment runs it). See :mod:`airflow_adaptive.policy.follower`."""

from __future__ import annotations

import os
import signal
import threading

from airflow_adaptive.domain.errors import UserError


def cmd_follow_executor_pods(args) -> int:
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    from airflow_adaptive.policy.follower import ExecutorPodFollower

    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        raise UserError("give --tracking-uri (or MLFLOW_TRACKING_URI): the MLflow server the stage runs go to")
    if not args.resync_s > 0:
        raise UserError(f"--resync-s must be > 0, got {args.resync_s}")
    try:
        if args.kubeconfig:
            api = config.new_client_from_config(args.kubeconfig)
        else:
            config.load_incluster_config()
            api = client.ApiClient()
    except (ConfigException, OSError) as exc:
        where = args.kubeconfig or "the in-cluster service account"
        raise UserError(f"cannot configure the Kubernetes client from {where}: {exc}; pass --kubeconfig outside a cluster") from None
    namespace = args.namespace or _own_namespace()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    ExecutorPodFollower(client.CoreV1Api(api), namespace, tracking, experiment=args.experiment,
                        resync_s=args.resync_s).run(stop)
    return 0


def _own_namespace() -> str:
    path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    try:
        with open(path) as f:
            return f.read().strip() or "default"
    except OSError:
        raise UserError("give --namespace: the executor's worker pods' namespace") from None


def add_parser(sub) -> None:
    p = sub.add_parser("follow-executor-pods",
                       help="follow the KubernetesExecutor's adaptive worker pods: resizes in place, stage runs in MLflow")
    p.add_argument("--namespace", help="the worker pods' namespace (default: the follower's own, in a cluster)")
    p.add_argument("--kubeconfig", help="a kubeconfig file (default: the in-cluster service account)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", help="stage-run experiment when the pod's plan names none (default airflow-adaptive-stages)")
    p.add_argument("--resync-s", type=float, default=10.0,
                   help="seconds between full lists of the pods, and the most a stop waits (default 10)")
    p.set_defaults(func=cmd_follow_executor_pods)

"""The monitor-signal path through the real ``pods/log`` API: the monitor's resize signals, as
lines on its container log, are followed by the Resource Manager and applied with ``pods/resize``.

Emulated: the container log itself (kwok serves a file through the kubelet endpoint the API
server proxies ``pods/log`` to) and the resize actuation. Real: the API server's log proxying,
the follower's reconnects, the resize, and the API server going away and coming back.
"""

from __future__ import annotations

import threading
import time

import pytest
from kubernetes import client

from airflow_adaptive.adapters.kubernetes.resize import PodResizer
from airflow_adaptive.adapters.kubernetes.signal_follower import SignalFollowerThread
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.sizing import ContainerSize
from harness.local_cluster import cri_log_line

from .conftest import wait_for

pytestmark = [pytest.mark.kubernetes]

GI = 2**30
MONITOR = "adaptive-monitor"


def memory_signal(old_gi: int, new_gi: int, sequence: int) -> str:
    return ResizeSignal(resource="memory", old=old_gi * GI, new=new_gi * GI, reason="near the limit", time=time.time(),
                        sequence=sequence, container="base").to_line()


class Manager:
    """The operator's side: follow the monitor's log, apply each signal, keep the outcomes."""

    def __init__(self, core, namespace, pod):
        self.resizer = PodResizer(core)
        self.outcomes = []
        self.lock = threading.Lock()
        self.thread = SignalFollowerThread(core, namespace, pod, MONITOR, self.apply, read_timeout_s=5, retry_delay_s=0.2)
        self.namespace, self.pod = namespace, pod

    def apply(self, signal):
        outcome = self.resizer.apply(self.namespace, self.pod, "base", signal)
        with self.lock:
            self.outcomes.append(outcome)

    def statuses(self):
        with self.lock:
            return [o.status for o in self.outcomes]


def limit_in_status(core, namespace, name):
    pod = core.read_namespaced_pod(name, namespace)
    base = next((cs for cs in pod.status.container_statuses or [] if cs.name == "base"), None)
    return (base and base.resources and base.resources.limits or {}).get("memory")


@pytest.fixture
def stage(emulated_cluster, admin_api, namespace, running_pod):
    """A running stage pod whose monitor log is a file the test writes to; its Manager, stopped after."""
    core = client.CoreV1Api(admin_api)
    files = emulated_cluster.serve_logs(admin_api, namespace, "train", [MONITOR, "base"])
    size = ContainerSize(ResourceVector(cpu=1, memory=1 * GI), ResourceVector(cpu=2, memory=2 * GI), None, ())
    running_pod("train", size, complete_after="25s")
    manager = Manager(core, namespace, "train")
    yield core, files[MONITOR], manager
    manager.thread.stop()


def write(path, *lines):
    with open(path, "a") as f:
        for line in lines:
            f.write(cri_log_line(line))


def test_a_signal_on_the_monitor_log_resizes_the_pod(stage, namespace):
    core, log_file, manager = stage
    write(log_file, "sample rss=1.7Gi limit=2Gi", memory_signal(2, 3, sequence=1))
    manager.thread.start()
    wait_for(manager.statuses, lambda s: s == ["applied"], what="the signal applied")
    wait_for(lambda: limit_in_status(core, namespace, "train"), lambda v: v == "3Gi", what="3Gi actuated")
    # The same line read again after a reconnect is not applied twice; a newer one is.
    write(log_file, memory_signal(2, 3, sequence=1), memory_signal(3, 4, sequence=2))
    wait_for(manager.statuses, lambda s: s == ["applied", "applied"], what="only the new signal applied")
    wait_for(lambda: limit_in_status(core, namespace, "train"), lambda v: v == "4Gi", what="4Gi actuated")


def test_the_api_server_going_away_mid_stage_loses_no_signal(emulated_cluster, stage, namespace):
    core, log_file, manager = stage
    write(log_file, memory_signal(2, 3, sequence=1))
    manager.thread.start()
    wait_for(manager.statuses, lambda s: s == ["applied"], what="the first signal applied")

    emulated_cluster.kill_apiserver()
    write(log_file, memory_signal(3, 4, sequence=2))  # the monitor keeps writing while the API is gone
    time.sleep(2)
    assert manager.thread.is_alive() and manager.thread.error is None
    emulated_cluster.restart_apiserver()

    wait_for(manager.statuses, lambda s: s == ["applied", "applied"], timeout_s=40, what="the second signal applied")
    wait_for(lambda: limit_in_status(core, namespace, "train"), lambda v: v == "4Gi", timeout_s=20, what="4Gi actuated")
    # The stage still ends and is seen to end: the follower stops by itself once the pod completes.
    wait_for(lambda: core.read_namespaced_pod("train", namespace).status.phase, lambda p: p == "Succeeded",
             timeout_s=60, what="the pod to complete")
    manager.thread.join(30)
    assert not manager.thread.is_alive() and manager.thread.error is None


def test_the_async_follower_hands_over_each_signal_once_and_keeps_the_monitors_samples(emulated_cluster, stage, namespace):
    """``follow_signals_async`` (what the deferrable trigger runs) on ``kubernetes_asyncio`` against
    the real API server: signals applied once each through ``AsyncPodResizer``, usage samples and
    the summary kept for the writer, a forged and a malformed line refused and counted."""
    import asyncio

    from kubernetes_asyncio import client as async_client
    from kubernetes_asyncio import config as async_config

    from airflow_adaptive.adapters.kubernetes.resize import AsyncPodResizer
    from airflow_adaptive.adapters.kubernetes.signal_follower import follow_signals_async
    from airflow_adaptive.domain.monitor_protocol import summary_line, usage_line
    from airflow_adaptive.domain.observation import UsageSample
    from airflow_adaptive.logic.monitor_trust import MonitorLines, TrustConfig

    core, log_file, _manager = stage
    now = time.time()
    write(log_file, usage_line(0, UsageSample(now, {"memory": 1.5 * GI})), memory_signal(2, 3, sequence=0),
          usage_line(1, UsageSample(now + 1, {"memory": 2.5 * GI})),
          memory_signal(3, 9, sequence=0),  # forged: a different line under a sequence already seen
          '{"kind": "airflow-adaptive/resize", "sequence": ',  # malformed
          memory_signal(3, 4, sequence=1), summary_line(now, now + 2, {"memory": 2.5 * GI}, {"memory": 2 * GI}, 0))

    async def follow() -> tuple[list, MonitorLines]:
        api = await async_config.new_client_from_config(config_file=str(emulated_cluster.kubeconfig))
        async with api:
            core_async = async_client.CoreV1Api(api)
            resizer, outcomes, stop = AsyncPodResizer(core_async), [], asyncio.Event()
            lines = MonitorLines(TrustConfig(maximum={"memory": 8 * GI}))

            async def on_signal(signal):
                outcomes.append(await resizer.apply(namespace, "train", "base", signal))
                if len(outcomes) == 2:
                    stop.set()

            await asyncio.wait_for(follow_signals_async(core_async, namespace, "train", MONITOR, on_signal, stop,
                                                        read_timeout_s=5, retry_delay_s=0.2, monitor=lines), 60)
            return outcomes, lines

    outcomes, lines = asyncio.run(follow())
    assert [(o.signal.sequence, o.status) for o in outcomes] == [(0, "applied"), (1, "applied")]
    wait_for(lambda: limit_in_status(core, namespace, "train"), lambda v: v == "4Gi", what="4Gi actuated")
    assert [u.seq for u in lines.take_samples()] == [0, 1] and lines.summary.peak == {"memory": 2.5 * GI}
    assert dict(lines.rejected) == {"conflict": 1, "malformed": 1} and lines.untrusted

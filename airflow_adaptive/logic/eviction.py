"""Was a try evicted by the kubelet, and for what? A pure reading of a pod's status.

The kubelet's eviction manager (``pkg/kubelet/eviction``, checked every
``evictionMonitoringPeriod``, 10 s by default) ends a pod with phase ``Failed``, reason
``Evicted`` and one of these messages (``helpers.go``; Go's ``%s`` of a quantity is its canonical
text, ``%q`` the same in double quotes; every message ends in ". "):

| message (kubelet format) | cause | what it means here |
|---|---|---|
| ``Pod ephemeral local storage usage exceeds the total limit of containers %s.`` | ``pod_ephemeral_limit`` | the pod's writable layers, logs and emptyDirs passed the sum of its containers' ``ephemeral-storage`` limits: retried larger |
| ``Container %s exceeded its local ephemeral storage limit %q.`` | ``container_ephemeral_limit`` | one container's writable layer and logs passed its own limit: retried larger |
| ``Usage of EmptyDir volume %q exceeds the limit %q.`` | ``emptydir_limit`` | an emptyDir passed its ``sizeLimit`` (the user's volume, not sized here): not retried larger |
| ``The node was low on resource: %s. ...`` | ``node_pressure`` | the node ran short (a hard or soft threshold); the pod was chosen, not over its own limit: not retried larger |
| anything else with reason ``Evicted`` | ``other`` | said in the log as it is |

The status is written by the kubelet, but a message is still parsed strictly and bounded: only
its first ``MAX_MESSAGE`` characters are read, and a quantity that does not parse is 0 (unknown).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_adaptive.domain.errors import QuantityError
from airflow_adaptive.domain.quantities import memory_bytes

EVICTED = "Evicted"  # pod status reason (kubelet eviction.Reason)
MAX_MESSAGE = 2000
STORAGE_LIMIT_CAUSES = ("pod_ephemeral_limit", "container_ephemeral_limit")

_QUANTITY = r"[0-9.eE+\-]+[A-Za-z]{0,2}"
_POD_LIMIT = re.compile(r"Pod ephemeral local storage usage exceeds the total limit of containers (" + _QUANTITY + r")\.")
_CONTAINER_LIMIT = re.compile(r'Container ([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?) exceeded its local ephemeral storage limit "('
                              + _QUANTITY + r')"\.')
_EMPTYDIR = re.compile(r'Usage of EmptyDir volume "([^"]{1,253})" exceeds the limit "(' + _QUANTITY + r')"\.')
_NODE_PRESSURE = re.compile(r"The node was low on resource: ([A-Za-z0-9./\-]{1,100})\.")


@dataclass(frozen=True)
class Eviction:
    """One kubelet eviction. ``limit_bytes``: the limit the message names (0: none or unknown);
    ``container``/``volume``: the one it names, if any; ``resource``: what a node ran short of."""

    cause: str
    message: str
    limit_bytes: float = 0.0
    container: str | None = None
    volume: str | None = None
    resource: str | None = None

    @property
    def storage_limit(self) -> bool:
        """Evicted for passing an ephemeral-storage limit the sizing sets: a larger one may pass."""
        return self.cause in STORAGE_LIMIT_CAUSES


def read_eviction(phase: str | None, reason: str | None, message: str | None) -> Eviction | None:
    """The eviction a pod's status records (``status.phase``, ``status.reason``,
    ``status.message``); None when the pod was not evicted (or is still being evicted)."""
    if phase != "Failed" or reason != EVICTED:
        return None
    text = str(message or "")[:MAX_MESSAGE]
    if m := _POD_LIMIT.search(text):
        return Eviction("pod_ephemeral_limit", text, _bytes(m.group(1)))
    if m := _CONTAINER_LIMIT.search(text):
        return Eviction("container_ephemeral_limit", text, _bytes(m.group(3)), container=m.group(1))
    if m := _EMPTYDIR.search(text):
        return Eviction("emptydir_limit", text, _bytes(m.group(2)), volume=m.group(1))
    if m := _NODE_PRESSURE.search(text):
        return Eviction("node_pressure", text, resource=m.group(1))
    return Eviction("other", text)


def eviction_note(eviction: Eviction) -> str:
    """What the task log says about an eviction, and what happens next."""
    said = eviction.message.strip() or "no message from the kubelet"
    if eviction.storage_limit:
        return f"evicted by the kubelet for ephemeral storage ({said}); the next try gets a larger ephemeral-storage limit"
    if eviction.cause == "emptydir_limit":
        return (f"evicted by the kubelet: the emptyDir volume {eviction.volume!r} passed its sizeLimit ({said}); "
                "raise the volume's sizeLimit (the sizing does not set it)")
    if eviction.cause == "node_pressure":
        return (f"evicted by the kubelet: the node ran short of {eviction.resource} ({said}); the stage's own limits "
                "were not the cause, so the retry is not sized larger")
    return f"evicted by the kubelet ({said})"


def _bytes(text: str) -> float:
    try:
        return float(memory_bytes(text, "eviction message"))
    except (QuantityError, ValueError, OverflowError):
        return 0.0

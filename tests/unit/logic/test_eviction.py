"""Reading a kubelet eviction from a pod's status (``logic/eviction.py``). The messages are the
kubelet's own formats (``pkg/kubelet/eviction/helpers.go``), filled as Go fills them."""

import pytest

from airflow_adaptive.logic.eviction import MAX_MESSAGE, eviction_note, read_eviction

MiB = 2**20
POD = "Pod ephemeral local storage usage exceeds the total limit of containers 64Mi. "
CONTAINER = 'Container base exceeded its local ephemeral storage limit "64Mi". '
EMPTYDIR = 'Usage of EmptyDir volume "scratch" exceeds the limit "1Gi". '
NODE = ("The node was low on resource: ephemeral-storage. Threshold quantity: 1080480196, available: 1027408Ki. "
        "Container base was using 4620Ki, which exceeds its request of 0. ")


@pytest.mark.parametrize("phase,reason,message,cause,limit,container,volume,resource,retried", [
    ("Failed", "Evicted", POD, "pod_ephemeral_limit", 64 * MiB, None, None, None, True),
    ("Failed", "Evicted", CONTAINER, "container_ephemeral_limit", 64 * MiB, "base", None, None, True),
    ("Failed", "Evicted", 'Container base exceeded its local ephemeral storage limit "1500M". ',
     "container_ephemeral_limit", 1.5e9, "base", None, None, True),
    ("Failed", "Evicted", "Pod ephemeral local storage usage exceeds the total limit of containers 256Mi. ",
     "pod_ephemeral_limit", 256 * MiB, None, None, None, True),
    ("Failed", "Evicted", EMPTYDIR, "emptydir_limit", 2**30, None, "scratch", None, False),
    ("Failed", "Evicted", NODE, "node_pressure", 0, None, None, "ephemeral-storage", False),
    ("Failed", "Evicted", "The node was low on resource: memory. Threshold quantity: 50Mi, available: 10Mi. ",
     "node_pressure", 0, None, None, "memory", False),
    ("Failed", "Evicted", "", "other", 0, None, None, None, False),
    ("Failed", "Evicted", None, "other", 0, None, None, None, False),
    # A quantity that does not parse is unknown (0), never an error.
    ("Failed", "Evicted", "Pod ephemeral local storage usage exceeds the total limit of containers 1e999999. ",
     "pod_ephemeral_limit", 0, None, None, None, True),
])
def test_evictions_are_read_with_their_cause_and_limit(phase, reason, message, cause, limit, container, volume, resource,
                                                       retried):
    e = read_eviction(phase, reason, message)
    assert e is not None and e.cause == cause
    assert e.limit_bytes == pytest.approx(limit)
    assert (e.container, e.volume, e.resource) == (container, volume, resource)
    assert e.storage_limit is retried


@pytest.mark.parametrize("phase,reason,message", [
    ("Running", "Evicted", POD),         # still being evicted: the pod has not ended
    ("Failed", "OOMKilled", POD),        # not an eviction
    ("Failed", None, POD),
    ("Succeeded", None, ""),
    (None, None, None),
])
def test_anything_else_is_not_an_eviction(phase, reason, message):
    assert read_eviction(phase, reason, message) is None


def test_a_huge_message_is_read_only_to_its_bound():
    e = read_eviction("Failed", "Evicted", "x" * (MAX_MESSAGE * 10) + POD)
    assert e.cause == "other" and len(e.message) == MAX_MESSAGE


@pytest.mark.parametrize("message,says", [
    (POD, "larger ephemeral-storage limit"),
    (EMPTYDIR, "sizeLimit"),
    (NODE, "not sized larger"),
])
def test_the_note_says_what_happens_next(message, says):
    note = eviction_note(read_eviction("Failed", "Evicted", message))
    assert says in note and message.strip() in note

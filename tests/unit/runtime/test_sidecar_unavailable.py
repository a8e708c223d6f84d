"""When the monitor gives up on reading the workload, and what it says (pure: no /proc, no clock)."""

import pytest

from airflow_adaptive.runtime.sidecar import SidecarSpec, unavailable_reason

SPEC = SidecarSpec(allocation={}, workload_marker="AIRFLOW_ADAPTIVE_WORKLOAD=base", wait_s=120.0, unreadable_grace_s=10.0)


@pytest.mark.parametrize("unreadable, waited_s, says", [
    ({}, 5.0, None),                                   # the workload may still start
    ({17: 2000}, 5.0, None),                           # another user's process, but within the grace
    ({17: 2000, 18: 2000}, 10.0, "UID 2000 and the monitor as UID 0"),
    ({}, 120.0, "no workload found after 120 s"),
])
def test_the_monitor_gives_up_only_when_it_is_certain_and_says_what_to_set(unreadable, waited_s, says):
    reason = unavailable_reason(SPEC, unreadable, waited_s, me=0)
    if says is None:
        assert reason is None
    else:
        assert says in reason and ("runAsUser" in reason or "shareProcessNamespace" in reason)

"""The deviation policy's disk bandwidth limits: raised when the stage is held at them, never
lowered, and a CPU-bound loader's CPU raise says so (``logic/deviation.py`` + ``logic/io_bottleneck.py``)."""

import dataclasses

from airflow_adaptive.domain.observation import UsageSample
from airflow_adaptive.logic.deviation import Bounds, DeviationConfig, decide, initial_state

MiB = 2**20
DISK_CFG = DeviationConfig(resizable=("cpu", "memory", "disk_read", "disk_write"))
START = {"cpu": 1.0, "memory": 512 * MiB, "disk_read": 4 * MiB}


def run(values_per_second, allocation=START, config=DISK_CFG, bounds=Bounds(maximum={"cpu": 2, "disk_read": 32 * MiB})):
    """Feed one sample a second; returns [(time, decision)] for the decisions made."""
    state, out = initial_state(allocation), []
    for t, values in enumerate(values_per_second):
        state, decisions = decide(state, UsageSample(float(t), values), config, bounds)
        out += [(t, d) for d in decisions]
    return out, state


def test_a_reader_held_at_its_limit_is_raised_step_by_step_to_its_maximum():
    state, limit, resizes = initial_state(START), 4 * MiB, []
    bounds = Bounds(maximum={"cpu": 2, "disk_read": 32 * MiB})
    previous = limit
    for t in range(30):
        rate = (previous + limit) / 2 if previous != limit else limit  # the sample spanning a raise mixes both
        previous = limit
        state, decisions = decide(state, UsageSample(float(t), {"cpu": 0.2, "memory": 100 * MiB, "disk_read": rate}),
                                  DISK_CFG, bounds)
        for d in decisions:
            if d.resource == "disk_read" and d.action == "increase":
                resizes.append((t, d.old / MiB, d.new / MiB, d.reason))
                limit = d.new
            elif d.resource == "disk_read":
                resizes.append((t, d.action, d.reason))
    raises = [r for r in resizes if len(r) == 4]
    assert [(old, new) for _, old, new, _ in raises] == [(4, 8), (8, 16), (16, 32)]
    # disk_samples (4) samples at the limit each time; the one spanning a raise counts in the mean
    assert [t for t, *_ in raises] == [3, 7, 11]
    assert "I/O-bound at the disk read limit" in raises[0][3] and "4 MiB/s -> 8 MiB/s" in raises[0][3]
    holds = [r for r in resizes if len(r) == 3]
    assert holds and all(r[1] == "hold" for r in holds)
    assert holds[0][2] == "disk_read at bound: I/O-bound at the limit 32 MiB/s, the maximum the request allows"
    assert len({r[2] for r in holds}) == 1  # one constant text: said once by the monitor


def test_a_cpu_bound_loader_gets_cpu_and_its_reason_names_the_loader():
    out, _ = run([{"cpu": 0.98, "memory": 100 * MiB, "disk_read": 1 * MiB}] * 3)
    assert [(d.resource, d.action) for _, d in out] == [("cpu", "increase")]
    _, d = out[0]
    assert d.reason.startswith("CPU-bound loader")
    assert "disk read 1 MiB/s of its limit 4 MiB/s (25%)" in d.reason
    assert "throttled, true demand unseen, x1.5" in d.reason  # the CPU rule still sizes the step
    assert d.new == 1.5


def test_disk_limits_are_never_lowered():
    out, _ = run([{"cpu": 0.1, "memory": 100 * MiB, "disk_read": 0.1 * MiB}] * 90)
    assert not [d for _, d in out if d.resource == "disk_read"]


def test_without_disk_in_resizable_the_policy_leaves_disk_alone():
    cfg = dataclasses.replace(DISK_CFG, resizable=("cpu", "memory"))
    out, _ = run([{"cpu": 0.2, "memory": 100 * MiB, "disk_read": 4 * MiB}] * 5, config=cfg)
    assert out == []


def test_samples_without_disk_figures_raise_nothing():
    out, state = run([{"cpu": 0.2, "memory": 100 * MiB}] * 5)
    assert out == [] and state.allocation["disk_read"] == 4 * MiB


def test_a_write_limit_is_raised_like_a_read_limit():
    out, _ = run([{"cpu": 0.1, "memory": 100 * MiB, "disk_write": 2 * MiB}] * 4,
                 allocation={**START, "disk_write": 2 * MiB}, bounds=Bounds(maximum={"disk_write": 3 * MiB}))
    assert [(d.resource, d.old, d.new) for _, d in out] == [("disk_write", 2 * MiB, 3 * MiB)]
    assert "capped at the maximum 3 MiB/s" in out[0][1].reason

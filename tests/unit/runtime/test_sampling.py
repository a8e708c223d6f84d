"""The CPU rate of a cumulative counter (``runtime/sampling._CpuRate``)."""

import pytest

from airflow_adaptive.runtime.sampling import MIN_RATE_INTERVAL_S, _CpuRate


@pytest.mark.parametrize("readings, expected", [
    # (wall time, CPU seconds) in order -> the rate each reading gives
    ([(0.0, 0.0), (1.0, 0.25)], [None, 0.25]),
    # a reading 5 ms after the baseline (the sampler's first, after its creation's) is no rate, and
    # the next is measured from the same baseline, not from the 5 ms one
    ([(0.0, 0.0), (0.005, 0.01), (1.0, 0.25)], [None, None, 0.25]),
    ([(0.0, 0.0), (1.0, 0.5), (1.0, 0.6)], [None, 0.5, None]),  # no time passed: no rate, no division by 0
    ([(0.0, 5.0), (2.0, 4.0)], [None, 0.0]),  # a counter that went down is never a negative rate
])
def test_cpu_rate_needs_a_long_enough_interval(readings, expected):
    rate = _CpuRate()
    got = [rate.update(t, cpu) for t, cpu in readings]
    assert got == [None if e is None else pytest.approx(e) for e in expected]
    assert MIN_RATE_INTERVAL_S <= 0.2  # below every sampling interval the runner offers (0.2 s in tests)

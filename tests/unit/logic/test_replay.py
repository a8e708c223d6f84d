import numpy as np
import pytest

from airflow_adaptive.logic import replay as R


@pytest.mark.parametrize(
    "used, alloc, escalate, expect_cost, expect_attempts, expect_under",
    [
        (1.0, 2.0, 2.0, 2.0, 1, False),  # fits: one attempt at its allocation
        (3.0, 2.0, 2.0, 2.0 + 4.0, 2, True),  # killed once, retried at 4
        (9.0, 2.0, 2.0, 2.0 + 4.0 + 8.0 + 16.0, 4, True),  # killed three times
        (2.0, 2.0, 2.0, 2.0, 1, False),  # exactly the allocation fits
    ],
)
def test_failures_are_charged(used, alloc, escalate, expect_cost, expect_attempts, expect_under):
    sim = R.simulate(np.array([[alloc]]), np.array([used]), np.array([10.0]), lambda a, rows: a * escalate, False)
    assert sim.cost[0, 0] == pytest.approx(expect_cost * 10.0)
    assert sim.attempts[0, 0] == expect_attempts and bool(sim.under[0, 0]) == expect_under


def test_cpu_is_throttled_not_killed():
    sim = R.simulate(np.array([[2.0, 8.0]]), np.array([4.0]), np.array([10.0]), lambda a, r: a * 2, True)
    assert sim.attempts.tolist() == [[1, 1]] and sim.under.tolist() == [[True, False]]
    assert sim.cost.tolist() == [[40.0, 80.0]]


def test_at_target_interpolates_and_flags_unreached():
    under = np.array([0.1, 0.02, 0.005])
    aou = np.array([1.5, 2.0, 3.0])
    assert R.at_target(under, aou, 0.01) == {"under_provisioned_fraction": 0.01, "allocated_over_used": pytest.approx(2.0 + (0.02 - 0.01) / 0.015 * 1.0), "reached": True}
    assert R.at_target(under, aou, 0.001)["reached"] is False


def small_config():
    return R.ReplayConfig(refit_days=10.0, max_iter=10, max_train_rows=3000, resources=("memory",))


def test_report_shape(lanl_slice):
    report = R.replay(lanl_slice.take(np.arange(3000)), small_config())
    assert set(report) >= {"jobs", "population", "seconds", "policies"}
    for name in R.POLICIES:
        entry = report["policies"][name]["memory"]
        for key in ("under_provisioned_fraction", "allocated_over_used", "relative_slack", "attempts_per_job", "tradeoff", "at_target"):
            assert key in entry, (name, key)
        assert len(entry["tradeoff"]) >= 10
        # A safety knob must trade risk for cost: the riskiest setting is under-sized more often.
        unders = [p["under_provisioned_fraction"] for p in entry["tradeoff"]]
        assert max(unders) > min(unders)
    assert {"jobs", "under_provisioned_fraction", "allocated_over_used", "relative_slack"} <= set(report["policies"]["adaptive"]["memory"]["cold_start"])


def test_no_leak_from_the_future(lanl_slice):
    """Changing jobs submitted after t changes no allocation made before t, for every policy."""
    table = lanl_slice.take(np.arange(3000))
    t = float(np.quantile(table.submit, 0.6))
    future = table.submit >= t
    changed = table.take(np.arange(len(table)))
    rng = np.random.default_rng(0)
    changed.used["memory"] = np.where(future, table.used["memory"] * rng.uniform(0.1, 10, len(table)), table.used["memory"])
    changed.run_time = np.where(future, table.run_time * 3 + 100, table.run_time)
    changed.end = np.where(future, changed.submit + changed.run_time, table.end)
    changed.requested["memory"] = np.where(future, table.requested["memory"] * 2, table.requested["memory"])

    def allocations(tab):
        keys = tab.key_codes()
        args = (keys, tab.submit, tab.end, tab.used["memory"], tab.requested["memory"], "memory")
        return {
            "vpa": R.vpa_policy(*args).alloc,
            "autopilot": R.autopilot_policy(*args).alloc,
            "adaptive": R.adaptive_policy(tab, "memory", small_config()).alloc,
        }

    before, after = allocations(table), allocations(changed)
    past = ~future
    for name in before:
        np.testing.assert_array_equal(before[name][past], after[name][past], err_msg=name)
        assert not np.array_equal(before[name][future], after[name][future]), f"{name}: the change did nothing"

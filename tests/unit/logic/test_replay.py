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


# ----------------------------------------------------------------------------- --default-request
from airflow_adaptive.adapters.traces.swf import SWF_SCHEMA  # noqa: E402
from airflow_adaptive.domain.errors import UserError  # noqa: E402
from airflow_adaptive.domain.records import JobTable  # noqa: E402

GI = 2.0**30
MI = 2.0**20


@pytest.mark.parametrize(
    "text, expect",
    [
        ("cpu=1,memory=1Gi", {"cpu": 1.0, "memory": GI}),
        ("memory=512Mi", {"memory": 512 * MI}),
        (" cpu = 250m , memory = 1G ", {"cpu": 0.25, "memory": 1e9}),
        ("nvidia.com/gpu=2,cpu=4", {"gpu": 2.0, "cpu": 4.0}),
        ("memory=1.5Gi", {"memory": 1.5 * GI}),
    ],
)
def test_default_request_parses_kubernetes_quantities(text, expect):
    assert R.parse_default_request(text) == expect


@pytest.mark.parametrize(
    "text, names",
    [
        ("", "no request given"),
        ("cpu", "'cpu' is not NAME=QUANTITY"),
        ("cpu=", "'cpu=' is not NAME=QUANTITY"),
        ("=1Gi", "'=1Gi' is not NAME=QUANTITY"),
        ("cpu=1,,memory=1Gi", "'' is not NAME=QUANTITY"),
        ("mem=1Gi", "unknown resource 'mem'"),
        ("cpu=1,cpu=2", "cpu is given twice"),
        ("memory=1GB", "--default-request memory: '1GB'"),
        ("cpu=-1", "--default-request cpu: '-1' is negative"),
        ("cpu=0", "--default-request cpu: '0' is not more than zero"),
        ("nvidia.com/gpu=0.5", "'0.5' is not a whole number of GPUs"),
    ],
)
def test_default_request_bad_input_names_flag_and_part(text, names):
    with pytest.raises(UserError) as err:
        R.parse_default_request(text)
    assert "--default-request" in str(err.value) and names in str(err.value)


def synthetic(n=900, days=40.0, request_share=0.5, seed=0) -> JobTable:
    """Jobs of 6 workloads over ``days``: memory ~ procs x 40 MiB (x noise); the first
    ``request_share`` of each workload's jobs (by a random draw) carry a request of 1.5x to 3x use."""
    rng = np.random.default_rng(seed)
    submit = np.sort(rng.uniform(0, days * 86400, n))
    run_time = rng.uniform(600, 7200, n)
    user = rng.integers(0, 6, n)
    procs = 2.0 ** rng.integers(5, 10, n)  # 32 ... 512
    used = procs * 40 * MI * (1 + user / 3) * rng.lognormal(0, 0.2, n)
    has = rng.uniform(size=n) < request_share
    req = np.where(has, used * rng.uniform(1.5, 3.0, n), np.nan)
    cats = lambda v: np.array([str(x) for x in v], dtype=object)  # noqa: E731
    return JobTable(
        schema=SWF_SCHEMA, job_id=cats(range(n)), submit=submit, end=submit + run_time, run_time=run_time,
        features={"user": cats(user), "group": cats(user % 2), "executable": cats(user), "queue": cats(np.zeros(n, int)),
                  "partition": cats(np.zeros(n, int)), "procs": procs, "requested_time": np.full(n, np.nan),
                  "requested_memory": req.copy()},
        used={"memory": used, "cpu": procs * 0.8},
        requested={"memory": req, "cpu": np.where(has, procs, np.nan)},
    )


def cfg(**kw):
    return R.ReplayConfig(**{"refit_days": 10.0, "max_iter": 5, "max_train_rows": 1000, "resources": ("memory",), **kw})


def test_without_the_flag_jobs_with_no_request_are_left_out():
    table = synthetic()
    report = R.replay(table, cfg())
    pop = report["population"]["memory"]
    has = int((table.requested["memory"] > 0).sum())
    assert pop["kept"] == has and pop["default_request_jobs"] == 0
    assert pop["excluded"]["no memory request in the trace"] == len(table) - has


def test_default_is_each_request_less_jobs_request_for_the_request_policies():
    """user_request, vpa and autopilot size a defaulted job exactly as if the trace had asked
    for the default (one amount per job, not per processor); jobs with a request keep theirs."""
    table = synthetic()
    default = 3 * GI
    report = R.replay(table, cfg(default_request={"memory": default}))
    filled = table.take(np.arange(len(table)))
    filled.requested["memory"] = np.where(table.requested["memory"] > 0, table.requested["memory"], default)
    reference = R.replay(filled, cfg())
    assert report["population"]["memory"]["kept"] == reference["population"]["memory"]["kept"] == len(table)
    assert report["population"]["memory"]["default_request_jobs"] == int((~(table.requested["memory"] > 0)).sum())
    assert reference["population"]["memory"]["default_request_jobs"] == 0
    for name in ("user_request", "vpa", "autopilot_moving_window"):
        assert report["policies"][name]["memory"]["tradeoff"] == reference["policies"][name]["memory"]["tradeoff"], name
    # ...and the amount matters: another default gives another user_request curve.
    other = R.replay(table, cfg(default_request={"memory": default / 4}))
    assert other["policies"]["user_request"]["memory"]["tradeoff"] != report["policies"]["user_request"]["memory"]["tradeoff"]
    assert report["settings"]["default_request"] == {"memory": default}


@pytest.mark.parametrize("name", ["user_request", "vpa", "autopilot"])
def test_default_per_job_at_cold_start(name):
    table = synthetic().sorted_by_submit()
    req, defaulted = R.with_default(table, "memory", 2 * GI)
    assert defaulted.tolist() == (~(table.requested["memory"] > 0)).tolist()
    np.testing.assert_array_equal(req[~defaulted], table.requested["memory"][~defaulted])
    assert (req[defaulted] == 2 * GI).all()
    args = (table.key_codes(), table.submit, table.end, table.used["memory"], req, "memory")
    run = {"user_request": lambda: R.user_request_policy(req, "memory"), "vpa": lambda: R.vpa_policy(*args),
           "autopilot": lambda: R.autopilot_policy(*args)}[name]()
    first = 0 if name == "user_request" else int(np.flatnonzero(R.MARGINS == 0.0)[0])
    knob = np.flatnonzero(R.REQUEST_MULTIPLIERS == 1.0)[0] if name == "user_request" else first
    # The very first job of each workload (no history) is sized at its request: the default if it had none.
    firsts = np.unique(table.key_codes(), return_index=True)[1]
    np.testing.assert_allclose(run.alloc[firsts, knob], req[firsts])
    assert defaulted[firsts].any() and (~defaulted[firsts]).any()


def test_features_are_not_filled_with_the_default():
    table = synthetic()
    before = table.features["requested_memory"].copy()
    R.replay(table, cfg(default_request={"memory": GI}))
    np.testing.assert_array_equal(table.features["requested_memory"], before)  # NaN stays NaN
    # The model after its first fit cannot see the default: another amount changes nothing there.
    t = table.sorted_by_submit()
    runs = []
    for default in (GI, 4 * GI):
        req, defaulted = R.with_default(t, "memory", default)
        runs.append(R.adaptive_policy(t, "memory", cfg(), request=req, defaulted=defaulted))
    fitted = t.submit >= t.submit.min() + 10 * 86400
    assert fitted.sum() > 500 and runs[0].notes["refits"] > 0
    np.testing.assert_array_equal(runs[0].alloc[fitted], runs[1].alloc[fitted])


def test_cold_months_are_sized_from_pooled_history_not_the_default():
    """No job has a request; before the first fit the adaptive policy sizes from finished jobs
    (per processor), so a far-off default costs little there."""
    table = synthetic(request_share=0.0).sorted_by_submit()
    default = 64 * GI  # ~20x what jobs use
    req, defaulted = R.with_default(table, "memory", default)
    run = R.adaptive_policy(table, "memory", cfg(), request=req, defaulted=defaulted)
    prefit = table.submit < table.submit.min() + 10 * 86400
    pooled = run.notes["sized_by_pooled_history_before_first_fit"]
    # Only the first jobs, before POOLED_MIN_JOBS have finished, get the bare default.
    assert pooled > 0.6 * prefit.sum() and run.notes["sized_by_request_before_first_fit"] == prefit.sum() - pooled
    d = run.default_index
    ratio = run.alloc[prefit, d] / table.used["memory"][prefit]
    early = int(np.argmax(np.isfinite(ratio) & (np.arange(len(ratio)) >= prefit.sum() - pooled)))
    late = ratio[early:]
    assert np.median(late) < 4.0  # the default would be ~20x
    assert np.mean(late < 1) < 0.1
    # Scaled by processors: the allocation per processor is flat, the allocation is not.
    procs = table.features["procs"][prefit][early:]
    alloc = run.alloc[prefit, d][early:]
    assert np.corrcoef(np.log(alloc), np.log(procs))[0, 1] > 0.9


def test_pooled_history_sees_only_finished_jobs():
    table = synthetic(request_share=0.0).sorted_by_submit()
    t = float(np.quantile(table.submit[table.submit < table.submit.min() + 10 * 86400], 0.6))
    future = table.submit >= t
    changed = table.take(np.arange(len(table)))
    changed.used["memory"] = np.where(future, table.used["memory"] * 7, table.used["memory"])
    allocs = []
    for tab in (table, changed):
        req, defaulted = R.with_default(tab, "memory", GI)
        allocs.append(R.adaptive_policy(tab, "memory", cfg(), request=req, defaulted=defaulted).alloc)
    np.testing.assert_array_equal(allocs[0][~future], allocs[1][~future])
    assert not np.array_equal(allocs[0][future], allocs[1][future])

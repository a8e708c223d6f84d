"""PAI network bandwidth (sensor ``read``/``write``) end to end: the profiler learns it per
workload and the replay reports it.

Expectations come from the fixture's raw numbers: the random jobs of group index ``g`` read
``GROUP_RX[g]`` and write ``GROUP_TX[g]`` bytes/s, give or take 10% per instance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import pai_fixture as fx  # noqa: E402

from airflow_adaptive.adapters.traces.pai import load_pai  # noqa: E402
from airflow_adaptive.cli.main import main  # noqa: E402
from airflow_adaptive.logic import replay as R  # noqa: E402
from airflow_adaptive.logic.profiler import JobProfiler  # noqa: E402

N_JOBS = 90
NET = ("network_rx", "network_tx")


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pai")
    fx.write_pai_fixture(d, n_jobs=N_JOBS, seed=7)
    return d


@pytest.fixture(scope="module")
def table(trace_dir):
    return load_pai(trace_dir).table


@pytest.fixture(scope="module")
def profiler(table):
    return JobProfiler(max_iter=30, random_state=0).fit(table)


def _random_jobs(table) -> np.ndarray:
    return ~np.char.startswith(table.job_id.astype(str), fx.KNOWN_JOB)


def _group_index(values: np.ndarray, rates: tuple[float, ...]) -> np.ndarray:
    """The group whose rate each value is within 10% of (the fixture's rates are far apart)."""
    ratio = values[:, None] / np.array(rates)[None, :]
    hit = (ratio >= 0.9) & (ratio <= 1.1)
    assert np.all(hit.sum(axis=1) == 1)
    return hit.argmax(axis=1)


def test_profiler_models_both_network_resources(profiler):
    # Positive known values, by hand: every random job; the known worker (both); the ps writes
    # but reads 0 (no log); the evaluator has one good read and one good write.
    assert profiler.training_rows_["network_rx"] == N_JOBS + 2
    assert profiler.training_rows_["network_tx"] == N_JOBS + 3
    assert {"cpu", "memory", *NET} <= set(profiler.models_)


def test_predicted_bandwidth_follows_the_workloads_rate(table, profiler):
    pred = profiler.predict(table)
    rows = np.flatnonzero(_random_jobs(table))
    for resource, rates in (("network_rx", fx.GROUP_RX), ("network_tx", fx.GROUP_TX)):
        expected = np.array(rates)[_group_index(table.used[resource][rows], rates)]
        median, upper = pred[resource]["median"][rows], pred[resource]["upper"][rows]
        ratio = median / expected
        # The groups' rates are 10x or more apart: one number for all would miss most by 10x.
        assert np.mean((ratio > 1 / 3) & (ratio < 3.0)) >= 0.9, (resource, np.round(ratio, 2))
        assert np.all(upper >= median * 0.999)


def test_a_new_job_of_a_known_workload_gets_its_bandwidth(table, profiler):
    rows = np.flatnonzero(_random_jobs(table))
    g = _group_index(table.used["network_rx"][rows], fx.GROUP_RX)
    # The fastest-reading group among tagged jobs, and one of its jobs as the template.
    tagged = table.features["group"][rows] != table.features["user"][rows]
    top = rows[tagged & (g == g[tagged].max())][0]
    job = {f: table.features[f][top] for f in table.schema.names}
    job = {k: (float(v) if isinstance(v, (float, np.floating)) else str(v)) for k, v in job.items()}
    profile = profiler.predict_profile(job)
    for resource, rates in (("network_rx", fx.GROUP_RX), ("network_tx", fx.GROUP_TX)):
        est = profile.resources[resource]
        expected = rates[_group_index(np.array([table.used[resource][top]]), rates)[0]]
        assert expected / 3 < est.median < 3 * expected, (resource, est, expected)
        assert est.upper >= est.median


def test_replay_reports_bandwidth_population_without_a_request(table):
    report = R.replay(table, R.ReplayConfig(resources=("memory", *NET), max_iter=10, refit_days=1.0))
    # PAI has no bandwidth request: every job with usage is left out, and the report says why
    # (the ps read nothing: its network_rx is zero, left out as such).
    for resource, excluded in (
        ("network_rx", {"no network_rx request in the trace": N_JOBS + 2, "network_rx usage unknown or zero": 1}),
        ("network_tx", {"no network_tx request in the trace": N_JOBS + 3}),
    ):
        pop = report["population"][resource]
        assert pop["kept"] == 0 and pop["excluded"] == excluded
        assert "skipped" in pop
    assert report["policies"]["adaptive"]["memory"]  # memory is replayed as before


def test_replay_with_default_bandwidth_request(table):
    default = R.parse_default_request("network_rx=10Mi,network_tx=1Mi")
    assert default == {"network_rx": 10 * 2**20, "network_tx": 2**20}
    config = R.ReplayConfig(resources=NET, default_request=default, max_iter=10, refit_days=1.0)
    report = R.replay(table, config)
    for resource, n_known in (("network_rx", N_JOBS + 2), ("network_tx", N_JOBS + 3)):
        pop = report["population"][resource]
        assert pop["kept"] == pop["default_request_jobs"] == n_known
        used = table.used[resource][table.used[resource] > 0]
        for policy in R.POLICIES:
            entry = report["policies"][policy][resource]
            assert entry["attempts_per_job"] == 1.0  # throttled like CPU, never killed and retried
            # The user's policy at multiplier 1 is the default request itself.
            if policy == "user_request":
                assert entry["under_provisioned_fraction"] == pytest.approx(np.mean(used > default[resource]))
        # The history-based policies learn each workload's rate (which spans 3.4 decades), so
        # they are short far less often than one default for all jobs.
        user = report["policies"]["user_request"][resource]["under_provisioned_fraction"]
        for policy in ("vpa", "autopilot_moving_window"):
            assert report["policies"][policy][resource]["under_provisioned_fraction"] < user / 2, policy
        assert report["policies"]["adaptive"][resource]["notes"]["refits"] >= 1


def test_default_replay_config_includes_bandwidth():
    assert set(NET) <= set(R.ReplayConfig().resources)
    assert R.ReplayConfig().resources[:2] == ("memory", "cpu")


def test_cli_replay_prints_network_rows(trace_dir, capsys):
    code = main(["replay", "--trace", str(trace_dir), "--format", "pai", "--refit-days", "1",
                 "--default-request", "network_rx=10Mi,network_tx=1Mi,cpu=1,memory=1Gi"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    for resource in NET:
        policies = {ln.split()[1] for ln in lines if ln.split()[:1] == [resource]}
        assert policies == set(R.POLICIES), out

import numpy as np

from airflow_adaptive.logic.history import STATS, SequenceState, level_codes, sequence_features


def test_only_jobs_that_ended_before_submit_count():
    keys = np.array(["a", "a", "a", "b"], dtype=object)
    submit = np.array([0.0, 10.0, 20.0, 20.0])
    end = np.array([15.0, 18.0, 30.0, 25.0])
    value = np.log([100.0, 200.0, 400.0, 50.0])
    f = sequence_features(level_codes([keys]), submit, end, value)
    n = np.rint(np.expm1(f[:, 0]))
    # job 1 (submit 10): job 0 ends at 15, not before; job 2 (submit 20): jobs 0 and 1 ended.
    assert n.tolist() == [0, 0, 2, 0]
    assert f[2, STATS.index("last1")] == np.log(200.0)
    assert f[2, STATS.index("last2")] == np.log(100.0)
    assert f[2, STATS.index("max_all")] == np.log(200.0)
    assert np.isclose(f[2, STATS.index("age")], np.log1p(2.0))


def test_state_path_equals_table_path():
    rng = np.random.default_rng(3)
    n = 400
    keys = rng.choice(np.array(["x", "y", "z"], dtype=object), n)
    submit = np.sort(rng.uniform(0, 1000, n))
    end = submit + rng.uniform(1, 50, n)
    value = rng.normal(size=n)
    value[rng.random(n) < 0.1] = np.nan  # unknown usage teaches nothing
    table = sequence_features(level_codes([keys]), submit, end, value)
    state = SequenceState()
    order = np.argsort(end)
    pointer = 0
    for i in range(n):
        while pointer < n and end[order[pointer]] < submit[i]:
            j = order[pointer]
            if np.isfinite(value[j]):
                state.observe(keys[j], value[j], end[j])
            pointer += 1
        np.testing.assert_allclose(state.features(keys[i], submit[i]), table[i], equal_nan=True)
    again = SequenceState.from_dict(state.to_dict())
    np.testing.assert_allclose(again.features("x", 2000.0), state.features("x", 2000.0), equal_nan=True)

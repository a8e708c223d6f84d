import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from airflow_adaptive.domain.errors import FeatureSchemaMismatch
from airflow_adaptive.domain.stage_run import STAGE_FEATURES
from airflow_adaptive.logic.profiler import DURATION, JobProfiler


@pytest.fixture(scope="module")
def fitted(lanl_slice):
    train = lanl_slice.take(np.arange(5000))
    return JobProfiler(max_iter=30).fit(train), lanl_slice.take(np.arange(5000, 6000))


def test_estimator_contract():
    p = JobProfiler(coverage=0.95, max_iter=5)
    assert clone(p).get_params() == p.get_params()
    assert not hasattr(p, "models_")
    with pytest.raises(NotFittedError):
        p.predict_profile({"user": "1"})


def test_covers_new_jobs_near_target(fitted):
    profiler, test = fitted
    assert set(profiler.models_) == {"cpu", "memory", DURATION}
    pred = profiler.predict(test)["memory"]
    used = test.used["memory"]
    assert np.all(pred["upper"] >= pred["median"])
    coverage = np.mean(used <= pred["upper"])
    # Calibrated on the most recent records it was trained with; the next 1000 jobs come
    # close (a shift in workload can cost a little).
    assert coverage > 0.95, coverage
    # And its typical error is far below that of the users' own requests.
    model_error = np.median(np.abs(np.log(pred["median"] / used)))
    request_error = np.median(np.abs(np.log(test.requested["memory"] / used)))
    assert model_error < 0.8 * request_error, (model_error, request_error)


def test_recent_runs_drive_the_prediction(fitted):
    profiler, test = fitted
    job = {k: (v[0] if not isinstance(v[0], float) else float(v[0])) for k, v in test.features.items()}
    base = profiler.predict_profile(job)
    # A never-seen user and executable: the cold-start path still predicts from features.
    cold = profiler.predict_profile(job | {"user": "nobody", "executable": "never-seen"})
    assert cold.cold_start and not base.cold_start
    assert cold.resources["memory"].median > 0
    assert cold.resources["memory"].median != pytest.approx(job["requested_memory"])


def test_schema_mismatch_is_clear(fitted):
    profiler, _ = fitted
    with pytest.raises(FeatureSchemaMismatch, match="'procs' must be a number"):
        profiler.predict_profile({"user": "1", "executable": "2", "procs": "lots"})
    with pytest.raises(FeatureSchemaMismatch, match="unknown feature"):
        profiler.predict_profile({"user": "1", "dag_id": "x"})
    from airflow_adaptive.domain.records import JobTable

    stage_table = JobTable.from_rows(STAGE_FEATURES, [])
    with pytest.raises(FeatureSchemaMismatch, match="trained on swf/1"):
        profiler.predict(stage_table)

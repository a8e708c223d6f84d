"""Shared hypothesis settings for the fuzz tests (``tests/unit/**/test_*_fuzz.py``).

Bounded so the whole fuzz set adds seconds, not minutes, to the suite; reproducible in CI
(``CI=true``: the same examples every run); no example database written into the repository.
Each module also sets a pytest-timeout, so a parser that hangs fails instead of stalling.
"""

from __future__ import annotations

import os
import tempfile

# Hypothesis caches (constants, shrunk-example patches) go to the temp directory, not .hypothesis/
# in the checkout; read when it first needs them, after collection, so setting it here is in time.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", os.path.join(tempfile.gettempdir(), "airflow-adaptive-hypothesis"))

from hypothesis import HealthCheck, settings  # noqa: E402

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: Multiplies every property's example count: 0.5 keeps the fuzz set near 30 s of the unit suite;
#: AIRFLOW_ADAPTIVE_FUZZ_SCALE=20 runs a deep session by hand (with a larger pytest --timeout).
SCALE = float(os.environ.get("AIRFLOW_ADAPTIVE_FUZZ_SCALE", "0.5"))


def fuzz(max_examples: int = 200, **overrides) -> settings:
    """Settings for one property: ``max_examples`` x SCALE generated inputs (the explicit
    ``@example`` regressions always run); no per-example deadline (the module's timeout catches
    hangs; a loaded CI machine would make a deadline flaky)."""
    return settings(
        max_examples=max(10, round(max_examples * SCALE)),
        deadline=None,
        database=None,
        derandomize=CI,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        **overrides,
    )


#: The per-module pytest-timeout (seconds) of a fuzz module: far above its run time, far below
#: the suite's 600 s.
TIMEOUT_S = 120

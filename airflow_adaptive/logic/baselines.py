"""History baselines for the replay: each keeps per-workload state fed only by finished jobs.

``history_estimates`` walks the jobs in submit order and, before sizing each one, feeds the
state every job that **ended strictly before** it was submitted. A baseline never sees a job's
usage earlier than a real system could.

Autopilot's moving-window recommender (Rzadca et al., EuroSys 2020, section 3.1):

| constant | value | source |
|---|---|---|
| ``AUTOPILOT_HALF_LIFE`` | 48 h | the paper's memory half-life |
| ``AUTOPILOT_WINDOW`` | 6 half-lives | samples below 1/64 weight have no say |
| ``AUTOPILOT_MARGIN`` | 0.10 | the paper's safety margin (our knob sweeps it) |

Memory takes the window's *maximum* peak (the paper's choice for OOM-sensitive jobs); with no
sample in the window it keeps the newest one, so a weekly job is not cold every week.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Protocol

import numpy as np

from airflow_adaptive.logic.vpa import PERCENTILE, DecayingHistogram

AUTOPILOT_HALF_LIFE = 48 * 3600.0
AUTOPILOT_WINDOW = 6 * AUTOPILOT_HALF_LIFE
AUTOPILOT_MARGIN = 0.10


class WorkloadState(Protocol):
    def add(self, value: float, time: float) -> None: ...

    def estimate(self, time: float) -> float: ...


class VpaState:
    def __init__(self, first_bucket: float, max_value: float):
        self.histogram = DecayingHistogram(first_bucket, max_value)

    def add(self, value: float, time: float) -> None:
        self.histogram.add(value, time)

    def estimate(self, time: float) -> float:
        return self.histogram.percentile(PERCENTILE)


class MovingWindowMaxState:
    def __init__(self, window: float = AUTOPILOT_WINDOW):
        self.window = window
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, value: float, time: float) -> None:
        self.samples.append((time, value))

    def estimate(self, time: float) -> float:
        while len(self.samples) > 1 and self.samples[0][0] < time - self.window:
            self.samples.popleft()
        return max(v for _, v in self.samples) if self.samples else float("nan")


def history_estimates(
    keys: np.ndarray,
    submit: np.ndarray,
    end: np.ndarray,
    used: np.ndarray,
    new_state: Callable[[], WorkloadState],
) -> np.ndarray:
    """Per job, the baseline's estimate from its workload's finished jobs (NaN: cold start)."""
    n = len(keys)
    out = np.full(n, np.nan)
    states: dict[int, WorkloadState] = {}
    by_end = np.argsort(end, kind="stable")
    by_end = by_end[np.isfinite(used[by_end]) & (used[by_end] > 0)]
    pointer = 0
    for i in np.argsort(submit, kind="stable"):
        t = submit[i]
        while pointer < len(by_end) and end[by_end[pointer]] < t:
            j = by_end[pointer]
            state = states.get(keys[j])
            if state is None:
                state = states[keys[j]] = new_state()
            state.add(float(used[j]), float(end[j]))
            pointer += 1
        state = states.get(keys[i])
        if state is not None:
            out[i] = state.estimate(float(t))
    return out

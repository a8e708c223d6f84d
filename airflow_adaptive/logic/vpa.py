"""The Kubernetes VPA recommender's memory estimate, as a replay baseline.

Follows ``vertical-pod-autoscaler/pkg/recommender``: a decaying histogram per workload with
exponential buckets, each finished job adding one peak sample weighted ``2^(t / half_life)``;
the target is a percentile of it, times ``1 + margin``.

| constant | value | VPA source |
|---|---|---|
| ``FIRST_BUCKET`` | 1e7 bytes | ``model/aggregations_config.go`` memory histogram |
| ``BUCKET_RATIO`` | 1.05 | same |
| ``MAX_MEMORY`` / ``MAX_CPU`` | 1e12 bytes / 1000 cores | same |
| ``HALF_LIFE`` | 24 h | ``MemoryHistogramDecayHalfLife`` |
| ``PERCENTILE`` | 0.9 | ``--target-memory-percentile`` |
| ``MARGIN`` | 0.15 | ``--recommendation-margin-fraction`` |
| OOM bump | max(+100 MiB, x1.2) | ``OOMMinBumpUp`` / ``OOMBumpUpRatio`` |

The CPU histogram differs only in its first bucket (0.01 cores).
"""

from __future__ import annotations

import math

import numpy as np

FIRST_BUCKET_MEMORY = 1e7
FIRST_BUCKET_CPU = 0.01
MAX_MEMORY = 1e12
MAX_CPU = 1000.0
BUCKET_RATIO = 1.05
HALF_LIFE = 24 * 3600.0
PERCENTILE = 0.9
MARGIN = 0.15
OOM_MIN_BUMP = 100 * 2**20
OOM_BUMP_RATIO = 1.2
#: Re-base a histogram's weights when exponents pass this (2^600 is far from float overflow).
REBASE_EXPONENT = 600.0


class DecayingHistogram:
    def __init__(self, first_bucket: float, max_value: float, half_life: float = HALF_LIFE):
        n = int(math.ceil(math.log(max_value * (BUCKET_RATIO - 1) / first_bucket + 1) / math.log(BUCKET_RATIO)))
        self.first_bucket = first_bucket
        self.bounds = first_bucket * (BUCKET_RATIO ** np.arange(n + 1) - 1) / (BUCKET_RATIO - 1)
        self.weights = np.zeros(n)
        self.half_life = half_life
        self.reference = None  # time whose weight is 1

    def bucket(self, value: float) -> int:
        return int(min(max(np.searchsorted(self.bounds, value, side="right") - 1, 0), len(self.weights) - 1))

    def add(self, value: float, time: float) -> None:
        if self.reference is None:
            self.reference = time
        exponent = (time - self.reference) / self.half_life
        if exponent > REBASE_EXPONENT:
            self.weights *= 2.0 ** (-exponent)
            self.reference, exponent = time, 0.0
        self.weights[self.bucket(value)] += 2.0**exponent

    def percentile(self, p: float) -> float:
        """The end of the bucket where the cumulative weight reaches ``p`` (as VPA returns)."""
        total = self.weights.sum()
        if total <= 0:
            return math.nan
        index = int(np.searchsorted(np.cumsum(self.weights), p * total, side="left"))
        index = min(index, len(self.weights) - 1)
        return float(self.bounds[index + 1])


def oom_bump(allocation: np.ndarray) -> np.ndarray:
    return np.maximum(allocation + OOM_MIN_BUMP, allocation * OOM_BUMP_RATIO)

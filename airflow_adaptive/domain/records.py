"""Job records as a columnar table, and the load report every loader fills.

A replay touches every job many times, so records are numpy columns, not objects. Times are
seconds on the trace's own clock; ``end`` is when a job's usage becomes observable (the end of
its run), which is what keeps a replay from looking into the future.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from airflow_adaptive.domain.features import FeatureSchema


@dataclass
class LoadReport:
    """What a loader read, kept and dropped, with reasons. Nothing vanishes without a count."""

    source: str
    lines: int = 0
    malformed: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    kept: int = 0
    excluded: Counter = field(default_factory=Counter)

    MAX_EXAMPLES = 5

    def bad_line(self, line_no: int, reason: str) -> None:
        self.malformed += 1
        if len(self.malformed_examples) < self.MAX_EXAMPLES:
            self.malformed_examples.append(f"line {line_no}: {reason}")

    def exclude(self, reason: str, count: int = 1) -> None:
        if count:
            self.excluded[reason] += int(count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "lines": self.lines,
            "malformed": self.malformed,
            "malformed_examples": list(self.malformed_examples),
            "kept": self.kept,
            "excluded": dict(sorted(self.excluded.items())),
        }


@dataclass
class JobTable:
    """Jobs under one feature schema, as aligned numpy columns (one row per job).

    ``features[name]`` holds float64 for numeric features and an object array of strings for
    categorical ones. ``used[r]`` and ``requested[r]`` hold float64 in the resource's unit
    (cores, bytes, GPUs), NaN where unknown.
    """

    schema: FeatureSchema
    job_id: np.ndarray
    submit: np.ndarray
    end: np.ndarray
    run_time: np.ndarray
    features: dict[str, np.ndarray]
    used: dict[str, np.ndarray]
    requested: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.job_id)
        columns = {"submit": self.submit, "end": self.end, "run_time": self.run_time}
        columns.update({f"features.{k}": v for k, v in self.features.items()})
        columns.update({f"used.{k}": v for k, v in self.used.items()})
        columns.update({f"requested.{k}": v for k, v in self.requested.items()})
        for name, col in columns.items():
            if len(col) != n:
                raise ValueError(f"column {name} has {len(col)} rows, expected {n}")
        missing = [f for f in self.schema.names if f not in self.features]
        if missing:
            raise ValueError(f"table lacks schema features {missing}")

    def __len__(self) -> int:
        return len(self.job_id)

    def take(self, index: np.ndarray) -> "JobTable":
        """Rows at ``index`` (an integer or boolean array), in that order."""
        return JobTable(
            schema=self.schema,
            job_id=self.job_id[index],
            submit=self.submit[index],
            end=self.end[index],
            run_time=self.run_time[index],
            features={k: v[index] for k, v in self.features.items()},
            used={k: v[index] for k, v in self.used.items()},
            requested={k: v[index] for k, v in self.requested.items()},
        )

    def project(self, schema: FeatureSchema) -> "JobTable":
        """The same jobs under ``schema`` (a profiler's): features it does not know are dropped,
        features the table lacks are unknown (NaN, or "" for categories)."""
        if schema is self.schema:
            return self
        n = len(self)
        features = {f.name: self.features[f.name] if f.name in self.features else
                    (np.full(n, np.nan) if f.kind == "numeric" else np.full(n, "", dtype=object))
                    for f in schema.features}
        used = {r: self.used.get(r, np.full(n, np.nan)) for r in schema.resources}
        requested = {r: self.requested.get(r, np.full(n, np.nan)) for r in schema.resources}
        return JobTable(schema, self.job_id, self.submit, self.end, self.run_time, features, used, requested)

    def sorted_by_submit(self) -> "JobTable":
        return self.take(np.argsort(self.submit, kind="stable"))

    def key_codes(self) -> np.ndarray:
        """One integer per row identifying its workload (the schema's key features)."""
        if not self.schema.key:
            return np.zeros(len(self), dtype=np.int64)
        parts = [self.features[k].astype(str) for k in self.schema.key]
        _, codes = np.unique(["\x1f".join(p) for p in zip(*parts)], return_inverse=True)
        return codes.astype(np.int64)

    def rows(self) -> Iterator[dict[str, Any]]:
        """Jobs as plain dicts (for JSON and the CLI, not for hot loops)."""
        for i in range(len(self)):
            yield {
                "job_id": str(self.job_id[i]),
                "submit": float(self.submit[i]),
                "end": float(self.end[i]),
                "run_time": float(self.run_time[i]),
                "features": {k: _plain(v[i]) for k, v in self.features.items()},
                "used": {k: _plain(v[i]) for k, v in self.used.items()},
                "requested": {k: _plain(v[i]) for k, v in self.requested.items()},
            }

    @classmethod
    def from_rows(cls, schema: FeatureSchema, rows: list[Mapping[str, Any]]) -> "JobTable":
        """Build a table from dicts shaped like ``rows()`` yields."""
        def col(get, dtype=float):
            return np.array([get(r) for r in rows], dtype=dtype)

        features = {}
        for f in schema.features:
            if f.kind == "numeric":
                features[f.name] = col(lambda r, n=f.name: _num(r["features"].get(n)))
            else:
                features[f.name] = col(lambda r, n=f.name: str(r["features"].get(n)), object)
        return cls(
            schema=schema,
            job_id=col(lambda r: str(r["job_id"]), object),
            submit=col(lambda r: float(r["submit"])),
            end=col(lambda r: float(r["end"])),
            run_time=col(lambda r: float(r["run_time"])),
            features=features,
            used={res: col(lambda r, x=res: _num(r.get("used", {}).get(x))) for res in schema.resources},
            requested={
                res: col(lambda r, x=res: _num(r.get("requested", {}).get(x))) for res in schema.resources
            },
        )


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class LoadedTrace:
    """A loader's result: the table and the report of what was read and dropped."""

    table: JobTable
    report: LoadReport

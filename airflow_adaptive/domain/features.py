"""Feature schemas: the named, versioned set of features a profiler is trained on.

A loader produces records under its own schema (``swf/1``, ``pai/1``, ``stage-run/1``); a
profiler remembers the schema it was fitted with and refuses jobs that do not match it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from airflow_adaptive.domain.errors import FeatureSchemaMismatch

FeatureKind = Literal["numeric", "categorical"]

#: The resources a profile can hold, in the order reports print them.
RESOURCES: tuple[str, ...] = ("cpu", "memory", "gpu", "gpu_memory", "disk_read", "disk_write", "network_rx",
                               "network_tx", "ephemeral_storage")
RESOURCE_UNITS: Mapping[str, str] = {
    "cpu": "cores",
    "memory": "bytes",
    "gpu": "GPUs (fraction when shared)",
    "gpu_memory": "bytes",
    "disk_read": "bytes/s (read from storage)",
    "disk_write": "bytes/s (sent to storage)",
    "network_rx": "bytes/s (received by the stage's network namespace)",
    "network_tx": "bytes/s (sent by the stage's network namespace)",
    "ephemeral_storage": "bytes (working directory locally; writable layer and emptyDirs on Kubernetes)",
}
#: Bandwidths: a sample's value is the rate since the previous sample, so a stage's peak is the
#: fastest sampling interval and its mean the total over the run's sampled span.
BANDWIDTH_RESOURCES: tuple[str, ...] = ("disk_read", "disk_write", "network_rx", "network_tx")
#: The resources a container's size holds (``ResourceVector``); the others are predicted and
#: observed, and allocated by their own means (bandwidth limits, ``ephemeral-storage``).
CONTAINER_RESOURCES: tuple[str, ...] = ("cpu", "memory", "gpu", "gpu_memory")


@dataclass(frozen=True)
class Feature:
    name: str
    kind: FeatureKind
    unit: str = ""
    description: str = ""


@dataclass(frozen=True)
class FeatureSchema:
    """A named, versioned feature set.

    ``key`` names the features that identify a workload (the unit whose history predicts the
    next run, for example ``("user", "executable")``); ``resources`` the resources whose usage
    the records carry.
    """

    name: str
    version: int
    features: tuple[Feature, ...]
    key: tuple[str, ...]
    resources: tuple[str, ...]
    description: str = ""
    #: Groupings whose past runs predict the next one, finest first (default: the key, then each
    #: key feature alone, which is what lets an unseen key borrow from its user or executable).
    levels: tuple[tuple[str, ...], ...] = ()
    _by_name: dict[str, Feature] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.features})
        missing = [k for k in self.key if k not in self._by_name]
        if missing:
            raise ValueError(f"schema {self.id}: key names unknown features {missing}")
        if not self.levels:
            default = (self.key, *((k,) for k in self.key)) if len(self.key) > 1 else (self.key,)
            object.__setattr__(self, "levels", tuple(default))
        bad = [lv for lv in self.levels if any(f not in self._by_name for f in lv)]
        if bad:
            raise ValueError(f"schema {self.id}: levels name unknown features {bad}")
        unknown = [r for r in self.resources if r not in RESOURCES]
        if unknown:
            raise ValueError(f"schema {self.id}: unknown resources {unknown}; known: {RESOURCES}")

    @property
    def id(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        return self._by_name[name]

    def validate_job(self, job: Mapping[str, Any], where: str = "job") -> dict[str, Any]:
        """Check one job's features against the schema and return them normalised.

        Numeric features become floats (missing or null is NaN: the profiler handles unknowns),
        categorical ones strings (a missing one is "" unless it is part of the workload key). Unknown names and wrong types are a ``FeatureSchemaMismatch``
        that names every offending field.
        """
        problems: list[str] = []
        extra = sorted(set(job) - set(self.names), key=str)  # key: names of mixed types (1, "a") do not sort
        if extra:
            problems.append(f"unknown feature(s) {extra}")
        out: dict[str, Any] = {}
        for feat in self.features:
            value = job.get(feat.name)
            if feat.kind == "numeric":
                if value is None:
                    out[feat.name] = math.nan
                elif isinstance(value, bool) or not isinstance(value, (int, float)):
                    problems.append(f"'{feat.name}' must be a number, got {value!r}")
                else:
                    try:
                        out[feat.name] = float(value)
                    except OverflowError:  # an int past float range (JSON allows one)
                        problems.append(f"'{feat.name}' is too large to be a number ({value.bit_length()} bits)")
            else:
                if value is None and feat.name in self.key:
                    problems.append(f"'{feat.name}' is required (a string or integer id): it names the workload")
                elif value is None:
                    out[feat.name] = ""  # unknown category: the profiler treats it as missing
                elif isinstance(value, (str, int)) and not isinstance(value, bool):
                    out[feat.name] = str(value)
                else:
                    problems.append(f"'{feat.name}' must be a string or integer id, got {value!r}")
        if problems:
            raise FeatureSchemaMismatch(
                f"{where} does not match feature schema {self.id}: " + "; ".join(problems)
                + f". Expected features: {', '.join(self.names)}."
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "key": list(self.key),
            "resources": list(self.resources),
            "levels": [list(lv) for lv in self.levels],
            "features": [
                {"name": f.name, "kind": f.kind, "unit": f.unit, "description": f.description}
                for f in self.features
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureSchema":
        try:
            return cls(
                name=str(data["name"]),
                version=int(data["version"]),
                description=str(data.get("description", "")),
                key=tuple(data["key"]),
                resources=tuple(data["resources"]),
                levels=tuple(tuple(lv) for lv in data.get("levels", ())),
                features=tuple(
                    Feature(f["name"], f["kind"], f.get("unit", ""), f.get("description", ""))
                    for f in data["features"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FeatureSchemaMismatch(f"malformed feature schema: {exc}") from exc

    def require_same(self, other: "FeatureSchema", what: str = "data") -> None:
        """Raise when ``other`` is not this schema's kind of data (a model meets jobs of another
        schema). The same schema with other features is accepted when no shared feature changed
        its kind: stage features are open, so a champion meets stages that declare features it
        never saw (ignored) or lack some it learned (unknown); see ``JobTable.project``."""
        if self.name != other.name:
            raise FeatureSchemaMismatch(
                f"{what} uses feature schema {other.id} but the profiler was trained on {self.id}: "
                "train a profiler on records of that schema, or convert the jobs."
            )
        changed = [f"{f.name} ({f.kind} here, {other.feature(f.name).kind} there)"
                   for f in self.features if f.name in other._by_name and other.feature(f.name).kind != f.kind]
        if changed:
            raise FeatureSchemaMismatch(
                f"{what} use feature schema {other.id} whose feature(s) {', '.join(changed)} changed kind since the "
                f"profiler was trained on {self.id}: retrain it on records of one kind per feature."
            )

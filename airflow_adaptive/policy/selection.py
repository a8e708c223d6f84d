"""Which tasks the cluster policy sizes: a selector over what a task says about itself at parse
time. Pure (no Airflow import): the policy turns a task into :class:`TaskFacts` first.

``select`` (and ``exclude``, same form) is a mapping, or a list of mappings:

| key | matches | example |
|---|---|---|
| ``tags`` | any of the DAG's tags | ``["ml", "training"]`` |
| ``dag_ids`` | the DAG id | ``["train_*", "nightly_?"]`` |
| ``task_ids`` | the task id | ``["fit*"]`` |
| ``pools`` | the task's pool | ``["gpu"]`` |
| ``queues`` | the task's queue | ``["kubernetes"]`` |

Every value is a glob (``fnmatch``, case-sensitive). Within a key any value may match; across the
keys of one mapping all must (as in a Kubernetes label selector); a list of mappings selects what
any of them selects. ``{}`` selects every task. ``exclude`` wins over ``select``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping

from airflow_adaptive.domain.errors import UserError

KEYS = ("tags", "dag_ids", "task_ids", "pools", "queues")


class PolicyConfigError(UserError, ValueError):
    """The cluster policy's own configuration (``airflow_local_settings.py``) is wrong."""


@dataclass(frozen=True)
class TaskFacts:
    """What selection looks at, read from a task at parse time."""

    dag_id: str
    task_id: str
    tags: frozenset[str] = frozenset()
    pool: str = ""
    queue: str = ""


@dataclass(frozen=True)
class Clause:
    """One mapping of a selector: each key present must match (globs, any of its values)."""

    tags: tuple[str, ...] | None = None
    dag_ids: tuple[str, ...] | None = None
    task_ids: tuple[str, ...] | None = None
    pools: tuple[str, ...] | None = None
    queues: tuple[str, ...] | None = None

    def matches(self, facts: TaskFacts) -> bool:
        checks = (
            (self.tags, facts.tags),
            (self.dag_ids, (facts.dag_id,)),
            (self.task_ids, (facts.task_id,)),
            (self.pools, (facts.pool,)),
            (self.queues, (facts.queue,)),
        )
        return all(_any_glob(globs, values) for globs, values in checks if globs is not None)


@dataclass(frozen=True)
class Selector:
    """``select`` minus ``exclude``: see the module docstring."""

    select: tuple[Clause, ...] = field(default_factory=tuple)
    exclude: tuple[Clause, ...] = field(default_factory=tuple)

    def selects(self, facts: TaskFacts) -> bool:
        if any(c.matches(facts) for c in self.exclude):
            return False
        return any(c.matches(facts) for c in self.select)

    @classmethod
    def from_config(cls, select: Any, exclude: Any = None, where: str = "adaptive_policy") -> "Selector":
        return cls(_clauses(select, f"{where}(select=...)"), _clauses(exclude, f"{where}(exclude=...)") if exclude else ())


def _any_glob(globs: Iterable[str], values: Iterable[str]) -> bool:
    return any(fnmatchcase(v, g) for g in globs for v in values if v is not None)


def _clauses(value: Any, where: str) -> tuple[Clause, ...]:
    if value is None:
        raise PolicyConfigError(f"{where}: say which tasks to size, e.g. select={{'tags': ['ml']}} "
                                "({} selects every task)")
    items = [value] if isinstance(value, Mapping) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise PolicyConfigError(f"{where}: expected a mapping or a non-empty list of mappings of {list(KEYS)}, "
                                f"got {type(value).__name__}")
    return tuple(_clause(item, f"{where}[{i}]" if len(items) > 1 else where) for i, item in enumerate(items))


def _clause(item: Any, where: str) -> Clause:
    if not isinstance(item, Mapping):
        raise PolicyConfigError(f"{where}: expected a mapping of {list(KEYS)}, got {type(item).__name__}")
    unknown = sorted(str(k) for k in item if k not in KEYS)
    if unknown:
        raise PolicyConfigError(f"{where}: unknown key(s) {unknown}; expected some of {list(KEYS)}")
    out = {}
    for key, globs in item.items():
        if isinstance(globs, str):
            globs = [globs]
        if not isinstance(globs, (list, tuple, set, frozenset)) or not globs or not all(isinstance(g, str) and g for g in globs):
            raise PolicyConfigError(f"{where}: {key} must be a non-empty list of glob strings, got {globs!r}")
        out[key] = tuple(sorted(globs))
    return Clause(**out)

"""What a stage runs with, and why: the operator's decision before a try starts. Pure.

Inputs: the user's own request (``requested`` = the prior, ``limited`` = the bounds), the
profiler's prediction (or why there is none), the sizing policy, the mode, and the OOM kills of
earlier tries. Output: a :class:`StagePlan` the operator applies to a pod or to the local
runner, prints as a table and pushes to XCom.

| mode | the stage runs with | the prediction |
|---|---|---|
| ``adaptive`` | the policy's size (requests, limits, GPU type); resized while running | logged |
| ``shadow`` | the user's request as written; never resized | logged, with what adaptive would have set |
| ``off`` (kill switch) | the user's request, as plain KubernetesPodOperator | not made |

A prediction that cannot be made (a bad feature, no model, MLflow down) makes the plan a
*fallback*: the user's request, with the reason kept. In ``adaptive`` mode a retry after an OOM
kill raises memory from the recorded kill with the deviation policy's rule (repeating a size
that was just killed is never the right plan), and a retry after an ephemeral-storage eviction
raises the ephemeral-storage limit by the same factor (``OomEvent`` kind ``ephemeral_storage``,
``logic/eviction.py``), within the user's own ephemeral-storage limit; ``shadow`` only says what
it would have done, because shadow mode changes nothing.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping, Sequence

from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.features import BANDWIDTH_RESOURCES
from airflow_adaptive.domain.quantities import format_bandwidth, format_cpu, format_memory
from airflow_adaptive.domain.resources import ResourceVector
from airflow_adaptive.domain.stage_run import OomEvent
from airflow_adaptive.logic.deviation import DeviationConfig, escalate_after_oom
from airflow_adaptive.logic.sizing import (
    ContainerSize, GpuType, SizingPolicy, StorageSize, choose_gpu_type, size_container,
)

Mode = Literal["adaptive", "shadow", "off"]
MODES = ("adaptive", "shadow", "off")


@dataclass(frozen=True)
class StagePlan:
    mode: str
    size: ContainerSize  # what the stage runs with
    policy_size: ContainerSize | None  # what the policy sets from the prediction (None: no prediction)
    requested: ResourceVector
    limited: ResourceVector
    profile: PredictedProfile | None
    fallback: str | None = None  # why the user's request is used instead of a prediction
    escalation: str | None = None  # how an earlier OOM kill changed the size
    in_place: bool = True  # False: sized at start (and on retries) only, never while running
    #: A retry after an OOM kill never runs with less memory than its escalated limit: the kill
    #: showed the need is above the old one, so the monitor may not release below it.
    memory_floor: float = 0.0
    #: The user's own ephemeral-storage request/limit (the prior and the bound); None: not known
    #: (the caller did not read it), so ephemeral storage is not sized and the pod keeps the user's.
    storage: StorageSize | None = None

    @property
    def sizing(self) -> str:
        """The stage-run tag value: predicted, fallback, shadow or off."""
        if self.mode in ("shadow", "off"):
            return self.mode
        return "fallback" if self.fallback else "predicted"

    @property
    def resizable(self) -> bool:
        return self.mode == "adaptive" and self.in_place

    def reasons(self) -> list[str]:
        out = list(self.size.reasons)
        if self.fallback:
            out.insert(0, f"fallback to the user's request: {self.fallback}")
        if self.escalation:
            out.append(self.escalation)
        advice = self.policy_size.gpu_advice if self.policy_size is not None and self.policy_size is not self.size else None
        if advice is not None and advice.kind in ("decision", "recommendation"):
            out.append(f"{self.mode} mode, not applied: {advice.reason}")
        return out

    def to_dict(self) -> dict[str, Any]:
        def size(s: ContainerSize | None):
            if s is None:
                return None
            requests, limits = s.to_kubernetes()
            out: dict[str, Any] = {"requests": requests, "limits": limits, "gpu_type": s.gpu_type}
            if s.mig:
                out["mig"] = s.mig
            if s.gpu_advice is not None:
                out["gpu_advice"] = s.gpu_advice.to_dict()
            return out

        user_storage = self.storage.to_kubernetes() if self.storage is not None else ({}, {})
        return {
            "mode": self.mode,
            "sizing": self.sizing,
            "allocated": size(self.size),
            "policy": size(self.policy_size),
            "requested": {"requests": {**self.requested.to_kubernetes(), **user_storage[0]},
                          "limits": {**self.limited.to_kubernetes(), **user_storage[1]}},
            "predicted": self.profile.to_dict() if self.profile else None,
            "reasons": self.reasons(),
            "memory_floor": self.memory_floor or None,
        }


#: What a stage with no request and no prediction starts at when the namespace has no LimitRange
#: default: a small, schedulable pod the monitor grows in place (Kubernetes' own default is
#: BestEffort, the first pod evicted under pressure).
DEFAULT_REQUEST = ResourceVector(cpu=1.0, memory=2.0**30)


def default_request(requested: ResourceVector, limited: ResourceVector, limit_range=None,
                    stated: ResourceVector = DEFAULT_REQUEST) -> tuple[ResourceVector, ResourceVector, str | None]:
    """The prior of a stage whose author gave no cpu or memory request or limit and which has no
    prediction: the namespace's LimitRange defaults (``logic/capacity.LimitRangeBounds``, as the
    API server would apply them) when it has one, else ``stated``. Anything given is kept as is."""
    if any(getattr(v, r) > 0 for v in (requested, limited) for r in ("cpu", "memory")):
        return requested, limited, None
    defaults = (limit_range.default_request or limit_range.default) if limit_range is not None else None
    if defaults is not None and (defaults.cpu > 0 or defaults.memory > 0):
        limits = limit_range.default or ResourceVector()
        req = replace(requested, cpu=defaults.cpu, memory=defaults.memory)
        lim = replace(limited, cpu=limits.cpu, memory=limits.memory)
        return req, lim, (f"no request and no prediction: the namespace's LimitRange {limit_range.name} defaults "
                          f"(requests {_fmt('cpu', req.cpu)} CPU, {_fmt('memory', req.memory)})")
    req = replace(requested, cpu=stated.cpu, memory=stated.memory)
    return req, limited, (f"no request and no prediction: the stated default request {_fmt('cpu', stated.cpu)} CPU, "
                          f"{_fmt('memory', stated.memory)} (no LimitRange default in the namespace)")


def user_size(requested: ResourceVector, limited: ResourceVector, why: str,
              storage: StorageSize | None = None) -> ContainerSize:
    """The user's request exactly as written: a limit left out stays out (0), so the pod is the
    one the user would have had; the local runner starts such a stage at its request."""
    return ContainerSize(requested, limited, None, (why,), ephemeral=storage or StorageSize())


def plan_stage(
    requested: ResourceVector,
    limited: ResourceVector,
    profile: PredictedProfile | None,
    policy: SizingPolicy,
    mode: str = "adaptive",
    fallback: str | None = None,
    earlier_ooms: Sequence[OomEvent] = (),
    config: DeviationConfig = DeviationConfig(),
    deferred: Mapping[str, float] | None = None,
    in_place: bool = True,
    storage: StorageSize | None = None,
) -> StagePlan:
    """``in_place``: the monitor may resize the running stage; a profile with phases then starts
    it at its first phase (the monitor raises it ahead of the next), else at its peak.
    ``storage``: the user's own ephemeral-storage (None: not read, so not sized)."""
    if mode not in MODES:
        raise ValueError(f"sizing mode must be one of {MODES}, got {mode!r}")
    if mode == "off":
        return StagePlan(mode, user_size(requested, limited, "adaptive sizing is switched off", storage), None, requested,
                         limited, None, storage=storage)
    policy_size = None
    if profile is not None and not fallback:
        start = first_phase(profile, config) if in_place and mode == "adaptive" else None
        policy_size = size_container(start or profile, requested, limited, policy, storage)
        if start is not None:
            policy_size = replace(policy_size, reasons=(*policy_size.reasons, *start.notes[len(profile.notes):]))
    if mode == "shadow":
        size = user_size(requested, limited, "shadow mode: the user's request is used; the prediction is only logged", storage)
    elif policy_size is None:
        size = user_size(requested, limited, "the user's request is used as is", storage)
    else:
        size = policy_size
    plan = StagePlan(mode, size, policy_size, requested, limited, profile, fallback, in_place=in_place, storage=storage)
    if mode == "shadow":
        would = carry_deferred(escalate(plan, earlier_ooms, policy, config), deferred or {}, policy)
        if would.escalation:
            storage_evicted = any(e.kind == "ephemeral_storage" for e in earlier_ooms)
            uses = []
            if any(e.kind != "ephemeral_storage" for e in earlier_ooms) or not storage_evicted:
                uses.append(_fmt("memory", would.size.limits.memory))
            if storage_evicted:
                uses.append(f"{_fmt('memory', would.size.ephemeral.limit)} ephemeral-storage")
            return replace(plan, escalation=f"shadow mode, not applied: {would.escalation} (would use {', '.join(uses)})")
        return plan
    return carry_deferred(escalate(plan, earlier_ooms, policy, config), deferred or {}, policy)


def deferred_sizes(resizes: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """From a try's resize decisions, the largest cpu/memory increase each resource was refused in
    place ("left to the next attempt"): what :func:`carry_deferred` starts the next try at."""
    out: dict[str, float] = {}
    for r in resizes:
        resource, new, old = r.get("resource"), float(r.get("new") or 0), float(r.get("old") or 0)
        if r.get("status") == "deferred" and resource in ("cpu", "memory") and new > old:
            out[resource] = max(out.get(resource, 0.0), new)
    return out


def carry_deferred(plan: StagePlan, deferred: Mapping[str, float], policy: SizingPolicy) -> StagePlan:
    """Start at the sizes an earlier try asked for in place and could not get (the node could not
    hold them, or a resize was pending): "left to the next attempt" means here. CPU and memory
    only, never above the user's limit (else the policy's maximum); Guaranteed stays Guaranteed."""
    size, notes = plan.size, []
    for r in ("cpu", "memory"):
        wanted = deferred.get(r, 0.0)
        user_bound = getattr(plan.limited, r)
        policy_bound = getattr(policy.maximum, r) if policy.maximum else 0.0
        bound = user_bound if user_bound > 0 else (policy_bound if policy_bound > 0 else math.inf)
        new = min(wanted, bound)
        if new <= getattr(size.limits, r):
            continue
        limits = replace(size.limits, **{r: new})
        guaranteed = policy.preset == "guaranteed" or getattr(size.requests, r) >= getattr(size.limits, r)
        requests = replace(size.requests, **{r: new}) if guaranteed else size.requests
        size = replace(size, requests=requests, limits=limits)
        notes.append(f"{r} starts at {_fmt(r, new)}, the size an earlier try could not get in place")
    if not notes:
        return plan
    escalation = "; ".join(filter(None, [plan.escalation, *notes]))
    return replace(plan, size=size, escalation=escalation)


def first_phase(profile: PredictedProfile, config: DeviationConfig) -> PredictedProfile | None:
    """``profile`` with cpu and memory at their first predicted phase (and any phase starting
    within the monitor's lead time); None when neither has phases."""
    from airflow_adaptive.logic.usage_profile import start_estimate

    resources, notes = dict(profile.resources), []
    for r in ("cpu", "memory"):
        start = start_estimate(profile.phases.get(r, ()), config.lead)
        if start is None or r not in resources:
            continue
        resources[r] = start
        notes.append(f"{r} sized for its first predicted phase (upper {_fmt(r, start.upper)}; the stage's upper "
                     f"{_fmt(r, profile.resources[r].upper)} comes later, and the monitor raises ahead of it)")
    if not notes:
        return None
    return replace(profile, resources=resources, notes=(*profile.notes, *notes))


def escalate(plan: StagePlan, ooms: Sequence[OomEvent], policy: SizingPolicy, config: DeviationConfig) -> StagePlan:
    """Raise memory (or GPU memory, or ephemeral storage) above the size the last OOM kill (or
    ephemeral-storage eviction) happened at."""
    kernel = [e for e in ooms if e.kind == "kernel" and e.limit_bytes > 0]
    gpu = [e for e in ooms if e.kind == "gpu"]
    storage = [e for e in ooms if e.kind == "ephemeral_storage" and e.limit_bytes > 0]
    if not kernel and not gpu and not storage:
        return plan
    size, notes = plan.size, []
    if storage:
        size, note = escalate_storage(plan, size, storage[-1], policy, config)
        notes.append(note)
    bound = plan.limited.memory if plan.limited.memory > 0 else (policy.maximum.memory if policy.maximum and policy.maximum.memory > 0 else None)
    if kernel:
        last = kernel[-1]
        esc = escalate_after_oom(last.limit_bytes, None, config, max_bytes=bound)
        if esc.new_limit > size.limits.memory:
            limits = replace(size.limits, memory=esc.new_limit)
            requests = replace(size.requests, memory=min(max(size.requests.memory, 0.0), esc.new_limit))
            if policy.preset == "guaranteed" or plan.policy_size is None:
                requests = replace(requests, memory=esc.new_limit)
            size = replace(size, requests=requests, limits=limits)
        notes.append(f"try {last.try_number} was {esc.reason}")
    if gpu and policy.gpu_types:
        last = gpu[-1]
        gpus = max(int(math.ceil(size.limits.gpu - 1e-9)), 1)
        current = _current_type(size, policy.gpu_types)
        need = max(last.limit_bytes, size.limits.gpu_memory) / gpus * config.oom_factor
        est = plan.profile.resources.get("gpu") if plan.profile is not None else None
        busy = est.upper / max(int(math.ceil(plan.limited.max(plan.requested).gpu - 1e-9)), 1) if est else None
        usable = [t.memory_bytes for t in policy.gpu_types if not t.mig or gpus == 1]
        if need <= 0 and current is None and usable:  # an unknown type at an unknown size: the most memory there is
            need = max(usable)
        pick, _ = choose_gpu_type(need, policy.gpu_types, gpus, busy, above=current)
        if pick is None:
            where = f" on {current.name}" if current else ""
            notes.append(f"try {last.try_number} ran out of GPU memory{where}; no larger GPU type is configured to move to")
        else:
            size = replace(size, limits=replace(size.limits, gpu_memory=max(need, 0.0) * gpus),
                           gpu_type=None if pick.mig else pick.label, gpu_resource=pick.resource)
            what = f"MIG profile {pick.mig} ({pick.resource})" if pick.mig else f"GPU type {pick.label}"
            notes.append(f"try {last.try_number} ran out of GPU memory: {what}")
    elif gpu:
        notes.append(f"try {gpu[-1].try_number} ran out of GPU memory; no GPU types are configured to move to")
    if not kernel and not gpu:
        return replace(plan, size=size, escalation="; ".join(notes))
    floor = max(plan.memory_floor, size.limits.memory) if kernel else plan.memory_floor
    return replace(plan, size=size, escalation="; ".join(notes), memory_floor=floor)


def escalate_storage(plan: StagePlan, size: ContainerSize, last: OomEvent, policy: SizingPolicy,
                     config: DeviationConfig) -> tuple[ContainerSize, str]:
    """``size`` with its ephemeral-storage limit above the one ``last`` was evicted at (x the
    deviation policy's ``oom_factor``, as memory after a kernel OOM kill), within the user's own
    ephemeral-storage limit (else request) when given; and the reason."""
    evicted = f"try {last.try_number} was evicted for ephemeral storage at {_fmt('memory', last.limit_bytes)}"
    bound = plan.storage.bound if plan.storage is not None and plan.storage.bound > 0 else None
    if bound is not None and last.limit_bytes >= bound:
        new = bound
        note = (f"{evicted}, already the user's ephemeral-storage limit {_fmt('memory', bound)}: the stage cannot get "
                "more; raise its ephemeral-storage limit or make it write less (an emptyDir or a volume for large files)")
    else:
        want = last.limit_bytes * config.oom_factor
        new = want if bound is None else min(want, bound)
        note = f"{evicted}: retry with {_fmt('memory', new)} (x{config.oom_factor:g})"
        if new < want:
            note += f", capped at the user's ephemeral-storage limit {_fmt('memory', bound)} (wanted {_fmt('memory', want)})"
    current = size.ephemeral
    if new <= current.limit:
        return size, note
    request = current.request
    if policy.preset == "guaranteed" or plan.policy_size is None or request <= 0:
        request = new
    return replace(size, ephemeral=StorageSize(min(request, new), new)), note


def _current_type(size: ContainerSize, types: Sequence[GpuType]) -> GpuType | None:
    """The configured type a size runs on (its MIG profile, else its GPU-type label), if any."""
    for t in types:
        if (size.mig and t.mig == size.mig) or (not size.mig and size.gpu_type and not t.mig and t.label == size.gpu_type):
            return t
    return None


def local_allocation(plan: StagePlan, host: ResourceVector, policy_maximum: ResourceVector | None = None
                     ) -> tuple[ResourceVector, dict[str, float]]:
    """Where the local runner starts a stage (cpu, memory) and how far it may resize it.

    Resizable: at the requests (what Kubernetes would reserve), raised in place as the stage
    grows; otherwise at the limits, as a pod's. Whatever is unset falls back to the other, then to
    the host. The bound is the user's limit (else the host), within the policy's maximum, and
    never below the start.
    """
    size = plan.size
    first = size.requests if plan.resizable else size.limits
    cpu = first.cpu or size.limits.cpu or size.requests.cpu or host.cpu
    memory = max(first.memory or size.limits.memory or size.requests.memory or host.memory, plan.memory_floor)
    maximum = {"cpu": plan.limited.cpu or host.cpu, "memory": plan.limited.memory or host.memory}
    if policy_maximum is not None:
        maximum = {r: min(v, getattr(policy_maximum, r) or v) for r, v in maximum.items()}
    maximum = {r: max(v, {"cpu": cpu, "memory": memory}[r]) for r, v in maximum.items()}
    return ResourceVector(cpu=cpu, memory=memory), maximum


def prediction_table(plan: StagePlan) -> str:
    """Predicted vs requested vs allocated, per resource, for the task log. Bandwidths (bytes/s)
    are predicted only (allocated, if at all, by the network-bandwidth annotations); ephemeral
    storage is sized at pod start. A row with nothing to show is left out."""
    rows = [("resource", "predicted median", "predicted upper", "user request", "user limit", "request", "limit")]
    profile = plan.profile
    for r in ("cpu", "memory", "gpu", "gpu_memory"):
        est = profile.resources.get(r) if profile else None
        cells = [_fmt(r, getattr(plan.requested, r)), _fmt(r, getattr(plan.limited, r)),
                 _fmt(r, getattr(plan.size.requests, r)), _fmt(r, getattr(plan.size.limits, r))]
        if est is None and all(c == "-" for c in cells):
            continue
        rows.append((r, _fmt(r, est.median) if est else "-", _fmt(r, est.upper) if est else "-", *cells))
    for r in BANDWIDTH_RESOURCES:
        est = profile.resources.get(r) if profile else None
        if est is not None and (est.median > 0 or est.upper > 0):
            rows.append((r, _fmt(r, est.median), _fmt(r, est.upper), "-", "-", "-", "-"))
    est = profile.resources.get("ephemeral_storage") if profile else None
    user = plan.storage or StorageSize()
    cells = [_fmt("memory", user.request), _fmt("memory", user.limit),
             _fmt("memory", plan.size.ephemeral.request or user.request), _fmt("memory", plan.size.ephemeral.limit or user.limit)]
    if est is not None or any(c != "-" for c in cells):
        rows.append(("ephemeral_storage", _fmt("memory", est.median) if est else "-",
                     _fmt("memory", est.upper) if est else "-", *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    header = f"sizing: {plan.sizing} ({plan.mode})"
    if plan.size.gpu_type:
        header += f", GPU type {plan.size.gpu_type}"
    elif plan.size.mig:
        header += f", MIG profile {plan.size.mig} ({plan.size.gpu_resource})"
    # The profile's own notes (a cold start's similar stages, features the model does not know
    # yet) come after the sizing reasons; first-phase notes are already among the reasons.
    notes = [n for n in (profile.notes if profile else ()) if n not in plan.reasons()]
    return "\n".join([header, *lines, *phase_lines(profile), *(f"  - {r}" for r in [*plan.reasons(), *notes])])


def phase_lines(profile: PredictedProfile | None) -> list[str]:
    """The predicted phases, one line per resource: where each starts, its median and upper."""
    out = []
    for r, phases in (profile.phases.items() if profile is not None else ()):
        steps = [f"{p.start_s:.4g} s: {_fmt(r, p.median)} / {_fmt(r, p.upper)}" for p in phases]
        out.append(f"predicted {r} phases (from; median / upper): " + ", ".join(steps))
    return out


def _fmt(resource: str, value: float | None) -> str:
    if value is None or value <= 0:
        return "-"
    if resource in BANDWIDTH_RESOURCES:
        return format_bandwidth(value)
    if resource in ("memory", "gpu_memory", "ephemeral_storage"):
        return format_memory(round(value / 2**20) * 2**20) if value >= 2**20 else format_memory(value)
    if resource == "cpu":
        return format_cpu(value)
    return f"{value:g}"



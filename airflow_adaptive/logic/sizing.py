"""The sizing policy: from a predicted profile and the user's own request to requests and limits.

Pure. The user's request is the prior (what a stage gets with no prediction at all) and the
bounds (never more than the user's limit, never less than the policy's floor); the prediction
moves the size inside them. A *cold start* (a stage with no runs of its own) is predicted from
similar stages with wider, calibrated bounds (``logic/scaling.py``) and sized like any other
prediction, inside the same bounds; the reasons say so.

| preset | requests | limits | why |
|---|---|---|---|
| ``burstable`` | predicted median | predicted upper x (1 + margin) | packs nodes by the typical need, caps at the covering quantile |
| ``guaranteed`` | upper x (1 + margin) | the same | Kubernetes' Guaranteed QoS (requests == limits): last to be evicted |

GPUs (``gpu`` in a profile is summed utilisation: 1.0 = one GPU busy):

| the stage | its GPU count | why |
|---|---|---|
| fixed (the default) | the user's ``nvidia.com/gpu``, as written | it is the job's world size: a data-parallel job breaks on another count |
| elastic (``elastic_gpus=(min, max)``) | the predicted utilisation upper rounded up, within [min, max] | the author said any count in the bounds works |
| GPU-saturated and long, with a learned speed-up | elastic: more, within max (a *decision*); fixed: kept, with a *recommendation* in the log | ``logic/gpu_scaling.py`` |

No margin on utilisation: a GPU short makes a stage slower, not killed. GPU memory is not a
Kubernetes resource: it chooses a GPU type (node affinity on its label) or, for a 1-GPU stage, a
MIG profile (the extended resource ``nvidia.com/mig-<profile>`` of NVIDIA's *mixed* MIG strategy,
instead of ``nvidia.com/gpu``; only nodes with that profile advertise it, so no affinity): the
smallest whose memory per device covers the predicted upper with the margin, per GPU (the
profile's ``gpu_memory`` is summed over the stage's GPUs, ``adapters/nvml/sampler.py``; a
data-parallel replica needs the same per device whatever the count). A MIG profile with less
compute than the stage keeps busy (``<g>g``: g of a full GPU's 7 compute slices on A100/H100/H200)
is skipped. GPU fractions by time-slicing are not offered: NVIDIA's time-slicing shares a GPU
without memory isolation, so no size can be promised to fit.

Ephemeral storage (``ephemeral-storage``: the container's writable layer, its logs and its
emptyDirs, as the kubelet counts them) is sized like memory but carried beside the
:class:`ResourceVector` (:class:`StorageSize` in :attr:`ContainerSize.ephemeral`), because it is
set at pod start only: Kubernetes cannot resize it in place, so it is never in a resize patch.

| what | request | limit | bound |
|---|---|---|---|
| predicted | median (``guaranteed``: the limit) | upper x (1 + margin), at least ``EPHEMERAL_FLOOR`` | the user's ephemeral-storage limit (else request); none when the user gave neither |
| not predicted, or not known (``storage=None``) | the user's, unchanged | the user's, unchanged | |

A try the kubelet evicted for exceeding its limit is retried larger (``logic/stage_plan.escalate``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Sequence

from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.resources import GPU_RESOURCE, ResourceVector
from airflow_adaptive.logic.gpu_scaling import GpuAdvice, GpuScalingConfig, decide

Preset = Literal["burstable", "guaranteed"]
PRESETS = ("burstable", "guaranteed")
#: Headroom over the covering quantile for limits: the conformal upper is calibrated to be
#: exceeded by ``1 - coverage`` of runs; 10% more absorbs the drift between refits.
DEFAULT_MARGIN = 0.10


#: The least ephemeral storage a sized stage gets (request and limit; never above the user's limit).
#: The kubelet counts the container's own log files against the limit (rotated at 10 MiB with 5
#: files kept by default, ``containerLogMaxSize``/``containerLogMaxFiles``: up to 50 MiB), while a
#: prediction covers the files the stage writes; 64 MiB keeps a quiet stage from being evicted
#: for its log.
EPHEMERAL_FLOOR = 64 * 2**20
#: Compute slices of a full GPU in MIG mode (A100, H100, H200: 7); a ``<g>g.<mem>gb`` profile has g.
MIG_COMPUTE_SLICES = 7
_MIG_PROFILE = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.\d+gb(?:[.-][a-z0-9]+)*$")
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class GpuType:
    """A full GPU: a node label value (e.g. ``nvidia.com/gpu.product``) and one device's memory;
    or, with ``mig``, a MIG profile (``"1g.10gb"``): the extended resource
    ``nvidia.com/mig-<profile>`` (NVIDIA's mixed strategy), its memory, and its ``compute`` share
    of a full GPU (default: from the name, g of 7 slices)."""

    label: str
    memory_bytes: float
    mig: str = ""
    compute: float | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.memory_bytes, (int, float)) and self.memory_bytes > 0):
            raise ValueError(f"GPU type memory must be > 0 bytes, got {self.memory_bytes!r}")
        if self.mig:
            if not _RESOURCE_NAME.match(self.mig) or len(self.mig) > 50:
                raise ValueError(f"MIG profile {self.mig!r} does not make a valid resource name nvidia.com/mig-<profile>")
            if self.compute is None and not _MIG_PROFILE.match(self.mig):
                raise ValueError(f"MIG profile {self.mig!r}: cannot tell its compute share from the name "
                                 "(expected like '1g.10gb'); give 'compute' (the share of a full GPU, e.g. 0.14)")
        elif not self.label:
            raise ValueError("a GPU type needs a label (its node label value) or a MIG profile ('mig')")
        if self.compute is not None and not 0 < self.compute <= 1:
            raise ValueError(f"GPU type compute share must be in (0, 1], got {self.compute!r}")

    @property
    def resource(self) -> str:
        """The extended resource its count is requested as."""
        return f"nvidia.com/mig-{self.mig}" if self.mig else GPU_RESOURCE

    @property
    def compute_share(self) -> float:
        if self.compute is not None:
            return self.compute
        if not self.mig:
            return 1.0
        return min(1.0, int(_MIG_PROFILE.match(self.mig).group(2)) / MIG_COMPUTE_SLICES)  # type: ignore[union-attr]

    @property
    def name(self) -> str:
        return f"MIG {self.mig}" if self.mig else self.label


@dataclass(frozen=True)
class ElasticGpus:
    """A stage that runs on any GPU count in [``min``, ``max``] (its world size is not fixed)."""

    min: int
    max: int

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a whole number of GPUs >= 1, got {v!r}")
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")


def elastic_from(value: Any, where: str) -> ElasticGpus | None:
    """``elastic_gpus`` as DAG authors write it: ``{"min": 1, "max": 8}``, ``(1, 8)`` or None;
    a bad one raises ValueError naming ``where.elastic_gpus``."""
    if value is None or isinstance(value, ElasticGpus):
        return value
    field_ = f"{where}.elastic_gpus"
    expected = "expected {'min': m, 'max': n} or (m, n), whole numbers of GPUs with 1 <= m <= n"
    if isinstance(value, Mapping):
        unknown = sorted(set(map(str, value)) - {"min", "max"})
        if unknown or "min" not in value or "max" not in value:
            raise ValueError(f"{field_}: {expected}, got {dict(value)!r}")
        pair = (value["min"], value["max"])
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        pair = tuple(value)
    else:
        raise ValueError(f"{field_}: {expected}, got {value!r}")
    whole = []
    for v in pair:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        whole.append(v)
    try:
        return ElasticGpus(*whole)
    except ValueError as exc:
        raise ValueError(f"{field_}: {exc} ({expected})") from None


@dataclass(frozen=True)
class SizingPolicy:
    preset: Preset = "burstable"
    margin: float = DEFAULT_MARGIN
    minimum: ResourceVector = field(default_factory=ResourceVector)
    maximum: ResourceVector | None = None  # None: the user's limits bound the size
    gpu_types: tuple[GpuType, ...] = ()
    #: None: the GPU count is the user's (the job's world size); else the bounds it may move in.
    elastic: ElasticGpus | None = None
    gpu_scaling: GpuScalingConfig = field(default_factory=GpuScalingConfig)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"sizing preset must be one of {PRESETS}, got {self.preset!r}")
        if not (isinstance(self.margin, (int, float)) and 0 <= self.margin <= 10):
            raise ValueError(f"sizing margin must be a number in [0, 10], got {self.margin!r}")


def gpu_types_from(types: Sequence[GpuType | Mapping[str, Any]], where: str = "gpu_types") -> tuple[GpuType, ...]:
    """GPU types as DAG authors write them (or GpuType): a full GPU ``{"label": "A100-40GB",
    "memory": "40Gi"}`` (the node label value), or a MIG profile ``{"mig": "1g.10gb", "memory":
    "10Gi"}`` (optionally ``"compute"``: its share of a full GPU)."""
    from airflow_adaptive.domain.quantities import memory_bytes

    out = []
    for i, t in enumerate(types):
        if isinstance(t, GpuType):
            out.append(t)
            continue
        field_ = f"{where}[{i}]"
        if not isinstance(t, Mapping):
            raise ValueError(f"{field_}: expected a mapping like {{'label': 'A100-40GB', 'memory': '40Gi'}}, got {t!r}")
        allowed = {"mig", "memory", "compute"} if "mig" in t else {"label", "memory"}
        unknown = sorted(set(map(str, t)) - allowed)
        if unknown or "memory" not in t:
            raise ValueError(f"{field_}: unknown or missing keys {unknown or ['memory']}; a full GPU is "
                             "{'label', 'memory'}, a MIG profile {'mig', 'memory'} (and optionally 'compute'; "
                             "no label: MIG needs no GPU-type affinity)")
        memory = t["memory"]
        amount = float(memory_bytes(memory, f"{field_}.memory")) if isinstance(memory, str) else float(memory)
        try:
            out.append(GpuType(str(t.get("label", "")), amount, str(t.get("mig", "")),
                               None if t.get("compute") is None else float(t["compute"])))
        except ValueError as exc:
            raise ValueError(f"{field_}: {exc}") from None
    return tuple(out)


def policy_from(preset: str, margin: float, min_resources: Mapping[str, str] | None, max_resources: Mapping[str, str] | None,
                gpu_types: Sequence[GpuType | Mapping[str, Any]], where: str, elastic_gpus: Any = None) -> SizingPolicy:
    """The policy from an operator's or sensor's arguments; a bad quantity names ``where``."""
    minimum = ResourceVector.from_kubernetes(min_resources or {}, f"{where}.min_resources")
    maximum = ResourceVector.from_kubernetes(max_resources, f"{where}.max_resources") if max_resources else None
    return SizingPolicy(str(preset).strip(), margin, minimum, maximum,  # type: ignore[arg-type]
                        gpu_types_from(gpu_types, f"{where}.gpu_types"), elastic_from(elastic_gpus, where))


EPHEMERAL_STORAGE = "ephemeral-storage"  # the Kubernetes resource name


@dataclass(frozen=True)
class StorageSize:
    """A container's ``ephemeral-storage`` request and limit in bytes (0: unset). Not part of
    :class:`ResourceVector`: it is set at pod start only and never resized in place."""

    request: float = 0.0
    limit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("request", "limit"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"ephemeral-storage {name} must be a finite number of bytes >= 0, got {v!r}")
            object.__setattr__(self, name, float(v))

    @property
    def bound(self) -> float:
        """The user's bound: the limit, else the request (as ``limited.max(requested)`` for memory); 0: none."""
        return max(self.request, self.limit)

    @property
    def is_set(self) -> bool:
        return self.request > 0 or self.limit > 0

    def to_kubernetes(self) -> tuple[dict[str, str], dict[str, str]]:
        """({"ephemeral-storage": ...} or {}, the same for the limit): exact bytes, rounded up."""
        from airflow_adaptive.domain.quantities import format_memory

        def one(v: float) -> dict[str, str]:
            return {EPHEMERAL_STORAGE: format_memory(v)} if v > 0 else {}

        return one(self.request), one(self.limit)


@dataclass(frozen=True)
class ContainerSize:
    """``gpu_type``: the node label value of the full GPU chosen (None: any, or a MIG profile);
    ``gpu_resource``: the extended resource the GPU count is requested as (``nvidia.com/gpu``, or
    ``nvidia.com/mig-<profile>``); ``gpu_advice``: the more-GPUs decision or recommendation;
    ``ephemeral``: the ``ephemeral-storage`` request and limit (unset: the user's own stay as written)."""

    requests: ResourceVector
    limits: ResourceVector
    gpu_type: str | None
    reasons: tuple[str, ...]
    gpu_resource: str = GPU_RESOURCE
    gpu_advice: GpuAdvice | None = None
    ephemeral: StorageSize = field(default_factory=StorageSize)

    @property
    def mig(self) -> str | None:
        prefix = "nvidia.com/mig-"
        return self.gpu_resource[len(prefix):] if self.gpu_resource.startswith(prefix) else None

    def to_kubernetes(self) -> tuple[dict[str, str], dict[str, str]]:
        """(requests, limits) as Kubernetes maps, the GPU count under ``gpu_resource``, and
        ``ephemeral-storage`` when the size sets it."""
        def rename(m: dict[str, str]) -> dict[str, str]:
            if self.gpu_resource != GPU_RESOURCE and GPU_RESOURCE in m:
                m[self.gpu_resource] = m.pop(GPU_RESOURCE)
            return m

        storage_requests, storage_limits = self.ephemeral.to_kubernetes()
        return ({**rename(self.requests.to_kubernetes()), **storage_requests},
                {**rename(self.limits.to_kubernetes()), **storage_limits})


def size_container(profile: PredictedProfile | None, requested: ResourceVector, limited: ResourceVector,
                   policy: SizingPolicy = SizingPolicy(), storage: StorageSize | None = None) -> ContainerSize:
    """Requests and limits for one stage. ``requested``/``limited`` are the user's own (0 = unset);
    ``storage`` the user's own ephemeral-storage (None: not known, so it is not sized: the user's
    stays as written in the pod)."""
    user_limit = limited.max(requested)
    # The policy's maximum, else the user's limit; an unset (0) bound is no bound.
    ceiling = {r: v if v > 0 else math.inf for r, v in (policy.maximum or user_limit).as_dict().items()}
    if profile is None or not profile.resources:
        return ContainerSize(requested, user_limit, None, ("no prediction; the user's request is used as is",),
                             ephemeral=storage or StorageSize())

    median = _vector(profile, "median", requested)
    upper = _vector(profile, "upper", user_limit, factor=1 + policy.margin)
    reasons = []
    if profile.cold_start:
        reasons.append("cold start: no runs of this stage yet; sized from similar stages (wider bounds), "
                       "within the user's limits")
    limits = _bounded(upper, policy.minimum, ceiling, reasons, "limit")
    requests = limits if policy.preset == "guaranteed" else _bounded(median, policy.minimum, limits.as_dict(), reasons, "request")
    user_gpus = _devices(user_limit.gpu)
    # The count the prediction was made for (the user's, a feature of the stage): the profile's
    # utilisation and GPU memory are summed over that many GPUs.
    ref = user_gpus or (policy.elastic.min if policy.elastic else 1)
    gpus, advice = gpu_count(profile, user_gpus, ref, policy, reasons)
    # Data-parallel replicas need the same memory per device whatever the count.
    per_device = limits.gpu_memory / ref
    requests = ResourceVector(requests.cpu, requests.memory, gpus, requests.gpu_memory / ref * gpus if gpus else requests.gpu_memory)
    limits = ResourceVector(limits.cpu, limits.memory, gpus, per_device * gpus if gpus else limits.gpu_memory)
    busy = profile.resources["gpu"].upper / ref if "gpu" in profile.resources else None
    kind, notes = choose_gpu_type(per_device, policy.gpu_types, gpus, busy) if gpus else (None, [])
    reasons.extend(notes)
    ephemeral = size_storage(profile, storage, policy, reasons) if storage is not None else StorageSize()
    if kind is not None and kind.mig:
        return ContainerSize(requests, limits, None, tuple(reasons), kind.resource, advice, ephemeral)
    return ContainerSize(requests, limits, kind.label if kind else None, tuple(reasons), GPU_RESOURCE, advice, ephemeral)


def size_storage(profile: PredictedProfile | None, user: StorageSize, policy: SizingPolicy, reasons: list[str]) -> StorageSize:
    """The stage's ephemeral-storage (see the module docstring's table); the user's own when the
    profile does not predict it. Appends its reasons."""
    est = profile.resources.get("ephemeral_storage") if profile is not None else None
    if est is None:
        return user
    ceiling = user.bound if user.bound > 0 else math.inf
    upper = est.upper * (1 + policy.margin)
    limit = max(upper, EPHEMERAL_FLOOR)
    note = f"from the predicted upper {_size(est.upper)} + {policy.margin:.0%}"
    if limit > ceiling:
        limit = ceiling
        note = f"capped at the user's ephemeral-storage {_size(ceiling)} (the bound) below the prediction {_size(max(upper, EPHEMERAL_FLOOR))}"
    elif upper < EPHEMERAL_FLOOR:
        note = (f"the floor {_size(EPHEMERAL_FLOOR)} (the predicted upper {_size(est.upper)} + {policy.margin:.0%} is less; "
                "the kubelet counts the container's logs too)")
    if policy.preset == "guaranteed":
        request, why = limit, "the limit (guaranteed)"
    else:
        request = min(max(est.median, EPHEMERAL_FLOOR), limit)
        why = "the predicted median" if request == est.median else (
            "the limit" if request == limit else f"the floor {_size(EPHEMERAL_FLOOR)}")
    reasons.append(f"ephemeral-storage: request {_size(request)} ({why}), limit {_size(limit)} ({note}); "
                   "set at pod start only (Kubernetes cannot resize it in place)")
    return StorageSize(request, limit)


def gpu_count(profile: PredictedProfile, user_gpus: int, ref: int, policy: SizingPolicy, reasons: list[str]
              ) -> tuple[int, GpuAdvice | None]:
    """The stage's GPU count and the more-GPUs advice (see the module docstring's table)."""
    est = profile.resources.get("gpu")
    elastic = policy.elastic
    if elastic is not None and policy.maximum is not None and 0 < policy.maximum.gpu < elastic.max:
        elastic = ElasticGpus(min(elastic.min, int(policy.maximum.gpu)), int(policy.maximum.gpu))  # max_resources clamps it
    if elastic is None:
        gpus = user_gpus
        if gpus:
            reasons.append(f"GPUs: {gpus}, the user's count (the job's world size); the prediction never changes it "
                           "(declare elastic_gpus to let it)")
    else:
        bounds = f"[{elastic.min}, {elastic.max}]"
        if est is None or est.upper <= 0:
            gpus = min(max(user_gpus or elastic.min, elastic.min), elastic.max)
            reasons.append(f"elastic GPUs {bounds}: {gpus}, the user's count within the bounds (GPU utilisation not predicted)")
        else:
            want = max(1, math.ceil(est.upper - 1e-9))
            gpus = min(max(want, elastic.min), elastic.max)
            where = (" (the declared min)" if want < gpus else " (capped at the declared max)" if want > gpus else "")
            reasons.append(f"elastic GPUs {bounds}: {gpus}{where}, from the predicted utilisation upper "
                           f"{est.upper:.2f} GPUs busy")
    if not gpus:
        return 0, None
    advice = decide(gpus, est.upper if est else None, profile.duration.median if profile.duration else None,
                    profile.gpu_scaling, (elastic.min, elastic.max) if elastic else None, ref, policy.gpu_scaling)
    if advice.kind == "decision":
        gpus = advice.gpus
    if advice.kind != "none":
        reasons.append(advice.reason)
    return gpus, advice


def choose_gpu_type(per_device: float, types: Sequence[GpuType], gpus: int, busy: float | None = None,
                    above: GpuType | None = None) -> tuple[GpuType | None, list[str]]:
    """The smallest type whose memory covers ``per_device`` bytes (a MIG profile only for a 1-GPU
    stage, and only with the compute ``busy`` needs: GPUs busy per device); ``above``: only types
    with more memory than it (a retry after running out of GPU memory). None: no type to choose."""
    notes: list[str] = []
    if not types or (per_device <= 0 and above is None):
        return None, notes
    usable = [t for t in types if not t.mig or gpus == 1]
    if busy is not None:
        slow = [t for t in usable if t.mig and t.compute_share < busy * 0.999]
        fits_slow = [t for t in slow if t.memory_bytes >= per_device]
        usable = [t for t in usable if t not in slow]
        if fits_slow:
            notes.append(f"MIG {', '.join(t.mig for t in fits_slow)} skipped: less compute than the predicted "
                         f"{busy:.2f} of a GPU busy")
    if above is not None:
        usable = [t for t in usable if t.memory_bytes > above.memory_bytes]
    if not usable:
        if any(t.mig for t in types) and gpus > 1 and not any(not t.mig for t in types):
            notes.append(f"MIG profiles are per device: a {gpus}-GPU stage gets whole GPUs of any type")
        return None, notes
    need = _gib(per_device)
    fitting = sorted((t for t in usable if t.memory_bytes >= per_device), key=lambda t: (t.memory_bytes, bool(t.mig)))
    if fitting:
        pick = fitting[0]
        what = (f"MIG profile {pick.mig} ({pick.resource} instead of {GPU_RESOURCE}, no GPU-type affinity; 1 GPU asked)"
                if pick.mig else f"GPU type {pick.label}")
        notes.append(f"{what}: the smallest configured with {_gib(pick.memory_bytes)} per GPU covering the predicted "
                     f"{need} per GPU (upper + margin)")
        return pick, notes
    largest = max(usable, key=lambda t: (t.memory_bytes, not t.mig))
    notes.append(f"no GPU type has {need} per GPU; using the largest, {largest.name}")
    return largest, notes


def _vector(profile: PredictedProfile, stat: str, fallback: ResourceVector, factor: float = 1.0) -> ResourceVector:
    """The profile's ``stat`` (times ``factor``) per container resource (``CONTAINER_RESOURCES``: the
    others are sized by their own means); one it does not predict keeps the user's value."""
    values = fallback.as_dict()
    for r, est in profile.resources.items():
        if r in values:
            values[r] = getattr(est, stat) * factor
    return ResourceVector.from_dict(values)


def _bounded(want: ResourceVector, floor: ResourceVector, ceiling: dict[str, float], reasons: list, what: str) -> ResourceVector:
    """Each resource within [floor, ceiling]; ``gpu`` is left as is (its count is :func:`gpu_count`'s)."""
    out = {}
    for r, v in want.as_dict().items():
        if r == "gpu":
            out[r] = v
            continue
        lo, hi = floor.as_dict()[r], ceiling[r]
        if v > hi and what == "limit":
            reasons.append(f"{r} {what} capped at {hi:g} (the bound) below the prediction {v:g}")
        out[r] = min(max(v, lo), hi)
    return ResourceVector.from_dict(out)


def _devices(gpu: float) -> int:
    return int(math.ceil(gpu - 1e-9)) if gpu > 0 else 0


def _gib(amount: float) -> str:
    return f"{amount / 2**30:.1f} GiB"


def _size(amount: float) -> str:
    """Bytes for a reason: "64 MiB", "1.5 GiB"."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if amount >= scale:
            return f"{amount / scale:.4g} {unit}"
    return f"{amount:.0f} B"

"""Network-bandwidth annotations of a stage pod from its predicted network rates (opt-in:
``AdaptiveTrainingOperator(network_bandwidth=True)``).

Kubernetes' traffic-shaping annotations are read by the container runtime when it makes the pod's
sandbox (containerd's CRI plugin calls ``ExtractPodBandwidthResources`` from
``k8s.io/kubernetes/pkg/util/bandwidth``) and handed to the CNI plugins as the ``bandwidth``
capability; only the CNI **bandwidth** plugin (``"type": "bandwidth"`` with ``"capabilities":
{"bandwidth": true}`` in the network's conflist) acts on them. Without it in the chain they are
ignored: the pod runs unshaped.

| annotation | from | unit |
|---|---|---|
| ``kubernetes.io/ingress-bandwidth`` | ``network_rx`` upper x (1 + margin) | **bits** per second (a Kubernetes quantity: ``84M`` = 84,000,000 bit/s) |
| ``kubernetes.io/egress-bandwidth`` | ``network_tx`` upper x (1 + margin) | bits per second |

The profile's network rates are **bytes** per second, so x 8. ``ExtractPodBandwidthResources``
parses each value as a ``resource.Quantity`` and refuses one whose ``Value()`` (rounded up to a
whole number) is below ``1k`` (1,000 bit/s) or above ``1P`` (10^15 bit/s), failing the pod's
sandbox; so a value here is kept within [1k, 1P] and rounded up to whole kbit/s. A value the user
gave is the bound (never exceeded), and one Kubernetes would refuse is a :class:`UserError`
naming the annotation, the value and what to do, before any pod exists. A resource the profile
does not predict keeps the user's annotation (or none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

from airflow_adaptive.domain.errors import QuantityError, UserError
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.domain.quantities import DECIMAL_SI, format_bandwidth, format_quantity, parse_quantity

INGRESS = "kubernetes.io/ingress-bandwidth"
EGRESS = "kubernetes.io/egress-bandwidth"
#: (annotation, the profile's resource): ingress is what the pod receives.
ANNOTATED = ((INGRESS, "network_rx"), (EGRESS, "network_tx"))
#: pkg/util/bandwidth/utils.go: minRsrc = 1k, maxRsrc = 1P (bits per second), compared by Value().
MIN_BITS = 1_000
MAX_BITS = 10**15


@dataclass(frozen=True)
class BandwidthPlan:
    """The annotations to set on the pod (the user's own included, as they stand) and why."""

    annotations: Mapping[str, str]
    reasons: tuple[str, ...]


def user_bandwidth(annotations: Mapping[str, str] | None, where: str) -> dict[str, int]:
    """The user's own bandwidth annotations in bits per second (as ``Value()``: rounded up); a
    value Kubernetes would refuse raises :class:`UserError` saying what to write instead."""
    out = {}
    for annotation, _ in ANNOTATED:
        text = (annotations or {}).get(annotation)
        if text is None:
            continue
        hint = (f"write bits per second as a Kubernetes quantity between 1k and 1P (e.g. '100M' for 100 Mbit/s), "
                f"or leave {annotation} out")
        try:
            amount = parse_quantity(str(text), f"{where} annotation {annotation}")
        except QuantityError as exc:
            raise UserError(f"{where}: annotation {annotation}={text!r} is not a quantity Kubernetes reads ({exc}); "
                            f"{hint}") from None
        bits = math.ceil(amount)
        if bits < MIN_BITS or bits > MAX_BITS:
            side = "below 1k (1,000 bit/s)" if bits < MIN_BITS else "above 1P (10^15 bit/s)"
            raise UserError(f"{where}: annotation {annotation}={text!r} is {side}: the container runtime refuses it "
                            f"and the pod's sandbox is never made; {hint}")
        out[annotation] = bits
    return out


def plan_bandwidth(profile: PredictedProfile | None, annotations: Mapping[str, str] | None, margin: float,
                   where: str) -> BandwidthPlan:
    """The pod's bandwidth annotations from the predicted network rates (see the module docstring)."""
    user = user_bandwidth(annotations, where)
    out: dict[str, str] = {a: str((annotations or {})[a]) for a in user}
    reasons = []
    for annotation, resource in ANNOTATED:
        est = profile.resources.get(resource) if profile is not None else None
        if est is None or est.upper <= 0:
            if annotation in user:
                reasons.append(f"{annotation}: the user's {out[annotation]} ({resource} not predicted)")
            continue
        want = est.upper * 8 * (1 + margin)
        bits = min(max(math.ceil(want / 1000) * 1000, MIN_BITS), MAX_BITS)
        note = f"the predicted {resource} upper {format_bandwidth(est.upper)} + {margin:.0%}"
        if annotation in user and bits > user[annotation]:
            out[annotation] = (annotations or {})[annotation]
            reasons.append(f"{annotation}: the user's {out[annotation]} (the bound) below {note} ({_bits(bits)})")
            continue
        out[annotation] = format_quantity(bits, DECIMAL_SI)
        reasons.append(f"{annotation}: {out[annotation]} ({_bits(bits)}) from {note}")
    return BandwidthPlan(out, tuple(reasons))


def _bits(bits: float) -> str:
    for unit, scale in (("Gbit/s", 10**9), ("Mbit/s", 10**6), ("kbit/s", 10**3)):
        if bits >= scale:
            return f"{bits / scale:.4g} {unit}"
    return f"{bits:.0f} bit/s"

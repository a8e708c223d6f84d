"""Kubernetes: the sized pod with its monitor sidecar, in-place resize, and the monitor's signal stream."""

from airflow_adaptive.adapters.kubernetes.pod_spec import MonitorSidecar, resize_patch_body, shape_pod
from airflow_adaptive.adapters.kubernetes.resize import AsyncPodResizer, PodResizer, ResizeForbidden, ResizeOutcome
from airflow_adaptive.adapters.kubernetes.signal_follower import (
    SignalFollowerThread,
    follow_signals,
    follow_signals_async,
)

__all__ = [
    "AsyncPodResizer",
    "MonitorSidecar",
    "PodResizer",
    "ResizeForbidden",
    "ResizeOutcome",
    "SignalFollowerThread",
    "follow_signals",
    "follow_signals_async",
    "resize_patch_body",
    "shape_pod",
]

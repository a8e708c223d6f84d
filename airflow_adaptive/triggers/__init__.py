"""Deferrable triggers: the pod trigger that also applies the monitor's resize signals."""

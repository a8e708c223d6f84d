"""The adaptive pod trigger: it serializes its own arguments, wraps the provider trigger's events,
and reads the monitor's signal stream line by line, each sequence once."""

import asyncio
import datetime
import importlib
import time

import pytest

from airflow_adaptive.adapters.kubernetes.signal_follower import LineSplitter, SignalCursor
from airflow_adaptive.domain.signals import ResizeSignal
from airflow_adaptive.logic.monitor_trust import MonitorLines
from airflow_adaptive.triggers.pod import AdaptivePodTrigger

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def trigger(**kwargs):
    base = dict(pod_name="train-abc", pod_namespace="ml", trigger_start_time=START, base_container_name="base",
                kubernetes_conn_id="kubernetes_default")
    base.update(kwargs)
    return AdaptivePodTrigger(**base)


def test_serialize_carries_the_adaptive_arguments_and_rebuilds_the_same_trigger():
    t = trigger(monitor_container_name="mon", workload_container_name="work", last_resize_sequence=4, poll_interval=3)
    classpath, kwargs = t.serialize()
    assert classpath == "airflow_adaptive.triggers.pod.AdaptivePodTrigger"
    module, name = classpath.rsplit(".", 1)
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert (again.monitor_container_name, again.workload_container_name, again.resize, again.last_resize_sequence) == (
        "mon", "work", True, 4)
    assert kwargs["poll_interval"] == 3 and kwargs["pod_name"] == "train-abc"


def test_the_workload_defaults_to_the_base_container():
    t = trigger()
    assert t.workload_container_name == "base" and t.monitor_container_name == "adaptive-monitor"


async def events_of(t):
    return [event async for event in t.run()]


@pytest.mark.parametrize("resize", [True, False])
def test_the_base_event_is_passed_on_with_the_resizes(resize):
    """The provider's fast path (execution deadline already passed) yields without any API call;
    the follower task, if started, is cancelled before the event goes out."""
    t = trigger(resize=resize, last_resize_sequence=2, trigger_kwargs={"_execution_deadline": time.time() - 1})

    async def scenario():
        events = await events_of(t)
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        return events, others

    events, others = asyncio.run(scenario())
    assert others == []  # no follower left running
    (event,) = events
    assert event.payload["status"] == "timeout" and event.payload["name"] == "train-abc"
    assert event.payload["resizes"] == [] and event.payload["last_resize_sequence"] == 2


# --- the signal stream (signal_follower's pure parts) --------------------------------------


def line(sequence, resource="memory", new=4.0):
    return ResizeSignal(resource, 2.0, new, "r", 1.0, sequence, "base").to_line()


def test_lines_split_across_chunks_are_joined():
    splitter = LineSplitter()
    text = (f"starting monitor\n{line(1)}\n{line(2)}").encode()
    chunks = [text[:7], text[7:40], text[40:]]
    got = [ln for chunk in chunks for ln in splitter.feed(chunk)]
    assert got == ["starting monitor", line(1)]
    assert splitter.flush() == [line(2)] and splitter.flush() == []


def test_a_multibyte_character_split_between_chunks_survives():
    splitter = LineSplitter()
    data = "mémoire\n".encode()
    assert splitter.feed(data[:2]) == [] and splitter.feed(data[2:]) == ["mémoire"]


def test_each_sequence_is_handed_over_once_in_order_across_reconnects():
    cursor = SignalCursor()
    first = cursor.signals_in(["log text", line(1), line(2)], now=100.0)
    # the stream dropped; the reconnect re-reads a little before the last line
    assert cursor.since_seconds(now=130.0) == 30 + 5
    again = cursor.signals_in([line(2), "{not json", line(3), line(1)], now=131.0)
    assert [s.sequence for s in first] == [1, 2] and [s.sequence for s in again] == [3]
    assert cursor.last_sequence == 3


def test_a_resumed_cursor_skips_what_was_handled_before():
    cursor = SignalCursor(MonitorLines(last_sequence=5))
    assert cursor.since_seconds(now=10.0) is None  # nothing seen yet: read from the start
    assert [s.sequence for s in cursor.signals_in([line(4), line(5), line(6)], now=11.0)] == [6]


def test_a_malformed_signal_line_is_skipped_not_fatal(caplog):
    cursor = SignalCursor()
    bad = '{"kind": "airflow-adaptive/resize", "resource": "memory"}'
    assert [s.sequence for s in cursor.signals_in([bad, line(1)], now=1.0)] == [1]
    assert "malformed monitor line" in caplog.text and cursor.monitor.rejected == {"malformed": 1}

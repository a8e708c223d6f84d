"""The monitor's summary line carries the try's I/O totals to the stage run (the sidecar has no
MLflow access); anything else under ``io`` is refused like any malformed line."""

import json

import pytest

from airflow_adaptive.domain.monitor_protocol import MalformedLine, parse_line, summary_line, summary_metrics
from airflow_adaptive.domain.stage_run import IO_TOTALS, ObservedSummary


def test_io_totals_travel_in_the_summary_line_to_the_stage_run_metrics():
    io = {"disk_read_bytes": 4096.0, "disk_write_bytes": 33554432.0, "network_rx_bytes": 10.0}
    line = summary_line(1.0, 5.0, {"memory": 2.0**28}, {"memory": 2.0**27}, 0, "b00t", io=io)
    parsed = parse_line(line)
    assert dict(parsed.io) == io
    metrics = summary_metrics(parsed)
    assert metrics["observed.disk_write_bytes"] == 33554432.0 and metrics["observed.memory.peak"] == 2.0**28
    assert "observed.network_tx_bytes" not in metrics  # unmeasured stays absent, never 0


def test_a_summary_without_io_is_read_as_before():
    line = summary_line(1.0, 5.0, {"memory": 1.0}, {}, 0)
    assert "io" not in json.loads(line) and dict(parse_line(line).io) == {}


@pytest.mark.parametrize("io", [{"disk_read_bytes": -1}, {"cpu": 1.0}, {"disk_read_bytes": "1"}, [1, 2],
                                {"network_rx_bytes": float("inf")}])
def test_a_malformed_io_object_is_refused(io):
    data = json.loads(summary_line(1.0, 5.0, {}, {}, 0))
    data["io"] = io
    with pytest.raises(MalformedLine, match="io"):
        parse_line(json.dumps(data).replace("Infinity", "1e999"))


def test_the_observed_summary_logs_only_known_io_totals():
    summary = ObservedSummary(1.0, 2.0, "success", io={k: 1.0 for k in IO_TOTALS})
    assert all(summary.metrics()[f"observed.{k}"] == 1.0 for k in IO_TOTALS)
    with pytest.raises(ValueError, match="unknown I/O totals"):
        ObservedSummary(1.0, 2.0, "success", io={"gpu": 1.0})

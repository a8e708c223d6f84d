"""The long CSV of usage series: messy real data is counted, wrong data is one clear error naming
the line; and ``simulate`` on it from the command line (exit 0 with the report, exit 2 on bad input)."""

import gzip
import json
import subprocess
import sys

import pytest

from airflow_adaptive.adapters.series import load_series
from airflow_adaptive.domain.errors import TraceFormatError

HEADER = "series,stage,time_s,resource,value\n"


def write(tmp_path, body, name="s.csv"):
    path = tmp_path / name
    path.write_text(HEADER + body)
    return str(path)


def test_duplicated_timestamps_keep_the_larger_value_and_negatives_count_as_zero(tmp_path):
    path = write(tmp_path, "a-0,a,0,memory,10\na-0,a,0,memory,30\na-0,a,60,memory,-5\na-0,a,0,gpu_memory,7\n"
                           "b-0,b,0,cpu,1.5\na-1,a,0,memory,12\n")
    loaded = load_series(path)
    assert loaded.report.duplicated_timestamps == 1 and loaded.report.negative_values == 1
    assert [r.series for r in loaded.runs] == ["a-0", "a-1", "b-0"]  # a stage's runs stay together, in file order
    times, values = loaded.runs[0].usage["memory"]
    assert list(times) == [0, 60] and list(values) == [30, 0]
    assert loaded.resources == ["cpu", "memory", "gpu_memory"]


def test_a_gzipped_file_reads_the_same(tmp_path):
    path = tmp_path / "s.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "a-0,a,0,memory,10\n").encode()))
    assert load_series(str(path)).samples == 1


@pytest.mark.parametrize("body, message", [
    ("a-0,a,0,disk,10\n", r":2: unknown resource 'disk'"),
    ("a-0,a,60,memory,10\na-0,a,0,memory,10\n", r":3: time_s 0 of series 'a-0' \(memory\) comes after 60"),
    ("a-0,a,-1,memory,10\n", r":2: time_s -1 is negative"),
    ("a-0,a,0,memory,10\na-0,b,60,memory,10\n", r":3: series 'a-0' was stage 'a' and is now 'b'"),
    ("a-0,a,0,memory,lots\n", r":2: value 'lots' is not a number"),
    ("a-0,a,0,memory\n", r":2: 4 fields"),
    ("", r"no samples after the header"),
])
def test_wrong_input_is_one_error_with_its_line(tmp_path, body, message):
    with pytest.raises(TraceFormatError, match=message):
        load_series(write(tmp_path, body))


def test_an_empty_file_or_a_wrong_header_is_refused(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(TraceFormatError, match="the file is empty"):
        load_series(str(tmp_path / "e.csv"))
    (tmp_path / "h.csv").write_text("pod,t,mem\n")
    with pytest.raises(TraceFormatError, match=":1: the header"):
        load_series(str(tmp_path / "h.csv"))
    with pytest.raises(TraceFormatError, match="no such file"):
        load_series(str(tmp_path / "missing.csv"))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", "simulate", *args],
                          capture_output=True, text=True, timeout=120)


def test_simulate_from_the_command_line(tmp_path):
    rows = "".join(f"s-{k},s,{60 * i},memory,{100 + (50 if (k == 2 and i == 3) else 0)}\n" for k in range(3) for i in range(5))
    out = tmp_path / "report.json"
    proc = cli("--series", write(tmp_path, rows), "--json", str(out), "--plot", str(tmp_path / "sweep.png"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["runs"] == 3 and report["warmup_runs"] == {"memory": 1}
    assert report["policies"]["static_history"]["memory"]["kills"] == 1  # the step in s-2 (150 > 120)
    assert "static_history" in proc.stdout and (tmp_path / "sweep.png").stat().st_size > 0


def test_simulate_on_bad_input_is_one_line_and_exit_2(tmp_path):
    proc = cli("--series", write(tmp_path, "a-0,a,0,memory,10\na-0,a,0,disk,10\n"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and ":3: unknown resource 'disk'" in proc.stderr
    assert "Traceback" not in proc.stderr

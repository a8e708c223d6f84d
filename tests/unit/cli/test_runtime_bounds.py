"""The monitor's and runner's resize bounds from their flags (and the sidecar's environment)."""

import pytest

from airflow_adaptive.cli.main import build_parser
from airflow_adaptive.cli.runtime_commands import _bounds
from airflow_adaptive.domain.errors import UserError


def bounds(*argv):
    return _bounds(build_parser().parse_args(["run", *argv, "--", "true"]))


def test_a_memory_floor_bounds_decreases_and_a_bad_one_is_refused(monkeypatch):
    b = bounds("--min-memory", "1Gi", "--max-memory", "4Gi")
    assert b.minimum == {"memory": 2**30} and b.maximum["memory"] == 4 * 2**30
    assert b.clamp("memory", 100.0) == 2**30
    assert bounds("--max-memory", "4Gi").minimum == {}
    with pytest.raises(UserError, match="--min-memory 8Gi is above --max-memory"):
        bounds("--min-memory", "8Gi", "--max-memory", "4Gi")
    with pytest.raises(UserError, match="--min-memory"):
        bounds("--min-memory", "lots")


def test_the_sidecar_reads_its_floor_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_ADAPTIVE_MIN_MEMORY", "512Mi")
    args = build_parser().parse_args(["monitor"])
    assert _bounds(args).minimum == {"memory": 512 * 2**20}


def test_the_command_line_parses_without_numpy():
    """The monitor image has no numpy or scikit-learn and parses this same command line: the real
    node caught a parser that imported numpy (the monitor restart-looped)."""
    import subprocess
    import sys

    code = ("import sys; from airflow_adaptive.cli.main import build_parser; build_parser().parse_args(['monitor']); "
            "heavy = sorted(m for m in ('numpy', 'sklearn', 'pandas', 'mlflow') if m in sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

"""``airflow-adaptive run --disk-read-limit/--disk-write-limit/--max-disk-read/--max-disk-write``."""

import subprocess
import sys

import pytest

from airflow_adaptive.cli.main import build_parser
from airflow_adaptive.cli.runtime_commands import _bounds, _disk_limits
from airflow_adaptive.domain.errors import UserError

MiB = 2**20


def parse(*argv):
    return build_parser().parse_args(["run", *argv, "--", "true"])


def test_limits_and_their_maxima_parse_as_byte_quantities():
    args = parse("--disk-read-limit", "8Mi", "--disk-write-limit", "512Ki/s", "--max-disk-read", "1Gi")
    assert _disk_limits(args) == {"disk_read": 8 * MiB, "disk_write": 512 * 1024}
    b = _bounds(args)
    assert b.maximum["disk_read"] == 2**30 and "disk_write" not in b.maximum  # no maximum: unbounded
    assert _disk_limits(parse()) == {} and "disk_read" not in _bounds(parse()).maximum


@pytest.mark.parametrize("argv, message", [
    (["--disk-read-limit", "fast"], "--disk-read-limit: 'fast' is not a Kubernetes quantity"),
    (["--disk-read-limit", "0"], "--disk-read-limit: '0' must be at least 1 byte/s"),
    (["--disk-write-limit=-1Mi"], "--disk-write-limit: '-1Mi' is negative"),
    (["--disk-write-limit", "1e30"], "--disk-write-limit: '1e30' is too large"),
    (["--disk-read-limit", "8Mi", "--max-disk-read", "4Mi"], "--max-disk-read 4Mi is below --disk-read-limit"),
    (["--max-disk-write", "4Mi"], "--max-disk-write bounds the raises of --disk-write-limit: give --disk-write-limit too"),
])
def test_bad_input_names_the_option(argv, message):
    with pytest.raises(UserError) as exc:
        _bounds(parse(*argv))
    assert message in str(exc.value)


def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", "run", "--cpu", "1", "--memory", "64Mi",
                           "--disk-read-limit", "8 MiB", "--", "true"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "--disk-read-limit: '8 MiB' is not a Kubernetes quantity" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

"""The command line as a user meets it: real subprocesses, real files, exit codes and stderr."""

import json
import subprocess
import sys

import numpy as np
import pytest



def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "airflow_adaptive.cli.main", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory, lanl_path):
    """The first 4000 job lines of the real LANL-CM5 log."""
    import gzip

    path = tmp_path_factory.mktemp("trace") / "lanl-head.swf"
    with gzip.open(lanl_path, "rt") as src:
        lines = [l for l in src if not l.startswith(";")][:4000]
    path.write_text("; UnixStartTime: 781275672\n" + "".join(lines))
    return path


def test_replay_writes_report_and_plot(small_trace, tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    res = run("replay", "--trace", str(small_trace), "--refit-days", "20", "--json", str(out), "--plot", str(png))
    assert res.returncode == 0, res.stderr
    assert "adaptive" in res.stdout and "autopilot_moving_window" in res.stdout
    report = json.loads(out.read_text())
    assert report["trace"] == "lanl-head.swf" and report["jobs"] == 4000
    assert report["population"]["memory"]["kept"] + sum(report["population"]["memory"]["excluded"].values()) == 4000
    assert png.stat().st_size > 10_000


@pytest.fixture(scope="module")
def used_only_trace(tmp_path_factory, small_trace):
    """The same 4000 jobs with their requests (SWF fields 8-10) unknown: a usage-only log."""
    path = tmp_path_factory.mktemp("trace") / "lanl-used-only.swf"
    out = []
    for line in small_trace.read_text().splitlines(keepends=True):
        if line.startswith(";"):
            out.append(line)
            continue
        f = line.split()
        f[7] = f[8] = f[9] = "-1"
        out.append(" ".join(f) + "\n")
    path.write_text("".join(out))
    return path


def test_replay_default_request_on_a_usage_only_log(used_only_trace, tmp_path):
    out = tmp_path / "r.json"
    res = run("replay", "--trace", str(used_only_trace), "--refit-days", "20", "--default-request", "cpu=1,memory=1Gi",
              "--json", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads(out.read_text())
    pop = report["population"]["memory"]
    assert pop["kept"] > 2500 and pop["default_request_jobs"] == pop["kept"]
    assert not any("request" in reason for reason in pop["excluded"])
    assert "reached" in report["policies"]["adaptive"]["memory"]["at_target"]
    # The SWF loader reads a CPU request from the allocated processors when field 8 is unknown.
    assert report["population"]["cpu"]["default_request_jobs"] == 0
    assert report["settings"]["default_request"] == {"cpu": 1.0, "memory": 2.0**30}
    assert "default request (1Gi)" in res.stdout
    # Without the flag the same log has nothing to replay for memory: every job lacks a request.
    res = run("replay", "--trace", str(used_only_trace), "--refit-days", "20", "--json", str(out))
    assert res.returncode == 0, res.stderr
    pop = json.loads(out.read_text())["population"]["memory"]
    assert pop["kept"] == 0 and pop["excluded"]["no memory request in the trace"] > 2500


def test_train_and_predict_from_file(small_trace, tmp_path):
    model = tmp_path / "p.pkl"
    assert run("train", "--trace", str(small_trace), "--output", str(model)).returncode == 0
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"stages": {"big": {"user": "3", "executable": "3", "procs": 512, "requested_memory": 2**34},
                                          "small": {"user": "3", "executable": "3", "procs": 32, "requested_memory": 2**30}}}))
    res = run("predict", "--job", str(job), "--model-file", str(model))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["big"]["resources"]["memory"]["upper"] > out["small"]["resources"]["memory"]["upper"] > 0
    assert np.isclose(out["big"]["coverage"], 0.99)


@pytest.mark.parametrize(
    "args, message",
    [
        (["replay", "--trace", "nope.swf"], "no such trace file"),
        (["replay", "--trace", "x.bin"], "cannot tell the format"),
        (["replay", "--trace", "x.swf", "--target-under", "3"], "--target-under must be between 0 and 1"),
        (["replay", "--trace", "x.swf", "--default-request", "mem=1Gi"], "--default-request: unknown resource 'mem'"),
        (["replay", "--trace", "x.swf", "--default-request", "memory=1GB"], "--default-request memory: '1GB'"),
        (["predict", "--job", "missing.json", "--model-file", "m.pkl"], "--job missing.json: no such file"),
    ],
)
def test_bad_input_is_one_line_no_traceback(args, message, tmp_path):
    res = run(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bad_job_file(tmp_path, small_trace):
    model = tmp_path / "p.pkl"
    assert run("train", "--trace", str(small_trace), "--output", str(model)).returncode == 0
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"user": "3", "procs": "many"}))
    res = run("predict", "--job", str(job), "--model-file", str(model))
    assert res.returncode == 2 and "'procs' must be a number, got 'many'" in res.stderr and "Traceback" not in res.stderr
    job.write_text("{broken")
    res = run("predict", "--job", str(job), "--model-file", str(model))
    assert res.returncode == 2 and "not valid JSON" in res.stderr

"""The command line under arbitrary input (files, flags, values), in-process for speed: it exits
0, or 2 with one line ``airflow-adaptive: error: ...`` on stderr (argparse's own usage errors
print their usage line first), and never a traceback. Commands that start services, workloads or
touch the model registry (demo, run, monitor, train --register, predict without --model-file) are
left out; their input readers are fuzzed directly below."""

from __future__ import annotations

import argparse
import json
import os
import pickle

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from airflow_adaptive.cli.main import main
from airflow_adaptive.cli.runtime_commands import _allocation, _bounds, load_profile
from airflow_adaptive.domain.errors import UserError
from airflow_adaptive.domain.profile import PredictedProfile
from airflow_adaptive.logic.replay import parse_default_request

from ...support.fuzz import TIMEOUT_S, fuzz

pytestmark = pytest.mark.timeout(TIMEOUT_S * 2)

BIG = 10**400
SWF = "".join(" ".join(map(str, [i, i * 100, 5, 100 + i, 4, 3, 1000 * (i % 5 + 1), 4, 200, 2000 * (i % 5 + 1), 1, i % 3,
                                 1, i % 2, 1, 1, -1, -1])) + "\n" for i in range(30))
CSV = "series,stage,time_s,resource,value\n" + "".join(f"r{j},st,{i},memory,{100 + i * j}\n" for j in range(3) for i in range(10))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small valid trace, series and a profiler trained on the trace by the CLI itself."""
    d = tmp_path_factory.mktemp("cli-fuzz")
    (d / "t.swf").write_text(SWF)
    (d / "s.csv").write_text(CSV)
    assert main(["train", "--trace", str(d / "t.swf"), "--output", str(d / "m.pkl")]) == 0
    return d


def _run(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: a usage error
        rc = exc.code
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("airflow-adaptive") and ": error: " in err
        return rc, err
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert rc in (0, 2), (rc, err)
    if rc == 2:  # one error, on one last line (after any progress bar tqdm erased with "\r")
        at = err.find("airflow-adaptive: error: ")
        assert at >= 0 and err.count("airflow-adaptive: error: ") == 1 and "\n" not in err[at:].rstrip("\n"), err
    return rc, err


job_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.just(BIG), st.floats(allow_nan=False), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(
        st.sampled_from(["stages", "user", "executable", "procs", "requested_memory", "x", "a-b"]), inner, max_size=4)),
    max_leaves=10).map(json.dumps).map(str.encode)


@given(st.one_of(job_json, st.binary(max_size=40)))
@example(b"\xff\xfe{}")  # regression: UnicodeDecodeError
@example(b"[" * 100_000)  # regression: RecursionError
@example(b"1" * 5000)  # regression: ValueError (int of 4300+ digits)
@example(json.dumps({"user": "1", "procs": BIG}).encode())  # regression: OverflowError in float(10**400)
@example(json.dumps({"stages": {"a": {1: 2}}}).encode())
@fuzz(150)
def test_predict_with_any_job_file(capsys, files, content):
    job = files / "job.json"
    job.write_bytes(content)
    rc, out = _run(capsys, ["predict", "--job", str(job), "--model-file", str(files / "m.pkl")])


@given(st.binary(max_size=60), st.integers(0, 10_000))
@example(b"", 0)
@example(pickle.dumps({"not": "a profiler"}), 0)
@fuzz(60)
def test_predict_with_any_model_file(capsys, files, junk, cut):
    """A --model-file that is not a profiler (junk, truncated, another object) is one line, exit 2."""
    real = (files / "m.pkl").read_bytes()
    for content in (junk, real[: cut % len(real)]):
        model = files / "bad.pkl"
        model.write_bytes(content)
        rc, _ = _run(capsys, ["predict", "--job", str(files / "job.json"), "--model-file", str(model)])
        assert rc == 2


request_text = st.one_of(
    st.text(max_size=30),
    st.lists(st.builds(lambda n, v: f"{n}={v}", st.sampled_from(["cpu", "memory", "nvidia.com/gpu", "gpu", ""]),
                       st.one_of(st.text("0123456789.eEkKMGTPimun-+", max_size=10), st.text(max_size=4))),
             max_size=3).map(",".join),
)


@given(request_text)
@example("memory=1e1000")  # regression: float() of the exact amount raised OverflowError
@example("nvidia.com/gpu=1e400")
@example("cpu=0.0e2000000000")  # regression: hung building 10**2000000000
@fuzz(200)
def test_default_request_parses_or_names_the_part(text):
    try:
        request = parse_default_request(text)
    except UserError as err:
        assert str(err).startswith("--default-request") and "\n" not in str(err)
        return
    assert set(request) <= {"cpu", "memory", "gpu"} and all(v > 0 for v in request.values())


@given(request_text)
@fuzz(25)
def test_replay_with_any_default_request(capsys, files, text):
    if text.startswith("-"):
        text = " " + text  # argparse reads a leading "-" as a flag
    _run(capsys, ["replay", "--trace", str(files / "t.swf"), "--default-request", text])


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: (CSV[:60] + t).encode())),
       st.sampled_from(["csv", "prometheus"]))
@fuzz(60)
def test_simulate_with_any_series_file(capsys, files, content, fmt):
    series = files / "series.in"
    series.write_bytes(content)
    _run(capsys, ["simulate", "--series", str(series), "--format", fmt])


FLAGS = {
    "replay": ["--trace", "--format", "--target-under", "--refit-days", "--default-request", "--json"],
    "train": ["--trace", "--format", "--coverage", "--output"],
    "simulate": ["--series", "--format", "--policy", "--json", "--progress"],
    "predict": ["--job"],
}
argv_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(sorted(FLAGS)))
    argv = [command]
    for _ in range(draw(st.integers(0, 6))):
        argv.append(draw(st.sampled_from(FLAGS[command])))
        argv.append(draw(st.one_of(argv_text, st.sampled_from(["swf", "pai", "csv", "prometheus", "0.5", "-1", "nan",
                                                               "TRACE", "SERIES", "OUT", "/nonexistent/x.json"]))))
    if draw(st.booleans()):
        argv.insert(0, "-v")
    return argv


@given(command_lines())
@example(["replay", "--trace", "TRACE", "--json", "/nonexistent/dir/r.json"])  # regression: OSError traceback
@example(["train", "--trace", "a" * 300 + ".swf"])  # regression: OSError (file name too long)
@example(["replay", "--trace", "TRACE", "--target-under", "nan"])
@example(["train", "--trace", "TRACE", "--coverage", "7"])
@example(["predict", "--job", "\n"])  # regression: a newline in a file name split the error over two lines
@fuzz(120)
def test_any_command_line(capsys, files, tmp_path_factory, argv):
    out = tmp_path_factory.mktemp("out")
    names = {"TRACE": str(files / "t.swf"), "SERIES": str(files / "s.csv"), "OUT": str(out / "o.json")}
    argv = [names.get(a, a) for a in argv]
    if argv[argv[0] == "-v"] == "predict":
        argv += ["--model-file", str(files / "m.pkl")]
    cwd = os.getcwd()
    os.chdir(out)  # a relative --json/--output a command line names is written here, not into the repo
    try:
        _run(capsys, argv)
    finally:
        os.chdir(cwd)


# --- run / monitor: their --profile, --cpu, --memory readers ---------------------------------

profile_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.just(BIG), st.floats(), st.text(max_size=6)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(
        ["coverage", "resources", "memory", "cpu", "median", "upper", "duration_seconds", "notes", "phases",
         "start_s", "end_s", "gpu_scaling", "a", "alpha", "runs", "stage"]), inner, max_size=5)),
    max_leaves=14).map(lambda v: json.dumps(v, allow_nan=True))


@given(profile_json, st.one_of(st.none(), st.text(max_size=5)))
@example('{"coverage": 0.9, "resources": {"memory": {"median": %d, "upper": 1}}}' % BIG, None)  # regression: OverflowError
@example('{"coverage": 0.9, "resources": {}, "gpu_scaling": {"a": 1, "alpha": 1, "runs": 1e999}}', None)  # regression
@example('{"a":' + "[" * 100_000, None)  # regression: RecursionError
@fuzz(200)
def test_profile_flag_is_a_profile_or_a_user_error(text, stage):
    try:
        profile = load_profile(text, stage)
    except UserError as err:
        assert str(err).startswith("--profile") and "\n" not in str(err)
        return
    assert isinstance(profile, PredictedProfile)


@given(st.text(max_size=300))
@example("a" * 300)  # regression: OSError (file name too long)
@fuzz(50)
def test_profile_flag_naming_no_file_is_a_user_error(text):
    if text.lstrip().startswith("{"):
        return
    with pytest.raises(UserError, match="^--profile"):
        load_profile(text)


quantity = st.one_of(st.none(), st.text("0123456789.eEkKMGTPimun-+", max_size=10), st.text(max_size=5),
                     st.sampled_from(["1e1000", "0.0e2000000000", "2", "1Gi", "-1"]))


@given(quantity, quantity, quantity, quantity, quantity)
@example(None, "1E1000", None, None, None)  # regression: float(memory_bytes(...)) raised OverflowError
@example("1", "1Gi", None, "1e1000", "1e1000")
@fuzz(200)
def test_limit_flags_are_limits_or_a_user_error(cpu, memory, max_cpu, max_memory, min_memory):
    args = argparse.Namespace(cpu=cpu, memory=memory, max_cpu=max_cpu, max_memory=max_memory, min_memory=min_memory)
    try:
        got_cpu, got_memory = _allocation(args, None)
        bounds = _bounds(args)
    except UserError as err:
        assert "\n" not in str(err)
        return
    assert got_cpu > 0 and got_memory > 0 and bounds.maximum["memory"] >= bounds.minimum.get("memory", 0)

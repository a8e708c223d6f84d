"""The example pipeline's stages as real processes, at small sizes: outputs, bad input, memory growth.

Each stage is a child process (``stage_command``), measured with ``os.wait4`` so its own peak
resident memory is known exactly. Sizes are small so the whole file stays well under 30 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from airflow_adaptive.examples.pipeline import DEMO_SIZES, MIN_ROWS, STAGES, roc_auc, stage_command

TINY = 2000
LARGER = 40_000
MIB = 2**20


def run(argv: list[str]) -> dict:
    """Run argv; returncode, stdout, stderr and the child's peak RSS in MiB (``ru_maxrss``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"rc": proc.returncode, "stdout": out.read().decode(), "stderr": err.read().decode(),
                "peak_mib": usage.ru_maxrss / 1024}


def summary(result: dict) -> dict:
    assert result["rc"] == 0, result["stderr"][-2000:]
    lines = result["stdout"].strip().splitlines()
    assert len(lines) == 1, result["stdout"]
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny")
    runs = {stage: run(stage_command(stage, TINY, workdir)) for stage in STAGES}
    return workdir, runs


def test_stage_command_and_constants():
    argv = stage_command("train", 5000, "/tmp/w", seed=3, python="py")
    assert argv == ["py", "-m", "airflow_adaptive.examples.pipeline", "train", "--rows", "5000", "--workdir", "/tmp/w", "--seed", "3"]
    assert STAGES == ("load", "train", "evaluate")
    assert len(DEMO_SIZES) >= 4 and list(DEMO_SIZES) == sorted(DEMO_SIZES) and DEMO_SIZES[0] >= MIN_ROWS
    with pytest.raises(ValueError):
        stage_command("deploy", 5000, "/tmp/w")


def test_roc_auc():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc(y, np.array([0.1, 0.6, 0.6, 0.9])) == 0.875
    assert roc_auc(y, np.array([0.1, 0.6, 0.6, 0.9]), weight=np.array([1, 0, 1, 1])) == 1.0


def test_stages_end_to_end(tiny):
    workdir, runs = tiny
    sums = {stage: summary(r) for stage, r in runs.items()}
    for stage, s in sums.items():
        assert s["stage"] == stage and s["rows"] == TINY and s["seconds"] > 0 and s["peak_rss_mib"] > 0
        assert "Traceback" not in runs[stage]["stderr"]
    for name in ("X_train.npy", "y_train.npy", "X_holdout.npy", "y_holdout.npy", "data.json",
                 "model.pkl", "model.npz", "model.json", "metrics.json"):
        assert (workdir / name).is_file(), name
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]

    X, y = np.load(workdir / "X_train.npy"), np.load(workdir / "y_train.npy")
    assert X.dtype == np.float32 and X.shape == (TINY * 4 // 5, sums["load"]["features"]) and len(y) == len(X)
    assert np.isfinite(X).all() and set(np.unique(y)) == {0, 1}

    train = sums["train"]
    assert train["selected"] in train["validation_auc"] and train["trees"] > 0
    assert len(train["rss_mib_by_step"]) >= 3

    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics == sums["evaluate"]["metrics"]
    assert metrics["holdout_rows"] == TINY // 5
    assert 0 <= metrics["brier"] <= 1 and metrics["log_loss"] > 0
    assert metrics["accuracy"] > metrics["majority_accuracy"]  # better than always guessing the majority class
    assert metrics["roc_auc"] > 0.6
    low, high = metrics["roc_auc_ci95"]
    assert low <= metrics["roc_auc"] <= high


def test_load_is_deterministic_by_seed(tiny, tmp_path):
    workdir, _ = tiny
    summary(run(stage_command("load", TINY, tmp_path / "same", seed=0)))
    summary(run(stage_command("load", TINY, tmp_path / "other", seed=1)))
    first = np.load(workdir / "X_train.npy")
    assert np.array_equal(first, np.load(tmp_path / "same" / "X_train.npy"))
    assert not np.array_equal(first, np.load(tmp_path / "other" / "X_train.npy"))


def one_line_error(result: dict) -> str:
    assert result["rc"] == 2, result
    assert result["stdout"] == ""
    lines = result["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pipeline: error: "), result["stderr"]
    return lines[0]


@pytest.mark.parametrize("rows", ["0", "-5", str(MIN_ROWS - 1)])
def test_too_few_rows(tmp_path, rows):
    argv = stage_command("load", 1000, tmp_path / "w")
    argv[argv.index("--rows") + 1] = rows
    assert "--rows" in one_line_error(run(argv))
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("argv_tail", [["deploy", "--workdir", "w"], ["load"], ["load", "--workdir", "w", "--rows", "many"]])
def test_bad_arguments(tmp_path, argv_tail):
    one_line_error(run([sys.executable, "-m", "airflow_adaptive.examples.pipeline", *argv_tail]))


def test_previous_stage_missing(tmp_path):
    assert "'load'" in one_line_error(run(stage_command("train", TINY, tmp_path / "absent")))
    (tmp_path / "empty").mkdir()
    assert "'load'" in one_line_error(run(stage_command("train", TINY, tmp_path / "empty")))
    assert "'load'" in one_line_error(run(stage_command("evaluate", TINY, tmp_path / "empty")))


def test_model_missing_and_rows_mismatch(tiny, tmp_path):
    workdir, _ = tiny
    for name in ("X_train.npy", "y_train.npy", "X_holdout.npy", "y_holdout.npy", "data.json"):
        (tmp_path / name).write_bytes((workdir / name).read_bytes())
    assert "'train'" in one_line_error(run(stage_command("evaluate", TINY, tmp_path)))
    line = one_line_error(run(stage_command("train", TINY + 1000, tmp_path)))
    assert str(TINY) in line and str(TINY + 1000) in line
    (tmp_path / "X_train.npy").write_bytes(b"not an array")
    assert "X_train.npy" in one_line_error(run(stage_command("train", TINY, tmp_path)))


def test_train_memory_grows_with_rows_and_over_the_run(tiny, tmp_path):
    _, runs = tiny
    summary(run(stage_command("load", LARGER, tmp_path)))
    larger = run(stage_command("train", LARGER, tmp_path))
    steps = summary(larger)["rss_mib_by_step"]
    # The stage's own VmHWM: the kernel's rusage for a child also counts the (large) pytest process
    # it was forked from, which made this comparison meaningless in a full test run.
    big, small = summary(larger)["peak_rss_mib"], summary(runs["train"])["peak_rss_mib"]
    assert big > small + 30, (big, small)
    assert steps[-1] > steps[0] + 25 and all(b >= a - 2 for a, b in zip(steps, steps[1:])), steps  # climbs step by step


def test_all_stages_in_one_process_give_the_same_results(tiny, tmp_path):
    """``all``: load, train and evaluate in one process (a stage with phases), with the same
    outputs as the three processes."""
    workdir, runs = tiny
    result = summary(run(stage_command("all", TINY, tmp_path / "one")))
    assert result["stage"] == "all" and set(result["phase_seconds"]) == {"load", "train", "evaluate"}
    assert result["evaluate"]["metrics"] == json.loads((workdir / "metrics.json").read_text())  # same seed, same model
    assert (tmp_path / "one" / "metrics.json").is_file()

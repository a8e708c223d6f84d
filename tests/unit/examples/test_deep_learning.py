"""The deep-learning example stages: bad input, the parameter count, and memory that follows the
batch size in real (tiny) runs.

Argument checks and the parameter formula need no PyTorch. The rest builds and trains the real
models (PyTorch, the ``dl`` extra); the trained runs are child processes (``stage_command``)
measured by their own ``VmHWM``, kept tiny: the file takes ~15 s on two busy cores, most of it
``import torch`` in each child.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile

import pytest

from airflow_adaptive.examples import deep_learning as dl
from airflow_adaptive.examples.deep_learning import Config, parameter_count, resnet_parameters, stage_command, transformer_parameters

#: Tiny runs: one transformer at two batch sizes (memory), one ResNet (count, files written).
#: A narrow model with a wide vocabulary: much memory per batch (the logits), little compute.
TINY_LM = {"width": 32, "depth": 1, "heads": 2, "vocab": 2048, "sequence_length": 128, "steps": 1,
           "eval_batches": 1, "samples": 64, "threads": 2, "device": "cpu"}
SMALL_BATCH, LARGE_BATCH = 2, 64
TINY_RESNET = {"width": 8, "depth": 10, "classes": 5, "image_size": 16, "batch_size": 4, "steps": 1,
               "eval_batches": 1, "samples": 32, "threads": 2, "device": "cpu"}


def run(argv: list[str]) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env={**os.environ, "OMP_NUM_THREADS": "2"})
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        return {"rc": os.waitstatus_to_exitcode(status), "stdout": out.read().decode(), "stderr": err.read().decode(),
                "peak_mib": usage.ru_maxrss / 1024}


def summary(result: dict) -> dict:
    assert result["rc"] == 0, result["stderr"][-2000:]
    lines = result["stdout"].strip().splitlines()
    assert len(lines) == 1, result["stdout"]
    return json.loads(lines[0])


# --- no PyTorch needed -----------------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["resnet", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["transformer", "--batch-size", "-3"], "--batch-size must be at least 1, got -3"),
    (["vgg", "--batch-size", "8"], "invalid choice: 'vgg'"),
    (["resnet"], "the following arguments are required: --batch-size"),
    (["resnet", "--batch-size", "8", "--depth", "50"], "--depth must be one of 10, 18, 34 for a ResNet, got 50"),
    (["resnet", "--batch-size", "8", "--image-size", "4"], "--image-size must be at least 8, got 4"),
    (["transformer", "--batch-size", "8", "--width", "100", "--heads", "3"], "--heads (3) must divide --width (100)"),
    (["transformer", "--batch-size", "8", "--precision", "fp8"], "unknown precision 'fp8'; expected one of fp32, bf16, fp16"),
    (["resnet", "--batch-size", "8", "--optimizer", "lamb"], "unknown optimizer 'lamb'; expected one of sgd, adam, adamw"),
    (["resnet", "--batch-size", "8", "--device", "tpu"], "unknown device 'tpu'"),
    (["resnet", "--batch-size", "8", "--learning-rate", "0"], "--learning-rate must be a positive number"),
])
def test_bad_arguments_exit_2_with_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        dl.parse_args(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "deep_learning: error:" in err and message in err, err


def test_well_known_parameter_counts():
    # torchvision's resnet18 / resnet34 (1000 classes): the figures every model card quotes
    assert resnet_parameters(64, 18, 1000) == 11_689_512
    assert resnet_parameters(64, 34, 1000) == 21_797_672
    d, f, v = 128, 512, 1000  # one pre-norm layer: attention 4d^2+4d, feed-forward 2df+f+d, two norms 4d
    assert transformer_parameters(d, 1, v) - transformer_parameters(d, 0, v) == 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d


def test_describe_prints_the_count_and_features_without_training(capsys):
    assert dl.main(["transformer", "--batch-size", "16", "--sequence-length", "512", "--describe"]) == 0
    out = json.loads(capsys.readouterr().out)
    n = transformer_parameters(128, 2, 1024)
    assert out["parameters"] == n
    assert out["features"] == {"algorithm": "transformer", "framework": "pytorch", "model_family": "transformer",
                               "parameters": n, "batch_size": 16, "sequence_length": 512, "precision": "fp32",
                               "optimizer": "adam", "world_size": 1}


def test_stage_command():
    assert stage_command("resnet", python="py", batch_size=8, image_size=64) == [
        "py", "-m", "airflow_adaptive.examples.deep_learning", "resnet", "--batch-size", "8", "--image-size", "64"]
    with pytest.raises(ValueError):
        stage_command("vgg", batch_size=8)


# --- with PyTorch ----------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    Config(arch="resnet", batch_size=2, width=16, depth=18, classes=7, image_size=16),
    Config(arch="resnet", batch_size=2, width=8, depth=34, classes=3, image_size=16),
    Config(arch="transformer", batch_size=2, width=64, depth=3, heads=4, vocab=300),
    Config(arch="transformer", batch_size=2, width=96, depth=1, heads=3, vocab=50, sequence_length=7),
], ids=["resnet18-w16", "resnet34-w8", "transformer-3x64", "transformer-1x96"])
def test_built_model_has_the_computed_parameter_count(config):
    torch = pytest.importorskip("torch", reason="the deep-learning examples need PyTorch (the dl extra)")
    model = dl.build_model(config)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == parameter_count(config)
    if config.arch == "resnet":
        out = model(torch.zeros(2, 3, config.image_size, config.image_size))
        assert out.shape == (2, config.classes)
    else:
        out = model(torch.zeros(2, config.sequence_length, dtype=torch.long))
        assert out.shape == (2, config.sequence_length, config.vocab)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two transformer runs as child processes (their memory is their own), and the ResNet in this
    process (it is already paying for PyTorch: a child would import it again)."""
    pytest.importorskip("torch", reason="the deep-learning examples need PyTorch (the dl extra)")
    workdir = tmp_path_factory.mktemp("resnet")
    argv = stage_command("resnet", python="", workdir=workdir, **TINY_RESNET)[3:]  # without "python -m module"
    with tempfile.TemporaryFile("w+") as out:
        with contextlib.redirect_stdout(out):
            rc = dl.main(argv)
        out.seek(0)
        resnet = {"rc": rc, "stdout": out.read(), "stderr": ""}
    return {
        "lm_small": run(stage_command("transformer", batch_size=SMALL_BATCH, **TINY_LM)),
        "lm_large": run(stage_command("transformer", batch_size=LARGE_BATCH, **TINY_LM)),
        "resnet": resnet,
        "workdir": workdir,
    }


def test_printed_parameter_count_is_the_built_models(tiny_runs):
    lm = summary(tiny_runs["lm_small"])
    lm_config = Config(arch="transformer", batch_size=SMALL_BATCH, **TINY_LM)
    assert lm["parameters"] == parameter_count(lm_config) == transformer_parameters(32, 1, 2048)
    assert lm["features"]["parameters"] == lm["parameters"] and lm["features"]["sequence_length"] == 128
    net = summary(tiny_runs["resnet"])
    assert net["parameters"] == resnet_parameters(8, 10, 5)
    assert net["features"] == {"algorithm": "resnet10", "framework": "pytorch", "model_family": "resnet",
                               "parameters": net["parameters"], "batch_size": 4, "image_size": 16,
                               "precision": "fp32", "optimizer": "adam", "world_size": 1}


def test_runs_have_phases_losses_and_write_their_files(tiny_runs):
    for key in ("lm_small", "resnet"):
        s = summary(tiny_runs[key])
        assert s["device"] == "cpu" and s["threads"] == 2 and s["steps"] == 1
        assert set(s["phase_seconds"]) == {"import", "data", "train", "evaluate"}
        assert s["train_loss_first"] > 0 and s["eval"]["loss"] > 0 and 0 <= s["eval"]["accuracy"] <= 1
    saved = json.loads((tiny_runs["workdir"] / "metrics.json").read_text())
    assert saved["parameters"] == summary(tiny_runs["resnet"])["parameters"]
    assert (tiny_runs["workdir"] / "model.pt").stat().st_size > 4 * saved["parameters"]  # fp32 weights


def test_memory_grows_with_the_batch_size(tiny_runs):
    small, large = summary(tiny_runs["lm_small"]), summary(tiny_runs["lm_large"])
    # 32x the batch: the logits alone (batch x 128 x 2048 floats) are 64 MiB at 64, and the training
    # step keeps several of them (softmax, its gradient). Measured here: 835 -> 1105 MiB (+270).
    # The stage's own VmHWM, not the child's ru_maxrss: that one starts from this (PyTorch-sized)
    # test process's resident memory at fork, which hides the difference.
    assert small["phase_peak_rss_mib"]["import"] == pytest.approx(large["phase_peak_rss_mib"]["import"], abs=32)
    grew = large["phase_peak_rss_mib"]["train"] - small["phase_peak_rss_mib"]["train"]
    assert grew > 128, (small["phase_peak_rss_mib"], large["phase_peak_rss_mib"])
    assert large["peak_rss_mib"] > small["peak_rss_mib"] + 128


@pytest.mark.skipif(not os.path.exists("/dev/nvidiactl"), reason="no NVIDIA GPU on this machine")
def test_same_stage_runs_on_cuda_and_reports_gpu_memory():
    torch = pytest.importorskip("torch", reason="the deep-learning examples need PyTorch (the dl extra)")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    options = {**TINY_LM, "device": "auto"}
    small = summary(run(stage_command("transformer", batch_size=SMALL_BATCH, **options)))
    large = summary(run(stage_command("transformer", batch_size=LARGE_BATCH, **options)))
    assert small["device"] == large["device"] == "cuda"
    assert large["peak_gpu_mib"] > small["peak_gpu_mib"] + 64

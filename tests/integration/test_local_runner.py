"""``airflow-adaptive run``: the local Resource Manager on real cgroups with real workloads."""

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
MIB = 2**20
CLI = [sys.executable, "-m", "airflow_adaptive.cli.main"]


def run_cli(tmp_path, *args, user=None, timeout=120):
    out = tmp_path / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0", "PYTHONUNBUFFERED": "1"}
    env.pop("AIRFLOW_ADAPTIVE_REQUIRE_CGROUPS", None)
    proc = subprocess.run([*CLI, "-v", "run", "--json", str(out), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, user=user, cwd=tmp_path)
    report = json.loads(out.read_text()) if out.exists() else None
    return proc, report


def test_growth_past_an_under_predicted_limit_completes_because_the_limit_was_raised(tmp_path, cgroups_available, workload_cmd):
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "128Mi", "--interval", "0.5", "--",
                           *workload_cmd("grow", "--to-mib", "448", "--rate-mib-s", "200"))
    assert proc.returncode == 0, proc.stderr
    assert report["exit_code"] == 0 and report["oom_killed"] is False
    memory = [r for r in report["resizes"] if r["resource"] == "memory"]
    assert memory and all(r["new"] > r["old"] for r in memory)
    assert report["final_allocation"]["memory"] >= 448 * MIB
    assert report["peak_memory_bytes"] >= 448 * MIB
    assert report["mode"].startswith("cgroup-")
    assert set(report) >= {"exit_code", "oom_killed", "resizes", "peak_memory_bytes", "reserved_memory_byte_seconds",
                           "reserved_cpu_core_seconds", "samples"}
    assert {"time", "resource", "old", "new", "reason"} <= set(memory[0])


def test_the_same_workload_with_no_resize_is_oom_killed_and_the_report_says_so(tmp_path, cgroups_available, workload_cmd):
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "128Mi", "--no-resize", "--",
                           *workload_cmd("grow", "--to-mib", "448", "--rate-mib-s", "200"))
    assert report["oom_killed"] is True
    assert report["exit_code"] == 137 == proc.returncode
    assert report["resizes"] == []
    assert report["peak_memory_bytes"] <= 128 * MIB
    assert "OOM-killed" in proc.stderr


def test_sustained_cpu_throttling_raises_the_quota_within_three_samples(tmp_path, cgroups_available, workload_cmd):
    proc, report = run_cli(tmp_path, "--cpu", "0.25", "--memory", "256Mi", "--max-cpu", "2", "--interval", "0.5", "--",
                           *workload_cmd("spin", "--seconds", "4", "--processes", "2"))
    assert proc.returncode == 0, proc.stderr
    cpu = [r for r in report["resizes"] if r["resource"] == "cpu"]
    assert cpu and cpu[0]["new"] > cpu[0]["old"] == 0.25
    first_cpu_sample = min(s["time"] for s in report["samples"] if "cpu" in s["values"])
    samples_before = [s for s in report["samples"] if "cpu" in s["values"] and first_cpu_sample <= s["time"] <= cpu[0]["time"]]
    assert len(samples_before) <= 3


def test_a_single_memory_spike_resizes_nothing(tmp_path, cgroups_available, workload_cmd):
    # A spike shorter than the sampling interval: at most one sample can see it.
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "512Mi", "--interval", "1", "--",
                           *workload_cmd("steady", "--mib", "60", "--seconds", "5", "--spike-mib", "300", "--spike-at", "2.3", "--spike-s", "0.2"))
    assert proc.returncode == 0, proc.stderr
    assert [r for r in report["resizes"] if r["resource"] == "memory" and r["new"] > r["old"]] == []


def test_exit_code_of_the_workload_is_the_runner_exit_code(tmp_path, cgroups_available):
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "64Mi", "--", "sh", "-c", "exit 3")
    assert proc.returncode == 3 == report["exit_code"]
    assert report["oom_killed"] is False


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cpu", "1", "--memory", "64Mi", "--", "no-such-command-xyz"], "cannot start 'no-such-command-xyz'"),
        (["--cpu", "0", "--memory", "64Mi", "--", "true"], "must be greater than 0"),
        (["--cpu", "1", "--memory", "-5Mi", "--", "true"], "memory"),
        (["--cpu", "1", "--memory", "64Mi"], "no command to run"),
        (["--memory", "64Mi", "--", "true"], "give --cpu"),
        (["--profile", "missing.json", "--", "true"], "no such file"),
        (["--profile", "{\"resources\": 3}", "--", "true"], "not a predicted profile"),
        (["--profile", "{not json", "--", "true"], "not valid JSON"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, args, message):
    proc, _ = run_cli(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_profile_gives_the_starting_limits(tmp_path, cgroups_available):
    profile = {"coverage": 0.99, "resources": {"cpu": {"median": 0.5, "upper": 0.75}, "memory": {"median": 50 * MIB, "upper": 96 * MIB}}}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"train": profile}))
    proc, report = run_cli(tmp_path, "--profile", str(path), "--", "true")
    assert proc.returncode == 0, proc.stderr
    assert report["final_allocation"] == {"memory": 96 * MIB, "cpu": 0.75}


def test_without_permission_to_create_cgroups_it_runs_monitor_only_and_says_so_once(workload_cmd):
    """Runs the CLI as the unprivileged user ``nobody``, who may not create cgroups.

    ``nobody`` cannot enter /root, where this machine's Python lives, so the Debian
    interpreter (same 3.11 ABI) runs the project from the checkout and the venv's site-packages.
    """
    system_python = Path("/usr/bin/python3")
    if os.geteuid() != 0 or not system_python.exists():
        pytest.skip("needs root (to switch to an unprivileged user) and /usr/bin/python3")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody'")
    import site
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="aa-nobody-"))
    work.chmod(0o777)
    out = work / "report.json"
    root = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_ADAPTIVE_NVML": "0", "HOME": str(work),
           "PYTHONPATH": os.pathsep.join([str(root), *site.getsitepackages()])}
    workload = [str(system_python), *workload_cmd("steady", "--mib", "20", "--seconds", "1.5")[1:]]
    probe = subprocess.run([str(system_python), "-c", "import airflow_adaptive.runtime.local_runner, psutil"],
                           capture_output=True, text=True, env=env, user="nobody", cwd=work)
    if probe.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        pytest.skip(f"the checkout is not readable by 'nobody' here: {probe.stderr.strip()[-200:]}")
    try:
        proc = subprocess.run([str(system_python), "-m", "airflow_adaptive.cli.main", "-v", "run", "--json", str(out),
                               "--cpu", "1", "--memory", "64Mi", "--interval", "0.3", "--", *workload],
                              capture_output=True, text=True, timeout=120, env=env, user="nobody", cwd=work)
        report = json.loads(out.read_text()) if out.exists() else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert report["mode"] == "monitor-only"
    assert proc.stderr.count("running monitor-only") == 1
    assert report["samples"] and all(s["source"] == "procfs" for s in report["samples"])
    assert max(s["values"].get("memory", 0) for s in report["samples"]) >= 20 * MIB


def test_gpu_usage_of_the_workload_pid_reaches_the_report_through_nvml(tmp_path, cgroups_available, fake_nvml):
    """Runs against the stand-in NVML library (no GPU here): the workload registers its own PID
    as a GPU process in the stand-in's config, as a CUDA program would appear to NVML; another
    process on the same GPU must not be counted."""
    config = tmp_path / "nvml.conf"
    config.write_text(f"device GPU-aaaa-0000 Fake-A100 70 10 {80 * 2**30} {30 * 2**30}\nprocess 0 999999 {5 * 2**30} 90\n")
    script = f'echo "process 0 $$ {2**30} 40" >> {config}; exec sleep 2'
    out = tmp_path / "report.json"
    env = {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml), "FAKE_NVML_CONFIG": str(config)}
    proc = subprocess.run([*CLI, "run", "--json", str(out), "--cpu", "1", "--memory", "64Mi", "--interval", "0.3", "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    samples = json.loads(out.read_text())["samples"]
    gpu = [s["values"] for s in samples if "gpu_memory" in s["values"]]
    assert gpu, samples
    assert max(v["gpu_memory"] for v in gpu) == 2**30  # its own process, not the other one's 5 GiB
    assert max(v["gpu"] for v in gpu) == pytest.approx(0.4)


def test_growth_past_the_maximum_is_oom_killed_not_left_paused(tmp_path, cgroups_available, workload_cmd):
    """The runner pauses tasks at the limit (v1 oom_kill_disable) while it raises it; at the
    bound it cannot, so it hands the workload back to the OOM killer instead of hanging."""
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "96Mi", "--max-memory", "160Mi", "--interval", "0.5", "--",
                           *workload_cmd("grow", "--to-mib", "400", "--rate-mib-s", "300"), timeout=60)
    assert report["oom_killed"] is True and proc.returncode == 137
    assert report["final_allocation"]["memory"] <= 160 * MIB
    assert [r for r in report["resizes"] if r["new"] > 160 * MIB] == []


def test_sigterm_to_the_runner_goes_to_the_workload_and_the_report_is_still_written(tmp_path, cgroups_available):
    """Airflow stops a task with SIGTERM: the workload gets it, the runner reports and cleans up."""
    import signal
    import time

    out = tmp_path / "report.json"
    env = {**os.environ, "AIRFLOW_ADAPTIVE_NVML": "0"}
    runner = subprocess.Popen([*CLI, "run", "--json", str(out), "--cpu", "1", "--memory", "64Mi", "--interval", "0.2", "--", "sleep", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    time.sleep(1.5)
    runner.send_signal(signal.SIGTERM)
    _, stderr = runner.communicate(timeout=30)
    assert runner.returncode == 128 + signal.SIGTERM, stderr
    report = json.loads(out.read_text())
    assert report["exit_code"] == 143 and report["oom_killed"] is False and report["samples"]
    assert "passing it to the workload" in stderr and "Traceback" not in stderr
    leftovers = [p for p in Path("/sys/fs/cgroup").glob(f"*/**/airflow-adaptive-{runner.pid}-*")]
    assert leftovers == []


def test_a_predicted_phase_is_raised_before_it_comes_and_released_after(tmp_path, cgroups_available, workload_cmd):
    """A stage that holds 40 MiB for 4 s, then 240 MiB (reached at once) for 4 s, then 100 MiB:
    with the phases in its profile the runner starts at the first phase, raises the limit
    before the second starts (no usage had asked for it), and releases after it."""
    phases = [{"start_s": 0, "end_s": 4, "median": 45 * MIB, "upper": 60 * MIB},
              {"start_s": 4, "end_s": 8, "median": 250 * MIB, "upper": 280 * MIB},
              {"start_s": 8, "end_s": 11, "median": 110 * MIB, "upper": 130 * MIB}]
    profile = {"coverage": 0.99, "resources": {"memory": {"median": 250 * MIB, "upper": 280 * MIB}},
               "phases": {"memory": phases}}
    (tmp_path / "profile.json").write_text(json.dumps(profile))
    proc, report = run_cli(tmp_path, "--cpu", "1", "--memory", "72Mi", "--profile", "profile.json", "--interval", "0.5", "--",
                           *workload_cmd("phases", "--plan", "40:4,240:4,100:3"))
    assert proc.returncode == 0 and not report["oom_killed"], proc.stderr
    memory = [r for r in report["resizes"] if r["resource"] == "memory"]
    ahead = [r for r in memory if "ahead of the predicted phase from 4 s" in r["reason"]]
    assert ahead and ahead[0]["new"] >= 280 * MIB, memory
    samples = [s for s in report["samples"] if "memory" in s["values"]]
    over = next(s["time"] for s in samples if s["values"]["memory"] > 72 * MIB)  # the second phase arrives
    assert ahead[0]["time"] < over  # raised before any usage asked for it
    assert any(r["new"] < r["old"] and "needs less" in r["reason"] for r in memory if r["time"] > over)  # released after


def test_runner_opens_nvml_for_the_run_and_shuts_it_down(tmp_path, fake_nvml):
    """Against the stand-in NVML library (no GPU here), which logs every call: the runner opens
    NVML by itself (no flag), samples the workload's PID and calls nvmlShutdown once it is done."""
    config = tmp_path / "nvml.conf"
    config.write_text(f"device GPU-aaaa-0000 Fake-A100 70 10 {80 * 2**30} {30 * 2**30}\n")
    calls = tmp_path / "calls.log"
    script = f'echo "process 0 $$ {3 * 2**30} 25" >> {config}; exec sleep 1'
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_ADAPTIVE_NVML"}
    env.update(LD_LIBRARY_PATH=str(fake_nvml), FAKE_NVML_CONFIG=str(config), FAKE_NVML_CALL_LOG=str(calls))
    proc = subprocess.run([*CLI, "run", "--json", str(out), "--cpu", "1", "--memory", "64Mi", "--interval", "0.2", "--",
                           "sh", "-c", script], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    samples = json.loads(out.read_text())["samples"]
    assert max(s["values"].get("gpu_memory", 0) for s in samples) == 3 * 2**30
    called = calls.read_text().split()
    assert called.count("nvmlShutdown") == 1 and called[-1] == "nvmlShutdown"


@pytest.mark.parametrize("switch_off", [False, True])
def test_runner_without_nvml_says_so_once_and_records_no_gpu(tmp_path, switch_off):
    """No libnvidia-ml.so.1 (as on this machine, which has no GPU; no stand-in here): one log line,
    and no gpu/gpu_memory in any sample (absent, not 0). AIRFLOW_ADAPTIVE_NVML=0: not even asked."""
    empty = tmp_path / "no-library-here"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW_ADAPTIVE_NVML"}
    env["LD_LIBRARY_PATH"] = str(empty)
    if switch_off:
        env["AIRFLOW_ADAPTIVE_NVML"] = "0"
    probe = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libnvidia-ml.so.1')"], env=env,
                           capture_output=True)
    if probe.returncode == 0:
        pytest.skip("a real libnvidia-ml.so.1 (an NVIDIA driver) is installed on this machine")
    out = tmp_path / "report.json"
    proc = subprocess.run([*CLI, "-v", "run", "--json", str(out), "--cpu", "1", "--memory", "64Mi", "--interval", "0.2",
                           "--", "sleep", "0.8"], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("GPU usage not sampled") == (0 if switch_off else 1), proc.stderr
    samples = json.loads(out.read_text())["samples"]
    assert samples and not any({"gpu", "gpu_memory"} & set(s["values"]) for s in samples)

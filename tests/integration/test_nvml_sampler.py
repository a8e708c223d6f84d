"""NvmlSampler against a stand-in libnvidia-ml.so.1 (tests/support/fake_nvml/fake_nvml.c).

No GPU is present on the machines these tests run on, so a small C library that exports the
NVML symbols nvidia-ml-py resolves, with nvml.h's struct layouts, plays the driver. It is
compiled here with gcc (a compile failure fails the tests) and loaded by the real pynvml in a
subprocess (``LD_LIBRARY_PATH``), since pynvml caches the library once per process. Its
devices and processes come from the text file in ``$FAKE_NVML_CONFIG``.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE = REPO / "tests" / "support" / "fake_nvml"
SOURCE = FAKE / "fake_nvml.c"
DRIVER = FAKE / "run_sampler.py"
GiB = 1 << 30

MiB = 1 << 20

# device <uuid> <name> <util_gpu %> <util_mem %> <mem_total> <mem_used> [<mem_reserved>]
TWO_GPUS = f"""\
device GPU-aaaa-0000 Fake-A100 40 10 {80 * GiB} {30 * GiB}
device GPU-bbbb-1111 Fake-A100 90 20 {80 * GiB} {50 * GiB} {500 * MiB}
"""

# What pynvml resolves for the sampler's calls (nvmlInit -> nvmlInitWithFlags in nvidia-ml-py 13;
# nvmlErrorString only for a code outside pynvml's own table, hence the failure code 4242 below).
SAMPLER_SYMBOLS = {
    "nvmlInitWithFlags", "nvmlShutdown", "nvmlErrorString", "nvmlSystemGetDriverVersion",
    "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetUUID", "nvmlDeviceGetName",
    "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetMemoryInfo_v2", "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetMinorNumber",
}




def run_sampler(lib_dir: Path | None, tmp_path: Path, plan: dict, config: str = "", env_extra: dict | None = None) -> dict:
    cfg = tmp_path / "nvml.conf"
    cfg.write_text(config)
    env = {k: v for k, v in os.environ.items() if k not in ("NVIDIA_VISIBLE_DEVICES", "AIRFLOW_ADAPTIVE_NVML")}
    env.update(env_extra or {})
    if lib_dir is None:  # an empty directory: no libnvidia-ml.so.1 to be found there
        lib_dir = tmp_path / "no-library-here"
        lib_dir.mkdir(exist_ok=True)
    env["LD_LIBRARY_PATH"] = str(lib_dir)
    env["FAKE_NVML_CONFIG"] = str(cfg)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, str(DRIVER), json.dumps(plan)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def warnings_of(out: dict) -> list[str]:
    return [m for level, m in out["log"] if level in ("WARNING", "ERROR")]


# -- the stand-in itself, checked against nvidia-ml-py's own definitions ---------------------


def test_stub_struct_layouts_match_pynvml_ctypes(fake_nvml):
    """The C sizeof/offsetof of every struct the stand-in NVML library (used because no GPU is
    present here) fills equal nvidia-ml-py's ctypes definitions, field by field."""
    import pynvml

    lib = ctypes.CDLL(str(fake_nvml / "libnvidia-ml.so.1"))
    buf = ctypes.create_string_buffer(4096)
    assert 0 < lib.fake_nvml_layout(buf, len(buf)) < len(buf)
    pynvml_class = {
        "nvmlMemory_t": pynvml.c_nvmlMemory_t,
        "nvmlMemory_v2_t": pynvml.c_nvmlMemory_v2_t,
        "nvmlUtilization_t": pynvml.c_nvmlUtilization_t,
        "nvmlProcessInfo_v2_t": pynvml.c_nvmlProcessInfo_v2_t,
        "nvmlProcessInfo_v3_t": pynvml.c_nvmlProcessInfo_v3_t,
        "nvmlProcessUtilizationSample_t": pynvml.c_nvmlProcessUtilizationSample_t,
    }
    seen = set()
    for line in buf.value.decode().splitlines():
        name, size, *fields = line.split()
        cls = pynvml_class[name]
        seen.add(name)
        assert int(size) == ctypes.sizeof(cls), name
        c_fields = {f: int(off) for f, off in (x.split(":") for x in fields)}
        py_fields = {f[0]: getattr(cls, f[0]).offset for f in cls._fields_}
        assert c_fields == py_fields, name
    assert seen == set(pynvml_class)


def test_stub_exports_every_symbol_pynvml_resolves(fake_nvml, tmp_path):
    """Every NVML symbol pynvml looked up while the sampler ran (all code paths: PID mode with
    per-process and device utilisation, device mode, errors, close) is exported by the stand-in
    NVML library, which replaces the driver because no GPU is present here."""
    config = TWO_GPUS + "process 0 100 1000 30\nprocess 1 101 2000 -\nprocess 1 101 2000 - graphics\n"
    lookups = set()
    pid_mode = [
        {"sample": [100, 101]},
        {"config": config + "fail nvmlDeviceGetGraphicsRunningProcesses_v3 4242\n"},  # -> nvmlErrorString
        {"sample": [100]},
        {"config": config + "fail nvmlDeviceGetProcessUtilization 3\n"},  # -> device utilisation
        {"sample": [100, 101]},
    ]
    device_mode = [
        {"sample": []},
        {"config": config + "fail nvmlDeviceGetMemoryInfo_v2 13\n"},  # -> v1 nvmlDeviceGetMemoryInfo
        {"sample": []},
    ]
    # The sidecar's reader, on a workload whose /dev holds a GPU node (-> nvmlDeviceGetMinorNumber).
    proc = fake_proc(tmp_path, 4242, b"NVIDIA_VISIBLE_DEVICES=GPU-bbbb-1111\0", ["nvidia1"])
    sidecar = {"workload_pid": 4242, "proc": str(proc), "steps": [{"sample": []}]}
    for plan in ({"steps": pid_mode}, {"device_uuids": ["GPU-bbbb-1111"], "steps": device_mode}, sidecar):
        out = run_sampler(fake_nvml, tmp_path, plan, config)
        assert out["opened"], out
        lookups |= set(out["lookups"])
    assert SAMPLER_SYMBOLS <= lookups, SAMPLER_SYMBOLS - lookups
    lib = ctypes.CDLL(str(fake_nvml / "libnvidia-ml.so.1"))
    assert [s for s in sorted(lookups) if not hasattr(lib, s)] == []
    nm = subprocess.run(["nm", "-D", "--defined-only", str(fake_nvml / "libnvidia-ml.so.1")],
                        capture_output=True, text=True)
    if nm.returncode == 0:  # binutils present: the symbols are in the dynamic table, exported
        exported = {line.split()[-1] for line in nm.stdout.splitlines() if line.strip()}
        assert lookups <= exported


# -- PID mode (local runner) ------------------------------------------------------------------


def test_pid_mode_counts_only_the_workload_processes(fake_nvml, tmp_path):
    """PID mode, against a stand-in NVML library because no GPU is present here: memory and SM
    utilisation of the given PIDs only; another process on the same GPU is ignored."""
    config = TWO_GPUS + (
        f"process 0 100 {2 * GiB} 30\n"
        f"process 0 999 {7 * GiB} 50\n"  # not the workload's
        f"process 1 101 {3 * GiB} 25\n"
        f"process 1 101 {3 * GiB} 25 graphics\n"  # the same process, also listed as graphics
        f"process 1 102 {1 * GiB} - graphics\n"
    )
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [100, 101, 102, 4242]}]}, config)
    assert out["opened"] and out["devices"] == ["GPU-aaaa-0000", "GPU-bbbb-1111"]
    (s,) = out["samples"]
    assert s["gpu_memory"] == 6 * GiB
    assert s["gpu"] == pytest.approx(0.30 + 0.25)
    assert warnings_of(out) == []


def test_pid_mode_falls_back_to_device_utilisation(fake_nvml, tmp_path):
    """PID mode, against a stand-in NVML library because no GPU is present here: without
    per-process utilisation, the utilisation of the devices where a workload PID runs counts
    (device 1 has no workload process, so its 90 % does not), and the error is logged once."""
    config = TWO_GPUS + f"process 0 100 {GiB} 30\nprocess 1 999 {GiB} 80\nfail nvmlDeviceGetProcessUtilization 3\n"
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [100]}, {"sample": [100]}]}, config)
    assert out["samples"] == [{"gpu": 0.40, "gpu_memory": GiB}] * 2
    assert len(warnings_of(out)) == 1 and "nvmlDeviceGetProcessUtilization" in warnings_of(out)[0]

    # No per-process sample since the last call (NVML_ERROR_NOT_FOUND) is no error: the
    # workload ran no kernels there, 0, whatever the device's utilisation says.
    config = TWO_GPUS + f"process 1 100 {GiB} -\n"
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [100]}]}, config)
    assert out["samples"] == [{"gpu": 0.0, "gpu_memory": GiB}]
    assert warnings_of(out) == []


def test_pid_mode_values_change_between_samples(fake_nvml, tmp_path):
    """Two samples read the current values, against a stand-in NVML library (no GPU here)
    whose configuration changes between them; a workload that left the GPU reads as 0."""
    first = TWO_GPUS + f"process 0 100 {GiB} 10\n"
    second = TWO_GPUS + f"process 0 100 {4 * GiB} 70\nprocess 1 101 {GiB} 20\n"
    plan = {"steps": [{"sample": [100, 101]}, {"config": second}, {"sample": [100, 101]},
                      {"config": TWO_GPUS}, {"sample": [100, 101]}]}
    out = run_sampler(fake_nvml, tmp_path, plan, first)
    assert out["samples"][0] == {"gpu": pytest.approx(0.10), "gpu_memory": GiB}
    assert out["samples"][1] == {"gpu": pytest.approx(0.90), "gpu_memory": 5 * GiB}
    assert out["samples"][2] == {"gpu": 0.0, "gpu_memory": 0.0}


# -- device mode (Kubernetes sidecar) -----------------------------------------------------------


def test_device_mode_attributes_the_workload_gpus(fake_nvml, tmp_path):
    """Device mode, against a stand-in NVML library because no GPU is present here: the GPUs
    come from the workload process's NVIDIA_VISIBLE_DEVICES, and everything on them (whatever
    the host PIDs) counts; the other GPU does not."""
    workload = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        env={**os.environ, "NVIDIA_VISIBLE_DEVICES": "GPU-bbbb-1111"},
    )
    try:
        config = TWO_GPUS + f"process 1 31337 {5 * GiB} 60\nprocess 0 31338 {GiB} 10\n"
        plan = {"devices_of_pid": workload.pid, "steps": [{"sample": [workload.pid]}]}
        out = run_sampler(fake_nvml, tmp_path, plan, config)
    finally:
        workload.kill()
        workload.wait()
    assert out["visible"] == ["GPU-bbbb-1111"]
    assert out["devices"] == ["GPU-bbbb-1111"]
    # nvmlDeviceGetMemoryInfo_v2's used: without the driver's 500 MiB reservation.
    assert out["samples"] == [{"gpu": 0.90, "gpu_memory": 50 * GiB}]
    assert warnings_of(out) == []


def test_device_mode_memory_falls_back_to_v1(fake_nvml, tmp_path):
    """Device mode, against a stand-in NVML library because no GPU is present here: a driver
    without nvmlDeviceGetMemoryInfo_v2 (answering FUNCTION_NOT_FOUND) is read through the v1
    nvmlDeviceGetMemoryInfo, whose used counts the reservation; no warning, v2 not retried."""
    config = TWO_GPUS + "fail nvmlDeviceGetMemoryInfo_v2 13\n"
    plan = {"device_uuids": ["GPU-aaaa-0000", "GPU-bbbb-1111"], "steps": [{"sample": []}, {"sample": []}]}
    out = run_sampler(fake_nvml, tmp_path, plan, config)
    assert out["samples"] == [{"gpu": pytest.approx(1.30), "gpu_memory": 80 * GiB + 500 * MiB}] * 2
    assert warnings_of(out) == []


def test_device_mode_call_failure_omits_that_resource(fake_nvml, tmp_path):
    """Device mode, against a stand-in NVML library because no GPU is present here: a failing
    nvmlDeviceGetMemoryInfo_v2 leaves gpu_memory out (never 0), keeps gpu, and is logged once."""
    config = TWO_GPUS + "fail nvmlDeviceGetMemoryInfo_v2 15\n"
    plan = {"device_uuids": ["all"], "steps": [{"sample": []}, {"sample": []}]}
    out = run_sampler(fake_nvml, tmp_path, plan, config)
    assert out["samples"] == [{"gpu": pytest.approx(1.30)}] * 2
    assert len(warnings_of(out)) == 1 and "GPU is lost" in warnings_of(out)[0]


def test_visible_devices_of(tmp_path, monkeypatch):
    """NVIDIA_VISIBLE_DEVICES read from /proc/<pid>/environ (no GPU or NVML needed)."""
    from airflow_adaptive.adapters.nvml import sampler

    def spawn(value):
        env = {k: v for k, v in os.environ.items() if k != "NVIDIA_VISIBLE_DEVICES"}
        if value is not None:
            env["NVIDIA_VISIBLE_DEVICES"] = value
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)

    for value, expected in (("GPU-a,GPU-b", ["GPU-a", "GPU-b"]), ("all", ["all"]), ("void", []), (None, None)):
        p = spawn(value)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not Path(f"/proc/{p.pid}/environ").read_bytes():
                time.sleep(0.01)
            assert sampler.visible_devices_of(p.pid) == expected, value
        finally:
            p.kill()
            p.wait()
    assert sampler.visible_devices_of(2**22 + 7) is None  # no such process

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sampler, "open", denied, raising=False)
    assert sampler.visible_devices_of(os.getpid()) is None


# -- NVML missing or failing --------------------------------------------------------------------


def test_init_failure_gives_none_and_one_log_line(fake_nvml, tmp_path):
    """nvmlInit failing (driver not loaded) in the stand-in NVML library, used because no GPU is
    present here: open() returns None without raising, with exactly one log line."""
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [1]}]}, TWO_GPUS + "fail_init 9\n")
    assert out["opened"] is False and out["samples"] == []
    assert len(out["log"]) == 1 and "Driver Not Loaded" in out["log"][0][1]


def test_per_call_failure_omits_that_resource(fake_nvml, tmp_path):
    """A failing process listing in the stand-in NVML library (no GPU here) leaves gpu_memory
    out of the sample, without an exception; gpu still comes from per-process utilisation."""
    config = TWO_GPUS + f"process 0 100 {GiB} 35\nfail nvmlDeviceGetComputeRunningProcesses_v3 999\n"
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [100]}, {"sample": [100]}]}, config)
    assert out["samples"] == [{"gpu": pytest.approx(0.35)}] * 2
    assert len(warnings_of(out)) == 1

    # Per-process utilisation failing as well: whether the workload uses a GPU is unknown, so gpu
    # is left out too.
    config += "fail nvmlDeviceGetProcessUtilization 999\n"
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [100]}]}, config)
    assert out["samples"] == [{}]


def test_no_library_gives_none(tmp_path):
    """No libnvidia-ml.so.1 at all (as on this machine, which has no GPU and gets no stand-in
    NVML library in this test): open() returns None with one log line."""
    empty = tmp_path / "no-library-here"
    empty.mkdir()
    # Asked in a fresh process: this one may hold the stand-in, whose soname would answer.
    probe = subprocess.run(
        [sys.executable, "-c", "import ctypes; ctypes.CDLL('libnvidia-ml.so.1')"],
        env={**os.environ, "LD_LIBRARY_PATH": str(empty)}, capture_output=True,
    )
    if probe.returncode == 0:
        pytest.skip("a real libnvidia-ml.so.1 (an NVIDIA driver) is installed on this machine")
    out = run_sampler(None, tmp_path, {"steps": [{"sample": [1]}]}, "")
    assert out["opened"] is False and out["samples"] == []
    assert len(out["log"]) == 1 and "NVML Shared Library Not Found" in out["log"][0][1], out["log"]


# -- the sidecar's reader: the workload container's GPUs ------------------------------------------

#: The monitor sidecar's own environment in a GPU pod (operators/kubernetes.monitor_gpu_env).
MONITOR_SEES_ALL = {"NVIDIA_VISIBLE_DEVICES": "all", "NVIDIA_DRIVER_CAPABILITIES": "utility"}


def sleeper(env_value: str | bytes | None):
    """A real workload process whose NVIDIA_VISIBLE_DEVICES is ``env_value`` (None: unset), once
    its /proc/<pid>/environ is readable."""
    env = {k.encode(): v.encode() for k, v in os.environ.items() if k != "NVIDIA_VISIBLE_DEVICES"}
    if env_value is not None:
        env[b"NVIDIA_VISIBLE_DEVICES"] = env_value if isinstance(env_value, bytes) else env_value.encode()
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and b"PATH=" not in Path(f"/proc/{p.pid}/environ").read_bytes():
        time.sleep(0.01)
    return p


def fake_proc(tmp_path: Path, pid: int, environ: bytes, dev: list[str] = (), mounts: list[str] | None = None) -> Path:
    """A stand-in /proc holding one workload process: its environ, the device nodes of its /dev
    and the entries of its volume-mounts directory (files: only their names are read)."""
    proc = tmp_path / "proc"
    root = proc / str(pid) / "root"
    (root / "dev").mkdir(parents=True)
    (proc / str(pid) / "environ").write_bytes(environ)
    for name in dev:
        (root / "dev" / name).touch()
    if mounts is not None:
        where = root / "var" / "run" / "nvidia-container-devices"
        where.mkdir(parents=True)
        for name in mounts:
            (where / name).touch()
    return proc


def test_sidecar_samples_only_the_gpus_in_the_workload_environ(fake_nvml, tmp_path):
    """The sidecar's reader against the stand-in NVML library (no GPU here): the monitor sees every
    GPU of the node (NVIDIA_VISIBLE_DEVICES=all), the workload, a real process, holds the device
    plugin's NVIDIA_VISIBLE_DEVICES=GPU-bbbb-1111; only that GPU is sampled, whatever host PIDs use it."""
    workload = sleeper("GPU-bbbb-1111")
    try:
        config = TWO_GPUS + f"process 1 31337 {5 * GiB} 60\nprocess 0 31338 {GiB} 10\n"
        plan = {"workload_pid": workload.pid, "steps": [{"sample": [workload.pid]}, {"sample": []}]}
        out = run_sampler(fake_nvml, tmp_path, plan, config, MONITOR_SEES_ALL)
    finally:
        workload.kill()
        workload.wait()
    assert out["opened"] and out["devices"] == ["GPU-bbbb-1111"]
    assert out["samples"] == [{"gpu": 0.90, "gpu_memory": 50 * GiB}] * 2
    assert warnings_of(out) == []
    assert any("GPU-bbbb-1111 (from NVIDIA_VISIBLE_DEVICES)" in m for _, m in out["log"])


@pytest.mark.parametrize("environ,dev,mounts,minor_line,expected", [
    # the device plugin's volume-mounts strategy: the devices are the directory's entries
    (b"NVIDIA_VISIBLE_DEVICES=/var/run/nvidia-container-devices", ["nvidia0"], ["GPU-aaaa-0000"], "", ["GPU-aaaa-0000"]),
    # CDI: the variable is void; the container's device node says which GPU (minor 1 = device 1)
    (b"NVIDIA_VISIBLE_DEVICES=void", ["nvidiactl", "nvidia-uvm", "nvidia1"], None, "", ["GPU-bbbb-1111"]),
    # no variable at all (GKE): the device node, whose minor number is not the index here
    (b"HOME=/root", ["nvidia7", "nvidia-modeset"], None, "minor 1 7\n", ["GPU-bbbb-1111"]),
    # both GPUs named, only one device node in the container: the other is not the workload's
    (b"NVIDIA_VISIBLE_DEVICES=GPU-aaaa-0000,GPU-bbbb-1111", ["nvidia1"], None, "", ["GPU-bbbb-1111"]),
    # "all" in a container that holds one device node
    (b"NVIDIA_VISIBLE_DEVICES=all", ["nvidia0"], None, "", ["GPU-aaaa-0000"]),
])
def test_sidecar_finds_the_workload_gpus_from_mounts_and_device_nodes(fake_nvml, tmp_path, environ, dev, mounts,
                                                                       minor_line, expected):
    """The sidecar's reader against the stand-in NVML library (no GPU here) and a stand-in /proc
    (device nodes cannot be made here): each way a container is given GPUs leads to those GPUs."""
    proc = fake_proc(tmp_path, 4242, b"PATH=/usr/bin\0" + environ + b"\0", dev, mounts)
    out = run_sampler(fake_nvml, tmp_path, {"workload_pid": 4242, "proc": str(proc), "steps": [{"sample": []}]},
                      TWO_GPUS + minor_line, MONITOR_SEES_ALL)
    assert out["opened"], out["log"]
    assert out["devices"] == expected
    assert len(out["samples"]) == 1 and set(out["samples"][0]) == {"gpu", "gpu_memory"}


def test_sidecar_names_by_index_only_when_it_sees_every_gpu(fake_nvml, tmp_path):
    """Against the stand-in NVML library (no GPU here): a host index in the workload's variable
    (the device plugin's DEVICE_ID_STRATEGY=index) is the monitor's index only when the monitor
    sees every GPU of the node; otherwise that is said and nothing is sampled."""
    workload = sleeper("1")
    try:
        plan = {"workload_pid": workload.pid, "steps": [{"sample": []}]}
        seen = run_sampler(fake_nvml, tmp_path, plan, TWO_GPUS, MONITOR_SEES_ALL)
        blind = run_sampler(fake_nvml, tmp_path, plan, TWO_GPUS, {"NVIDIA_VISIBLE_DEVICES": "GPU-aaaa-0000"})
    finally:
        workload.kill()
        workload.wait()
    assert seen["devices"] == ["GPU-bbbb-1111"] and seen["samples"] == [{"gpu": 0.90, "gpu_memory": 50 * GiB}]
    assert blind["opened"] is False and blind["samples"] == []
    assert any("host index" in m for m in warnings_of(blind))


def test_sidecar_that_cannot_see_the_workload_gpus_records_nothing(fake_nvml, tmp_path):
    """Against the stand-in NVML library (no GPU here): the workload's GPU is not among those this
    monitor sees (the runtime did not give it the node's GPUs) -> no sampler, no zeros, and the
    log says what the pod needs. Without any NVML library: the same, with NVML's reason."""
    workload = sleeper("GPU-cccc-2222")
    try:
        plan = {"workload_pid": workload.pid, "steps": [{"sample": []}]}
        unseen = run_sampler(fake_nvml, tmp_path, plan, TWO_GPUS, MONITOR_SEES_ALL)
        no_nvml = run_sampler(None, tmp_path, plan, "", MONITOR_SEES_ALL)
    finally:
        workload.kill()
        workload.wait()
    for out in (unseen, no_nvml):
        assert out["opened"] is False and out["samples"] == []
        assert any("README 'GPU monitoring'" in m for m in warnings_of(out)), out["log"]
    assert any("none of the workload's GPUs (GPU-cccc-2222" in m for m in warnings_of(unseen))
    assert any("NVML cannot be initialised" in m for _, m in no_nvml["log"])


@pytest.mark.parametrize("value", [
    "GPU-aaaa-0000;touch /tmp/x",  # not a device list
    "GPU-aaaa-0000,,GPU-bbbb-1111",  # an empty entry
    "MIG-GPU-aaaa-0000/1/0",  # a MIG instance: device counters are the whole GPU's
    "all,GPU-aaaa-0000",
    "GPU-" + "a" * 5000,  # longer than any device list
    b"GPU-aaaa-\xff\xfe",  # not ASCII
    ",".join(f"GPU-{i:04x}" for i in range(100)),  # more devices than a node has
])
def test_a_malformed_visible_devices_is_one_log_line_not_a_crash(fake_nvml, tmp_path, value):
    """Against the stand-in NVML library (no GPU here): whatever a workload (a real process) put in
    its NVIDIA_VISIBLE_DEVICES, the monitor's reader answers with one warning and no sampler."""
    workload = sleeper(value)
    try:
        out = run_sampler(fake_nvml, tmp_path, {"workload_pid": workload.pid, "steps": [{"sample": []}]},
                          TWO_GPUS, MONITOR_SEES_ALL)
    finally:
        workload.kill()
        workload.wait()
    assert out["opened"] is False and out["samples"] == []
    assert len(warnings_of(out)) == 1 and "malformed" in warnings_of(out)[0], out["log"]


def test_a_variable_set_twice_with_two_values_is_refused(tmp_path):
    """A re-exec'ed workload can carry NVIDIA_VISIBLE_DEVICES twice; which one the runtime acted on
    cannot be told, so neither is believed (no NVML needed: refused before NVML is asked)."""
    from airflow_adaptive.runtime.gpu import workload_gpu_reader

    environ = b"NVIDIA_VISIBLE_DEVICES=GPU-aaaa-0000\0NVIDIA_VISIBLE_DEVICES=GPU-bbbb-1111\0"
    assert workload_gpu_reader(4242, str(fake_proc(tmp_path, 4242, environ))) is None


# -- PID mode: NVML's PIDs from another PID namespace --------------------------------------------


def test_pid_mode_leaves_gpus_out_when_nvml_pids_are_not_in_this_namespace(fake_nvml, tmp_path):
    """Against the stand-in NVML library (no GPU here): NVML lists only PIDs that do not exist in
    this PID namespace (as host PIDs look from inside a container), so the workload's use cannot
    be told: no gpu/gpu_memory (not 0), said once after a few samples. Once a listed PID exists
    here (PID 1), the namespace is known to be the host's and 0 is reported."""
    foreign = TWO_GPUS + f"process 0 4100000 {GiB} 50\nprocess 1 4100001 {GiB} 30\n"
    ours = foreign + f"process 1 1 {GiB} 5\n"
    plan = {"steps": [{"sample": [4242]}] * 4 + [{"config": ours}, {"sample": [4242]}, {"config": foreign},
                                                   {"sample": [4242]}]}
    out = run_sampler(fake_nvml, tmp_path, plan, foreign)
    assert out["samples"][:4] == [{}] * 4
    assert out["samples"][4:] == [{"gpu": 0.0, "gpu_memory": 0.0}] * 2
    assert len(warnings_of(out)) == 1 and "PID namespace" in warnings_of(out)[0]
    # Nothing on the GPUs at all: 0 is true in any namespace.
    out = run_sampler(fake_nvml, tmp_path, {"steps": [{"sample": [4242]}]}, TWO_GPUS)
    assert out["samples"] == [{"gpu": 0.0, "gpu_memory": 0.0}]


# -- the sidecar end to end: `airflow-adaptive monitor` beside a GPU workload ----------------------


def test_monitor_sidecar_reports_the_workload_gpu_usage_the_operator_accepts(fake_nvml, tmp_path):
    """``airflow-adaptive monitor`` (the sidecar's main) beside a real workload process holding
    NVIDIA_VISIBLE_DEVICES=GPU-bbbb-1111, against the stand-in NVML library (no GPU here) that
    shows two GPUs: its usage lines carry that GPU's use only, its summary the peaks, and the
    operator's reading of the monitor's log (MonitorLines) accepts them all."""
    from airflow_adaptive.domain.monitor_protocol import SummaryLine, parse_line
    from airflow_adaptive.logic.monitor_trust import MonitorLines

    config = tmp_path / "nvml.conf"
    config.write_text(TWO_GPUS + f"process 1 31337 {5 * GiB} 60\n")
    workload = sleeper("GPU-bbbb-1111")
    env = {k: v for k, v in os.environ.items() if k not in ("AIRFLOW_ADAPTIVE_NVML", "NVIDIA_VISIBLE_DEVICES")}
    env.update(MONITOR_SEES_ALL, LD_LIBRARY_PATH=str(fake_nvml), FAKE_NVML_CONFIG=str(config),
               AIRFLOW_ADAPTIVE_INTERVAL="0.2")
    monitor = subprocess.Popen([sys.executable, "-m", "airflow_adaptive.cli.main", "-v", "monitor", "--cpu", "1",
                                "--memory", "1Gi", "--target-pid", str(workload.pid), "--channel", "stdout"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        time.sleep(2.0)
        workload.kill()
        workload.wait()
        stdout, stderr = monitor.communicate(timeout=30)
    finally:
        workload.kill()
        monitor.kill()
    assert monitor.returncode == 0, stderr
    follower = MonitorLines()
    for line in stdout.splitlines():
        follower.read(line, time.time())
    assert not follower.rejected, (follower.notes, stdout)
    usage = [u.sample.values for u in follower.samples]
    gpu = [v for v in usage if "gpu" in v]
    assert gpu and len(gpu) == len(usage), stdout
    assert {v["gpu"] for v in gpu} == {0.90} and {v["gpu_memory"] for v in gpu} == {50 * GiB}
    (summary,) = [m for m in map(parse_line, stdout.splitlines()) if isinstance(m, SummaryLine)]
    assert summary.peak["gpu_memory"] == 50 * GiB and summary.peak["gpu"] == pytest.approx(0.90)
    assert "GPU-bbbb-1111" in stderr and "Traceback" not in stderr

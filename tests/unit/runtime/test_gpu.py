"""The GPU reader each monitor gets, where no NVML is asked (switched off, or nothing to read)."""

from __future__ import annotations

import logging

from airflow_adaptive.runtime import gpu
from airflow_adaptive.runtime.local_runner import AUTO, LocalRunner, RunSpec


def test_switched_off_asks_no_nvml(monkeypatch):
    monkeypatch.setenv(gpu.NVML_SWITCH, "0")
    monkeypatch.setattr("airflow_adaptive.adapters.nvml.sampler.NvmlSampler.open",
                        classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(AssertionError("NVML asked"))))
    assert gpu.local_gpu_reader() is None
    assert gpu.workload_gpu_reader(1) is None


def test_a_workload_without_gpus_asks_no_nvml(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv(gpu.NVML_SWITCH, raising=False)
    monkeypatch.setattr("airflow_adaptive.adapters.nvml.sampler.NvmlSampler.open",
                        classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(AssertionError("NVML asked"))))
    (tmp_path / "5" / "root" / "dev").mkdir(parents=True)
    (tmp_path / "5" / "environ").write_bytes(b"NVIDIA_VISIBLE_DEVICES=GPU-1,$(id)\0")
    with caplog.at_level(logging.INFO):
        assert gpu.workload_gpu_reader(5, str(tmp_path)) is None
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_close_reader_never_raises():
    class Broken:
        def close(self):
            raise RuntimeError("NVML_ERROR_UNINITIALIZED")

    gpu.close_reader(Broken())
    gpu.close_reader(None)
    gpu.close_reader(lambda pids: {})


def test_local_runner_opens_its_own_reader_by_default_and_closes_it(monkeypatch):
    """``gpu=AUTO`` (the default): the runner opens the reader when it runs and closes it after,
    also when the run fails; a reader passed in stays the caller's."""
    events = []

    class Reader:
        def __call__(self, pids):
            return {}

        def close(self):
            events.append("closed")

    monkeypatch.setattr("airflow_adaptive.runtime.local_runner.local_gpu_reader", lambda: events.append("opened") or Reader())

    def fail(self):
        events.append("ran with " + type(self.gpu).__name__)
        raise RuntimeError("the run failed")

    monkeypatch.setattr(LocalRunner, "_make_cgroup", fail)
    runner = LocalRunner(RunSpec(command=["true"], cpu=1, memory=2**26))
    assert runner.gpu == AUTO
    try:
        runner.run()
    except RuntimeError:
        pass
    assert events == ["opened", "ran with Reader", "closed"]

    events.clear()
    mine = Reader()
    try:
        LocalRunner(RunSpec(command=["true"], cpu=1, memory=2**26), gpu=mine).run()
    except RuntimeError:
        pass
    assert events == ["ran with Reader"]  # neither opened nor closed by the runner

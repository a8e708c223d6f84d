"""airflow-adaptive's metrics reach a real StatsD listener through Airflow's own metrics.

Real Airflow (``airflow dags test``, SQLite metadata database) configured by environment to send
StatsD (``[metrics] statsd_on``, InfluxDB-style tags so the tags are on the wire) to a UDP socket
this test binds; a real ``mlflow server`` with a champion; real cgroups under the local Resource
Manager. One stage sized from the champion is OOM-killed on its first try (in-place resizing
off, a workload bigger than its features say) and escalated on its retry, so one run shows the
decision, the prediction against what was observed, the profiler version, the sizing time, the
OOM kill and the escalation. Nothing is mocked."""

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
PREFIX = "airflow.airflow_adaptive."

DAG = '''
from datetime import timedelta
import pendulum
from airflow.sdk import DAG
from airflow_adaptive.operators import AdaptiveTrainingOperator

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False,
         default_args={{"retries": 1, "retry_delay": timedelta(seconds=0)}}) as dag:
    AdaptiveTrainingOperator(
        task_id="stage",
        cmds=["python", "-m", "airflow_adaptive.examples.workloads", "grow"],
        arguments=["--to-mib", "220", "--rate-mib-s", "400", "--hold-s", "0.3"],
        # The champion predicts ~140 MiB for 100 "rows"; the workload grows to 220 MiB.
        features={{"algorithm": "grow", "framework": "numpy", "data_rows": 100}},
        container_resources={{"requests": {{"cpu": "1", "memory": "64Mi"}}, "limits": {{"cpu": "1", "memory": "2Gi"}}}},
        in_place_resize=False,
        monitor_interval=0.25,
    )
'''


@pytest.fixture
def statsd_listener():
    """A UDP socket on 127.0.0.1 (a free port) and a thread collecting every StatsD line sent to it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    lines: list[str] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            lines.extend(data.decode(errors="replace").splitlines())  # statsd may pipeline lines

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield sock.getsockname()[1], lines
    finally:
        stop.set()
        reader.join(timeout=2)
        sock.close()


def parse(line: str) -> tuple[str, dict[str, str], float, str]:
    """``name,k=v,...:value|type`` -> (name, tags, value, type)."""
    head, _, rest = line.partition(":")
    value, _, kind = rest.partition("|")
    name, *pairs = head.split(",")
    return name, dict(p.split("=", 1) for p in pairs), float(value), kind.split("|")[0]


def test_a_sized_stage_emits_its_metrics_to_statsd(statsd_listener, airflow_home, tmp_path, private_mlflow_server,
                                                   grow_profiler, cgroups_available):
    port, lines = statsd_listener
    dag_id = "metrics_statsd"
    version = grow_profiler(private_mlflow_server, dag_id)
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(DAG.format(dag_id=dag_id))
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MLFLOW_TRACKING_URI": private_mlflow_server,
           "AIRFLOW_ADAPTIVE_HOME": str(tmp_path / "adaptive-home"), "AIRFLOW_ADAPTIVE_RUNNER": "local",
           "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
           "AIRFLOW__METRICS__STATSD_PORT": str(port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
           "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True"}
    done = subprocess.run([AIRFLOW, "dags", "test", dag_id, "-c", json.dumps({})], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "was OOM-killed" in log, log[-4000:]  # the first try's kill, so the retry escalates

    ours = [parse(line) for line in list(lines) if line.startswith(PREFIX)]
    assert ours, f"no airflow_adaptive metric among {len(lines)} StatsD lines: {lines[:20]}"
    stage = {"dag_id": dag_id, "task_id": "stage"}

    def named(suffix):
        return [(tags, value, kind) for name, tags, value, kind in ours if name == PREFIX + suffix]

    decisions = [(t["mode"], t["reason"]) for t, v, k in named("sizing.decision") if k == "c" and v == 1]
    assert decisions == [("adaptive", "predicted"), ("adaptive", "oom_escalation")], ours
    assert all({k: t[k] for k in stage} == stage for t, _, _ in named("sizing.decision"))
    assert named("oom.kill") == [({"kind": "kernel", **stage}, 1.0, "c")]
    assert named("oom.escalation") == [(stage, 1.0, "c")]
    assert named("profiler.version") == [({"model": "job-profiler"}, float(version), "g")] * 2
    durations = named("sizing.duration")
    assert len(durations) == 2 and all(k == "ms" and 0 < v < 60_000 and t["outcome"] == "predicted" for t, v, k in durations)
    ratios = [v for t, v, k in named("prediction.ratio.memory") if k == "g" and t == stage]
    # Both tries used more memory than the champion's upper for 100 rows: the kill at ~1.1 x upper, the retry ~1.5 x.
    assert len(ratios) == 2 and all(r > 1.0 for r in ratios), ratios
    # memory was under-predicted on both tries (by design); cpu may be too, on a busy machine
    under = [m for m in named("prediction.under") if m[0]["resource"] == "memory"]
    assert under == [({"resource": "memory", **stage}, 1.0, "c")] * 2

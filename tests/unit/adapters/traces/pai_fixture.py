"""Test helper: a tiny PAI trace (cluster-trace-gpu-v2020) in the published, headerless layout.

Rows are written in the exact column order of the trace's ``data/*.header`` files (``COLUMNS``
below is copied from them, not imported from the loader, so a loader bug cannot hide). Besides
``n_jobs`` random one-task jobs, every fixture holds:

* ``KNOWN_JOB``: a job with a 2-instance ``worker`` task (the README's example request: plan_cpu
  600, plan_mem 29.296875, plan_gpu 50) and a 1-instance CPU-only ``ps`` task;
* unusable tasks, excluded with the reasons in ``EXPECTED_EXCLUDED``;
* ``N_MALFORMED`` malformed lines (wrong field count, unparsable number);
* a 3-instance ``evaluator`` task of ``KNOWN_JOB`` whose network columns (``read``, ``write``:
  the README's "Bytes of network input/output", lifetime averages) hold the bad values of
  ``KNOWN_EVAL_NET``, counted as ``EXPECTED_NET_UNKNOWN`` (its rows are kept).

Every sensor row carries ``read``/``write``: the known tasks' from ``KNOWN_*_NET``, the random
jobs' drawn around ``GROUP_RX``/``GROUP_TX`` of their group (so a profiler has something to
learn), and ``read_count``/``write_count`` always.
"""

from __future__ import annotations

import random
from pathlib import Path

COLUMNS = {
    "pai_job_table": "job_name,inst_id,user,status,start_time,end_time",
    "pai_task_table": "job_name,task_name,inst_num,status,start_time,end_time,plan_cpu,plan_mem,plan_gpu,gpu_type",
    "pai_instance_table": "job_name,task_name,inst_name,worker_name,inst_id,status,start_time,end_time,machine",
    "pai_sensor_table": "job_name,task_name,worker_name,inst_id,machine,gpu_name,cpu_usage,gpu_wrk_util,"
    "avg_mem,max_mem,avg_gpu_wrk_mem,max_gpu_wrk_mem,read,write,read_count,write_count",
    "pai_group_tag_table": "inst_id,user,gpu_type_spec,group,workload",
    "pai_machine_spec": "machine,gpu_type,cap_cpu,cap_mem,cap_gpu",
}

KNOWN_JOB = "4f057009a5d481acec67b088"
KNOWN_USER = "58540f191766"
KNOWN_GROUP = "fbeb14d671c629b6e82bee889fe4bb4c"
KNOWN_START, KNOWN_END = 1739162.0, 1739200.0
#: The known worker's two instances: (cpu_usage, gpu_wrk_util, max_mem, max_gpu_wrk_mem).
KNOWN_WORKER_SENSORS = [(140.5, 16.0625, 2.3935546875, 2.3994140625), (420.0, 45.5, 1.5, 3.25)]
KNOWN_PS_SENSOR = (250.0, 4.0)  # cpu_usage, max_mem; no GPU fields
#: (read, write) per instance of the known worker, of the ps, and of the evaluator (raw fields).
KNOWN_WORKER_NET = [(21271328.384615384, 16376189.815384615), (35000000.0, 900000.5)]
KNOWN_PS_NET = [(0.0, 123456.75)]  # no input at all: a measured zero, not unknown
KNOWN_EVAL_NET = [("", "1500000.0"), ("-3.0", "12MB"), ("750000.0", "inf"), ("null", "-0.5")]
KNOWN_EVAL_SENSOR = (90.0, None, 1.0, None)
EXPECTED_NET_UNKNOWN = {
    "pai_sensor_table.read (network_rx) missing: taken as unknown, row kept": 2,
    "pai_sensor_table.read (network_rx) negative: taken as unknown, row kept": 1,
    "pai_sensor_table.write (network_tx) not a finite number: taken as unknown, row kept": 2,
    "pai_sensor_table.write (network_tx) negative: taken as unknown, row kept": 1,
}
#: Mean network input and output (bytes/s) of the random jobs of each group index (10x or more
#: apart, so a prediction that ignores the workload is far off); each instance
#: is drawn within +-10% of it. A job without a group tag uses index 0.
GROUP_RX = (2e5, 3e6, 4e7, 5e8)
GROUP_TX = (1e6, 1e4, 3e7, 1e5)

EXPECTED_EXCLUDED = {
    "task status Running, not Terminated": 2,
    "task status Failed, not Terminated": 1,
    "task has no end time (unfinished)": 1,
    "task has no sensor rows": 1,
}
N_MALFORMED = 4


def expected_kept(n_jobs: int) -> int:
    return n_jobs + 3  # the random one-task jobs and the known job's worker, ps and evaluator


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


class _Trace:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.rows: dict[str, list[str]] = {t: [] for t in COLUMNS}
        self.machines = [_hex(rng, 24) for _ in range(4)]

    def add(self, table: str, *fields: object) -> None:
        assert len(fields) == COLUMNS[table].count(",") + 1, (table, fields)
        self.rows[table].append(",".join("" if f is None else str(f) for f in fields))

    def job(self, job_name, user, status="Terminated", start=0.0, end=None, tag=None):
        inst_id = _hex(self.rng, 60)
        self.add("pai_job_table", job_name, inst_id, user, status, start, end)
        if tag is not None:  # (gpu_type_spec, group, workload)
            self.add("pai_group_tag_table", inst_id, user, *tag)
        return inst_id

    def task(self, job_name, inst_id, task_name, plan, status="Terminated", start=0.0, end=None, sensors=(),
             net=None):
        """plan = (plan_cpu, plan_mem, plan_gpu, gpu_type); one instance per sensor tuple;
        net = (read, write) per instance (default: the README's example values)."""
        inst_num = max(len(sensors), 1)
        net = [(2.1e7, 1.6e7)] * len(sensors) if net is None else net
        assert len(net) == len(sensors)
        self.add("pai_task_table", job_name, task_name, float(inst_num), status, start, end, *plan)
        for s, (read, write) in zip(sensors, net):
            worker, machine = _hex(self.rng, 60), self.rng.choice(self.machines)
            self.add("pai_instance_table", job_name, task_name, _hex(self.rng, 60), worker, inst_id,
                     status, start, end, machine)
            cpu, gpu, mem, gmem = s
            gpu_name = "/dev/nvidia0" if gpu is not None else None
            avg_gmem = None if gmem is None else gmem / 2
            self.add("pai_sensor_table", job_name, task_name, worker, inst_id, machine, gpu_name,
                     cpu, gpu, mem / 2, mem, avg_gmem, gmem, read, write, 2922.4, 3419.8)


def write_pai_fixture(directory: str | Path, n_jobs: int = 12, seed: int = 0) -> None:
    rng = random.Random(seed)
    t = _Trace(rng)
    users = [_hex(rng, 12) for _ in range(3)]
    groups = [_hex(rng, 32) for _ in range(4)]

    inst = t.job(KNOWN_JOB, KNOWN_USER, start=KNOWN_START - 5, end=KNOWN_END,
                 tag=("V100M32", KNOWN_GROUP, "bert"))
    t.task(KNOWN_JOB, inst, "worker", (600.0, 29.296875, 50.0, "MISC"), start=KNOWN_START,
           end=KNOWN_END, sensors=KNOWN_WORKER_SENSORS, net=KNOWN_WORKER_NET)
    cpu, mem = KNOWN_PS_SENSOR
    t.task(KNOWN_JOB, inst, "ps", (800.0, 10.0, 0.0, None), start=KNOWN_START, end=KNOWN_END,
           sensors=[(cpu, None, mem, None)], net=KNOWN_PS_NET)
    t.task(KNOWN_JOB, inst, "evaluator", (100.0, 2.0, 0.0, None), start=KNOWN_START, end=KNOWN_END,
           sensors=[KNOWN_EVAL_SENSOR] * len(KNOWN_EVAL_NET), net=KNOWN_EVAL_NET)

    for i in range(n_jobs):
        job, user = _hex(rng, 24), rng.choice(users)
        start = float(rng.randrange(0, 7 * 86400))
        end = start + rng.randrange(60, 36000)
        g = 0 if i % 5 == 4 else rng.randrange(len(groups))
        tag = None if i % 5 == 4 else ("", groups[g], rng.choice(["", "", "resnet", "ctr"]))
        inst = t.job(job, user, start=start, end=end, tag=tag)
        plan = (rng.choice([100.0, 400.0, 600.0]), rng.choice([4.0, 29.296875]),
                rng.choice([25.0, 50.0, 100.0]), rng.choice(["MISC", "T4", "V100"]))
        sensors = [(rng.uniform(10, 600), rng.uniform(0, 100), rng.uniform(0.5, 30), rng.uniform(0.1, 16))
                   for _ in range(rng.randint(1, 3))]
        net = [(GROUP_RX[g] * rng.uniform(0.9, 1.1), GROUP_TX[g] * rng.uniform(0.9, 1.1)) for _ in sensors]
        t.task(job, inst, rng.choice(["tensorflow", "worker", "PyTorchWorker"]), plan,
               start=start, end=end, sensors=sensors, net=net)

    # Unusable tasks, one reason each (see EXPECTED_EXCLUDED).
    plan, sensor = (600.0, 8.0, 100.0, "T4"), [(300.0, 50.0, 4.0, 2.0)]
    for status, end, sensors in [("Running", None, sensor), ("Running", None, ()),
                                 ("Failed", 9000.0, sensor), ("Terminated", 0.0, sensor),
                                 ("Terminated", 9000.0, ())]:
        job = _hex(rng, 24)
        inst = t.job(job, users[0], status=status, start=8000.0, end=end)
        t.task(job, inst, "worker", plan, status=status, start=8000.0, end=end, sensors=sensors)

    # Malformed lines (N_MALFORMED), for jobs that do not exist otherwise.
    bad = "deadbeef" * 3
    t.rows["pai_task_table"].insert(1, f"{bad},worker,1.0,Terminated,1.0,2.0,600.0,8.0,50.0,T4,EXTRA")
    t.rows["pai_task_table"].insert(3, f"{bad},ps,1.0,Terminated,1.0,2.0,6OO,8.0,50.0,T4")
    t.rows["pai_sensor_table"].append(f"{bad},worker,w,i,m,/dev/nvidia0,1.0,2.0,3.0")
    t.rows["pai_job_table"].insert(2, f"{bad},inst,user,Terminated,1.0")

    for m in t.machines:
        t.add("pai_machine_spec", m, rng.choice(["T4", "V100", "MISC"]), 96, 512, 8)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in t.rows.items():
        (directory / f"{name}.csv").write_text("".join(r + "\n" for r in rows))

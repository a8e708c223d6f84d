"""Test helper: a tiny PAI trace (cluster-trace-gpu-v2020) in the published, headerless layout.

Rows are written in the exact column order of the trace's ``data/*.header`` files (``COLUMNS``
below is copied from them, not imported from the loader, so a loader bug cannot hide). Besides
``n_jobs`` random one-task jobs, every fixture holds:

* ``KNOWN_JOB``: a job with a 2-instance ``worker`` task (the README's example request: plan_cpu
  600, plan_mem 29.296875, plan_gpu 50) and a 1-instance CPU-only ``ps`` task;
* unusable tasks, excluded with the reasons in ``EXPECTED_EXCLUDED``;
* ``N_MALFORMED`` malformed lines (wrong field count, unparsable number).
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

EXPECTED_EXCLUDED = {
    "task status Running, not Terminated": 2,
    "task status Failed, not Terminated": 1,
    "task has no end time (unfinished)": 1,
    "task has no sensor rows": 1,
}
N_MALFORMED = 4


def expected_kept(n_jobs: int) -> int:
    return n_jobs + 2  # the random one-task jobs and the known job's worker and ps


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

    def task(self, job_name, inst_id, task_name, plan, status="Terminated", start=0.0, end=None, sensors=()):
        """plan = (plan_cpu, plan_mem, plan_gpu, gpu_type); one instance per sensor tuple."""
        inst_num = max(len(sensors), 1)
        self.add("pai_task_table", job_name, task_name, float(inst_num), status, start, end, *plan)
        for s in sensors:
            worker, machine = _hex(self.rng, 60), self.rng.choice(self.machines)
            self.add("pai_instance_table", job_name, task_name, _hex(self.rng, 60), worker, inst_id,
                     status, start, end, machine)
            cpu, gpu, mem, gmem = s
            gpu_name = "/dev/nvidia0" if gpu is not None else None
            avg_gmem = None if gmem is None else gmem / 2
            self.add("pai_sensor_table", job_name, task_name, worker, inst_id, machine, gpu_name,
                     cpu, gpu, mem / 2, mem, avg_gmem, gmem, 2.1e7, 1.6e7, 2922.4, 3419.8)


def write_pai_fixture(directory: str | Path, n_jobs: int = 12, seed: int = 0) -> None:
    rng = random.Random(seed)
    t = _Trace(rng)
    users = [_hex(rng, 12) for _ in range(3)]
    groups = [_hex(rng, 32) for _ in range(4)]

    inst = t.job(KNOWN_JOB, KNOWN_USER, start=KNOWN_START - 5, end=KNOWN_END,
                 tag=("V100M32", KNOWN_GROUP, "bert"))
    t.task(KNOWN_JOB, inst, "worker", (600.0, 29.296875, 50.0, "MISC"), start=KNOWN_START,
           end=KNOWN_END, sensors=KNOWN_WORKER_SENSORS)
    cpu, mem = KNOWN_PS_SENSOR
    t.task(KNOWN_JOB, inst, "ps", (800.0, 10.0, 0.0, None), start=KNOWN_START, end=KNOWN_END,
           sensors=[(cpu, None, mem, None)])

    for i in range(n_jobs):
        job, user = _hex(rng, 24), rng.choice(users)
        start = float(rng.randrange(0, 7 * 86400))
        end = start + rng.randrange(60, 36000)
        tag = None if i % 5 == 4 else ("", rng.choice(groups), rng.choice(["", "", "resnet", "ctr"]))
        inst = t.job(job, user, start=start, end=end, tag=tag)
        plan = (rng.choice([100.0, 400.0, 600.0]), rng.choice([4.0, 29.296875]),
                rng.choice([25.0, 50.0, 100.0]), rng.choice(["MISC", "T4", "V100"]))
        sensors = [(rng.uniform(10, 600), rng.uniform(0, 100), rng.uniform(0.5, 30), rng.uniform(0.1, 16))
                   for _ in range(rng.randint(1, 3))]
        t.task(job, inst, rng.choice(["tensorflow", "worker", "PyTorchWorker"]), plan,
               start=start, end=end, sensors=sensors)

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

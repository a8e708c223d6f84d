"""``InlineExecutor``: run each task the way a worker does, one at a time, without an API server.

``DAG.test()`` (and ``airflow dags test``) runs a task inside its own process and writes no task
log file, so the Airflow UI shows nothing but "Could not read served logs" for it. A worker
(LocalExecutor, KubernetesExecutor) runs the task under Airflow's supervisor, which writes the
log to ``[logging] base_log_folder``, where the API server reads it. This executor does that
too: ``supervise_task`` in this process (the task itself in a forked child, as on a worker), its
Execution API calls served in-process, so neither an ``airflow api-server`` nor a token is needed.

Use it with ``DAG.test(use_executor=True)`` or ``airflow dags test --use-executor`` and
``AIRFLOW__CORE__EXECUTOR=airflow_adaptive.inline_executor.InlineExecutor``. Tasks run one after
another, all that are queued in one heartbeat (so a run's parallel tasks do not wait a loop turn
each); deferrable tasks need a triggerer, which this does not start.
"""

from __future__ import annotations

from functools import cached_property

from airflow.executors.base_executor import BaseExecutor

EXECUTOR = f"{__name__}.InlineExecutor"  # the value of [core] executor that selects it


class _NoTokens:
    """The in-process Execution API does not check tokens (it overrides its auth dependencies)."""

    def generate(self, *args, **kwargs) -> str:
        return ""


class InlineExecutor(BaseExecutor):
    is_local = True
    serve_logs = False  # the log is a local file: the API server reads it without a log server

    @cached_property
    def jwt_generator(self):
        return _NoTokens()

    @cached_property
    def _client(self):
        from airflow.api_fastapi.execution_api.app import InProcessExecutionAPI
        from airflow.sdk.api.client import Client

        api = InProcessExecutionAPI()  # what the triggerer and the DAG processor use, the same way
        client = Client(base_url=None, token="", dry_run=True, transport=api.transport)
        client.base_url = "http://in-process.invalid./"  # any URL: the transport never leaves the process
        return client

    def _process_workloads(self, workload_list) -> None:
        from airflow.executors.workloads import ExecuteTask
        from airflow.sdk.execution_time.supervisor import supervise_task
        from airflow.utils.state import TaskInstanceState

        for workload in workload_list:
            self.queued_tasks.pop(workload.key, None)
            if not isinstance(workload, ExecuteTask):
                raise TypeError(f"InlineExecutor runs tasks only, not {type(workload).__name__}")
            self.running.add(workload.key)
            try:
                code = supervise_task(ti=workload.ti, bundle_info=workload.bundle_info,
                                      dag_rel_path=workload.dag_rel_path, token="", client=self._client,
                                      log_path=workload.log_path)
            except Exception as exc:  # noqa: BLE001 - the task fails; the run goes on, as on a worker
                self.log.exception("task %s could not be supervised", workload.key)
                self.fail(workload.key, info=exc)
                continue
            self.change_state(workload.key, TaskInstanceState.SUCCESS if code == 0 else TaskInstanceState.FAILED)

    def end(self) -> None:
        self.sync()

    def terminate(self) -> None:
        """Nothing runs in the background."""

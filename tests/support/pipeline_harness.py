"""An in-process pipeline: the real workflow on Resonate's in-process server.

Databricks is replaced by :class:`FakeJobs`, which honours idempotency tokens
the way the Jobs API does, and the notifier by a function registered under
its name. Worker and gateway unit tests share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from resonate.testing import local_resonate
from resonate.types import Value

from pipeline_shared import names, promise_tree
from pipeline_shared.callbacks import settle_callback
from pipeline_shared.catalogue import Catalogue, Job
from pipeline_shared.models import (
    AttemptRecord,
    DatabricksRun,
    Notification,
    NotificationReceipt,
    PipelineSpec,
    RepairDecision,
    RunReport,
    Settlement,
    TaskOutcome,
)
from pipeline_worker.databricks import RepairMade, RunView
from pipeline_worker.run_states import verdict
from pipeline_worker.runner import run_pipeline as run_pipeline_code
from pipeline_worker.runner import run_pipeline_separate_watch
from pipeline_worker.steps import WorkerDeps, now_ms
from pipeline_worker.sweep import Watched, sweep_every_interval, watched_of
from pipeline_worker.watchdog import watch_databricks_run
from pipeline_worker.workflows import run_pipeline

SECRET = "unit-test-secret-unit-test-secret-000"
#: Signs the web page's session cookies in tests that run as a deployment.
UI_SECRET = "unit-test-ui-session-secret-unit-test-000"
#: Settings name a Resonate database; in-process tests run on the SDK\'s local server and never connect to it.
UNUSED_DATABASE_URL = "postgresql://unused@unused.invalid/resonate"
#: The repository's job catalogue: unit tests start the jobs users start.
CATALOGUE_FILE = Path(__file__).resolve().parents[2] / "infra" / "catalogue.toml"
CATALOGUE = Catalogue.load(CATALOGUE_FILE)


#: The Databricks job ids the fake workspace gives the catalogue's jobs found by name.
JOB_IDS = {name: 1001 + i for i, name in enumerate(CATALOGUE.jobs)}


def run_state(
    life_cycle: str, result: str | None = None, message: str = "", tasks: list[TaskOutcome] | None = None
) -> RunReport:
    """A run's state as the fake workspace reports it."""
    return RunReport(life_cycle_state=life_cycle, result_state=result, state_message=message, tasks=tasks or [])


class FakeJobs:
    """Databricks as the worker sees it: one run per idempotency token."""

    def __init__(self) -> None:
        self._ids = itertools.count(1000)
        self.runs_by_token: dict[str, DatabricksRun] = {}
        self.run_now_calls: list[dict[str, str]] = []
        self.run_now_jobs: list[int] = []
        self.cancelled: list[int] = []
        self.fail_next: list[Exception] = []
        self.states: dict[int, RunReport] = {}
        #: The exit value of each run's task (the report's only task, or the result task).
        self.outputs: dict[int, str] = {}
        #: Repairs made, per run: (attempt, job parameters), in order.
        self.repairs: dict[int, list[dict[str, str]]] = {}
        #: Raised by the next repair call, after the repair is made (a worker dying right after it).
        self.fail_after_repair: list[Exception] = []
        #: Raised by the next repair call instead of repairing.
        self.refuse_repair: list[Exception] = []
        #: active_run_ids calls made, and what the next ones raise instead of listing.
        self.list_calls = 0
        self.fail_next_list: list[Exception] = []
        self.started = asyncio.Event()
        #: The runs read, in order.
        self.reads: list[int] = []
        #: Runs inside run_now, after the run exists: a notebook that calls
        #: back before run_now has even returned.
        self.on_run_now: Callable[[dict[str, str]], Awaitable[None]] | None = None

    async def job_id(self, job: Job) -> int:
        return job.databricks_job_id or JOB_IDS[job.name]

    def forget_job(self, job: Job) -> None:
        pass

    async def run_now(self, job_id: int, job_parameters: dict[str, str], idempotency_token: str) -> DatabricksRun:
        self.run_now_calls.append(job_parameters)
        self.run_now_jobs.append(job_id)
        if self.fail_next:
            raise self.fail_next.pop(0)
        if idempotency_token not in self.runs_by_token:
            run_id = next(self._ids)
            self.runs_by_token[idempotency_token] = DatabricksRun(
                run_id=run_id, run_page_url=f"http://databricks.test/#job/{job_id}/run/{run_id}", job_id=job_id
            )
            self.states[run_id] = run_state("RUNNING")
        self.started.set()
        if self.on_run_now is not None:
            await self.on_run_now(job_parameters)
        return self.runs_by_token[idempotency_token]

    async def active_run_ids(self, job_id: int | None = None) -> set[int]:
        """The runs (of ``job_id``, or every job) whose state is not terminal, by the worker's own rule."""
        self.list_calls += 1
        if self.fail_next_list:
            raise self.fail_next_list.pop(0)
        jobs = {run.run_id: run.job_id for run in self.runs_by_token.values()}
        return {
            run_id
            for run_id, report in self.states.items()
            if (job_id is None or jobs.get(run_id) == job_id)
            and not verdict(report.life_cycle_state, report.result_state).terminal
        }

    async def read_run(self, run_id: int, *, result_task: str | None = None, output_budget: int) -> RunView:
        self.reads.append(run_id)
        report = self.states[run_id]
        meaning = verdict(report.life_cycle_state, report.result_state)
        if meaning.terminal and not report.tasks and run_id in self.outputs:
            task = TaskOutcome(
                task_key=result_task or "pipeline",
                run_id=run_id + 1,
                life_cycle_state="TERMINATED",
                result_state=report.result_state,
                exit_value=self.outputs[run_id],
            )
            report = report.model_copy(update={"tasks": [task]})
        return RunView(verdict=meaning, report=report)

    async def repair(self, run_id: int, *, attempt: int, job_parameters: dict[str, str]) -> RepairMade:
        if self.refuse_repair:
            raise self.refuse_repair.pop(0)
        made = self.repairs.setdefault(run_id, [])
        failed = [t.task_key for t in self.states[run_id].tasks if t.result_state != "SUCCESS"] or ["pipeline"]
        if len(made) >= attempt:  # the history already holds it: adopt, as the real client does
            return RepairMade(repair_id=run_id * 100 + attempt, rerun_tasks=failed, adopted=True)
        made.append(job_parameters)
        self.states[run_id] = run_state("RUNNING")
        self.outputs.pop(run_id, None)
        if self.fail_after_repair:
            raise self.fail_after_repair.pop(0)
        return RepairMade(repair_id=run_id * 100 + attempt, rerun_tasks=failed, adopted=False)

    async def cancel(self, run_id: int) -> None:
        self.cancelled.append(run_id)
        self.states[run_id] = run_state("TERMINATED", "CANCELED", "cancelled by the worker")


class LocalWatchedRuns:
    """The watch records of the in-process server, listed as ``pipelines.watched_runs`` lists them in resonate-pg."""

    def __init__(self, resonate: Any) -> None:
        self._resonate = resonate
        self._claimed: set[int] = set()
        #: Sweeps claimed, for the tests: one per interval.
        self.claims = 0

    async def claim(self, interval_start_ms: int) -> bool:
        if interval_start_ms in self._claimed:
            return False
        self._claimed.add(interval_start_ms)
        self.claims += 1
        return True

    async def after(self, record_id: str, page: int) -> list[Watched]:
        server = self._resonate._network.state  # the in-process server's tables
        ids = sorted(p.id for p in server.promises.values() if promise_tree.WATCH_TAG in p.tags and p.id > record_id)
        listed: list[Watched] = []
        for promise_id in ids:
            record = await self._resonate.promises.get(promise_id)
            if record.state != "pending":
                continue
            try:
                callback_state = (await self._resonate.promises.get(record.tags[promise_tree.WATCH_TAG])).state
            except Exception:
                callback_state = "missing"
            watched = watched_of(record, callback_state)
            if watched is not None:
                listed.append(watched)
            if len(listed) == page:
                break
        return listed


class Harness:
    def __init__(
        self, watchdog_interval: float = 3600.0, *, autostart: bool = True, catalogue: Catalogue = CATALOGUE
    ) -> None:
        self.jobs = FakeJobs()
        self.notifications: list[Notification] = []
        self.notifier_failure: Exception | None = None
        #: The notifier's own function, where a test runs it (over an SMTP sink) instead of the double.
        self.real_notifier: Callable[[Any, Notification], Awaitable[NotificationReceipt]] | None = None
        self.resonate = local_resonate(autostart=False)
        self.deps = WorkerDeps(
            databricks=self.jobs,  # type: ignore[arg-type]
            promises=self.resonate.promises,
            catalogue=catalogue,
            signing_secret=SECRET,
            callback_url="http://api.test/callbacks/databricks",
            idempotency_namespace="unit",
            watchdog_interval_seconds=watchdog_interval,
        )
        self.resonate.with_dependency(self.deps)
        self.resonate.register(run_pipeline, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_ONE_JOB_VERSION)
        self.resonate.register(
            run_pipeline_separate_watch, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_SEPARATE_WATCH_VERSION
        )
        self.resonate.register(run_pipeline_code, name=names.RUN_PIPELINE, version=names.RUN_PIPELINE_VERSION)
        self.resonate.register(watch_databricks_run, name=names.WATCH_DATABRICKS_RUN)

        async def send_pipeline_email(ctx: Any, notification: Notification) -> NotificationReceipt:
            if self.notifier_failure is not None:
                raise self.notifier_failure
            if self.real_notifier is not None:
                return await self.real_notifier(ctx, notification)
            self.notifications.append(notification)
            number = len(self.notifications) - 1  # this one is already listed
            return NotificationReceipt(delivered=True, message_id=f"<{notification.pipeline_id}.{number}@test>")

        self.resonate.register(send_pipeline_email, name=names.SEND_PIPELINE_EMAIL)
        self.watched = LocalWatchedRuns(self.resonate)
        self._sweeping: asyncio.Task[None] | None = None
        if autostart:
            self.resonate.start()
            # The watchdog's sweep, as each worker runs it beside Resonate; only where a test watches runs.
            if watchdog_interval < 60:
                self._sweeping = asyncio.create_task(sweep_every_interval(self.deps, self.watched))

    async def stop(self) -> None:
        """Stop the sweep and the in-process worker."""
        if self._sweeping is not None:
            self._sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeping
        await self.resonate.stop()

    def start(self, **overrides: Any) -> tuple[PipelineSpec, Any]:
        spec = PipelineSpec(
            **{
                "id": f"p-{uuid.uuid4().hex[:12]}",
                "email": "user@example.com",
                "parameters": {"source": "/Workspace/Shared/pipelines/sample.csv"},
                "timeout_seconds": 600,
                **overrides,
            }
        )
        return spec, self.resonate.run(spec.id, run_pipeline, spec)

    def start_code(
        self,
        job: str,
        lifetime: timedelta = timedelta(days=90),
        runner_version: int = names.RUN_PIPELINE_VERSION,
        **overrides: Any,
    ) -> tuple[PipelineSpec, Any]:
        """Start catalogue entry ``job`` as the gateway starts a pipeline today: its function, at its version.

        ``runner_version``: the runner's Resonate version (an older one: as a pipeline in flight started it).
        """
        spec = PipelineSpec(
            **{
                "id": f"p-{uuid.uuid4().hex[:12]}",
                "email": "user@example.com",
                "parameters": {},
                "timeout_seconds": 600,
                "job": job,
                "version": 1,
                **overrides,
            }
        )
        # ``lifetime``: the root's own timeout, which the gateway sets (room for every step and gate).
        resonate = self.resonate.options(version=runner_version, timeout=lifetime)
        handle = resonate.run(spec.id, names.RUN_PIPELINE, spec)
        return spec, handle

    async def wait_for_step_run(self, pipeline_id: str, step: str) -> DatabricksRun:
        """The run of job step ``step``, once its trigger recorded it."""
        return await self.wait_for_run_of(promise_tree.step_base(pipeline_id, step))

    async def wait_for_run(self, spec: PipelineSpec) -> DatabricksRun:
        return await self.wait_for_run_of(spec.id)

    async def wait_for_run_of(self, pipeline_id: str) -> DatabricksRun:
        async with asyncio.timeout(5):
            while True:
                record = await self.promises_get(promise_tree.trigger_step_id(pipeline_id))
                if record is not None and record.state == "resolved":
                    return DatabricksRun.model_validate(record.value.data["run"])
                await asyncio.sleep(0.01)

    def promise_ids(self, pipeline_id: str) -> list[str]:
        """The ids of every promise of the pipeline the in-process server holds."""
        server = self.resonate._network.state  # the in-process server's tables
        return [p.id for p in server.promises.values() if p.tags.get("resonate:origin") == pipeline_id]

    async def promises_get(self, promise_id: str) -> Any:
        try:
            return await self.resonate.promises.get(promise_id)
        except Exception:
            return None

    async def settle(self, spec: PipelineSpec, promise_id: str | None = None, **fields: Any) -> None:
        await self.settle_id(spec.id, promise_id, **fields)

    async def settle_id(self, pipeline_id: str, promise_id: str | None = None, **fields: Any) -> None:
        settlement = Settlement(**{"source": "callback", "received_at": now_ms(), **fields})
        promise_id = promise_id or promise_tree.callback_promise_id(pipeline_id)
        result = await settle_callback(self.resonate.promises, promise_id, settlement)
        assert result.accepted(settlement)

    async def settle_step(self, pipeline_id: str, step: str, **fields: Any) -> None:
        """Settle the current callback of job step ``step`` of a pipeline run by its code."""
        await self.settle_id(promise_tree.step_base(pipeline_id, step), **fields)

    async def wait_for_record(self, promise_id: str) -> AttemptRecord:
        """An attempt's record (``{id}:awaitN`` or ``{id}:attemptN``), once the workflow has written it."""
        return AttemptRecord.model_validate((await self.wait_for_promise(promise_id)).param.data)

    async def wait_for_promise(self, promise_id: str, *, settled: bool = False) -> Any:
        """The promise, once it exists (and, with ``settled``, once it is no longer pending)."""
        async with asyncio.timeout(5):
            while (record := await self.promises_get(promise_id)) is None or (settled and record.state == "pending"):
                await asyncio.sleep(0.01)
        return record

    async def decide(self, spec: PipelineSpec, attempt: int, action: str, **fields: Any) -> None:
        """Repair or abandon a pipeline awaiting repair before ``attempt``, as the gateway does."""
        record = await self.wait_for_record(promise_tree.repair_window_id(spec.id, attempt))
        decision = RepairDecision(action=action, by="key:tester", decided_at=now_ms(), **fields)
        assert record.decision_promise_id is not None
        await self.resonate.promises.resolve(record.decision_promise_id, Value(data=decision))

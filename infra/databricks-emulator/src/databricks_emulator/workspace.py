"""The emulated workspace: the bundle's jobs, their runs, and the calls that change them.

It holds every job (from the bundle), every job run and task run by id,
idempotency tokens, fault plans, each job's concurrency slots and the
notifier, and it owns every run's driver task (see ``driver`` for the life
of a run). Waiting costs no process: a run gets one per notebook task only
when that task starts RUNNING, so hundreds of delayed runs cost a few
kilobytes each.

All state changes happen on the event loop, and run-now's check-and-create of
an idempotency token has no ``await`` in it, so concurrent identical requests
can never create two runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from pathlib import Path

from databricks_emulator.bundle import Bundle
from databricks_emulator.driver import Driver, Outcome, kill_group, outcome_of
from databricks_emulator.errors import ApiError, invalid_parameter, job_not_found, run_not_found
from databricks_emulator.faults import FaultRegistry, WorkspaceCalls
from databricks_emulator.jobspec import MAX_IDEMPOTENCY_TOKEN_CHARS, JobSpec
from databricks_emulator.notifications import Notifier
from databricks_emulator.runs import JobRun, LifeCycle, Repair, TaskRun, now_ms
from databricks_emulator.settings import Settings

log = logging.getLogger("databricks_emulator")


class Workspace:
    """Jobs, runs by id, idempotency tokens, fault plans; owns every run's driver task."""

    def __init__(self, settings: Settings, run_root: Path, bundle: Bundle, notifier: Notifier) -> None:
        self.settings = settings
        self.run_root = run_root
        #: The folder standing for the drivers' /Volumes/, shared by every run.
        self.volumes = settings.VOLUMES_DIR or run_root / "Volumes"
        self.volumes.mkdir(parents=True, exist_ok=True)
        self.bundle = bundle
        self.jobs: dict[int, JobSpec] = {job.job_id: job for job in bundle.jobs}
        self.notifier = notifier
        self.runs: dict[int, JobRun] = {}
        self._task_runs: dict[int, TaskRun] = {}
        self._by_token: dict[str, JobRun] = {}
        self._newest_first: list[JobRun] = []
        self._drivers: dict[int, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots: dict[int, asyncio.Semaphore] = {}
        self.faults = FaultRegistry()
        self.calls = WorkspaceCalls()
        self.driver = Driver(self)
        # Run ids from the clock, so ids from an emulator that restarted never
        # repeat ones a client may still hold; like real ids, they are large.
        self._ids = itertools.count(time.time_ns() // 1000)

    # -- jobs ----------------------------------------------------------------------------------

    def job(self, job_id: object) -> JobSpec:
        job = self.jobs.get(job_id) if isinstance(job_id, int) else None
        if job is None:
            raise job_not_found(job_id)
        return job

    def max_concurrent_runs(self, job: JobSpec) -> int:
        """The job's own limit, unless DATABRICKS_EMULATOR_MAX_CONCURRENT_RUNS overrides every job's."""
        override = self.settings.MAX_CONCURRENT_RUNS
        return job.max_concurrent_runs if override is None else override

    def timeout_seconds(self, job: JobSpec) -> int:
        override = self.settings.RUN_TIMEOUT_SECONDS
        return job.timeout_seconds if override is None else int(override)

    def slot(self, job: JobSpec) -> asyncio.Semaphore:
        """The job's concurrency slots: one per run that may be active at once."""
        if job.job_id not in self._slots:
            self._slots[job.job_id] = asyncio.Semaphore(self.max_concurrent_runs(job))
        return self._slots[job.job_id]

    # -- lookups -------------------------------------------------------------------------------

    def any_run(self, run_id: int) -> JobRun | TaskRun:
        run = self.runs.get(run_id) or self._task_runs.get(run_id)
        if run is None:
            raise run_not_found(run_id)
        return run

    def count_run_read(self, run: JobRun | TaskRun) -> None:
        """Count a runs/get of ``run``, workspace-wide and for its pipeline."""
        job_run = run if isinstance(run, JobRun) else run.job_run
        self.calls.runs_get += 1
        self.faults.counters_for(job_run.pipeline_id).runs_get_calls += 1

    @staticmethod
    def order_key(run: JobRun) -> tuple[int, int]:
        """Where a run sits in ``runs_newest_first``: later start first, then the larger (later) run id."""
        return -run.start_time, -run.run_id

    def runs_newest_first(self) -> list[JobRun]:
        """Every job run, newest start first; sorted again only when runs were added (none is removed).

        A run's start time never changes (a repair keeps it), so the order
        of the runs already sorted holds; runs/list reads this once a page.
        """
        if len(self._newest_first) != len(self.runs):
            self._newest_first = sorted(self.runs.values(), key=self.order_key)
        return self._newest_first

    def job_run_of(self, run_id: int) -> JobRun:
        run = self.any_run(run_id)
        return run if isinstance(run, JobRun) else run.job_run

    # -- run-now -------------------------------------------------------------------------------

    def run_now(self, job_id: int, job_parameters: dict[str, str], idempotency_token: str | None) -> JobRun:
        """Start a run, or return the one this token already started. Never awaits."""
        job = self.job(job_id)
        self.check_parameters(job, job_parameters)
        if idempotency_token is not None and len(idempotency_token) > MAX_IDEMPOTENCY_TOKEN_CHARS:
            raise invalid_parameter(f"idempotency_token must be at most {MAX_IDEMPOTENCY_TOKEN_CHARS} characters.")
        # A job that does not call back has no pipeline_id parameter: its runs are
        # told apart, for plans and counters, by the run-now idempotency token.
        pipeline_id = job_parameters.get("pipeline_id") or idempotency_token or ""
        counters = self.faults.counters_for(pipeline_id)
        counters.run_now_calls += 1
        refusal = self.faults.take_run_now_error(pipeline_id, job.job_id)
        if refusal is not None:
            raise _refusal(refusal.run_now_error_status, refusal.retry_after_seconds)
        if idempotency_token is not None and idempotency_token in self._by_token:
            return self._by_token[idempotency_token]

        plan = self.faults.plan_for(pipeline_id, job.job_id)
        run_id = next(self._ids)
        run = JobRun(
            run_id=run_id,
            job=job,
            pipeline_id=pipeline_id,
            job_parameters={**job.parameters, **job_parameters},
            passed_parameters=dict(job_parameters),
            idempotency_token=idempotency_token,
            plan=plan,
            timeout_seconds=plan.timeout_seconds or self.timeout_seconds(job),
            run_dir=self.run_root / str(run_id),
            public_url=self.settings.PUBLIC_URL,
            workspace_id=self.settings.WORKSPACE_ID,
        )
        run.run_dir.mkdir(parents=True)
        for key in job.task_keys:
            self.new_attempt(run, key, repair_id=None)
        run.history.append(Repair(type="ORIGINAL", start_time=run.start_time,
                                  task_run_ids=[attempt.run_id for attempt in run.task_runs()]))  # fmt: skip
        self.runs[run_id] = run
        if idempotency_token is not None:
            self._by_token[idempotency_token] = run
        counters.run_ids.append(run_id)
        self._drive(run, job.task_keys)
        return run

    @staticmethod
    def check_parameters(job: JobSpec, job_parameters: dict[str, str]) -> None:
        unknown = sorted(set(job_parameters) - set(job.parameters))
        if unknown:
            declared = ", ".join(job.parameters) or "no job parameters"
            raise invalid_parameter(
                f"Job {job.job_id} does not define the job parameter(s) {', '.join(unknown)}; it defines: {declared}."
            )

    def new_attempt(self, run: JobRun, key: str, *, repair_id: int | None) -> TaskRun:
        """A new task run for ``key``: its first attempt, a retry, or a repair's."""
        previous = run.attempts.setdefault(key, [])
        run_id = next(self._ids)
        attempt = TaskRun(
            run_id=run_id,
            spec=run.job.task(key),
            job_run=run,
            attempt_number=previous[-1].attempt_number + 1 if previous else 0,
            repair_id=repair_id,
            run_dir=run.run_dir / str(run_id),
        )
        previous.append(attempt)
        self._task_runs[run_id] = attempt
        return attempt

    def _drive(self, run: JobRun, keys: tuple[str, ...], *, repair: bool = False) -> None:
        self._drivers[run.run_id] = asyncio.create_task(
            self.driver.drive(run, keys, repair=repair), name=f"run-{run.run_id}"
        )

    def track(self, task: asyncio.Task[None]) -> None:
        """A task of a driver; shutdown cancels it with the drivers."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- repair --------------------------------------------------------------------------------

    def repair(
        self,
        run_id: int,
        *,
        rerun_tasks: list[str] | None,
        rerun_all_failed_tasks: bool,
        rerun_dependent_tasks: bool,
        latest_repair_id: int | None,
        job_parameters: dict[str, str],
    ) -> int:
        """Rerun tasks of an ended job run, in the same run; the repair's id. Never awaits."""
        run = self.any_run(run_id)
        if isinstance(run, TaskRun):
            raise invalid_parameter(f"Run {run_id} is a task run; repair its job run, {run.job_run.run_id}.")
        if not run.is_terminal:
            raise invalid_parameter(
                f"Run {run_id} is still {run.life_cycle.value}; only a run that has ended can be repaired."
            )
        if run.latest_repair_id is not None and latest_repair_id is None:
            raise invalid_parameter("The latest repair ID needs to be provided in order to create a new repair")
        if latest_repair_id is not None and latest_repair_id != run.latest_repair_id:
            latest = run.latest_repair_id if run.latest_repair_id is not None else "none (the run was never repaired)"
            raise invalid_parameter(
                f"latest_repair_id {latest_repair_id} is not the ID of the latest repair of run {run_id}: {latest}."
            )
        keys = self._keys_to_rerun(run, rerun_tasks, rerun_all_failed_tasks, rerun_dependent_tasks)
        self.check_parameters(run.job, job_parameters)

        repair_id = next(self._ids)
        run.job_parameters.update(job_parameters)
        run.passed_parameters.update(job_parameters)
        attempts = [self.new_attempt(run, key, repair_id=repair_id) for key in run.job.task_keys if key in keys]
        run.history.append(
            Repair(
                type="REPAIR",
                id=repair_id,
                start_time=now_ms(),
                task_run_ids=[attempt.run_id for attempt in attempts],
                rerun_tasks=[attempt.key for attempt in attempts],
            )
        )
        run.reopen()
        run.enter(LifeCycle.QUEUED)
        run.end_time = None
        run.cancel_requested = False
        run.stop, run.stop_reason = asyncio.Event(), None
        self._drive(run, tuple(attempt.key for attempt in attempts), repair=True)
        return repair_id

    @staticmethod
    def _keys_to_rerun(run: JobRun, rerun_tasks: list[str] | None, all_failed: bool, dependents: bool) -> set[str]:
        job = run.job
        if rerun_tasks and all_failed:
            raise invalid_parameter("Only one of rerun_tasks or rerun_all_failed_tasks can be used.")
        if rerun_tasks:
            if len(set(rerun_tasks)) != len(rerun_tasks):
                raise invalid_parameter("rerun_tasks cannot contain duplicate task keys.")
            unknown = [key for key in rerun_tasks if key not in job.task_keys]
            if unknown:
                raise invalid_parameter(
                    f"rerun_tasks names {', '.join(unknown)}, which job {job.job_id} has no task for; "
                    f"its tasks are: {', '.join(job.task_keys)}."
                )
            keys = set(rerun_tasks)
        elif all_failed:
            keys = {key for key in job.task_keys if not _succeeded(run.latest(key))}
            if not keys:
                raise invalid_parameter(f"Run {run.run_id} has no failed tasks to repair.")
        else:
            raise invalid_parameter("Give rerun_tasks or rerun_all_failed_tasks: they say which tasks to repair.")
        return keys | job.downstream(keys) if dependents else keys

    # -- cancel --------------------------------------------------------------------------------

    def cancel(self, run_id: int) -> None:
        """Ask a job run or one task run to end; returns at once, as the API's does."""
        run = self.any_run(run_id)
        if isinstance(run, TaskRun):
            if not run.is_terminal and run.life_cycle is not LifeCycle.TERMINATING:
                run.request_stop("cancel")
            return
        if run.cancel_requested or run.is_terminal or run.life_cycle is LifeCycle.TERMINATING:
            return
        run.cancel_requested = True
        run.request_stop("cancel")

    async def shutdown(self) -> None:
        """Cancel every driver and kill every notebook process: nothing outlives the emulator."""
        for attempt in self._task_runs.values():
            if attempt.pid is not None and attempt.returncode is None:
                kill_group(attempt.pid)
        pending = [task for task in (*self._drivers.values(), *self._tasks) if not task.done()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.notifier.shutdown()


def _succeeded(attempt: TaskRun) -> bool:
    """Whether a task needs no repair: it succeeded, or was excluded or passed over."""
    return outcome_of(attempt) in (Outcome.SUCCEEDED, Outcome.EXCLUDED)


def _refusal(status: int, retry_after: int) -> ApiError:
    """An injected run-now refusal, as the platform throttles or sheds load."""
    if status == 429:
        return ApiError(
            429,
            "REQUEST_LIMIT_EXCEEDED",
            "Too many requests. Please wait a moment and try again. (emulator fault)",
            headers={"Retry-After": str(retry_after)},
        )
    return ApiError(
        503,
        "TEMPORARILY_UNAVAILABLE",
        "The service is temporarily unavailable. Please try again later. (emulator fault)",
        headers={"Retry-After": str(retry_after)},
    )

"""Driving a job run through its life cycle: queue, tasks in dependency order, outcome.

One asyncio task drives each job run (and each repair of it):

1. QUEUED: wait for a slot under the job's ``max_concurrent_runs``. A job
   without a queue skips the run instead (SKIPPED), as does a limit of 0.
2. PENDING: the run's start delay, if its plan has one. No process exists yet.
3. The tasks, each as soon as its dependencies have ended and its ``run_if``
   condition holds; independent tasks run at the same time. A task that does
   not run ends SKIPPED with UPSTREAM_FAILED, UPSTREAM_CANCELED or EXCLUDED.
   Each task attempt goes PENDING (compute start) → RUNNING (the notebook in
   its own process group, or a timed step) → TERMINATING → TERMINATED, and a
   failed attempt with retries left is followed by another after
   WAITING_FOR_RETRY.
4. The job run's result, decided by its leaf tasks, then TERMINATING and
   TERMINATED; webhook notifications go out as it starts RUNNING and ends.

Cancelling a job run stops every task (SIGTERM to a notebook's process group,
SIGKILL after a grace period) and no further task starts; cancelling a task
run stops that task only, and its dependents decide by their ``run_if``. A run
over its timeout is stopped the same way and ends TIMEDOUT.

``run_if`` and the job run's result follow Databricks' documentation of task
dependencies: ALL_SUCCESS, AT_LEAST_ONE_SUCCESS and NONE_FAILED leave a task
UPSTREAM_FAILED when they do not hold; AT_LEAST_ONE_FAILED and ALL_FAILED
leave it EXCLUDED; ALL_DONE always runs it; a task whose dependencies were all
excluded is excluded too, and an excluded task counts as a success for its
dependents and for the run. Cancellation propagates to dependents (they end
UPSTREAM_CANCELED) except those whose condition handles failures. The run
SUCCEEDS when every task did, is SUCCESS_WITH_FAILURES when some task failed
but every leaf task (one nothing depends on) succeeded, and FAILED otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Final

from databricks_emulator import harness
from databricks_emulator.faults import USER_CODE_FAILURE, TaskFault
from databricks_emulator.notifications import ending_event
from databricks_emulator.runs import (
    JobRun,
    LifeCycle,
    ResultState,
    TaskRun,
    Termination,
    clip,
    now_ms,
)

if TYPE_CHECKING:
    from databricks_emulator.workspace import Workspace

log = logging.getLogger("databricks_emulator")

#: The harness runs from its file, outside this package's environment.
HARNESS_PATH: Final = Path(harness.__file__)
#: How each run_if condition that does not hold leaves the task.
FAILURE_HANDLING: Final = ("ALL_DONE", "AT_LEAST_ONE_FAILED", "ALL_FAILED")


#: The driver's environment variable naming the folder that stands for /Volumes/
#: (notebooks/onboarding_tables.py reads it).
VOLUMES_ROOT_VARIABLE: Final = "PIPELINE_VOLUMES_ROOT"


def notebook_environment(volumes: Path) -> dict[str, str]:
    """The environment a notebook's process gets: the emulator's, without its own settings.

    Those hold the workspace's token and OAuth secret, which a notebook's code
    (or whatever it can be made to read, such as /proc/self/environ) must not see.
    It is told where the workspace's volumes are, as a driver has them at /Volumes/.
    """
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("DATABRICKS_EMULATOR_")}
    return {**inherited, VOLUMES_ROOT_VARIABLE: str(volumes)}


class Outcome(Enum):
    """How a task's latest attempt counts for its dependents and for the run."""

    SUCCEEDED = "succeeded"
    EXCLUDED = "excluded"
    FAILED = "failed"
    CANCELED = "canceled"


def outcome_of(attempt: TaskRun) -> Outcome:
    if attempt.life_cycle is LifeCycle.INTERNAL_ERROR:
        return Outcome.FAILED
    result = attempt.result_state
    if result is ResultState.SUCCESS:
        return Outcome.SUCCEEDED
    if result is ResultState.EXCLUDED or (attempt.life_cycle is LifeCycle.SKIPPED and result is None):
        return Outcome.EXCLUDED
    if result in (ResultState.CANCELED, ResultState.UPSTREAM_CANCELED):
        return Outcome.CANCELED
    return Outcome.FAILED


def run_if_verdict(condition: str, upstream: list[Outcome]) -> ResultState | None:
    """None when a task with ``condition`` runs after ``upstream``; else the result it is left with."""
    if not upstream:
        return None
    if all(outcome is Outcome.EXCLUDED for outcome in upstream):
        return ResultState.EXCLUDED
    succeeded = [outcome in (Outcome.SUCCEEDED, Outcome.EXCLUDED) for outcome in upstream]
    failed = [outcome is Outcome.FAILED for outcome in upstream]
    unsuccessful = [outcome in (Outcome.FAILED, Outcome.CANCELED) for outcome in upstream]
    not_met = ResultState.UPSTREAM_FAILED if any(failed) else ResultState.UPSTREAM_CANCELED
    if condition == "ALL_SUCCESS":
        return None if all(succeeded) else not_met
    if condition == "AT_LEAST_ONE_SUCCESS":
        return None if any(outcome is Outcome.SUCCEEDED for outcome in upstream) else not_met
    if condition == "NONE_FAILED":
        return None if not any(unsuccessful) else not_met
    if condition == "ALL_DONE":
        return None
    if condition == "AT_LEAST_ONE_FAILED":
        return None if any(unsuccessful) else ResultState.EXCLUDED
    if condition == "ALL_FAILED":
        return None if all(unsuccessful) else ResultState.EXCLUDED
    raise ValueError(f"unknown run_if {condition!r}")


#: What a task that does not run says, by the result it is left with.
NOT_RUN_MESSAGES: Final = {
    ResultState.UPSTREAM_FAILED: "An upstream task failed.",
    ResultState.UPSTREAM_CANCELED: "An upstream task was canceled.",
    ResultState.EXCLUDED: "The task's run_if condition was not met, so it was excluded.",
}


class Driver:
    """Takes job runs through their states; every process and sleep of the emulator is here."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.settings = workspace.settings

    # -- the job run ---------------------------------------------------------------------------

    async def drive(self, run: JobRun, keys: tuple[str, ...], *, repair: bool = False) -> None:
        """Run ``keys`` (every task, or a repair's) of ``run`` to the end of the job run."""
        slot = self.workspace.slot(run.job)
        if await self._admit(run, slot, repair=repair):
            try:
                await self._execute(run, keys, first_pass=not repair)
            finally:
                slot.release()
        elif not run.is_terminal:  # cancelled while it waited in the queue
            self._stop_everything(run, list(keys), {}, run.stop_reason or "cancel")
        await self._conclude(run)

    async def _admit(self, run: JobRun, slot: asyncio.Semaphore, *, repair: bool) -> bool:
        """QUEUED until a slot is free; False when the run is skipped or stopped meanwhile."""
        run.enter(LifeCycle.QUEUED)
        limit = self.workspace.max_concurrent_runs(run.job)
        if (
            (not repair and run.plan.life_cycle == "SKIPPED")
            or limit == 0
            or (slot.locked() and not run.job.queue_enabled)
        ):
            self._skip(run, limit)
            return False
        if slot.locked():
            run.queue_details = (
                "MAX_CONCURRENT_RUNS_REACHED",
                f"Queued due to reaching maximum concurrent runs of {limit}.",
            )
            run.state_message = run.queue_details[1]
        acquiring = asyncio.ensure_future(slot.acquire())
        if await self._race(run.stop, None, work=acquiring) != "done":
            acquiring.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                if await acquiring:
                    slot.release()
            return False
        if await self._race(run.stop, None, seconds=self.settings.QUEUED_SECONDS) == "stop":
            slot.release()
            return False
        if not repair:
            run.queue_duration = now_ms() - run.start_time
            for attempt in run.task_runs():
                attempt.queue_duration = run.queue_duration
        return True

    def _skip(self, run: JobRun, limit: int) -> None:
        message = (
            f"Skipping this run because the limit of {limit} maximum concurrent runs has been reached."
            if run.plan.life_cycle != "SKIPPED"
            else "Skipping this run because the job already has an active run (emulator fault)."
        )
        termination = Termination("MAX_CONCURRENT_RUNS_EXCEEDED", "CLIENT_ERROR", message)
        run.record(ResultState.MAXIMUM_CONCURRENT_RUNS_REACHED, termination, message)
        run.life_cycle = LifeCycle.SKIPPED
        for attempt in run.task_runs():
            if not attempt.is_terminal:
                attempt.record(
                    ResultState.MAXIMUM_CONCURRENT_RUNS_REACHED,
                    Termination("SKIPPED", "CLIENT_ERROR", message),
                    message,
                )
                attempt.life_cycle = LifeCycle.SKIPPED
                attempt.end_time = now_ms()

    async def _execute(self, run: JobRun, keys: tuple[str, ...], *, first_pass: bool) -> None:
        """PENDING, then the tasks in dependency order until each has ended or the run is stopped."""
        deadline = time.monotonic() + run.timeout_seconds if run.timeout_seconds else None
        run.enter(LifeCycle.PENDING, "Waiting for compute to start.")
        for key in keys:
            attempt = run.latest(key)
            if any(dependency in keys for dependency in attempt.spec.depends_on):
                attempt.enter(LifeCycle.BLOCKED)
            else:
                # The first tasks wait for compute through the start delay: it is their setup time.
                attempt.enter(LifeCycle.PENDING, "Waiting for compute to start.")
                attempt.setup_start = now_ms()
        pending = list(keys)
        if first_pass and run.plan.held:
            released = self.workspace.faults.released(run.pipeline_id).wait()
            if await self._race(run.stop, deadline, work=released) != "done":
                self._stop_everything(run, pending, {}, "timeout")
                return
        delay = run.plan.start_delay_seconds if first_pass else 0
        if delay and await self._race(run.stop, deadline, seconds=delay) != "elapsed":
            self._stop_everything(run, pending, {}, "timeout")
            return
        if first_pass and run.plan.life_cycle == "INTERNAL_ERROR":
            message = "An internal error occurred in the Jobs service (emulator fault)."
            internal = Termination("INTERNAL_ERROR", "INTERNAL_ERROR", message)
            for key in pending:
                self._end_now(run.latest(key), ResultState.FAILED, internal, message, LifeCycle.INTERNAL_ERROR)
            run.record(ResultState.FAILED, internal, message)
            run.life_cycle = LifeCycle.INTERNAL_ERROR
            return
        finished = set(run.job.task_keys) - set(keys)
        running: dict[asyncio.Task[None], str] = {}
        stop_waiter = asyncio.ensure_future(run.stop.wait())
        try:
            while pending or running:
                if run.stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                    self._stop_everything(run, pending, running, run.stop_reason or "timeout")
                    pending = []
                    if running:
                        await asyncio.wait(running)
                    break
                for key in [key for key in pending if set(run.latest(key).spec.depends_on) <= finished]:
                    pending.remove(key)
                    attempt = run.latest(key)
                    upstream = [outcome_of(run.latest(dependency)) for dependency in attempt.spec.depends_on]
                    verdict = run_if_verdict(attempt.spec.run_if, upstream)
                    if attempt.stop_reason == "cancel":
                        verdict = ResultState.CANCELED
                    if verdict is None:
                        task = asyncio.create_task(self._run_task(run, key), name=f"task-{attempt.run_id}")
                        self.workspace.track(task)
                        running[task] = key
                    else:
                        self._not_run(attempt, verdict)
                        finished.add(key)
                if not running:
                    continue
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                done, _ = await asyncio.wait(
                    {*running, stop_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done - {stop_waiter}:
                    finished.add(running.pop(task))
        except asyncio.CancelledError:
            for task in running:
                task.cancel()
            raise
        finally:
            stop_waiter.cancel()

    def _stop_everything(
        self, run: JobRun, pending: list[str], running: dict[asyncio.Task[None], str], reason: str
    ) -> None:
        """The run is cancelled or out of time: stop what runs, and nothing more starts."""
        if run.stop_reason is None:
            run.stop_reason = reason
        reason = run.stop_reason
        for key in running.values():
            run.latest(key).request_stop(reason)
        for key in pending:
            attempt = run.latest(key)
            if attempt.spec.depends_on:
                self._not_run(attempt, ResultState.UPSTREAM_CANCELED)
            elif reason == "cancel":
                message = "Run cancelled by a runs/cancel request."
                self._end_now(
                    attempt, ResultState.CANCELED, Termination("USER_CANCELED", "CLIENT_ERROR", message), message
                )
            else:
                self._stopped_before_start(attempt, timeout_seconds=run.timeout_seconds)

    async def _conclude(self, run: JobRun) -> None:
        """The job run's result from its tasks, then TERMINATING, TERMINATED and the notifications."""
        if not run.is_terminal:
            self._decide(run)
            run.life_cycle = LifeCycle.TERMINATING
            await asyncio.sleep(self.settings.TERMINATING_SECONDS)
            run.life_cycle = LifeCycle.TERMINATED
        run.end_time = now_ms()
        current = run.history[-1]
        current.end_time = run.end_time
        current.final = (run.state_json(), run.status_json())
        log.info(
            "run %s of job %s (pipeline %r) ended %s", run.run_id, run.job.job_id, run.pipeline_id, run.result_state
        )
        event = ending_event(run)
        if event is not None:
            self.workspace.notifier.notify(event, run)

    def _decide(self, run: JobRun) -> None:
        if run.stop_reason == "cancel":
            message = "Run cancelled by a runs/cancel request."
            run.record(ResultState.CANCELED, Termination("USER_CANCELED", "CLIENT_ERROR", message), message)
            return
        if run.stop_reason == "timeout":
            message = self._timeout_message(run.timeout_seconds)
            run.record(ResultState.TIMEDOUT, Termination("CANCELED", "CLIENT_ERROR", message), message)
            return
        latest = {key: run.latest(key) for key in run.job.task_keys}
        outcomes = {key: outcome_of(attempt) for key, attempt in latest.items()}
        leaves = run.job.leaves
        failed = [key for key in leaves if outcomes[key] is Outcome.FAILED]
        canceled = [key for key in leaves if outcomes[key] is Outcome.CANCELED]
        if failed or canceled:
            # The task that failed itself (not one left UPSTREAM_FAILED by it) names the failure.
            culprits = [
                key
                for key, attempt in latest.items()
                if outcomes[key] in (Outcome.FAILED, Outcome.CANCELED)
                and attempt.result_state not in (ResultState.UPSTREAM_FAILED, ResultState.UPSTREAM_CANCELED)
            ] or (failed or canceled)
            culprit = latest[culprits[0]]
            result = ResultState.FAILED if failed else ResultState.CANCELED
            verb = "failed" if failed else "was cancelled"
            message = clip(f"Task {culprit.key} {verb} with message: {culprit.state_message}")
            termination = culprit.termination or Termination("RUN_EXECUTION_ERROR", "CLIENT_ERROR", "")
            run.record(result, Termination(termination.code, termination.type, message), message)
        elif any(outcome in (Outcome.FAILED, Outcome.CANCELED) for outcome in outcomes.values()):
            message = "Some tasks failed, but every leaf task succeeded."
            run.record(ResultState.SUCCESS_WITH_FAILURES, Termination("SUCCESS_WITH_FAILURES", "SUCCESS", message), "")
        else:
            run.record(ResultState.SUCCESS, Termination("SUCCESS", "SUCCESS", ""), "")

    @staticmethod
    def _timeout_message(seconds: float) -> str:
        return f"Run timed out after {seconds:g} seconds (its timeout_seconds)."

    def _running(self, run: JobRun) -> None:
        """A task started RUNNING: so does the job run, and on its first time that is its start."""
        if run.life_cycle is not LifeCycle.RUNNING:
            run.enter(LifeCycle.RUNNING, "In run")
            self.workspace.notifier.notify("on_start", run)

    # -- one task, with its retries ------------------------------------------------------------

    async def _run_task(self, run: JobRun, key: str) -> None:
        attempt = run.latest(key)
        retries_left = attempt.spec.max_retries
        fault = run.plan.task(key)
        first = True
        while True:
            index = len(run.attempts[key]) - 1
            await self._attempt(run, attempt, fault, applies=fault.applies_to(index), first=first)
            retryable = outcome_of(attempt) is Outcome.FAILED and (
                attempt.result_state is not ResultState.TIMEDOUT or attempt.spec.retry_on_timeout
            )
            if not retryable or retries_left <= 0 or attempt.stop_reason or run.stop.is_set():
                return
            retries_left -= 1
            first = False
            attempt = self.workspace.new_attempt(run, key, repair_id=attempt.repair_id)
            wait = fault.waiting_for_retry_seconds or attempt.spec.min_retry_interval_millis / 1000
            attempt.enter(LifeCycle.WAITING_FOR_RETRY, "Waiting for retry.")
            if await self._race(attempt.stop, None, seconds=wait) == "stop":
                self._stopped_before_start(attempt)
                return

    async def _attempt(self, run: JobRun, attempt: TaskRun, fault: TaskFault, *, applies: bool, first: bool) -> None:
        spec = attempt.spec
        if applies and fault.life_cycle == "SKIPPED":
            message = "The task was skipped (emulator fault)."
            self._end_now(attempt, None, Termination("SKIPPED", "SUCCESS", message), message, LifeCycle.SKIPPED)
            return
        for seconds, life_cycle, message in (
            (fault.blocked_seconds, LifeCycle.BLOCKED, "Blocked (emulator fault)."),
            (fault.waiting_for_retry_seconds if first else 0, LifeCycle.WAITING_FOR_RETRY, "Waiting for retry."),
        ):
            if seconds:
                attempt.enter(life_cycle, message)
                if await self._race(attempt.stop, None, seconds=seconds) == "stop":
                    self._stopped_before_start(attempt)
                    return
        if attempt.setup_start is None or not first:
            attempt.setup_start = now_ms()
        deadline = time.monotonic() + spec.timeout_seconds if spec.timeout_seconds else None
        attempt.enter(LifeCycle.PENDING, "Waiting for compute to start.")
        happened = await self._race(attempt.stop, deadline, seconds=self.settings.PENDING_SECONDS)
        if happened in ("stop", "deadline"):
            self._stopped_before_start(
                attempt, timeout_seconds=spec.timeout_seconds if happened == "deadline" else None
            )
            return
        if applies and fault.life_cycle == "INTERNAL_ERROR":
            message = fault.message or "An internal error occurred in the Jobs service (emulator fault)."
            self._end_now(attempt, ResultState.FAILED, Termination("INTERNAL_ERROR", "INTERNAL_ERROR", message),
                          message, LifeCycle.INTERNAL_ERROR)  # fmt: skip
            return
        if spec.runs_notebook:
            await self._run_notebook(run, attempt, fault if applies else None, deadline)
        else:
            await self._run_step(run, attempt, fault, applies, deadline)
        attempt.cleanup_start = now_ms()
        attempt.life_cycle = LifeCycle.TERMINATING
        await asyncio.sleep(self.settings.TERMINATING_SECONDS)
        attempt.end_time = now_ms()
        attempt.life_cycle = LifeCycle.TERMINATED

    async def _run_step(
        self, run: JobRun, attempt: TaskRun, fault: TaskFault, applies: bool, deadline: float | None
    ) -> None:
        """A task the emulator has no compute for: RUNNING for a while, then its planned outcome."""
        if attempt.spec.local_file is not None and not attempt.spec.local_file.is_file():
            self._file_missing(attempt)
            return
        attempt.execution_start = now_ms()
        attempt.executed = True
        attempt.enter(LifeCycle.RUNNING, "In run")
        self._running(run)
        seconds = (
            None
            if applies and fault.hang
            else (fault.seconds if fault.seconds is not None else self.settings.TASK_SECONDS)
        )
        happened = await self._race(attempt.stop, deadline, seconds=seconds)
        if happened in ("stop", "deadline"):
            self._stopped(attempt, happened)
            return
        code = fault.failure_code if applies else None
        if code is None:
            attempt.record(ResultState.SUCCESS, Termination("SUCCESS", "SUCCESS", ""), "")
            return
        message = fault.message or f"The {attempt.spec.kind} failed (emulator fault: {code})."
        attempt.error = {"type": "TaskFailed" if code == USER_CODE_FAILURE else code, "message": message}
        attempt.record(ResultState.FAILED, Termination(code, fault.failure_type, message), clip(message))

    async def _run_notebook(
        self, run: JobRun, attempt: TaskRun, fault: TaskFault | None, deadline: float | None
    ) -> None:
        """RUNNING: the notebook through the harness, in a new session so its process group can be killed."""
        if not attempt.spec.local_file.is_file():
            self._file_missing(attempt)
            return
        code = fault.failure_code if fault is not None else None
        killed_by_platform = code is not None and code != USER_CODE_FAILURE
        process = await self._start(run, attempt, fault, block=killed_by_platform)
        self._running(run)
        wait = asyncio.ensure_future(process.wait())
        happened = await self._race(
            attempt.stop, deadline, work=wait, seconds=fault.kill_after_seconds if killed_by_platform else None
        )
        if happened == "elapsed":  # the platform fails under the notebook
            _signal_group(process.pid, signal.SIGKILL)
            attempt.returncode = await wait
            message = fault.message or f"The task's compute failed (emulator fault: {code})."
            attempt.error = {"type": code, "message": message}
            attempt.record(ResultState.FAILED, Termination(code, fault.failure_type, message), clip(message))
            return
        if happened in ("stop", "deadline"):
            wait.cancel()
            attempt.returncode = await self._stop(process)
            self._stopped(attempt, happened)
            return
        attempt.returncode = await wait
        self._record_notebook_outcome(attempt)

    async def _start(
        self, run: JobRun, attempt: TaskRun, fault: TaskFault | None, *, block: bool
    ) -> asyncio.subprocess.Process:
        block_settings = attempt.spec.settings["notebook_task"].get("base_parameters") or {}
        widgets = {**block_settings, **run.job_parameters, **(fault.widgets if fault else {})}
        attempt.run_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "notebook_path": str(attempt.spec.local_file),
            "widgets": widgets,
            "fault": "hang" if block or (fault is not None and fault.hang) else run.plan.notebook,
            "raise": (fault.message or f"task {attempt.key} fails (emulator fault)")
            if fault is not None and fault.failure_code == USER_CODE_FAILURE
            else None,
            "run_dir": str(attempt.run_dir),
            "outcome_path": str(attempt.run_dir / "outcome.json"),
            "callback_sink_url": f"{self.settings.internal_url}/emulator/callback-sink/{attempt.run_id}",
        }
        spec_path = attempt.run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        with attempt.stdout_path.open("wb") as stdout, attempt.stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",  # isolated: neither the emulator's env vars for Python nor its cwd leak in
                "-S",  # no site-packages: the notebook gets the standard library, as it asks
                str(HARNESS_PATH),
                str(spec_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=attempt.run_dir,
                env=notebook_environment(self.workspace.volumes),
                start_new_session=True,
            )
        attempt.pid = process.pid
        attempt.execution_start = now_ms()
        attempt.executed = True
        attempt.enter(LifeCycle.RUNNING, "In run")
        return process

    async def _stop(self, process: asyncio.subprocess.Process) -> int:
        """End a notebook's process group: SIGTERM, then SIGKILL once the grace period is over."""
        _signal_group(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.settings.KILL_GRACE_SECONDS):
                await process.wait()
        except TimeoutError:
            pass
        _signal_group(process.pid, signal.SIGKILL)
        return await process.wait()

    def _record_notebook_outcome(self, attempt: TaskRun) -> None:
        try:
            outcome = json.loads((attempt.run_dir / "outcome.json").read_text())
        except (OSError, ValueError):
            outcome = None
        if outcome is None:
            message = f"The notebook's process exited with status {attempt.returncode} before finishing."
            attempt.error = {"type": "DriverError", "message": message, "trace": tail(attempt.stderr_path)}
            attempt.record(ResultState.FAILED, Termination("DRIVER_ERROR", "INTERNAL_ERROR", message), message)
        elif outcome["error"] is not None:
            attempt.error = outcome["error"]
            detail = clip(f"{attempt.error['type']}: {attempt.error['message']}")
            attempt.record(ResultState.FAILED, Termination("RUN_EXECUTION_ERROR", "CLIENT_ERROR", detail), detail)
        else:
            attempt.exit_value = outcome["exit_value"]
            attempt.record(ResultState.SUCCESS, Termination("SUCCESS", "SUCCESS", ""), "")

    def _file_missing(self, attempt: TaskRun) -> None:
        """The lazy half of the bundle check: a notebook or file that is not there fails its task."""
        what = "Notebook" if attempt.spec.runs_notebook else "File"
        shown = attempt.spec.settings.get("notebook_task", {}).get("notebook_path") or attempt.spec.local_file.name
        message = (
            f"{what} not found: {shown}. The emulator has no file at {attempt.spec.local_file} "
            "(the bundle names it; is it written yet?)."
        )
        attempt.error = {"type": "ResourceNotFound", "message": message}
        attempt.record(ResultState.FAILED, Termination("RESOURCE_NOT_FOUND", "CLIENT_ERROR", message), clip(message))

    # -- endings ---------------------------------------------------------------------------------

    def _record_stopped(self, attempt: TaskRun, *, timeout_seconds: float | None = None) -> None:
        """Cancelled, or (``timeout_seconds`` given, or stopped for the run's timeout) timed out."""
        if timeout_seconds is None and attempt.stop_reason == "cancel":
            message = "Run cancelled by a runs/cancel request."
            attempt.record(ResultState.CANCELED, Termination("USER_CANCELED", "CLIENT_ERROR", message), message)
            return
        message = self._timeout_message(timeout_seconds or attempt.job_run.timeout_seconds)
        attempt.record(ResultState.TIMEDOUT, Termination("CANCELED", "CLIENT_ERROR", message), message)

    def _stopped(self, attempt: TaskRun, happened: str) -> None:
        """``happened`` ("stop" or "deadline", its own timeout) ended a running attempt."""
        self._record_stopped(attempt, timeout_seconds=attempt.spec.timeout_seconds if happened == "deadline" else None)

    def _stopped_before_start(self, attempt: TaskRun, *, timeout_seconds: float | None = None) -> None:
        self._record_stopped(attempt, timeout_seconds=timeout_seconds)
        attempt.life_cycle = LifeCycle.TERMINATED
        attempt.end_time = now_ms()

    def _end_now(
        self,
        attempt: TaskRun,
        result: ResultState | None,
        termination: Termination,
        message: str,
        life_cycle: LifeCycle = LifeCycle.TERMINATED,
    ) -> None:
        attempt.record(result, termination, message)
        attempt.life_cycle = life_cycle
        attempt.end_time = now_ms()

    def _not_run(self, attempt: TaskRun, result: ResultState) -> None:
        """A task its dependencies or a stop keep from running: SKIPPED, with why."""
        if result is ResultState.CANCELED:
            message = "Run cancelled by a runs/cancel request."
            self._end_now(attempt, result, Termination("USER_CANCELED", "CLIENT_ERROR", message), message)
            return
        message = NOT_RUN_MESSAGES[result]
        kind = "SUCCESS" if result is ResultState.EXCLUDED else "CLIENT_ERROR"
        self._end_now(attempt, result, Termination("SKIPPED", kind, message), message, LifeCycle.SKIPPED)

    # -- waiting -------------------------------------------------------------------------------

    @staticmethod
    async def _race(
        stop: asyncio.Event,
        deadline: float | None,
        *,
        seconds: float | None = None,
        work: Awaitable[object] | None = None,
    ) -> str:
        """Wait for ``work`` (if any), ``seconds`` (if any), a stop, or the deadline, whichever is first.

        Answers "done", "elapsed", "stop" or "deadline"; a stop wins a tie.
        """
        stopping = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[object]] = {stopping}
        if work is not None:
            waiting.add(asyncio.ensure_future(work))
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        limits = [limit for limit in (seconds, left) if limit is not None]
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=min(limits) if limits else None, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        if stopping in done:
            return "stop"
        if done:
            return "done"
        return "deadline" if left is not None and (seconds is None or left <= seconds) else "elapsed"


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)


def tail(path: Path, limit: int = 64 * 1024) -> str:
    """The last ``limit`` bytes of a log file, as text."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""

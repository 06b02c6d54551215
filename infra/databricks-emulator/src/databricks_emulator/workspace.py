"""The emulated workspace: its runs, and the driver that takes each through its states.

Each run is driven by one asyncio task: QUEUED (waiting for a slot under the
job's ``max_concurrent_runs``, then briefly), PENDING (compute start, plus any
injected start delay), RUNNING (the notebook in its own process group),
TERMINATING, TERMINATED. Waiting costs no process: a run gets one only when it
starts RUNNING, so hundreds of delayed runs cost a few kilobytes each.

Cancelling a run cancels its driver task; the driver then kills the process
group (SIGTERM, then SIGKILL after a grace period) and records CANCELED. A
run that outlives its timeout is ended the same way and records TIMEDOUT.

All state changes happen on the event loop, and run-now's check-and-create of
an idempotency token has no ``await`` in it, so concurrent identical requests
can never create two runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from databricks_emulator import harness
from databricks_emulator.errors import ApiError, invalid_parameter, job_not_found, run_not_found
from databricks_emulator.faults import FaultRegistry
from databricks_emulator.jobspec import JOB_PARAMETERS, MAX_IDEMPOTENCY_TOKEN_CHARS, TASK_KEY
from databricks_emulator.runs import LifeCycle, ResultState, Run, Termination, clip, now_ms
from databricks_emulator.settings import Settings

log = logging.getLogger("databricks_emulator")

#: The harness runs from its file, outside this package's environment.
HARNESS_PATH = Path(harness.__file__)


class Workspace:
    """Runs by id, idempotency tokens, fault plans; owns every run's driver task."""

    def __init__(self, settings: Settings, run_root: Path) -> None:
        self.settings = settings
        self.run_root = run_root
        self.runs: dict[int, Run] = {}
        self._task_runs: dict[int, Run] = {}
        self._by_token: dict[str, Run] = {}
        self._drivers: dict[int, asyncio.Task[None]] = {}
        self.faults = FaultRegistry()
        self._slots = asyncio.Semaphore(settings.MAX_CONCURRENT_RUNS)
        self.created_time = int(time.time() * 1000)
        # Run ids from the clock, so ids from an emulator that restarted never
        # repeat ones a client may still hold; like real ids, they are large.
        self._ids = itertools.count(time.time_ns() // 1000)

    # -- lookups ---------------------------------------------------------------

    def check_job(self, job_id: object) -> None:
        if job_id != self.settings.JOB_ID:
            raise job_not_found(job_id)

    def job_run(self, run_id: int) -> Run | None:
        return self.runs.get(run_id)

    def task_run(self, run_id: int) -> Run | None:
        return self._task_runs.get(run_id)

    def any_run(self, run_id: int) -> Run:
        run = self.runs.get(run_id) or self._task_runs.get(run_id)
        if run is None:
            raise run_not_found(run_id)
        return run

    # -- run-now -----------------------------------------------------------------

    def run_now(
        self, job_id: int, job_parameters: dict[str, str], idempotency_token: str | None
    ) -> Run:
        """Start a run, or return the one this token already started. Never awaits."""
        self.check_job(job_id)
        unknown = sorted(set(job_parameters) - set(JOB_PARAMETERS))
        if unknown:
            raise invalid_parameter(
                f"Job {job_id} does not define the job parameter(s) {', '.join(unknown)}; "
                f"it defines: {', '.join(JOB_PARAMETERS)}."
            )
        if idempotency_token is not None and len(idempotency_token) > MAX_IDEMPOTENCY_TOKEN_CHARS:
            raise invalid_parameter(
                f"idempotency_token must be at most {MAX_IDEMPOTENCY_TOKEN_CHARS} characters."
            )
        pipeline_id = job_parameters.get("pipeline_id", "")
        counters = self.faults.counters_for(pipeline_id)
        counters.run_now_calls += 1
        refusal = self.faults.take_run_now_error(pipeline_id)
        if refusal is not None:
            raise _refusal(refusal.run_now_error_status, refusal.retry_after_seconds)
        if idempotency_token is not None and idempotency_token in self._by_token:
            return self._by_token[idempotency_token]

        plan = self.faults.plan_for(pipeline_id)
        run_id, task_run_id = next(self._ids), next(self._ids)
        run_dir = self.run_root / str(run_id)
        run_dir.mkdir(parents=True)
        run = Run(
            run_id=run_id,
            task_run_id=task_run_id,
            job_id=job_id,
            pipeline_id=pipeline_id,
            job_parameters={**JOB_PARAMETERS, **job_parameters},
            passed_parameters=dict(job_parameters),
            idempotency_token=idempotency_token,
            plan=plan,
            timeout_seconds=plan.timeout_seconds or self.settings.RUN_TIMEOUT_SECONDS,
            run_dir=run_dir,
            public_url=self.settings.PUBLIC_URL,
            workspace_id=self.settings.WORKSPACE_ID,
        )
        self.runs[run_id] = run
        self._task_runs[task_run_id] = run
        if idempotency_token is not None:
            self._by_token[idempotency_token] = run
        counters.run_ids.append(run_id)
        self._drivers[run_id] = asyncio.create_task(self._drive(run), name=f"run-{run_id}")
        return run

    # -- cancel ------------------------------------------------------------------

    def cancel(self, run_id: int) -> None:
        """Ask for a run to end; returns at once, as the API's does. No-op on an ending run."""
        run = self.any_run(run_id)
        if run.cancel_requested or run.life_cycle in (LifeCycle.TERMINATING, LifeCycle.TERMINATED):
            return
        run.cancel_requested = True
        driver = self._drivers.get(run.run_id)
        if driver is not None:
            driver.cancel()

    async def shutdown(self) -> None:
        """Cancel every driver and kill every notebook process: nothing outlives the emulator."""
        drivers = [d for d in self._drivers.values() if not d.done()]
        for run in self.runs.values():
            if run.pid is not None and run.returncode is None:
                _signal_group(run.pid, signal.SIGKILL)
        for driver in drivers:
            driver.cancel()
        await asyncio.gather(*drivers, return_exceptions=True)

    # -- the driver ------------------------------------------------------------------

    async def _drive(self, run: Run) -> None:
        process: asyncio.subprocess.Process | None = None
        holding_slot = False
        try:
            await self._take_slot(run)
            holding_slot = True
            await asyncio.sleep(self.settings.QUEUED_SECONDS)
            run.queue_duration = now_ms() - run.start_time
            try:
                async with asyncio.timeout(run.timeout_seconds):
                    run.setup_start = now_ms()
                    run.enter(LifeCycle.PENDING, "Waiting for compute to start.")
                    await asyncio.sleep(
                        self.settings.PENDING_SECONDS + run.plan.start_delay_seconds
                    )
                    process = await self._start(run)
                    run.returncode = await process.wait()
            except TimeoutError:
                run.returncode = await self._stop(process)
                message = (
                    f"Run timed out after {run.timeout_seconds:g} seconds (its timeout_seconds)."
                )
                run.end_early(ResultState.TIMEDOUT, "CANCELED", message)
            else:
                self._record_outcome(run)
        except asyncio.CancelledError:
            if not run.cancel_requested:  # the emulator is shutting down
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            run.returncode = await self._stop(process)
            message = "Run cancelled by a runs/cancel request."
            run.end_early(ResultState.CANCELED, "USER_CANCELED", message)
        finally:
            if holding_slot:
                self._slots.release()
        await asyncio.sleep(self.settings.TERMINATING_SECONDS)
        run.close()
        log.info("run %s (pipeline %r) ended %s", run.run_id, run.pipeline_id, run.result_state)

    async def _take_slot(self, run: Run) -> None:
        """QUEUED: wait, if need be, for a slot under the job's max_concurrent_runs."""
        run.enter(LifeCycle.QUEUED)
        if self._slots.locked():
            run.queue_details = (
                "MAX_CONCURRENT_RUNS_REACHED",
                f"Queued: the job already has {self.settings.MAX_CONCURRENT_RUNS} active runs.",
            )
            run.state_message = run.task_state_message = run.queue_details[1]
        await self._slots.acquire()

    async def _start(self, run: Run) -> asyncio.subprocess.Process:
        """RUNNING: the notebook in a new session, so its whole process group can be killed."""
        spec = {
            "notebook_path": str(self.settings.NOTEBOOK_PATH),
            "widgets": run.job_parameters,
            "fault": run.plan.notebook,
            "run_dir": str(run.run_dir),
            "outcome_path": str(run.run_dir / "outcome.json"),
            "callback_sink_url": (
                f"{self.settings.internal_url}/emulator/callback-sink/{run.run_id}"
            ),
        }
        spec_path = run.run_dir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        with run.stdout_path.open("wb") as stdout, run.stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",  # isolated: neither the emulator's env vars for Python nor its cwd leak in
                "-S",  # no site-packages: the notebook gets the standard library, as it asks
                str(HARNESS_PATH),
                str(spec_path),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=run.run_dir,
                start_new_session=True,
            )
        run.pid = process.pid
        run.execution_start = now_ms()
        run.enter(LifeCycle.RUNNING, "In run")
        return process

    async def _stop(self, process: asyncio.subprocess.Process | None) -> int | None:
        """End a notebook's process group: SIGTERM, then SIGKILL once the grace period is over."""
        if process is None:
            return None
        _signal_group(process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.settings.KILL_GRACE_SECONDS):
                await process.wait()
        except TimeoutError:
            pass
        _signal_group(process.pid, signal.SIGKILL)
        return await process.wait()

    def _record_outcome(self, run: Run) -> None:
        outcome_path = run.run_dir / "outcome.json"
        try:
            outcome = json.loads(outcome_path.read_text())
        except (OSError, ValueError):
            outcome = None
        if outcome is None:
            message = (
                f"The notebook's process exited with status {run.returncode} before finishing."
            )
            run.error = {"type": "DriverError", "message": message, "trace": tail(run.stderr_path)}
            run.finish(
                ResultState.FAILED,
                Termination("DRIVER_ERROR", "INTERNAL_ERROR", message),
                job_message=f"Task {TASK_KEY} failed with message: {message}",
                task_message=message,
            )
        elif outcome["error"] is not None:
            run.error = outcome["error"]
            detail = clip(f"{run.error['type']}: {run.error['message']}")
            run.finish(
                ResultState.FAILED,
                Termination("RUN_EXECUTION_ERROR", "CLIENT_ERROR", detail),
                job_message=f"Task {TASK_KEY} failed with message: {detail}",
                task_message=detail,
            )
        else:
            run.exit_value = outcome["exit_value"]
            run.finish(
                ResultState.SUCCESS,
                Termination("SUCCESS", "SUCCESS", ""),
                job_message="",
                task_message="",
            )


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


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def tail(path: Path, limit: int = 64 * 1024) -> str:
    """The last ``limit`` bytes of a log file, as text."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - limit))
            return handle.read().decode(errors="replace")
    except OSError:
        return ""

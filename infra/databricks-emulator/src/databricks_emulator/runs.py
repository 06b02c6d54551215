"""Job runs and task runs, and the JSON the Jobs API 2.1/2.2 shows for them.

A run of any job is a multi-task job run, as on a real workspace: the job run
has its own run id, and each task attempt is a task run with another. The job
run's setup/execution/cleanup durations are 0 (its task runs carry them) and
``runs/get-output`` answers only for a task run. A task that is retried or
repaired gets a new task run with ``attempt_number`` one higher, and every
attempt stays in the job run's ``tasks``, as the real API lists them
(apache/airflow#69998 measured that on a live workspace): a client that wants
a task's outcome must take its latest attempt.

Both state shapes are kept in step by one :class:`Progress`: the older
``state`` (life_cycle_state, result_state, state_message,
user_cancelled_or_timedout) and the newer ``status`` (state, queue_details,
termination_details), whose ``state`` has fewer names (SKIPPED and
INTERNAL_ERROR are TERMINATED there, WAITING_FOR_RETRY is WAITING).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from databricks_emulator.faults import FaultPlan
from databricks_emulator.jobspec import USER_NAME, JobSpec, TaskSpec

#: get-output returns at most the first 5 MB of a notebook's exit value.
MAX_EXIT_VALUE_BYTES: Final = 5 * 1024 * 1024
#: Job parameters the control API never shows: the pipeline's callback signing key settles its
#: pipeline, and a listing of runs is no place for it (the run's own notebook gets it as a widget).
REDACTED_PARAMETERS: Final = frozenset({"callback_signing_key"})
REDACTED: Final = "(redacted)"
#: A state message quotes at most this much of an error.
MAX_STATE_MESSAGE_CHARS: Final = 1000


class LifeCycle(StrEnum):
    """``state.life_cycle_state``."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"
    SKIPPED = "SKIPPED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    BLOCKED = "BLOCKED"
    WAITING_FOR_RETRY = "WAITING_FOR_RETRY"


#: The arrays of a job run that Jobs API 2.2 pages at 100 (``pages``).
PAGED_RUN_ARRAYS: Final = ("tasks", "job_clusters", "job_parameters", "repair_history")
#: The life cycles a run does not leave (unless it is repaired).
TERMINAL: Final = frozenset({LifeCycle.TERMINATED, LifeCycle.SKIPPED, LifeCycle.INTERNAL_ERROR})
#: ``status.state`` for each life cycle.
STATUS_STATE: Final = {
    LifeCycle.QUEUED: "QUEUED",
    LifeCycle.PENDING: "PENDING",
    LifeCycle.RUNNING: "RUNNING",
    LifeCycle.TERMINATING: "TERMINATING",
    LifeCycle.TERMINATED: "TERMINATED",
    LifeCycle.SKIPPED: "TERMINATED",
    LifeCycle.INTERNAL_ERROR: "TERMINATED",
    LifeCycle.BLOCKED: "BLOCKED",
    LifeCycle.WAITING_FOR_RETRY: "WAITING",
}


class ResultState(StrEnum):
    SUCCESS = "SUCCESS"
    SUCCESS_WITH_FAILURES = "SUCCESS_WITH_FAILURES"
    FAILED = "FAILED"
    TIMEDOUT = "TIMEDOUT"
    CANCELED = "CANCELED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    UPSTREAM_CANCELED = "UPSTREAM_CANCELED"
    EXCLUDED = "EXCLUDED"
    MAXIMUM_CONCURRENT_RUNS_REACHED = "MAXIMUM_CONCURRENT_RUNS_REACHED"


@dataclass(frozen=True)
class Termination:
    """``status.termination_details``: why the run ended, in the API's codes."""

    code: str
    type: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "type": self.type, "message": self.message}


def now_ms() -> int:
    return int(time.time() * 1000)


def clip(text: str, limit: int = MAX_STATE_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def span(start: int | None, end: int | None) -> int:
    """Milliseconds from ``start`` to ``end`` (or now); 0 before the start."""
    if start is None:
        return 0
    return max(0, (end if end is not None else now_ms()) - start)


@dataclass
class Progress:
    """Where a run is in its life cycle, in the two shapes the API shows it."""

    life_cycle: LifeCycle = LifeCycle.QUEUED
    result_state: ResultState | None = None
    state_message: str = ""
    termination: Termination | None = None
    #: (code, message) while waiting for a slot under max_concurrent_runs.
    queue_details: tuple[str, str] | None = None
    user_cancelled_or_timedout: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.life_cycle in TERMINAL

    def state_json(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": self.life_cycle.value,
            "state_message": self.state_message,
            "user_cancelled_or_timedout": self.user_cancelled_or_timedout,
        }
        if self.result_state is not None and self.is_terminal:
            state["result_state"] = self.result_state.value
        if self.queue_details is not None and self.life_cycle is LifeCycle.QUEUED:
            state["queue_reason"] = self.queue_details[1]
        return state

    def status_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": STATUS_STATE[self.life_cycle]}
        if self.queue_details is not None and self.life_cycle is LifeCycle.QUEUED:
            code, message = self.queue_details
            status["queue_details"] = {"code": code, "message": message}
        if self.termination is not None:
            status["termination_details"] = self.termination.as_json()
        return status

    def enter(self, life_cycle: LifeCycle, message: str = "") -> None:
        self.life_cycle = life_cycle
        self.state_message = message

    def reopen(self) -> None:
        """Back to the start of a life cycle, as a repaired job run is."""
        self.result_state = self.termination = None
        self.user_cancelled_or_timedout = False

    def record(self, result: ResultState | None, termination: Termination, message: str) -> None:
        """The outcome; the caller moves the life cycle on (TERMINATING, or a terminal one)."""
        self.result_state = result
        self.termination = termination
        self.state_message = message
        self.user_cancelled_or_timedout = result in (ResultState.CANCELED, ResultState.TIMEDOUT)


@dataclass(eq=False)
class TaskRun(Progress):
    """One attempt of one task of a job run."""

    run_id: int = 0
    spec: TaskSpec = None  # type: ignore[assignment]
    job_run: JobRun = None  # type: ignore[assignment]
    attempt_number: int = 0
    #: The repair that created this attempt (None: the original run, or a retry within it).
    repair_id: int | None = None
    run_dir: Path = Path()
    created_time: int = field(default_factory=now_ms)
    queue_duration: int = 0
    setup_start: int | None = None
    execution_start: int | None = None
    cleanup_start: int | None = None
    end_time: int | None = None
    #: Whether the task really started RUNNING (a notebook process, or its step).
    executed: bool = False
    exit_value: str | None = None
    error: dict[str, str] | None = None
    pid: int | None = None
    returncode: int | None = None
    #: Set to end the attempt early; ``stop_reason`` says why ("cancel", "timeout", ...).
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def stdout_path(self) -> Path:
        return self.run_dir / "stdout.txt"

    @property
    def stderr_path(self) -> Path:
        return self.run_dir / "stderr.txt"

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()

    def _progress_json(self) -> dict[str, Any]:
        """What the task run and its entry in the job run's ``tasks`` share."""
        return {
            "run_id": self.run_id,
            "attempt_number": self.attempt_number,
            "state": self.state_json(),
            "status": self.status_json(),
            "run_page_url": self.job_run.page_url(self.run_id),
            "start_time": self.setup_start or 0,
            "end_time": self.end_time or 0,
            "setup_duration": span(self.setup_start, self.execution_start or self.cleanup_start or self.end_time),
            "execution_duration": span(self.execution_start, self.cleanup_start or self.end_time),
            "cleanup_duration": span(self.cleanup_start, self.end_time),
            "queue_duration": self.queue_duration,
        }

    # Each view carries only fields databricks-sdk's models of it know (a test
    # round-trips every answer through them): the task run seen through
    # ``runs/get`` is a ``Run``, so it has no ``task_key`` or task settings;
    # those belong to the ``RunTask`` in the job run's ``tasks``.

    def run_task_json(self) -> dict[str, Any]:
        """This attempt as an entry of the job run's ``tasks`` (a ``RunTask``)."""
        return {**self.spec.run_task_settings(), **self._progress_json()}

    def task_run_json(self) -> dict[str, Any]:
        """``runs/get`` of the task run: the task, with the job run it belongs to."""
        first = self.job_run.attempts[self.key][0]
        return {
            **self._progress_json(),
            "job_id": self.job_run.job.job_id,
            "job_run_id": self.job_run.run_id,
            "number_in_job": self.run_id,
            "original_attempt_run_id": first.run_id,
            "creator_user_name": USER_NAME,
            "run_name": self.key,
            "run_type": "JOB_RUN",
            "trigger": "ONE_TIME",
        }

    def output_json(self) -> dict[str, Any]:
        """``runs/get-output`` of the task run."""
        output: dict[str, Any] = {"metadata": self.task_run_json()}
        if self.is_terminal and self.spec.runs_notebook and self.executed:
            value = self.exit_value or ""
            encoded = value.encode()
            truncated = len(encoded) > MAX_EXIT_VALUE_BYTES
            if truncated:
                value = encoded[:MAX_EXIT_VALUE_BYTES].decode(errors="ignore")
            output["notebook_output"] = {"result": value, "truncated": truncated} if value else {}
        if self.error is not None:
            output["error"] = f"{self.error['type']}: {self.error['message']}"
            if self.error.get("trace"):
                output["error_trace"] = self.error["trace"]
        return output

    def summary_json(self) -> dict[str, Any]:
        """The control API's view of the attempt, with its process."""
        return {
            "task_key": self.key,
            "run_id": self.run_id,
            "attempt_number": self.attempt_number,
            "repair_id": self.repair_id,
            "life_cycle_state": self.life_cycle.value,
            "result_state": self.result_state.value if self.result_state else None,
            "state_message": self.state_message,
            "termination": self.termination.as_json() if self.termination else None,
            "executed": self.executed,
            "pid": self.pid,
            "returncode": self.returncode,
            "exit_value": self.exit_value,
            "error": self.error,
        }


@dataclass
class Repair:
    """One entry of ``repair_history``: the original run, or a repair of it."""

    type: str
    start_time: int
    id: int | None = None
    end_time: int | None = None
    task_run_ids: list[int] = field(default_factory=list)
    #: The job run's state when this attempt ended (None while it is the current one).
    final: tuple[dict[str, Any], dict[str, Any]] | None = None
    #: What the repair asked for (control API only).
    rerun_tasks: list[str] = field(default_factory=list)


@dataclass(eq=False)
class JobRun(Progress):
    """One run of a job, from run-now until long after it ends."""

    run_id: int = 0
    job: JobSpec = None  # type: ignore[assignment]
    pipeline_id: str = ""
    #: Every declared job parameter with the value this run uses.
    job_parameters: dict[str, str] = field(default_factory=dict)
    passed_parameters: dict[str, str] = field(default_factory=dict)
    idempotency_token: str | None = None
    plan: FaultPlan = field(default_factory=FaultPlan)
    timeout_seconds: float = 0
    run_dir: Path = Path()
    public_url: str = ""
    start_time: int = field(default_factory=now_ms)
    queue_duration: int = 0
    end_time: int | None = None
    #: Every attempt of every task, by task key, oldest first.
    attempts: dict[str, list[TaskRun]] = field(default_factory=dict)
    history: list[Repair] = field(default_factory=list)
    workspace_id: str = ""
    cancel_requested: bool = False
    #: Set to end the run early; ``stop_reason`` says why ("cancel" or "timeout").
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    stop_reason: str | None = None

    def page_url(self, run_id: int) -> str:
        return f"{self.public_url}/?o={self.workspace_id}#job/{self.job.job_id}/run/{run_id}"

    def latest(self, key: str) -> TaskRun:
        return self.attempts[key][-1]

    def task_runs(self) -> list[TaskRun]:
        """Every attempt, task by task in the job's order, each task's oldest attempt first."""
        return [attempt for key in self.job.task_keys for attempt in self.attempts.get(key, [])]

    @property
    def latest_repair_id(self) -> int | None:
        return self.history[-1].id if len(self.history) > 1 else None

    def request_stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()

    def history_json(self) -> list[dict[str, Any]]:
        items = []
        for entry in self.history:
            state, status = entry.final or (self.state_json(), self.status_json())
            item: dict[str, Any] = {
                "type": entry.type,
                "start_time": entry.start_time,
                "end_time": entry.end_time or 0,
                "state": state,
                "status": status,
            }
            if entry.id is not None:
                item["id"] = entry.id
            if entry.task_run_ids:
                item["task_run_ids"] = list(entry.task_run_ids)
            items.append(item)
        return items

    def job_run_json(self, *, include_history: bool) -> dict[str, Any]:
        """``runs/get`` of the job run, every array whole (``pages`` cuts them for 2.2)."""
        run: dict[str, Any] = {
            "job_id": self.job.job_id,
            "run_id": self.run_id,
            "number_in_job": self.run_id,
            "original_attempt_run_id": self.run_id,
            "job_run_id": self.run_id,
            "creator_user_name": USER_NAME,
            "run_name": self.job.name,
            "run_page_url": self.page_url(self.run_id),
            "run_type": "JOB_RUN",
            "trigger": "ONE_TIME",
            "attempt_number": 0,
            "state": self.state_json(),
            "status": self.status_json(),
            "start_time": self.start_time,
            "end_time": self.end_time or 0,
            "setup_duration": 0,
            "execution_duration": 0,
            "cleanup_duration": 0,
            "queue_duration": self.queue_duration,
            "run_duration": span(self.start_time, self.end_time) if self.is_terminal else 0,
            "tasks": [attempt.run_task_json() for attempt in self.task_runs()],
        }
        if self.job.parameters:
            run["job_parameters"] = [
                {"name": name, "default": default, "value": self.job_parameters[name]}
                for name, default in self.job.parameters.items()
            ]
        if include_history:
            run["repair_history"] = self.history_json()
        return run

    def summary_json(self) -> dict[str, Any]:
        """The control API's view: what a test needs, including each attempt's process."""
        return {
            "run_id": self.run_id,
            "job_id": self.job.job_id,
            "job_name": self.job.name,
            "pipeline_id": self.pipeline_id,
            "idempotency_token": self.idempotency_token,
            "life_cycle_state": self.life_cycle.value,
            "result_state": self.result_state.value if self.result_state else None,
            "state_message": self.state_message,
            "termination": self.termination.as_json() if self.termination else None,
            "plan": self.plan.model_dump(),
            "timeout_seconds": self.timeout_seconds,
            "job_parameters": {
                name: REDACTED if name in REDACTED_PARAMETERS else value for name, value in self.job_parameters.items()
            },
            "repairs": [
                {"repair_id": entry.id, "rerun_tasks": entry.rerun_tasks, "task_run_ids": entry.task_run_ids}
                for entry in self.history[1:]
            ],
            "tasks": [attempt.summary_json() for attempt in self.task_runs()],
        }

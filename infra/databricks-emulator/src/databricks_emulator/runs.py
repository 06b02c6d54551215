"""A job run and the JSON the Jobs API 2.1/2.2 shows for it.

A run of the pipeline job is a multi-task job run with one notebook task, as
on a real workspace: the job run and its task run have separate run ids, the
job run's setup/execution/cleanup durations are 0 (the task run carries them)
and ``runs/get-output`` answers only for the task run.

Both state shapes are kept in step: the older ``state`` (life_cycle_state,
result_state, state_message, user_cancelled_or_timedout) and the newer
``status`` (state, queue_details, termination_details).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from databricks_emulator.faults import FaultPlan
from databricks_emulator.jobspec import (
    JOB_NAME,
    JOB_PARAMETERS,
    TASK_KEY,
    USER_NAME,
    WORKSPACE_NOTEBOOK_PATH,
)

#: get-output returns at most the first 5 MB of a notebook's exit value.
MAX_EXIT_VALUE_BYTES = 5 * 1024 * 1024
#: A state message quotes at most this much of an error.
MAX_STATE_MESSAGE_CHARS = 1000


class LifeCycle(StrEnum):
    """``state.life_cycle_state``; ``status.state`` uses the same names for these five."""

    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    TERMINATING = "TERMINATING"
    TERMINATED = "TERMINATED"


class ResultState(StrEnum):
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    TIMEDOUT = "TIMEDOUT"
    CANCELED = "CANCELED"


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


@dataclass
class Run:
    """One run of the pipeline job, from run-now until long after it ends."""

    run_id: int
    task_run_id: int
    job_id: int
    pipeline_id: str
    #: Every declared job parameter with the value this run uses.
    job_parameters: dict[str, str]
    passed_parameters: dict[str, str]
    idempotency_token: str | None
    plan: FaultPlan
    timeout_seconds: float
    run_dir: Path
    public_url: str
    workspace_id: str
    start_time: int = field(default_factory=now_ms)
    life_cycle: LifeCycle = LifeCycle.QUEUED
    result_state: ResultState | None = None
    state_message: str = ""
    task_state_message: str = ""
    #: (code, message) while waiting for a slot under max_concurrent_runs.
    queue_details: tuple[str, str] | None = None
    queue_duration: int = 0
    termination: Termination | None = None
    user_cancelled_or_timedout: bool = False
    setup_start: int | None = None
    execution_start: int | None = None
    cleanup_start: int | None = None
    end_time: int | None = None
    exit_value: str | None = None
    error: dict[str, str] | None = None
    pid: int | None = None
    returncode: int | None = None
    cancel_requested: bool = False

    @property
    def is_terminal(self) -> bool:
        return self.life_cycle is LifeCycle.TERMINATED

    @property
    def stdout_path(self) -> Path:
        return self.run_dir / "stdout.txt"

    @property
    def stderr_path(self) -> Path:
        return self.run_dir / "stderr.txt"

    def page_url(self, run_id: int) -> str:
        return f"{self.public_url}/?o={self.workspace_id}#job/{self.job_id}/run/{run_id}"

    # -- the two state shapes ------------------------------------------------

    def _state(self, message: str) -> dict[str, Any]:
        state: dict[str, Any] = {
            "life_cycle_state": self.life_cycle.value,
            "state_message": message,
            "user_cancelled_or_timedout": self.user_cancelled_or_timedout,
        }
        if self.result_state is not None and self.is_terminal:
            state["result_state"] = self.result_state.value
        if self.queue_details is not None and self.life_cycle is LifeCycle.QUEUED:
            state["queue_reason"] = self.queue_details[1]
        return state

    def _status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.life_cycle.value}
        if self.queue_details is not None and self.life_cycle is LifeCycle.QUEUED:
            code, message = self.queue_details
            status["queue_details"] = {"code": code, "message": message}
        if self.termination is not None:
            status["termination_details"] = self.termination.as_json()
        return status

    # -- durations (milliseconds) ----------------------------------------------

    @staticmethod
    def _span(start: int | None, end: int | None) -> int:
        if start is None:
            return 0
        return max(0, (end if end is not None else now_ms()) - start)

    def _setup_duration(self) -> int:
        return self._span(
            self.setup_start, self.execution_start or self.cleanup_start or self.end_time
        )

    def _execution_duration(self) -> int:
        return self._span(self.execution_start, self.cleanup_start or self.end_time)

    def _cleanup_duration(self) -> int:
        return self._span(self.cleanup_start, self.end_time)

    # -- views ---------------------------------------------------------------
    #
    # Each view carries only fields databricks-sdk's models of it know (a test
    # round-trips every answer through them): a run has no ``format``, and the
    # task run seen through ``runs/get`` is a ``Run``, so it has no ``task_key``
    # or ``notebook_task``; those belong to the ``RunTask`` in ``tasks``.

    def _task_progress(self) -> dict[str, Any]:
        """What the task run and its entry in the job run's ``tasks`` share."""
        return {
            "run_id": self.task_run_id,
            "attempt_number": 0,
            "state": self._state(self.task_state_message),
            "status": self._status(),
            "run_page_url": self.page_url(self.task_run_id),
            "start_time": self.setup_start or 0,
            "end_time": self.end_time or 0,
            "setup_duration": self._setup_duration(),
            "execution_duration": self._execution_duration(),
            "cleanup_duration": self._cleanup_duration(),
            "queue_duration": self.queue_duration,
        }

    def job_run_json(self) -> dict[str, Any]:
        """``runs/get`` of the job run."""
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "number_in_job": self.run_id,
            "original_attempt_run_id": self.run_id,
            "job_run_id": self.run_id,
            "creator_user_name": USER_NAME,
            "run_name": JOB_NAME,
            "run_page_url": self.page_url(self.run_id),
            "run_type": "JOB_RUN",
            "trigger": "ONE_TIME",
            "attempt_number": 0,
            "state": self._state(self.state_message),
            "status": self._status(),
            "start_time": self.start_time,
            "end_time": self.end_time or 0,
            "setup_duration": 0,
            "execution_duration": 0,
            "cleanup_duration": 0,
            "queue_duration": self.queue_duration,
            "run_duration": self._span(self.start_time, self.end_time) if self.is_terminal else 0,
            "job_parameters": [
                {"name": name, "default": default, "value": self.job_parameters[name]}
                for name, default in JOB_PARAMETERS.items()
            ],
            "tasks": [
                {
                    **self._task_progress(),
                    "task_key": TASK_KEY,
                    "notebook_task": {"notebook_path": WORKSPACE_NOTEBOOK_PATH, "source": "WORKSPACE"},
                    "run_if": "ALL_SUCCESS",
                    "timeout_seconds": 0,
                }
            ],
            "has_more": False,
        }

    def task_run_json(self) -> dict[str, Any]:
        """``runs/get`` of the task run: the task, with the job run it belongs to."""
        return {
            **self._task_progress(),
            "job_id": self.job_id,
            "job_run_id": self.run_id,
            "number_in_job": self.task_run_id,
            "original_attempt_run_id": self.task_run_id,
            "creator_user_name": USER_NAME,
            "run_name": TASK_KEY,
            "run_type": "JOB_RUN",
            "trigger": "ONE_TIME",
        }

    def output_json(self) -> dict[str, Any]:
        """``runs/get-output`` of the task run."""
        output: dict[str, Any] = {"metadata": self.task_run_json()}
        if self.is_terminal:
            value = self.exit_value or ""
            encoded = value.encode()
            truncated = len(encoded) > MAX_EXIT_VALUE_BYTES
            if truncated:
                value = encoded[:MAX_EXIT_VALUE_BYTES].decode(errors="ignore")
            output["notebook_output"] = {"result": value, "truncated": truncated} if value else {}
        if self.error is not None:
            output["error"] = f"{self.error['type']}: {self.error['message']}"
            output["error_trace"] = self.error.get("trace", "")
        return output

    def summary_json(self) -> dict[str, Any]:
        """The control API's view: what a test needs, including the process."""
        return {
            "run_id": self.run_id,
            "task_run_id": self.task_run_id,
            "pipeline_id": self.pipeline_id,
            "idempotency_token": self.idempotency_token,
            "life_cycle_state": self.life_cycle.value,
            "result_state": self.result_state.value if self.result_state else None,
            "state_message": self.state_message,
            "plan": self.plan.model_dump(),
            "timeout_seconds": self.timeout_seconds,
            "pid": self.pid,
            "returncode": self.returncode,
            "exit_value": self.exit_value,
            "error": self.error,
        }

    # -- transitions -----------------------------------------------------------

    def enter(self, life_cycle: LifeCycle, message: str = "") -> None:
        self.life_cycle = life_cycle
        self.state_message = self.task_state_message = message

    def finish(
        self, result: ResultState, termination: Termination, *, job_message: str, task_message: str
    ) -> None:
        """Record the outcome; the run stays TERMINATING until ``close``."""
        self.result_state = result
        self.termination = termination
        self.user_cancelled_or_timedout = result in (ResultState.CANCELED, ResultState.TIMEDOUT)
        self.cleanup_start = now_ms()
        self.life_cycle = LifeCycle.TERMINATING
        self.state_message, self.task_state_message = job_message, task_message

    def end_early(self, result: ResultState, code: str, message: str) -> None:
        """A run stopped from outside (cancelled, timed out): the same words at both levels."""
        self.finish(
            result,
            Termination(code, "CLIENT_ERROR", message),
            job_message=message,
            task_message=message,
        )

    def close(self) -> None:
        self.end_time = now_ms()
        self.life_cycle = LifeCycle.TERMINATED


def clip(text: str, limit: int = MAX_STATE_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

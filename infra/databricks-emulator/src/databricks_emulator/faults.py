"""Fault and timing plans, chosen per pipeline or per job through the emulator's control API.

A run's plan is its pipeline's (the run's ``pipeline_id`` job parameter), else
its job's, else the settable default, and is fixed into the run when run-now
creates it. None of this travels through the product's parameters: the
notebooks stay pristine, and the harness and the driver induce each fault from
outside (see ``harness`` and ``driver``).

A plan acts on the whole run (a notebook fault for every notebook task, a start
delay, a run ending INTERNAL_ERROR or SKIPPED, refused or slow run-now calls)
and on single tasks (``tasks``: fail, end with a chosen termination code and
type, wait BLOCKED or WAITING_FOR_RETRY first), for the first N attempts of a
task or for every one. Attempts count across retries and repairs of one run.

Counters live here too, because fault tests assert on them: how many
``run-now`` calls each pipeline made, how many were refused by an injected
429/503, and which runs it got.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from databricks_emulator.harness import FAULTS

#: Termination codes a task can be made to fail with: databricks-sdk's TerminationCodeCode
#: without those that are no failure of the task (SUCCESS, SKIPPED, DISABLED, the
#: cancellations and the two that skip a whole run).
FAILURE_CODES: Final = (
    "BREAKING_CHANGE",
    "BUDGET_POLICY_LIMIT_EXCEEDED",
    "CLOUD_FAILURE",
    "CLUSTER_ERROR",
    "CLUSTER_REQUEST_LIMIT_EXCEEDED",
    "DRIVER_ERROR",
    "FEATURE_DISABLED",
    "INTERNAL_ERROR",
    "INVALID_CLUSTER_REQUEST",
    "INVALID_RUN_CONFIGURATION",
    "LIBRARY_INSTALLATION_ERROR",
    "MAX_SPARK_CONTEXTS_EXCEEDED",
    "REPOSITORY_CHECKOUT_FAILED",
    "RESOURCE_NOT_FOUND",
    "RUN_EXECUTION_ERROR",
    "STORAGE_ACCESS_ERROR",
    "UNAUTHORIZED_ERROR",
    "WORKSPACE_RUN_LIMIT_EXCEEDED",
)
#: databricks-sdk's TerminationTypeType, without SUCCESS.
FAILURE_TYPES: Final = ("CLIENT_ERROR", "CLOUD_FAILURE", "INTERNAL_ERROR")
#: The failure a notebook itself reports: its code raised. Every other code is a
#: failure of the platform around it, which ends the notebook's process unfinished.
USER_CODE_FAILURE: Final = "RUN_EXECUTION_ERROR"
#: The type each code gets when the plan names none.
DEFAULT_TYPES: Final = {
    "CLOUD_FAILURE": "CLOUD_FAILURE",
    "INTERNAL_ERROR": "INTERNAL_ERROR",
    "DRIVER_ERROR": "INTERNAL_ERROR",
    "CLUSTER_ERROR": "INTERNAL_ERROR",
    "BREAKING_CHANGE": "INTERNAL_ERROR",
}
#: Life cycles a run or a task can be made to end in instead of running.
ENDINGS: Final = ("INTERNAL_ERROR", "SKIPPED")

FailureCode = Literal[FAILURE_CODES]  # type: ignore[valid-type]
FailureType = Literal[FAILURE_TYPES]  # type: ignore[valid-type]
Ending = Literal[ENDINGS]  # type: ignore[valid-type]


class TaskFault(BaseModel):
    """What to do to one task of a run (its key in ``FaultPlan.tasks``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The task fails: a notebook raises before its first cell (so it reports nothing
    #: itself), any other task fails at the end of its step. RUN_EXECUTION_ERROR.
    fail: bool = False
    #: The task fails with this termination code (and ``type``). Any code but
    #: RUN_EXECUTION_ERROR is the platform failing: the notebook's process is killed
    #: ``kill_after_seconds`` after it starts, before it runs a cell, so it never calls back.
    code: FailureCode | None = None
    type: FailureType | None = None
    #: The failure's message (state message and get-output's ``error``).
    message: str | None = Field(default=None, min_length=1, max_length=1000)
    kill_after_seconds: float = Field(default=0, ge=0, le=3600)
    #: Notebook tasks: widget values that replace the run's, e.g. a ``source`` that does not
    #: exist, so the notebook fails (and reports that) on its own.
    widgets: dict[str, str] = Field(default_factory=dict)
    #: The task never finishes (a notebook blocks before its first cell); cancel or timeout end it.
    hang: bool = False
    #: The task ends in this life cycle instead of running: INTERNAL_ERROR (a failure of the
    #: Jobs service) or SKIPPED (it is passed over, and counts as done for its dependents).
    life_cycle: Ending | None = None
    #: Apply all of the above to the first N attempts of the task only (0: to every attempt).
    fail_attempts: int = Field(default=0, ge=0, le=1000)
    #: Shown BLOCKED, or WAITING_FOR_RETRY, for this long before each attempt starts
    #: (WAITING_FOR_RETRY also replaces ``min_retry_interval_millis`` between retries).
    blocked_seconds: float = Field(default=0, ge=0, le=3600)
    waiting_for_retry_seconds: float = Field(default=0, ge=0, le=3600)
    #: How long a task that is not a notebook takes (default ``DATABRICKS_EMULATOR_TASK_SECONDS``).
    seconds: float | None = Field(default=None, ge=0, le=86_400)

    @model_validator(mode="after")
    def _type_goes_with_a_code(self) -> TaskFault:
        if self.type is not None and self.code is None:
            raise ValueError("type is the type of a termination code: give code too")
        return self

    def applies_to(self, attempt: int) -> bool:
        """Whether the failure parts of this fault act on the task's attempt ``attempt`` (0 first)."""
        return self.fail_attempts == 0 or attempt < self.fail_attempts

    @property
    def failure_code(self) -> str | None:
        """The code this fault fails the task with, or None when it does not fail it."""
        if self.code is not None:
            return self.code
        return USER_CODE_FAILURE if self.fail else None

    @property
    def failure_type(self) -> str:
        code = self.failure_code or USER_CODE_FAILURE
        return self.type or DEFAULT_TYPES.get(code, "CLIENT_ERROR")


#: The fault of a task the plan says nothing about.
NO_TASK_FAULT: Final = TaskFault()


class FaultPlan(BaseModel):
    """What to do to a pipeline's (or a job's) runs. The default plan does nothing unusual."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: For every notebook task: ``none``; ``fail`` (the ``source`` widget names a missing
    #: file); ``hang`` (never finishes); ``drop_callback`` (the callback is swallowed).
    notebook: Literal[FAULTS] = "none"  # type: ignore[valid-type]
    #: Extra time in PENDING before the run's first tasks start; no process exists meanwhile.
    start_delay_seconds: float = Field(default=0, ge=0, le=86_400)
    #: The run waits in PENDING, with no process, until its pipeline is released
    #: (``POST /emulator/pipelines/{id}/release``), then through ``start_delay_seconds``: a
    #: test holds its notebooks until it has done what must come before their callbacks,
    #: where a start delay would have to guess how long that takes.
    held: bool = False
    #: Overrides the job's timeout for these runs, so a timeout test need not wait an hour.
    timeout_seconds: float | None = Field(default=None, gt=0, le=86_400)
    #: The run ends in this life cycle: SKIPPED at once (as if the job's concurrency limit
    #: were reached without a queue), INTERNAL_ERROR when its tasks would start.
    life_cycle: Ending | None = None
    #: Faults of single tasks, by task key.
    tasks: dict[str, TaskFault] = Field(default_factory=dict)
    #: How many run-now calls are refused before one is accepted, and how.
    run_now_errors: int = Field(default=0, ge=0, le=1000)
    run_now_error_status: Literal[429, 503] = 429
    #: The ``Retry-After`` those refusals carry (databricks-sdk sleeps that long, plus up to 1 s).
    retry_after_seconds: int = Field(default=1, ge=0, le=3600)
    #: How many accepted run-now calls answer only after ``slow_response_seconds``.
    #: The run exists at once; only the answer is late, as when the API is slow
    #: and the client gives up and retries: the retry must find the same run.
    slow_run_now_responses: int = Field(default=0, ge=0, le=1000)
    slow_response_seconds: float = Field(default=0, ge=0, le=600)

    def task(self, key: str) -> TaskFault:
        return self.tasks.get(key, NO_TASK_FAULT)

    def unknown_tasks(self, known: set[str]) -> list[str]:
        return sorted(set(self.tasks) - known)


@dataclass
class PipelineCounters:
    """What one pipeline id has asked of the emulator."""

    run_now_calls: int = 0
    #: runs/get calls of the pipeline's job runs or their task runs.
    runs_get_calls: int = 0
    run_now_rejected: int = 0
    run_ids: list[int] = field(default_factory=list)
    dropped_callbacks: int = 0
    #: Refusals still to come under the current plan; None until the first call.
    errors_left: int | None = None
    #: Slow answers still to come under the current plan; None until the first accepted call.
    slow_left: int | None = None

    def restart(self) -> None:
        """A new plan starts its refusals and slow answers afresh."""
        self.errors_left = self.slow_left = None


@dataclass
class WorkspaceCalls:
    """Jobs API calls counted across the workspace, so a test sees how many a sweep made."""

    runs_list: int = 0
    runs_get: int = 0

    def as_json(self) -> dict[str, int]:
        return {"runs_list_calls": self.runs_list, "runs_get_calls": self.runs_get}


class FaultRegistry:
    """Plans by pipeline id and by job id, the default plan, and every pipeline's counters."""

    def __init__(self) -> None:
        self.default = FaultPlan()
        self.plans: dict[str, FaultPlan] = {}
        self.job_plans: dict[int, FaultPlan] = {}
        self.counters: dict[str, PipelineCounters] = {}
        #: Set once a pipeline is released: its held runs go on, and later ones are not held.
        self.releases: dict[str, asyncio.Event] = {}

    def plan_for(self, pipeline_id: str, job_id: int) -> FaultPlan:
        if pipeline_id in self.plans:
            return self.plans[pipeline_id]
        return self.job_plans.get(job_id, self.default)

    def counters_for(self, pipeline_id: str) -> PipelineCounters:
        return self.counters.setdefault(pipeline_id, PipelineCounters())

    def _restart_all(self) -> None:
        for counters in self.counters.values():
            counters.restart()

    def set_default(self, plan: FaultPlan) -> None:
        self.default = plan
        self._restart_all()

    def set_plan(self, pipeline_id: str, plan: FaultPlan) -> None:
        self.plans[pipeline_id] = plan
        self.counters_for(pipeline_id).restart()

    def clear_plan(self, pipeline_id: str) -> None:
        self.plans.pop(pipeline_id, None)
        self.counters_for(pipeline_id).restart()

    def set_job_plan(self, job_id: int, plan: FaultPlan) -> None:
        self.job_plans[job_id] = plan
        self._restart_all()

    def clear_job_plan(self, job_id: int) -> None:
        self.job_plans.pop(job_id, None)
        self._restart_all()

    def clear_all(self) -> None:
        self.plans.clear()
        self.job_plans.clear()
        self.set_default(FaultPlan())

    def released(self, pipeline_id: str) -> asyncio.Event:
        """Set once ``pipeline_id`` is released (:meth:`release`); what its held runs wait for."""
        return self.releases.setdefault(pipeline_id, asyncio.Event())

    def release(self, pipeline_id: str) -> None:
        self.released(pipeline_id).set()

    def take_run_now_error(self, pipeline_id: str, job_id: int) -> FaultPlan | None:
        """The plan whose refusal this run-now call gets, or None when it is accepted."""
        plan = self.plan_for(pipeline_id, job_id)
        counters = self.counters_for(pipeline_id)
        if counters.errors_left is None:
            counters.errors_left = plan.run_now_errors
        if counters.errors_left <= 0:
            return None
        counters.errors_left -= 1
        counters.run_now_rejected += 1
        return plan

    def take_slow_response(self, pipeline_id: str, job_id: int) -> float:
        """Seconds to hold back this accepted run-now call's answer (0: answer now)."""
        plan = self.plan_for(pipeline_id, job_id)
        counters = self.counters_for(pipeline_id)
        if counters.slow_left is None:
            counters.slow_left = plan.slow_run_now_responses
        if counters.slow_left <= 0:
            return 0.0
        counters.slow_left -= 1
        return plan.slow_response_seconds

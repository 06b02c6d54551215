"""The gateway's documents as typed models: a status, a page of pipelines, a timeline, a job.

Written here rather than imported from the gateway, so a backend installs the
client without the server. tests/client/test_models_contract.py holds them to
the gateway's OpenAPI document: every field here exists there with a
compatible type, and every field the gateway always sends exists here.

Fields the gateway adds later are ignored, not refused: a newer gateway must
not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Document(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class PipelineState(StrEnum):
    STARTING = "starting"
    WAITING = "waiting"
    AWAITING_REPAIR = "awaiting_repair"
    #: At an approval gate, until a person approves or rejects it (``approve``, ``reject``).
    AWAITING_APPROVAL = "awaiting_approval"
    NOTIFYING = "notifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def final(self) -> bool:
        """Nothing more will happen to a pipeline in this state."""
        return self in FINAL_STATES


#: The states a pipeline ends in.
FINAL_STATES = frozenset(
    {PipelineState.SUCCEEDED, PipelineState.FAILED, PipelineState.CANCELLED, PipelineState.TIMED_OUT}
)


class RunError(_Document):
    """Why a pipeline failed, timed out or was cancelled."""

    type: str
    message: str


class TaskOutcome(_Document):
    task_key: str
    run_id: int | None = None
    attempt_number: int = 0
    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""
    termination_code: str | None = None
    termination_type: str | None = None
    exit_value: str | None = None
    truncated: bool = False
    error: str | None = None


class RunReport(_Document):
    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""
    termination_code: str | None = None
    termination_type: str | None = None
    tasks: list[TaskOutcome] = Field(default_factory=list)


class DatabricksRun(_Document):
    run_id: int
    run_page_url: str | None
    job_id: int | None = None
    report: RunReport | None = None


class Notification(_Document):
    """What became of the email that tells how the pipeline ended."""

    delivered: bool
    message_id: str | None
    error: str | None
    smtp_code: int | None


class Attempt(_Document):
    """One run of the pipeline's tasks: the original (number 0) or a repair."""

    number: int
    repair_id: int | None = None
    #: When it started, in epoch milliseconds.
    started_at: int
    reason: str
    by: str | None = None
    rerun_tasks: list[str] = Field(default_factory=list)
    parameters: dict[str, str] | None = None
    outcome: Literal["success", "failure", "cancelled"] | None = None
    error: RunError | None = None


class StepKind(StrEnum):
    JOB = "job"
    APPROVAL = "approval"
    EMAIL = "email"


class StepState(StrEnum):
    """Where one step stands; a job step's final states are a pipeline's own."""

    STARTING = "starting"
    RUNNING = "running"
    AWAITING_REPAIR = "awaiting_repair"
    AWAITING_APPROVAL = "awaiting_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    APPROVED = "approved"
    REJECTED = "rejected"
    #: An approval nobody decided before its deadline.
    EXPIRED = "expired"
    SENT = "sent"
    NOT_SENT = "not_sent"

    @property
    def final(self) -> bool:
        """Nothing more will happen to this step."""
        return self not in _OPEN_STEP_STATES


_OPEN_STEP_STATES = frozenset(
    {StepState.STARTING, StepState.RUNNING, StepState.AWAITING_REPAIR, StepState.AWAITING_APPROVAL}
)


class Approval(_Document):
    """An approval gate: what it asks, who may decide (any of ``scopes``, or admin), until when."""

    step: str
    name: str
    message: str
    scopes: list[str]
    #: When the gate closes undecided, in epoch milliseconds.
    deadline: int
    notify: list[str] = Field(default_factory=list)
    #: When it opened, in epoch milliseconds.
    opened_at: int
    #: The promise its decision settles (the gateway's business, shown for the record).
    decision_promise_id: str | None = None


class ApprovalDecision(_Document):
    """What a person decided at a gate (``cancel``: the pipeline was cancelled while it waited)."""

    action: Literal["approve", "reject", "cancel"]
    by: str
    comment: str = ""
    #: In epoch milliseconds.
    decided_at: int


class StepRun(_Document):
    """A job step's Databricks run (its report is in the step's ``result`` and ``error``)."""

    run_id: int
    run_page_url: str | None = None
    job_id: int | None = None


class Step(_Document):
    """One step of a pipeline run by its code: a job, an approval gate, or an email.

    ``id`` is its position in the pipeline's function ("1", "2", ...);
    ``name`` the job's name or the gate's. Times are epoch milliseconds.
    """

    id: str
    kind: StepKind
    name: str
    state: StepState
    job: str | None = None
    run: StepRun | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: RunError | None = None
    approval: Approval | None = None
    decision: ApprovalDecision | None = None
    message_id: str | None = None
    started_at: int | None = None
    ended_at: int | None = None


class PipelineStatus(_Document):
    """Where a pipeline stands: ``GET /pipelines/{id}``, and what start, cancel, repair and abandon answer."""

    id: str
    state: PipelineState
    job: str
    #: The version of the pipeline's code it runs on; None for a pipeline started before pipelines had code.
    version: int | None = None
    email: str
    parameters: dict[str, str]
    parameters_at_start: dict[str, str] | None = None
    timeout_seconds: int
    databricks: DatabricksRun | None
    result: dict[str, Any] | None = None
    error: RunError | None = None
    notification: Notification | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    repair_deadline: datetime | None = None
    created_at: datetime
    updated_at: datetime
    #: Each step, in the order the pipeline's code took them; empty for a pipeline without steps.
    #: With exactly one job step, the fields above (run, result, error, attempts) are that step's.
    steps: list[Step] = Field(default_factory=list)

    def step(self, name_or_id: str) -> Step:
        """The step of this id, else of this name (the first, when several share it); KeyError if none."""
        for step in self.steps:
            if step.id == name_or_id:
                return step
        for step in self.steps:
            if step.name == name_or_id:
                return step
        raise KeyError(name_or_id)

    @property
    def open_gates(self) -> list[Step]:
        """The approval gates waiting for a decision now."""
        return [s for s in self.steps if s.kind is StepKind.APPROVAL and s.state is StepState.AWAITING_APPROVAL]


class PipelineSummary(_Document):
    """One pipeline as the list shows it."""

    id: str
    job: str
    state: PipelineState
    owner: str | None
    email: str
    created_at: datetime
    updated_at: datetime
    run_id: int | None = None
    run_page_url: str | None = None


class PipelinePage(_Document):
    """One page of pipelines, newest first; ``next_cursor`` reads the next."""

    items: list[PipelineSummary]
    next_cursor: str | None
    total: int | None
    stream_position: int = 0


class PipelineEvent(_Document):
    """One thing that happened to a pipeline; ``seq`` orders them and resumes a stream."""

    seq: int
    at: datetime
    kind: str
    summary: str
    data: dict[str, Any] = Field(default_factory=dict)


class PipelineTimeline(_Document):
    pipeline_id: str
    state: PipelineState
    events: list[PipelineEvent]


class JobParameter(_Document):
    """A parameter a job takes, and the rule its value must follow."""

    name: str
    description: str
    required: bool
    default: str | None
    pattern: str | None
    allowed: list[str] | None
    max_length: int
    url: dict[str, Any] | None = None
    path: dict[str, Any] | None = None
    integer: dict[str, Any] | None = None
    allow_empty: bool = False


class Job(_Document):
    """A pipeline the caller may start: a catalogue job's own (``kind`` "job") or a pipeline of several."""

    name: str
    title: str
    description: str
    default: bool
    completion: str
    default_timeout_seconds: int
    max_timeout_seconds: int
    parameters: list[JobParameter]
    kind: Literal["job", "pipeline"] = "job"
    #: The catalogue jobs it runs.
    jobs: list[str] = Field(default_factory=list)
    #: The version of its code (the ``version`` its pipelines start on).
    version: int | None = None
    #: When it starts by itself: a cron expression in UTC, or None.
    schedule: str | None = None


class JobList(_Document):
    jobs: list[Job]


class ErrorBody(_Document):
    """The body of every refusal: a stable ``code`` and a ``message`` for a person."""

    code: str
    message: str
    details: list[dict[str, Any]] | None = None

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


class PipelineStatus(_Document):
    """Where a pipeline stands: ``GET /pipelines/{id}``, and what start, cancel, repair and abandon answer."""

    id: str
    state: PipelineState
    job: str
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
    """A catalogue job the caller may start."""

    name: str
    title: str
    description: str
    default: bool
    completion: str
    default_timeout_seconds: int
    max_timeout_seconds: int
    parameters: list[JobParameter]


class JobList(_Document):
    jobs: list[Job]


class ErrorBody(_Document):
    """The body of every refusal: a stable ``code`` and a ``message`` for a person."""

    code: str
    message: str
    details: list[dict[str, Any]] | None = None

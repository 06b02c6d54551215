"""The gateway's HTTP documents: what clients send and what they get back."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from pipeline_shared.catalogue import (
    JOB_NAME_PATTERN,
    MAX_PARAMETERS_BYTES,
    MAX_TIMEOUT_SECONDS,
    PARAMETER_NAME_PATTERN,
    PIPELINE_PARAMETERS,
    Completion,
    JobName,
    ParameterName,
)
from pipeline_shared.models import Attempt, PipelineId, PipelineState, RunError, RunReport, StepSummary
from pipeline_shared.parameter_rules import IntegerRule, PathRule, UrlRule
from pipeline_shared.recipients import RecipientAddress

#: The pipeline's own job parameters: no request may set one.
RESERVED_PARAMETERS = frozenset(PIPELINE_PARAMETERS)


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PipelineRequest(_Document):
    """Start a pipeline."""

    id: PipelineId | None = Field(
        default=None,
        description="Your id for the pipeline (1-64 of A-Z a-z 0-9 . _ -). Starting the same id again with "
        "the same request returns the existing pipeline; with a different request, 409. Omit it to get a "
        "generated id.",
    )
    job: JobName | None = Field(
        default=None,
        description="The catalogue job to run (see GET /jobs); omitted: the catalogue's default job.",
        json_schema_extra={"pattern": JOB_NAME_PATTERN},
    )
    email: RecipientAddress = Field(
        description="Who is told how the pipeline ended: one bare address (no display name), at most 64 "
        "characters before the @ and 254 in all, ASCII before the @ (the domain may be internationalised)."
    )
    parameters: dict[ParameterName, str] = Field(
        default_factory=dict,
        description="The job's parameters, as strings, as GET /jobs declares them; e.g. "
        f'{{"source": "https://..."}}. At most {MAX_PARAMETERS_BYTES} bytes as JSON.',
        # Say in the document what the validator below enforces: names other
        # than the pattern's, and the pipeline's own, are refused.
        json_schema_extra={
            "propertyNames": {"pattern": PARAMETER_NAME_PATTERN, "not": {"enum": sorted(RESERVED_PARAMETERS)}},
        },
    )
    timeout_seconds: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_TIMEOUT_SECONDS,
        description="How long to wait for Databricks before giving up and cancelling the run, in whole "
        "seconds; at most the job's max_timeout_seconds. Omitted: the job's default_timeout_seconds.",
    )

    @field_validator("id")
    @classmethod
    def _not_only_dots(cls, value: str | None) -> str | None:
        # "." and ".." are path segments a URL resolves away: /pipelines/.. is
        # not this pipeline's address.
        if value is not None and set(value) == {"."}:
            raise ValueError("an id made only of dots cannot be addressed in a URL")
        return value

    @field_validator("parameters")
    @classmethod
    def _within_databricks_limits(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(RESERVED_PARAMETERS.intersection(value))
        if reserved:
            raise ValueError(f"parameter names reserved for the pipeline itself: {', '.join(reserved)}")
        try:
            size = len(json.dumps(value, ensure_ascii=False).encode())
        except UnicodeEncodeError as exc:
            raise ValueError(f"parameters must be valid Unicode text: {exc.reason} at {exc.start}") from exc
        if size > MAX_PARAMETERS_BYTES:
            raise ValueError(f"parameters take {size} bytes as JSON; the limit is {MAX_PARAMETERS_BYTES}")
        return value


#: A step, by its id ("3") or its name, as a client names it.
StepReference = Annotated[str, StringConstraints(min_length=1, max_length=80)]


class RepairRequest(_Document):
    """Repair a pipeline awaiting repair: rerun its run's failed tasks, optionally with changed parameters."""

    parameters: dict[ParameterName, str] = Field(
        default_factory=dict,
        description="Parameters to change for the repair (the others keep their values); checked as at start.",
    )
    step: StepReference | None = Field(
        default=None,
        description="For a pipeline run by its code: the job step to repair, by id or name; needed only when "
        "several await repair.",
    )


class AbandonRequest(_Document):
    """Abandon a pipeline awaiting repair (or, with ``step``, one of its job steps)."""

    step: StepReference | None = Field(
        default=None,
        description="For a pipeline run by its code: the job step to abandon, by id or name; needed only when "
        "several await repair.",
    )


class ApprovalRequest(_Document):
    """Approve or reject at an approval gate of a pipeline run by its code."""

    gate: StepReference | None = Field(
        default=None,
        description="The gate, by step id or name; may be omitted when exactly one gate is open.",
    )
    comment: Annotated[str, StringConstraints(max_length=2000)] = Field(
        default="", description="Why, for the pipeline's record and its owner (at most 2000 characters)."
    )


class DatabricksRunView(BaseModel):
    run_id: int
    run_page_url: str | None
    job_id: int | None = None
    report: RunReport | None = Field(
        default=None,
        description="The run as the Jobs API showed it when the outcome was read from it (every task's state "
        "and exit value); absent when the notebook's callback reported the outcome.",
    )


class ParameterView(BaseModel):
    name: str
    description: str
    required: bool
    default: str | None
    pattern: str | None
    allowed: list[str] | None
    max_length: int
    url: UrlRule | None = Field(default=None, description="A URL: the schemes and hosts it may name.")
    path: PathRule | None = Field(default=None, description="A path: the folders it may be under.")
    integer: IntegerRule | None = Field(default=None, description="A whole number: its range, ends included.")
    allow_empty: bool = Field(default=False, description='"" is accepted whatever the rule.')


class JobView(BaseModel):
    """One catalogue job the caller may start."""

    name: str
    title: str
    description: str
    default: bool = Field(description="Started by a request that names no job.")
    completion: Completion
    default_timeout_seconds: int
    max_timeout_seconds: int
    parameters: list[ParameterView]
    kind: Literal["job", "pipeline"] = Field(
        default="job", description="A standalone catalogue job (run as its own one-job pipeline), or a pipeline."
    )
    jobs: list[str] = Field(default_factory=list, description="The catalogue jobs it runs.")
    version: int = Field(default=1, description="The version of its pipeline function new starts run on.")
    schedule: str | None = Field(default=None, description="When it starts by itself: a cron line (UTC), or null.")
    next_firing_at: datetime | None = Field(
        default=None, description="When its schedule next starts it (UTC), or null when it has no schedule."
    )


class JobList(BaseModel):
    jobs: list[JobView]


class NotificationView(BaseModel):
    delivered: bool
    message_id: str | None
    error: str | None
    smtp_code: int | None


class PipelineStatus(BaseModel):
    """Where a pipeline stands, read from Resonate's durable state."""

    id: str
    state: PipelineState
    job: str
    email: str
    parameters: dict[str, str] = Field(
        description="The job's parameters its run now uses: those it was started with, or a repair's."
    )
    parameters_at_start: dict[str, str] | None = Field(
        default=None,
        description="When a repair changed the parameters: those the pipeline was started with (else null).",
    )
    timeout_seconds: int
    databricks: DatabricksRunView | None = Field(description="The Databricks run, once triggered.")
    result: dict[str, Any] | None = None
    error: RunError | None = Field(default=None, description="Why the pipeline failed, timed out or was cancelled.")
    notification: NotificationView | None = None
    attempts: list[Attempt] = Field(
        default_factory=list,
        description="When the run was repaired: each attempt (0 the original run), with its repair id, when, why, "
        "by whom, the tasks it reran and how it ended.",
    )
    repair_deadline: datetime | None = Field(
        default=None, description="While awaiting_repair: when the repair window ends and the pipeline fails."
    )
    created_at: datetime
    updated_at: datetime
    version: int | None = Field(
        default=None,
        description="The version of the pipeline's function it runs; null for a pipeline started before "
        "pipelines were code (one job, no steps).",
    )
    steps: list[StepSummary] = Field(
        default_factory=list,
        description="Each step of a pipeline run by its code, in order: its jobs, approval gates and emails. "
        "Empty for a pipeline started before pipelines were code. With exactly one job step, the fields above "
        "(databricks, result, error, attempts) are that step's.",
    )
    scheduled_at: datetime | None = Field(
        default=None, description="When its catalogue schedule fired and started it; null for a client's start."
    )


class CallbackRequest(_Document):
    """The notebook's report, signed with its pipeline's callback key."""

    promise_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    status: Literal["success", "failure"]
    result: dict[str, Any] | None = None
    error: RunError | None = None

    @model_validator(mode="after")
    def _error_goes_with_failure(self) -> CallbackRequest:
        if self.status == "failure" and self.error is None:
            raise ValueError('a failure callback needs an error: {"type": ..., "message": ...}')
        if self.status == "success" and self.error is not None:
            raise ValueError("a success callback carries a result, not an error")
        return self


class CallbackReceipt(BaseModel):
    promise_id: str
    pipeline_id: str
    outcome: Literal["accepted", "duplicate"] = Field(
        description="accepted: this callback settled the pipeline; duplicate: it repeated the outcome already recorded."
    )


class NotificationReceipt(BaseModel):
    run_id: int
    outcome: Literal["scheduled", "already_scheduled", "ignored"] = Field(
        description="scheduled: a check of the run is on its way; already_scheduled: one was dispatched for this "
        "event within the window; ignored: no pipeline is waiting on this run."
    )


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable.")
    message: str = Field(description="What was wrong, for a person.")
    details: list[dict[str, Any]] | None = None


class LegacyRunStatus(BaseModel):
    """``GET /run``: the original example's answer, with the state beside it."""

    id: str
    state: PipelineState
    message: Literal["I am done", "working on it"]


# ── the pipeline index: lists and timelines ──────────────────────────────────


class PipelineSummary(BaseModel):
    """One pipeline as the list shows it, read from the pipeline index."""

    id: str
    job: str
    state: PipelineState
    owner: str | None = Field(description="The principal that started it (`key:NAME` or `oidc:SUB`).")
    email: str
    created_at: datetime
    updated_at: datetime
    run_id: int | None = Field(default=None, description="The Databricks run, once triggered.")
    run_page_url: str | None = None


class PipelinePage(BaseModel):
    """One page of pipelines, newest first."""

    items: list[PipelineSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    total: int | None = Field(
        description="How many pipelines match the filters; null when more than 10,000 do (counting them is not cheap)."
    )
    stream_position: int = Field(
        default=0,
        description="Send as Last-Event-ID to GET /pipelines?follow=true to hear of every change after this page.",
    )


class PipelineEvent(BaseModel):
    """One thing that happened to a pipeline, at the time Resonate recorded it."""

    seq: int = Field(description="The event's place in the index's history; a stream resumes after it.")
    at: datetime
    kind: str
    summary: str = Field(description="One sentence for a person.")
    data: dict[str, Any] = Field(
        default_factory=dict, description="The facts, by kind (docs/api.md#a-pipelines-timeline)."
    )


class PipelineTimeline(BaseModel):
    pipeline_id: str
    state: PipelineState
    events: list[PipelineEvent]

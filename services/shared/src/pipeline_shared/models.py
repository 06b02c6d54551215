"""Payloads that cross a service or durability boundary.

Every model here is stored in a Resonate promise or sent over HTTP between
services, so changing a field is a protocol change: the gateway, the worker
and the notifier must agree on it, and pipelines already in flight still hold
the old shape. Add optional fields; do not rename or remove.

The gateway's HTTP request and response models live with the gateway; only
what the services exchange lives here.
"""

from __future__ import annotations

import json
import re
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

#: A pipeline id: the business key every durable id is derived from. The
#: alphabet keeps it safe in URLs, Resonate ids (no ``:``) and SMTP headers.
PIPELINE_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"

PipelineId = Annotated[str, StringConstraints(pattern=PIPELINE_ID_PATTERN)]
#: The same rule, for checking a pipeline id taken from elsewhere (a promise id, a header).
PIPELINE_ID = re.compile(PIPELINE_ID_PATTERN)


class PipelineState(StrEnum):
    """Where a pipeline stands. The last four are final."""

    STARTING = "starting"
    WAITING = "waiting"
    #: Its run failed; it waits, holding nothing, for a person to repair or
    #: abandon it (POST /pipelines/{id}/repair or /abandon), until its repair window ends.
    AWAITING_REPAIR = "awaiting_repair"
    #: It waits, holding nothing, at an approval gate for a person to approve
    #: or reject (POST /pipelines/{id}/approve or /reject), until the gate's deadline.
    AWAITING_APPROVAL = "awaiting_approval"
    NOTIFYING = "notifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {PipelineState.SUCCEEDED, PipelineState.FAILED, PipelineState.CANCELLED, PipelineState.TIMED_OUT}
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipelineSpec(_Model):
    """The workflow's one argument: what the user asked for, fully resolved.

    The gateway resolves defaults before the workflow starts, so the stored
    spec alone says what the pipeline does and two starts of the same id can
    be compared field by field.
    """

    id: PipelineId
    email: EmailStr
    parameters: dict[str, str]
    timeout_seconds: int = Field(ge=1)
    #: The catalogue entry it runs; None in specs stored before there was a
    #: catalogue, which ran the catalogue's default job.
    job: str | None = None
    #: The version of the entry's pipeline function it runs (the catalogue's at
    #: its start), which it keeps to the end whatever is deployed meanwhile.
    #: None: a pipeline started before pipelines were code, which runs the
    #: one-job workflow (``run_pipeline`` at Resonate version 1) to its end.
    version: int | None = Field(default=None, ge=1)
    #: For a pipeline a schedule started: the firing's time (epoch ms), from which its id derives.
    scheduled_at: int | None = None


class RunError(_Model):
    """A failure a person can act on: what kind, and what it said."""

    type: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    message: Annotated[str, StringConstraints(max_length=20_000)]


class DatabricksRun(_Model):
    """The Databricks run a pipeline started."""

    run_id: int
    run_page_url: str | None = None
    #: The Databricks job it is a run of (a catalogue entry names it by name or id).
    job_id: int | None = None


class TaskOutcome(_Model):
    """One task of a finished run, as the Jobs API reported it (the latest attempt)."""

    task_key: str
    run_id: int | None = None
    attempt_number: int = 0
    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""
    termination_code: str | None = None
    termination_type: str | None = None
    #: The notebook's exit value (``dbutils.notebook.exit``), as text; None when it gave none.
    exit_value: str | None = None
    #: True when the exit value is cut: by Databricks (at 5 MB) or by the report's byte budget.
    truncated: bool = False
    #: What runs/get-output said went wrong, or why the output could not be read.
    error: str | None = None


class RunReport(_Model):
    """A finished run read from the Jobs API: its overall state and each task's outcome."""

    life_cycle_state: str
    result_state: str | None = None
    state_message: str = ""
    termination_code: str | None = None
    termination_type: str | None = None
    tasks: list[TaskOutcome] = Field(default_factory=list)


class TriggerOutcome(_Model):
    """What ``jobs.run_now`` gave: a run, or the permanent reason there is none."""

    run: DatabricksRun | None = None
    error: RunError | None = None
    #: When the run was started (epoch ms).
    started_at: int | None = None
    #: A job step of a pipeline cancelled before it started: who cancelled it (no run was started).
    cancelled_by: str | None = None


class RepairOutcome(_Model):
    """What a repair step did: the repair, or the permanent reason there is none."""

    attempt: Attempt | None = None
    error: RunError | None = None


class Settlement(_Model):
    """The value the callback promise settles with.

    Several parties may settle it: the notebook's signed callback, the
    watchdog that saw the run end without one, a user cancelling, and the
    worker itself when Databricks refused to start the run. The first to reach
    the Resonate server wins; the others observe it.
    """

    status: Literal["success", "failure", "cancelled"]
    result: dict[str, Any] | None = None
    error: RunError | None = None
    source: Literal["callback", "watchdog", "user", "worker"]
    #: For a cancel (source ``user``): the principal that asked for it.
    by: str | None = None
    #: The run as the Jobs API reported it, when the outcome was read from the run.
    report: RunReport | None = None
    #: Epoch milliseconds at which the settling party accepted it; the start of
    #: the callback-to-email latency.
    received_at: int
    #: Unique per settling attempt, so that of two identical attempts in the
    #: same millisecond only the one that was stored claims to have settled.
    attempt: str = Field(default_factory=lambda: uuid.uuid4().hex)

    def agrees_with(self, status: str, result: dict[str, Any] | None) -> bool:
        """Whether a report of ``status`` and ``result`` repeats this outcome rather than contradicting it.

        Two failures agree even when worded differently: the notebook reports
        the exception while the watchdog reports Databricks' state message for
        the same failed run, and the first cause stands. Two successes agree
        only with the same result.
        """
        if self.status != status:
            return False
        return self.status != "success" or self.result == result


class Notification(_Model):
    """What the notifier needs to tell the user how their pipeline ended."""

    pipeline_id: PipelineId
    email: EmailStr
    state: PipelineState
    parameters: dict[str, str]
    run: DatabricksRun | None = None
    result: dict[str, Any] | None = None
    error: RunError | None = None
    #: The catalogue entry and its title, for the subject and body.
    job: str | None = None
    job_title: str | None = None
    report: RunReport | None = None
    #: ``outcome``: the pipeline ended (state is final); ``awaiting_repair``:
    #: its run failed and it waits for a person to repair or abandon it.
    #: ``step``: an email a pipeline's code asked for (:attr:`subject`,
    #: :attr:`lines`); ``approval_request``: a gate waits for a person (:attr:`approval`).
    kind: Literal["outcome", "awaiting_repair", "step", "approval_request"] = "outcome"
    #: The attempts so far, oldest first (empty for a pipeline never repaired).
    attempts: list[Attempt] = Field(default_factory=list)
    #: Message-IDs of the pipeline's earlier emails, oldest first: this one
    #: replies to the last and references them all, so a mail client shows
    #: one conversation per pipeline.
    thread: list[str] = Field(default_factory=list)
    #: While awaiting repair: when the repair window ends (epoch ms).
    repair_deadline: int | None = None
    #: How long the pipeline waited for Databricks before timing out.
    waited_seconds: int | None = None
    #: The step the email is about or is (its id, see :class:`StepSummary`);
    #: None for an email about the whole pipeline.
    step: str | None = None
    #: For a ``step`` email: the step's name, its subject and paragraphs, as the pipeline's code wrote them.
    step_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")] | None = None
    subject: Annotated[str, StringConstraints(max_length=200)] | None = None
    lines: list[Annotated[str, StringConstraints(max_length=5000)]] = Field(default_factory=list, max_length=100)
    #: The pipeline's steps, for an email about several of them (empty: a pipeline of one job).
    steps: list[StepSummary] = Field(default_factory=list)
    #: For an ``approval_request``: the gate.
    approval: ApprovalRecord | None = None
    #: When the outcome became known (epoch ms), for the latency metric.
    settled_at: int | None = None


class Attempt(_Model):
    """One run of the pipeline's tasks: the original run (number 0) or a repair of it."""

    number: int = Field(ge=0)
    #: Databricks' id of the repair; None for the original run.
    repair_id: int | None = None
    #: When it was started (epoch ms).
    started_at: int
    #: Why: "the original run", or why it was repaired.
    reason: str
    #: Who decided: a principal's id, "automatic" (the job's repair policy), None for the original run.
    by: str | None = None
    #: The tasks it reran (empty: all of them, for the original run).
    rerun_tasks: list[str] = Field(default_factory=list)
    #: Every parameter this attempt ran with, when they differ from the pipeline's start
    #: (a person's repair changed one, here or in an earlier attempt); None: the start's.
    parameters: dict[str, str] | None = None
    #: How it ended: success, failure or cancelled; None while it runs.
    outcome: Literal["success", "failure", "cancelled"] | None = None
    error: RunError | None = None


def parameters_in_use(started_with: dict[str, str], attempts: list[Attempt]) -> dict[str, str]:
    """The parameters the pipeline's latest attempt runs with: a repair's, else the start's."""
    return (attempts[-1].parameters if attempts else None) or started_with


def changed_parameters(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The names of the parameters whose value differs between ``before`` and ``after``, sorted."""
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


class RepairDecision(_Model):
    """What a person decided about a pipeline awaiting repair; the value of its decision promise."""

    action: Literal["repair", "abandon"]
    #: The principal that decided.
    by: str
    #: For a repair: the job's parameters to rerun with, resolved (None: unchanged).
    parameters: dict[str, str] | None = None
    decided_at: int


class AttemptRecord(_Model):
    """Where a repair attempt's promises are, for the gateway: the param of its record or window.

    See :mod:`pipeline_shared.promise_tree` for where those are.
    """

    attempt: Attempt
    #: The promise a person's decision settles, while the pipeline awaits repair.
    decision_promise_id: str | None = None
    #: When the repair window ends (epoch ms), while the pipeline awaits repair.
    repair_deadline: int | None = None
    #: The callback promise of this attempt's run, once it was repaired.
    callback_promise_id: str | None = None


class NotificationReceipt(_Model):
    """What became of the email. ``delivered=False`` carries the permanent cause."""

    delivered: bool
    #: None when no email was composed (the notifier was never reached).
    message_id: str | None = None
    error: str | None = None
    smtp_code: int | None = None


class PipelineOutcome(_Model):
    """The workflow's return value: the final state and everything behind it."""

    state: PipelineState
    result: dict[str, Any] | None = None
    error: RunError | None = None
    run: DatabricksRun | None = None
    notification: NotificationReceipt | None = None
    report: RunReport | None = None
    #: Every attempt, oldest first, when the run was repaired (empty otherwise).
    attempts: list[Attempt] = Field(default_factory=list)


class CheckOutcome(_Model):
    """What one watchdog check did, and the run's state it saw: the value of the check's invocation.

    The pipeline's timeline shows each state seen (``databricks_state``).
    """

    note: str
    #: The run's state as the check read it; None when Databricks could not be read.
    life_cycle_state: str | None = None
    result_state: str | None = None
    #: When the run was read (epoch ms); the check's value is recorded a little later.
    read_at: int | None = None


class WatchRequest(_Model):
    """A run the missed-callback watchdog watches: the param of its watch record, or of one check."""

    pipeline_id: PipelineId
    promise_id: str
    run_id: int
    interval_seconds: float = Field(gt=0)
    check: int = Field(ge=1, default=1)
    #: The pipeline's catalogue entry (None: the default job).
    job: str | None = None
    #: When the run was triggered (epoch ms), to tell an overdue pipeline.
    started_at: int | None = None
    #: A check prompted by a notification from Databricks: it never schedules another.
    hint: bool = False
    #: The repair attempt whose run this watches (0: the original run).
    attempt: int = Field(default=0, ge=0)
    #: The job step whose run it is (None: a one-job workflow's).
    step: str | None = None
    #: The Databricks job the run is of, for the sweep's listing of active runs (None: unknown, list them all).
    job_id: int | None = None


class StepKind(StrEnum):
    JOB = "job"
    APPROVAL = "approval"
    EMAIL = "email"


class StepState(StrEnum):
    """Where one step of a pipeline stands. A job step's final states are the pipeline's own."""

    #: A job step whose run is not started yet; an email being sent.
    STARTING = "starting"
    #: A job step whose run is going.
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
    #: An email the notifier could not deliver.
    NOT_SENT = "not_sent"

    @property
    def is_final(self) -> bool:
        return self not in {
            StepState.STARTING,
            StepState.RUNNING,
            StepState.AWAITING_REPAIR,
            StepState.AWAITING_APPROVAL,
        }


#: A step's id: the position of its call in the pipeline function (``3`` for
#: the child promise ``P:3``), stable across replays, versions aside.
StepId = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,5}$")]
#: A step's name as the pipeline's code gives it (a job's name by default, a gate's name).
StepName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")]


class JobStepRecord(_Model):
    """What a job step runs: the param of its record (``P:N.job``), written before its run is started."""

    step: StepId
    name: StepName
    #: The catalogue job it runs.
    job: str
    parameters: dict[str, str]
    timeout_seconds: int = Field(ge=1)
    started_at: int


class JobRun(_Model):
    """A job step's outcome: the value of its child workflow, and what ``Pipeline.job`` returns.

    ``outputs`` has each task's exit value (JSON decoded when it is JSON),
    so the next step can use them; ``result`` is the result task's.
    """

    step: StepId
    name: StepName
    job: str
    state: PipelineState
    parameters: dict[str, str]
    result: dict[str, Any] | None = None
    error: RunError | None = None
    run: DatabricksRun | None = None
    report: RunReport | None = None
    #: Every attempt, oldest first, when the run was repaired (empty otherwise).
    attempts: list[Attempt] = Field(default_factory=list)
    #: The email threads of the step's repair requests (Message-IDs), oldest first.
    thread: list[str] = Field(default_factory=list)
    started_at: int | None = None
    ended_at: int | None = None
    #: When a person cancelled the pipeline while its run went: who.
    cancelled_by: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.state is PipelineState.SUCCEEDED

    @property
    def outputs(self) -> dict[str, Any]:
        """Each task's exit value by task key: the decoded JSON when it is JSON, else the text."""
        values: dict[str, Any] = {}
        for task in self.report.tasks if self.report else []:
            if task.exit_value is None or task.truncated:
                continue
            try:
                values[task.task_key] = json.loads(task.exit_value)
            except ValueError:
                values[task.task_key] = task.exit_value
        return values


class ApprovalRecord(_Model):
    """An approval gate: the param of its record (``P:N.gate``), where the gateway finds its decision promise."""

    step: StepId
    name: StepName
    message: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    #: A principal holding any one of these (or admin) may decide.
    scopes: list[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,39}$")]] = Field(min_length=1)
    #: When the gate closes undecided (epoch ms): the decision promise's timeout.
    deadline: int
    decision_promise_id: str
    #: Who is emailed that the gate waits (empty: nobody).
    notify: list[EmailStr] = Field(default_factory=list, max_length=20)
    opened_at: int


class ApprovalDecision(_Model):
    """A person's decision at a gate: the value of its decision promise."""

    action: Literal["approve", "reject", "cancel"]
    #: The principal that decided (for ``cancel``: that cancelled the pipeline).
    by: str
    comment: Annotated[str, StringConstraints(max_length=2000)] = ""
    decided_at: int


class StepSummary(_Model):
    """One step of a pipeline as the status document, the emails and the index show it."""

    id: StepId
    kind: StepKind
    name: StepName
    state: StepState
    #: A job step's catalogue job, run and attempts (1: never repaired).
    job: str | None = None
    run: DatabricksRun | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: RunError | None = None
    #: An approval's gate, and the decision that closed it.
    approval: ApprovalRecord | None = None
    decision: ApprovalDecision | None = None
    #: An email step's Message-ID once sent.
    message_id: str | None = None
    started_at: int | None = None
    ended_at: int | None = None


Notification.model_rebuild()
RepairOutcome.model_rebuild()

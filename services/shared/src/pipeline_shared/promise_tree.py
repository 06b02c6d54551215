"""A pipeline's promise tree: every id its promises use, and one typed reading of them.

The worker writes a pipeline as Resonate promises and the gateway reads them
back to answer ``GET /pipelines/{id}``, to tell the timeline and to project the
index. Those ids are a contract between the two, and between the code of today
and the pipelines already in flight, which hold ids written by older code. So
each id is built here, next to the function that recognises it, and nothing
else in ``services/`` builds or parses one (tests/shared/test_promise_tree.py
pins today's formats; a test greps the services for any other).

The tree of pipeline ``P`` (``N`` a number Resonate gives a workflow's
children in the order it creates them):

- ``P``: the root, the workflow's invocation; param the :class:`PipelineSpec`,
  value the :class:`PipelineOutcome`; tags say who started it.
- ``P:1``: the original run's callback promise (:data:`CALLBACK_PROMISE_SEQ`);
  ``P:2``: the trigger step, whose value records the run (:data:`TRIGGER_STEP_SEQ`).
- ``P:awaitA``: the window in which attempt ``A`` waits for a person; its
  param names its decision promise (``P:N``).
- ``P:attemptA``: the record of repair attempt ``A``; its param names the
  callback promise its run reports on (``P:N``).
- ``P:watchC`` / ``P:rAwatchC``: watchdog check ``C`` of attempt ``A``'s run;
  ``P:hintA-EVENT-W``: the check a Databricks notification prompted.
- ``databricks-run/R`` / ``databricks-run/R/A``: the run's index, which a
  notification about run ``R`` finds its pipeline by.
- ``P:N`` calls of the notifier, recognised by the function they call, and
  the workflow's other steps, which nobody reads back.

Every one of them carries ``P`` as its ``resonate:origin`` tag: that, never
the shape of an id, is how the index's trigger notes a change
(infra/pipeline-index/migrations) and how the projector finds them all.

:class:`PipelineTree` reads one pipeline's promises, however many of them
were read (all of them by the projector, or along the spine by
:func:`read_pipeline_tree`), into what the status document and the timeline
are made of. It must not read or write anything itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError
from resonate.ids import join_id
from resonate.types import PromiseRecord

from . import names
from .catalogue import MAX_ATTEMPTS
from .models import (
    PIPELINE_ID,
    ApprovalDecision,
    ApprovalRecord,
    Attempt,
    AttemptRecord,
    CheckOutcome,
    JobRun,
    JobStepRecord,
    Notification,
    NotificationReceipt,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RepairDecision,
    RunError,
    Settlement,
    StepKind,
    StepState,
    StepSummary,
    TriggerOutcome,
)

# ── ids ──────────────────────────────────────────────────────────────────────

#: The pipeline workflow's children, in the order the workflow creates them.
#: Resonate numbers a workflow's children ``{root}:1``, ``{root}:2``, ... by
#: call order, so these positions are part of the contract between the worker
#: (which creates them) and the gateway (which reads them to report state and
#: to settle the callback). The worker's tests assert the order.
CALLBACK_PROMISE_SEQ = 1
TRIGGER_STEP_SEQ = 2

#: Tag on a pipeline's root promise holding the nonce of the start request
#: that created it: Resonate hands a repeated create the stored record.
CREATED_BY_TAG = "pipeline:created-by"

#: Tag on a pipeline's root promise holding the id of the principal that started it.
OWNER_TAG = "pipeline:owner"

#: Tag on a pipeline's root promise holding the W3C traceparent of its ``pipeline.start`` span:
#: every later span of the pipeline joins that trace (see :mod:`.tracing`).
TRACEPARENT_TAG = "pipeline:traceparent"

#: Tag on a run's watch record (:func:`watch_record_id`), holding the id of the
#: callback promise it watches: what the watchdog's sweep lists.
WATCH_TAG = "pipelines:watch"

#: Tag Resonate puts on a promise a workflow made to be settled from outside
#: (``ctx.promise``): a run's callback, a repair's or a gate's decision.
EXTERNAL_TAG = "resonate:external"

_RUN_INDEX_PREFIX = "databricks-run/"
_RUN_INDEX = re.compile(r"databricks-run/(?P<run>[0-9]+)(?:/(?P<attempt>[1-9][0-9]*))?")
_NUMBERED = re.compile(r"[1-9][0-9]*")
_STEP = re.compile(r"(?P<step>[1-9][0-9]{0,5})(?:\.(?P<leaf>[A-Za-z0-9_-]+))?")
_AWAIT = re.compile(r"await(?P<n>[0-9]+)")
_ATTEMPT = re.compile(r"attempt(?P<n>[0-9]+)")
_CHECK = re.compile(r"(?:r(?P<attempt>[0-9]+))?watch(?P<check>[0-9]+)")
_WATCHED = re.compile(r"(?:r(?P<attempt>[0-9]+))?watched")
_HINT = re.compile(r"hint(?P<attempt>[0-9]*)-(?P<event>[a-z_]+)-(?P<window>[0-9]+)")

#: The leaf of a job step's record and of an approval gate's record, under the step's own id.
_JOB_RECORD = "job"
_GATE_RECORD = "gate"
#: The leaf of the marker a cancel leaves under a pipeline run by its code (see :func:`cancel_marker_id`).
_CANCEL_MARKER = "cancelled"


def pipeline_id_of(promise_id: str) -> str:
    """The pipeline a child promise belongs to: its Resonate origin."""
    return promise_id.split(":", 1)[0]


def _child(base: str, promise_id: str) -> str | None:
    """What follows ``base`` in ``promise_id`` (a direct child's leaf); None for a promise not under it.

    ``base`` is a pipeline (``P``, whose children are ``P:leaf``) or one of
    its steps (``P:N``, whose children are ``P:N.leaf``): Resonate's own rule
    for the ids below an origin (``resonate.ids.join_id``).
    """
    prefix = join_id(base, "")
    leaf = promise_id[len(prefix) :] if promise_id.startswith(prefix) else None
    return leaf if leaf and "." not in leaf else None


# ── a pipeline's steps ──
#
# A pipeline run by its code (``PipelineSpec.version`` set) calls its
# building blocks in order; each call is a child of the root, ``P:N``, ``N``
# its position, which is the step's id. A job step (``P:N``) is today's
# one-job workflow one level down: ``P:N.1`` its callback promise, ``P:N.2``
# its trigger, and its records, checks and repair windows under ``P:N.``
# with the leaves the one-job workflow uses under ``P:``. Every id function
# below takes that ``base``: the pipeline id for a one-job workflow, the
# step's id for a step.


def step_base(pipeline_id: str, step: str) -> str:
    """The id of step ``step``'s own promise (the building block's child workflow or call)."""
    return f"{pipeline_id}:{step}"


def base_of(pipeline_id: str, step: str | None) -> str:
    """The id a run's promises hang off: the pipeline's (None: a one-job workflow), or its job step's."""
    return pipeline_id if step is None else step_base(pipeline_id, step)


def step_of(pipeline_id: str, promise_id: str) -> str | None:
    """The step (``N``) that ``promise_id`` is (``P:N``), or is under (``P:N.leaf``); None otherwise."""
    prefix = f"{pipeline_id}:"
    match = _STEP.fullmatch(promise_id[len(prefix) :]) if promise_id.startswith(prefix) else None
    return match["step"] if match else None


def job_step_record_id(base: str) -> str:
    """The record of what the job step at ``base`` runs (its :class:`JobStepRecord`)."""
    return join_id(base, _JOB_RECORD)


def approval_record_id(base: str) -> str:
    """The record of the approval gate at ``base`` (its :class:`ApprovalRecord`)."""
    return join_id(base, _GATE_RECORD)


def cancel_marker_id(pipeline_id: str) -> str:
    """The marker a cancel of a pipeline run by its code leaves: no step starts after it is there."""
    return f"{pipeline_id}:{_CANCEL_MARKER}"


def callback_promise_id(base: str) -> str:
    """The promise the original run's notebook settles (``base``: the pipeline, or its job step)."""
    return join_id(base, str(CALLBACK_PROMISE_SEQ))


def trigger_step_id(base: str) -> str:
    """The step whose value records the Databricks run (``base``: the pipeline, or its job step)."""
    return join_id(base, str(TRIGGER_STEP_SEQ))


def callback_pipeline_of(promise_id: str) -> str | None:
    """The pipeline whose callback promise ``promise_id`` may be; None when it cannot be one.

    The original run's is ``{id}:1`` (a job step's: ``{id}:N.1``); a
    repaired run reports on a later child of its workflow (``{id}:N``, or
    ``{id}:N.M``, past the trigger step), whose id its record names. Only the
    shape is checked: whether the promise exists is Resonate's to say, and a
    callback must be signed with a key only its run was given.
    """
    pipeline_id, colon, child = promise_id.partition(":")
    if not colon or not PIPELINE_ID.fullmatch(pipeline_id):
        return None
    step, dot, leaf = child.rpartition(".") if "." in child else ("", "", child)
    if dot and not _NUMBERED.fullmatch(step):
        return None
    if not _NUMBERED.fullmatch(leaf):
        return None
    if int(leaf) != CALLBACK_PROMISE_SEQ and int(leaf) <= TRIGGER_STEP_SEQ:
        return None
    return pipeline_id


def repair_window_id(base: str, attempt: int) -> str:
    """The promise recording that repair attempt ``attempt`` waits for a person (its decision promise, deadline)."""
    return join_id(base, f"await{attempt}")


def repair_window_of(base: str, promise_id: str) -> int | None:
    """The attempt whose repair window ``promise_id`` is; None when it is not one of ``base``'s."""
    match = _AWAIT.fullmatch(_child(base, promise_id) or "")
    return int(match["n"]) if match else None


def attempt_record_id(base: str, attempt: int) -> str:
    """The promise recording repair attempt ``attempt`` (1, 2, ...): where the gateway finds its promises."""
    return join_id(base, f"attempt{attempt}")


def attempt_record_of(base: str, promise_id: str) -> int | None:
    """The attempt whose record ``promise_id`` is; None when it is not one of ``base``'s."""
    match = _ATTEMPT.fullmatch(_child(base, promise_id) or "")
    return int(match["n"]) if match else None


def check_id(base: str, check: int, attempt: int = 0) -> str:
    """The invocation of watchdog check ``check`` of attempt ``attempt``'s run: one per run, attempt and check."""
    prefix = "" if attempt == 0 else f"r{attempt}"
    return join_id(base, f"{prefix}watch{check}")


def watch_record_id(base: str, attempt: int = 0) -> str:
    """The watch record of attempt ``attempt``'s run: pending while the watchdog's sweep watches it, one per run."""
    return join_id(base, "watched" if attempt == 0 else f"r{attempt}watched")


def watch_record_of(base: str, promise_id: str) -> int | None:
    """The attempt whose run's watch record ``promise_id`` is; None for any other promise."""
    match = _WATCHED.fullmatch(_child(base, promise_id) or "")
    return int(match["attempt"] or 0) if match else None


def check_of(base: str, promise_id: str) -> tuple[int, int] | None:
    """``(attempt, check)`` of a scheduled watchdog check under ``base``; None for any other promise."""
    match = _CHECK.fullmatch(_child(base, promise_id) or "")
    return (int(match["attempt"] or 0), int(match["check"])) if match else None


def hint_check_id(base: str, attempt: int, event: str, window: int) -> str:
    """The check a Databricks notification of ``event`` prompted: at most one per event and time window."""
    return join_id(base, f"hint{attempt or ''}-{event}-{window}")


def hint_check_of(base: str, promise_id: str) -> tuple[int, str] | None:
    """``(attempt, event)`` of a check a notification prompted; None for any other promise."""
    match = _HINT.fullmatch(_child(base, promise_id) or "")
    return (int(match["attempt"] or 0), match["event"]) if match else None


def run_index_id(run_id: int, attempt: int = 0) -> str:
    """The promise that names the pipeline (and attempt) a Databricks run belongs to.

    Written for runs of jobs that send webhook notifications, whose payload
    names only the job and the run; a repair of the run gets one of its own
    (``/1``, ``/2``, ...), since a repaired run keeps its id. The ``/`` keeps
    it apart from every pipeline id and child id, neither of which may hold one.
    """
    return f"{_RUN_INDEX_PREFIX}{run_id}" if attempt == 0 else f"{_RUN_INDEX_PREFIX}{run_id}/{attempt}"


def run_index_of(promise_id: str) -> tuple[int, int] | None:
    """``(run_id, attempt)`` of a run's index promise; None for any other promise."""
    match = _RUN_INDEX.fullmatch(promise_id)
    return (int(match["run"]), int(match["attempt"] or 0)) if match else None


# ── reading ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Callback:
    """The callback promise of an attempt's run (0: the original run)."""

    promise: PromiseRecord
    attempt: int
    #: The job step it belongs to (None: a one-job workflow's own).
    step: str | None = None

    @property
    def settlement(self) -> Settlement | None:
        """Its outcome; None while pending, timed out, or unreadable."""
        return _parsed(Settlement, self.promise.value.data) if self.promise.state == "resolved" else None


@dataclass(frozen=True)
class Trigger:
    """The trigger step: the run Databricks started, or why it refused."""

    promise: PromiseRecord
    step: str | None = None

    @property
    def outcome(self) -> TriggerOutcome | None:
        return _parsed(TriggerOutcome, self.promise.value.data) if self.promise.state == "resolved" else None


@dataclass(frozen=True)
class Check:
    """One check of the run, by the watchdog or prompted by a notification (``hint``: its event).

    Also a run's watch record, which the watchdog's sweep settles with the
    check that found the run over (or the callback there first).
    """

    promise: PromiseRecord
    attempt: int
    hint: str | None = None
    step: str | None = None

    @property
    def outcome(self) -> CheckOutcome | None:
        return _parsed(CheckOutcome, self.promise.value.data) if self.promise.state == "resolved" else None


@dataclass(frozen=True)
class RepairWindow:
    """Attempt ``number``'s wait for a person, and the decision that ended it when it was read."""

    promise: PromiseRecord
    number: int
    record: AttemptRecord | None
    decision: PromiseRecord | None
    step: str | None = None

    @property
    def decided(self) -> RepairDecision | None:
        """The person's decision; None while undecided, when the window ended, or unreadable."""
        decision = self.decision
        return _parsed(RepairDecision, decision.value.data) if decision and decision.state == "resolved" else None


@dataclass(frozen=True)
class AttemptStep:
    """The record of repair attempt ``number``: the repair made, and the callback promise its run reports on."""

    promise: PromiseRecord
    number: int
    record: AttemptRecord | None
    step: str | None = None


@dataclass(frozen=True)
class EmailStep:
    """A call of the notifier: what it was asked to send, and its answer once settled."""

    promise: PromiseRecord
    notification: Notification
    #: The step it is (an email the pipeline's code asked for) or belongs to (a gate's, a repair's).
    step: str | None = None

    @property
    def receipt(self) -> NotificationReceipt | None:
        return _parsed(NotificationReceipt, self.promise.value.data) if self.promise.state == "resolved" else None


@dataclass(frozen=True)
class JobStep:
    """A job step's record (what it runs), and its own promise, whose value is its :class:`JobRun` once it ended."""

    promise: PromiseRecord
    record: JobStepRecord
    own: PromiseRecord | None

    @property
    def step(self) -> str:
        return self.record.step

    @property
    def run(self) -> JobRun | None:
        own = self.own
        return _parsed(JobRun, own.value.data) if own is not None and own.state == "resolved" else None


@dataclass(frozen=True)
class Gate:
    """An approval gate's record, and its decision promise as read."""

    promise: PromiseRecord
    record: ApprovalRecord
    decision: PromiseRecord | None

    @property
    def step(self) -> str:
        return self.record.step

    @property
    def decided(self) -> ApprovalDecision | None:
        """The decision; None while open, when its deadline passed, or unreadable."""
        decision = self.decision
        return _parsed(ApprovalDecision, decision.value.data) if decision and decision.state == "resolved" else None

    @property
    def expired(self) -> bool:
        return self.decision is not None and self.decision.state == "rejected_timedout"


Child = Trigger | Callback | Check | RepairWindow | AttemptStep | EmailStep | JobStep | Gate


@dataclass
class Repairs:
    """Where a pipeline's repairs stand: its attempts so far and the callback its run reports on."""

    current_callback_id: str
    #: The windows and attempt records read, in order.
    records: list[PromiseRecord] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    #: The record of a repair window not yet followed by a repair.
    open_window: AttemptRecord | None = None


class PipelineTree:
    """One pipeline's promises, read: its spec, its steps and its records.

    Built from the promises at hand, by id: all of a pipeline's (the
    projector's snapshot) or those :func:`read_pipeline_tree` read along its
    spine. What was not read is simply absent: the spine holds no checks or
    emails, which only the timeline needs.
    """

    def __init__(self, root: PromiseRecord, promises: Mapping[str, PromiseRecord]) -> None:
        self.root = root
        self.id = root.id
        self.promises = promises

    def get(self, promise_id: str | None) -> PromiseRecord | None:
        return self.promises.get(promise_id) if promise_id else None

    @cached_property
    def spec(self) -> PipelineSpec | None:
        """What the pipeline runs; None when the root is not a pipeline's (or is unreadable)."""
        data = self.root.param.data
        if not isinstance(data, dict) or data.get("func") != names.RUN_PIPELINE:
            return None
        return _parsed(PipelineSpec, _first_argument(data))

    @property
    def outcome(self) -> PipelineOutcome | None:
        """How it ended; None while it runs, when its workflow ended otherwise, or unreadable."""
        return _parsed(PipelineOutcome, self.root.value.data) if self.root.state == "resolved" else None

    @property
    def owner(self) -> str | None:
        """Who started the pipeline; None for one started before owners were recorded."""
        return self.root.tags.get(OWNER_TAG)

    @property
    def composed(self) -> bool:
        """Whether its code runs it as steps (a spec with a version), rather than the one-job workflow."""
        return self.spec is not None and self.spec.version is not None

    def step_of(self, promise_id: str) -> str | None:
        """The step ``promise_id`` is or is under; None for a one-job workflow, whose promises are its own."""
        return step_of(self.id, promise_id) if self.composed else None

    def base(self, step: str | None) -> str:
        """The id the promises of ``step`` hang off (None: the one-job workflow's, the pipeline's own)."""
        return self.id if step is None else step_base(self.id, step)

    @property
    def trigger(self) -> PromiseRecord | None:
        return self.get(trigger_step_id(self.id))

    @property
    def first_callback(self) -> PromiseRecord | None:
        return self.get(callback_promise_id(self.id))

    def repairs(self, step: str | None = None) -> Repairs:
        """The repair attempts so far of the one-job workflow's run, or of job step ``step``'s.

        Only a run whose first attempt failed can have any. Attempt ``n`` may
        have a repair-window record (it waited for a person) and an attempt
        record (it was repaired, and its run reports on its own callback
        promise); the first number with neither ends them. A record that does
        not read as one raises ``ValidationError``: it is not a state to guess.
        """
        base = self.base(step)
        repairs = Repairs(current_callback_id=callback_promise_id(base))
        first = self.get(callback_promise_id(base))
        if first is None or first.state != "resolved" or not isinstance(first.value.data, dict):
            return repairs
        if Settlement.model_validate(first.value.data).status != "failure":
            return repairs
        known: dict[int, Attempt] = {}
        for number in range(1, MAX_ATTEMPTS + 1):
            waited, repaired = self.get(repair_window_id(base, number)), self.get(attempt_record_id(base, number))
            if waited is None and repaired is None:
                break
            repairs.records += [record for record in (waited, repaired) if record is not None]
            # The window before attempt N records attempt N-1 as it ended; attempt N's record, N as it began.
            if waited is not None:
                repairs.open_window = AttemptRecord.model_validate(waited.param.data)
                known[repairs.open_window.attempt.number] = repairs.open_window.attempt
            if repaired is not None:
                attempt = AttemptRecord.model_validate(repaired.param.data)
                repairs.open_window = None
                repairs.current_callback_id = attempt.callback_promise_id or repairs.current_callback_id
                known.setdefault(attempt.attempt.number, attempt.attempt)
        repairs.attempts = [known[number] for number in sorted(known)]
        return repairs

    @cached_property
    def callbacks(self) -> dict[str, tuple[str | None, int]]:
        """The callback promises' ids: the step (None: the one-job workflow) and attempt whose run each one is.

        The original run's is its base's first child; each repaired run's is
        named by its attempt's record.
        """
        callbacks: dict[str, tuple[str | None, int]] = {}
        for step in self.job_steps if self.composed else [None]:
            callbacks[callback_promise_id(self.base(step))] = (step, 0)
        for promise in self.promises.values():
            step = self.step_of(promise.id)
            number = attempt_record_of(self.base(step), promise.id)
            record = _parsed(AttemptRecord, promise.param.data) if number is not None else None
            if record is not None and record.callback_promise_id:
                callbacks[record.callback_promise_id] = (step, number or 0)
        return callbacks

    def is_callback(self, promise: PromiseRecord) -> bool:
        """Whether ``promise`` is one of this pipeline's callback promises, by its place and by how it was made.

        A run's callback is a promise the workflow made to wait on
        (``ctx.promise``, tagged external) at a place :attr:`callbacks`
        names: never a step's own promise, a gate's decision or a repair's.
        """
        return promise.id in self.callbacks and promise.tags.get(EXTERNAL_TAG) == "true"

    @cached_property
    def job_steps(self) -> dict[str, JobStep]:
        """The job steps read, by step id, in the order of their steps."""
        found = {}
        for promise in self.promises.values():
            step = self.step_of(promise.id)
            if step is not None and promise.id == job_step_record_id(self.base(step)):
                record = _parsed(JobStepRecord, promise.param.data)
                if record is not None and record.step == step:
                    found[step] = JobStep(promise, record, self.get(self.base(step)))
        return dict(sorted(found.items(), key=lambda item: int(item[0])))

    @cached_property
    def gates(self) -> dict[str, Gate]:
        """The approval gates read, by step id, in the order of their steps."""
        found = {}
        for promise in self.promises.values():
            step = self.step_of(promise.id)
            if step is not None and promise.id == approval_record_id(self.base(step)):
                record = _parsed(ApprovalRecord, promise.param.data)
                if record is not None and record.step == step:
                    found[step] = Gate(promise, record, self.get(record.decision_promise_id))
        return dict(sorted(found.items(), key=lambda item: int(item[0])))

    def open_gates(self) -> list[Gate]:
        """The gates waiting for a decision now."""
        return [gate for gate in self.gates.values() if gate.decision is not None and gate.decision.state == "pending"]

    def awaiting_repair(self) -> list[str]:
        """The job steps whose failed run waits for a person now (an open window, its decision not made), in order."""
        return [step for step in self.job_steps if self._undecided(self.repairs(step).open_window)]

    def _undecided(self, window: AttemptRecord | None) -> bool:
        """Whether repair window ``window`` waits for a decision: its decision promise is pending."""
        decision = self.get(window.decision_promise_id) if window is not None else None
        return decision is not None and decision.state == "pending"

    def composed_state(self) -> PipelineState | None:
        """Where a pipeline run by its code stands, read from its steps; None for a one-job workflow's.

        The one reading of it, for the status document and the index alike.
        Final: its outcome's (failed when its workflow ended without one).
        Pending: awaiting approval while a gate is open; else awaiting repair
        while a job step's failed run waits for a decision; else notifying
        while the outcome email's call is pending, or once it was cancelled
        (its cancel marker: nothing starts, the outcome is known); else
        starting until a step has started; else waiting.
        """
        if not self.composed:
            return None
        if self.root.state != "pending":
            outcome = self.outcome
            return outcome.state if outcome is not None else PipelineState.FAILED
        if self.open_gates():
            return PipelineState.AWAITING_APPROVAL
        if self.awaiting_repair():
            return PipelineState.AWAITING_REPAIR
        emailing = (child for child in self.children() if isinstance(child, EmailStep) and child.step is not None)
        if any(email.notification.kind == "outcome" and email.promise.state == "pending" for email in emailing):
            return PipelineState.NOTIFYING
        if self.get(cancel_marker_id(self.id)) is not None:
            return PipelineState.NOTIFYING
        steps = self.steps()
        if len(steps) == 1 and steps[0].kind is StepKind.JOB and self._outcome_known(steps[0].id):
            # A pipeline of one job step reads as the one-job workflow did: once its run's outcome is
            # known it is notifying, whether or not a worker has taken it up yet.
            return PipelineState.NOTIFYING
        # A step has started once it is past starting (a job step's run triggered, say): so a
        # pipeline of one job step is waiting exactly when a one-job workflow was.
        started = any(step.state is not StepState.STARTING for step in steps)
        return PipelineState.WAITING if started else PipelineState.STARTING

    def _outcome_known(self, step: str) -> bool:
        """Whether job step ``step``'s run has an outcome no repair is under way for (or never started)."""
        repairs = self.repairs(step)
        window = repairs.open_window
        if window is not None:
            decision = self.get(window.decision_promise_id)
            repairing = decision is not None and decision.state == "resolved" and isinstance(decision.value.data, dict)
            return not (repairing and decision.value.data.get("action") == "repair")
        callback = self.get(repairs.current_callback_id)
        if callback is not None and callback.state != "pending":
            return True
        trigger = self.get(trigger_step_id(self.base(step)))
        triggered = _parsed(TriggerOutcome, trigger.value.data) if trigger and trigger.state == "resolved" else None
        return triggered is not None and triggered.run is None

    def steps(self) -> list[StepSummary]:
        """Each step of a pipeline run by its code, in order; empty for a one-job workflow's."""
        return list(self._steps)

    @cached_property
    def _steps(self) -> tuple[StepSummary, ...]:
        """:meth:`steps`, read once: the status document, the index and :meth:`composed_state` each ask."""
        summaries = [self._job_summary(job) for job in self.job_steps.values()]
        summaries += [_gate_summary(gate) for gate in self.gates.values()]
        for promise in self.promises.values():
            step = self.step_of(promise.id)
            email = self._child(promise) if step is not None and promise.id == self.base(step) else None
            if isinstance(email, EmailStep) and email.notification.kind == "step":
                summaries.append(_email_summary(step, email))
        return tuple(sorted(summaries, key=lambda summary: int(summary.id)))

    def _job_summary(self, job: JobStep) -> StepSummary:
        record = job.record
        ended = job.run
        if ended is not None:
            return StepSummary(
                id=record.step,
                kind=StepKind.JOB,
                name=record.name,
                job=record.job,
                state=StepState(ended.state.value),
                run=ended.run,
                attempts=max(1, len(ended.attempts)),
                result=ended.result,
                error=ended.error,
                started_at=ended.started_at or record.started_at,
                ended_at=ended.ended_at,
            )
        base = self.base(record.step)
        trigger = self.get(trigger_step_id(base))
        outcome = _parsed(TriggerOutcome, trigger.value.data) if trigger and trigger.state == "resolved" else None
        repairs = self.repairs(record.step)
        state = StepState.STARTING
        if self._undecided(repairs.open_window):
            state = StepState.AWAITING_REPAIR
        elif outcome is not None and outcome.run is not None:
            state = StepState.RUNNING
        return StepSummary(
            id=record.step,
            kind=StepKind.JOB,
            name=record.name,
            job=record.job,
            state=state,
            run=outcome.run if outcome else None,
            attempts=1 + len([a for a in repairs.attempts if a.number > 0]),
            started_at=record.started_at,
        )

    def telling(self) -> list[PromiseRecord]:
        """The promises whose change changes what the pipeline's document says, and no others; the latest of them
        is its ``updated_at``, in the document and the index alike.

        Named one by one rather than all but a few: a promise the document does
        not read (a watchdog's check, an email a step sends on its way, the
        durable step that writes a repair window's record) may settle after the
        state it belongs to is shown, and must not move the time of a document
        that did not change. A decision counts once made: it is made for a
        record that was shown before it.
        """
        telling = [self.root]
        for child in self.children():
            if isinstance(child, Check) or (isinstance(child, EmailStep) and child.notification.kind != "step"):
                continue
            telling.append(child.promise)
            if isinstance(child, JobStep) and child.own is not None:
                telling.append(child.own)
            decision = child.decision if isinstance(child, Gate | RepairWindow) else None
            if decision is not None and decision.state != "pending":
                telling.append(decision)
        return telling

    def children(self) -> Iterator[Child]:
        """Each promise read that tells something, typed, in the order they were read; the others are skipped."""
        for promise in self.promises.values():
            child = self._child(promise)
            if child is not None:
                yield child

    def _child(self, promise: PromiseRecord) -> Child | None:
        step = self.step_of(promise.id)
        # A step's own promise (``P:N``) hangs off the pipeline; what is under it, off the step.
        base = self.id if step is None or promise.id == self.base(step) else self.base(step)
        if promise.id == trigger_step_id(base) and (step is None or base != self.id):
            return Trigger(promise, step=step)
        if promise.id in self.callbacks:
            return Callback(promise, self.callbacks[promise.id][1], step=self.callbacks[promise.id][0])
        if step is not None and step in self.job_steps and promise.id == job_step_record_id(base):
            return self.job_steps[step]
        if step is not None and step in self.gates and promise.id == approval_record_id(base):
            return self.gates[step]
        if (hint := hint_check_of(base, promise.id)) is not None:
            return Check(promise, hint[0], hint=hint[1], step=step)
        if (check := check_of(base, promise.id)) is not None:
            return Check(promise, check[0], step=step)
        if (attempt := watch_record_of(base, promise.id)) is not None:
            return Check(promise, attempt, step=step)
        if (number := repair_window_of(base, promise.id)) is not None:
            record = _parsed(AttemptRecord, promise.param.data)
            decision = self.get(record.decision_promise_id) if record else None
            return RepairWindow(promise, number, record, decision, step=step)
        if (number := attempt_record_of(base, promise.id)) is not None:
            return AttemptStep(promise, number, _parsed(AttemptRecord, promise.param.data), step=step)
        data = promise.param.data
        if isinstance(data, dict) and data.get("func") == names.SEND_PIPELINE_EMAIL:
            notification = _parsed(Notification, _first_argument(data))
            return EmailStep(promise, notification, step=step) if notification is not None else None
        return None


def _gate_summary(gate: Gate) -> StepSummary:
    decided = gate.decided
    if decided is not None:
        state = {"approve": StepState.APPROVED, "reject": StepState.REJECTED}.get(decided.action, StepState.CANCELLED)
    elif gate.expired:
        state = StepState.EXPIRED
    else:
        state = StepState.AWAITING_APPROVAL
    return StepSummary(
        id=gate.record.step,
        kind=StepKind.APPROVAL,
        name=gate.record.name,
        state=state,
        approval=gate.record,
        decision=decided,
        started_at=gate.record.opened_at,
        ended_at=decided.decided_at if decided else (gate.record.deadline if gate.expired else None),
    )


def _email_summary(step: str, email: EmailStep) -> StepSummary:
    receipt = email.receipt
    if receipt is None:
        state = StepState.STARTING if email.promise.state == "pending" else StepState.NOT_SENT
    else:
        state = StepState.SENT if receipt.delivered else StepState.NOT_SENT
    return StepSummary(
        id=step,
        kind=StepKind.EMAIL,
        name=email.notification.step_name or "email",
        state=state,
        message_id=receipt.message_id if receipt else None,
        error=None if receipt is None or receipt.delivered else RunError(type="NotSent", message=receipt.error or ""),
        started_at=email.promise.created_at,
        ended_at=email.promise.settled_at,
    )


async def read_pipeline_tree(
    root: PromiseRecord, get: Callable[[str], Awaitable[PromiseRecord | None]]
) -> PipelineTree:
    """The pipeline's spine, read promise by promise with ``get`` (None: no such promise).

    What the status document needs and no more: the first callback and the
    trigger step; when the first run failed, each attempt's window and
    record until the first number with neither; then the callback the
    latest run reports on and the decision of a window still open.
    """
    read: dict[str, PromiseRecord] = {root.id: root}

    def keep(*records: PromiseRecord | None) -> None:
        read.update((record.id, record) for record in records if record is not None)

    keep(*await asyncio.gather(get(callback_promise_id(root.id)), get(trigger_step_id(root.id))))
    tree = PipelineTree(root, read)
    if not _first_failed(tree):
        return tree
    for number in range(1, MAX_ATTEMPTS + 1):
        waited, repaired = await asyncio.gather(
            get(repair_window_id(root.id, number)), get(attempt_record_id(root.id, number))
        )
        if waited is None and repaired is None:
            break
        keep(waited, repaired)
    repairs = PipelineTree(root, read).repairs()
    if repairs.current_callback_id not in read:
        keep(await get(repairs.current_callback_id))
    if repairs.open_window is not None and repairs.open_window.decision_promise_id:
        keep(await get(repairs.open_window.decision_promise_id))
    return PipelineTree(root, read)


def _first_failed(tree: PipelineTree) -> bool:
    first = tree.first_callback
    settled = _parsed(Settlement, first.value.data) if first is not None and first.state == "resolved" else None
    return settled is not None and settled.status == "failure"


def _parsed[M: BaseModel](model: type[M], data: Any) -> M | None:
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def _first_argument(invocation: Any) -> Any:
    """The first argument of an invocation's param (``{"func", "args": [...]}``)."""
    if isinstance(invocation, dict) and isinstance(invocation.get("args"), list) and invocation["args"]:
        return invocation["args"][0]
    return None

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
from resonate.types import PromiseRecord

from . import names
from .catalogue import MAX_ATTEMPTS
from .models import (
    PIPELINE_ID,
    Attempt,
    AttemptRecord,
    CheckOutcome,
    Notification,
    NotificationReceipt,
    PipelineOutcome,
    PipelineSpec,
    RepairDecision,
    Settlement,
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

_RUN_INDEX_PREFIX = "databricks-run/"
_RUN_INDEX = re.compile(r"databricks-run/(?P<run>[0-9]+)(?:/(?P<attempt>[1-9][0-9]*))?")
_NUMBERED = re.compile(r"[1-9][0-9]*")
_AWAIT = re.compile(r"await(?P<n>[0-9]+)")
_ATTEMPT = re.compile(r"attempt(?P<n>[0-9]+)")
_CHECK = re.compile(r"(?:r(?P<attempt>[0-9]+))?watch(?P<check>[0-9]+)")
_HINT = re.compile(r"hint(?P<attempt>[0-9]*)-(?P<event>[a-z_]+)-(?P<window>[0-9]+)")


def pipeline_id_of(promise_id: str) -> str:
    """The pipeline a child promise belongs to: its Resonate origin."""
    return promise_id.split(":", 1)[0]


def _child(pipeline_id: str, promise_id: str) -> str | None:
    """What follows ``{pipeline_id}:`` in ``promise_id``; None for a promise not under that pipeline."""
    prefix = f"{pipeline_id}:"
    return promise_id[len(prefix) :] if promise_id.startswith(prefix) else None


def callback_promise_id(pipeline_id: str) -> str:
    """The promise the original run's notebook settles."""
    return f"{pipeline_id}:{CALLBACK_PROMISE_SEQ}"


def trigger_step_id(pipeline_id: str) -> str:
    """The step whose value records the Databricks run."""
    return f"{pipeline_id}:{TRIGGER_STEP_SEQ}"


def callback_pipeline_of(promise_id: str) -> str | None:
    """The pipeline whose callback promise ``promise_id`` may be; None when it cannot be one.

    The original run's is ``{id}:1``; a repaired run reports on a later child
    of the workflow (``{id}:N``, N past the trigger step), whose id its record
    names. Only the shape is checked: whether the promise exists is Resonate's
    to say.
    """
    pipeline_id, colon, child = promise_id.partition(":")
    if not colon or not PIPELINE_ID.fullmatch(pipeline_id) or not _NUMBERED.fullmatch(child):
        return None
    if int(child) != CALLBACK_PROMISE_SEQ and int(child) <= TRIGGER_STEP_SEQ:
        return None
    return pipeline_id


def repair_window_id(pipeline_id: str, attempt: int) -> str:
    """The promise recording that repair attempt ``attempt`` waits for a person (its decision promise, deadline)."""
    return f"{pipeline_id}:await{attempt}"


def repair_window_of(pipeline_id: str, promise_id: str) -> int | None:
    """The attempt whose repair window ``promise_id`` is; None when it is not one of ``pipeline_id``'s."""
    match = _AWAIT.fullmatch(_child(pipeline_id, promise_id) or "")
    return int(match["n"]) if match else None


def attempt_record_id(pipeline_id: str, attempt: int) -> str:
    """The promise recording repair attempt ``attempt`` (1, 2, ...): where the gateway finds its promises."""
    return f"{pipeline_id}:attempt{attempt}"


def attempt_record_of(pipeline_id: str, promise_id: str) -> int | None:
    """The attempt whose record ``promise_id`` is; None when it is not one of ``pipeline_id``'s."""
    match = _ATTEMPT.fullmatch(_child(pipeline_id, promise_id) or "")
    return int(match["n"]) if match else None


def check_id(pipeline_id: str, check: int, attempt: int = 0) -> str:
    """The invocation of watchdog check ``check`` of attempt ``attempt``'s run: one per pipeline, attempt and check."""
    prefix = "" if attempt == 0 else f"r{attempt}"
    return f"{pipeline_id}:{prefix}watch{check}"


def check_of(pipeline_id: str, promise_id: str) -> tuple[int, int] | None:
    """``(attempt, check)`` of a scheduled watchdog check of ``pipeline_id``; None for any other promise."""
    match = _CHECK.fullmatch(_child(pipeline_id, promise_id) or "")
    return (int(match["attempt"] or 0), int(match["check"])) if match else None


def hint_check_id(pipeline_id: str, attempt: int, event: str, window: int) -> str:
    """The check a Databricks notification of ``event`` prompted: at most one per event and time window."""
    return f"{pipeline_id}:hint{attempt or ''}-{event}-{window}"


def hint_check_of(pipeline_id: str, promise_id: str) -> tuple[int, str] | None:
    """``(attempt, event)`` of a check a notification prompted; None for any other promise."""
    match = _HINT.fullmatch(_child(pipeline_id, promise_id) or "")
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

    @property
    def settlement(self) -> Settlement | None:
        """Its outcome; None while pending, timed out, or unreadable."""
        return _parsed(Settlement, self.promise.value.data) if self.promise.state == "resolved" else None


@dataclass(frozen=True)
class Trigger:
    """The trigger step: the run Databricks started, or why it refused."""

    promise: PromiseRecord

    @property
    def outcome(self) -> TriggerOutcome | None:
        return _parsed(TriggerOutcome, self.promise.value.data) if self.promise.state == "resolved" else None


@dataclass(frozen=True)
class Check:
    """One check of the run, by the watchdog or prompted by a notification (``hint``: its event)."""

    promise: PromiseRecord
    attempt: int
    hint: str | None = None

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


@dataclass(frozen=True)
class EmailStep:
    """A call of the notifier: what it was asked to send, and its answer once settled."""

    promise: PromiseRecord
    notification: Notification

    @property
    def receipt(self) -> NotificationReceipt | None:
        return _parsed(NotificationReceipt, self.promise.value.data) if self.promise.state == "resolved" else None


Child = Trigger | Callback | Check | RepairWindow | AttemptStep | EmailStep


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
    def trigger(self) -> PromiseRecord | None:
        return self.get(trigger_step_id(self.id))

    @property
    def first_callback(self) -> PromiseRecord | None:
        return self.get(callback_promise_id(self.id))

    def repairs(self) -> Repairs:
        """The repair attempts so far, read from the records the workflow writes.

        Only a pipeline whose first run failed can have any. Attempt ``n`` may
        have a repair-window record (it waited for a person) and an attempt
        record (it was repaired, and its run reports on its own callback
        promise); the first number with neither ends them. A record that does
        not read as one raises ``ValidationError``: it is not a state to guess.
        """
        repairs = Repairs(current_callback_id=callback_promise_id(self.id))
        first = self.first_callback
        if first is None or first.state != "resolved" or not isinstance(first.value.data, dict):
            return repairs
        if Settlement.model_validate(first.value.data).status != "failure":
            return repairs
        known: dict[int, Attempt] = {}
        for number in range(1, MAX_ATTEMPTS + 1):
            waited, repaired = self.get(repair_window_id(self.id, number)), self.get(attempt_record_id(self.id, number))
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
    def callbacks(self) -> dict[str, int]:
        """The callback promises' ids, by attempt: the original run's, then each repaired run's (from its record)."""
        callbacks = {callback_promise_id(self.id): 0}
        for promise in self.promises.values():
            number = attempt_record_of(self.id, promise.id)
            record = _parsed(AttemptRecord, promise.param.data) if number is not None else None
            if record is not None and record.callback_promise_id:
                callbacks[record.callback_promise_id] = number
        return callbacks

    def children(self) -> Iterator[Child]:
        """Each promise read that tells something, typed, in the order they were read; the others are skipped."""
        for promise in self.promises.values():
            child = self._child(promise)
            if child is not None:
                yield child

    def _child(self, promise: PromiseRecord) -> Child | None:
        if promise.id == trigger_step_id(self.id):
            return Trigger(promise)
        if promise.id in self.callbacks:
            return Callback(promise, self.callbacks[promise.id])
        if (hint := hint_check_of(self.id, promise.id)) is not None:
            return Check(promise, hint[0], hint=hint[1])
        if (check := check_of(self.id, promise.id)) is not None:
            return Check(promise, check[0])
        if (number := repair_window_of(self.id, promise.id)) is not None:
            record = _parsed(AttemptRecord, promise.param.data)
            decision = self.get(record.decision_promise_id) if record else None
            return RepairWindow(promise, number, record, decision)
        if (number := attempt_record_of(self.id, promise.id)) is not None:
            return AttemptStep(promise, number, _parsed(AttemptRecord, promise.param.data))
        data = promise.param.data
        if isinstance(data, dict) and data.get("func") == names.SEND_PIPELINE_EMAIL:
            notification = _parsed(Notification, _first_argument(data))
            return EmailStep(promise, notification) if notification is not None else None
        return None


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

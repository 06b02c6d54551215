"""Pipelines as code: the building blocks a pipeline's function awaits, and the decorator that registers it.

A pipeline is an ``async`` function of one argument, a :class:`Pipeline`,
registered under a name and a version::

    @pipeline("customer-onboarding", version=1)
    async def customer_onboarding(p: Pipeline) -> dict:
        ingested = await p.job("ingest-upload", {"upload": p.parameters["upload"]})
        ...

Each building block is a durable step: :meth:`Pipeline.job` runs a
catalogue job to its end (one Databricks run, repaired by the job's policy),
:meth:`Pipeline.approval` waits for a person's decision, :meth:`Pipeline.email`
sends an email once. A block starts when it is called and is awaited when the
pipeline needs its outcome, so two jobs started before either is awaited run
side by side. Between blocks the function is plain Python: ``if``, loops over
a bounded list, its own arithmetic.

The function is replayed from the top whenever the pipeline resumes (after a
job ends, on another worker, after a crash), and every block already done
returns its recorded outcome without running again. So the function must be
deterministic: the same blocks in the same order for the same outcomes, no
clock, no randomness, no I/O of its own (put those in a job). A change that
alters which blocks run, or their order, needs a new version: register the
new function with ``version=N+1`` beside the old one, and set the catalogue
entry's ``version`` to N+1. Pipelines started on N finish on N; new ones start
on N+1. A change inside a job's notebook, or to what the function does
after its last block, needs none.

A team registers its own pipelines the same way, in a module the worker
imports at start (``PIPELINE_MODULES``); the catalogue entry names the
function and the jobs it may run.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from resonate.context import Context

from pipeline_shared import promise_tree
from pipeline_shared.catalogue import MAX_TIMEOUT_SECONDS, PipelineEntry
from pipeline_shared.models import (
    ApprovalDecision,
    JobRun,
    Notification,
    NotificationReceipt,
    PipelineSpec,
    PipelineState,
    StepKind,
    StepState,
    StepSummary,
)
from pipeline_shared.recipients import RecipientRefused, check_recipient

from .blocks import approval_step, job_step
from .calls import GateCall, JobTarget
from .job_runs import receipt_of, send_email
from .steps import now_ms

#: What ``@pipeline`` accepts: an async function of a :class:`Pipeline`.
PipelineFunction = Callable[["Pipeline"], Awaitable[Any]]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_STEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,79}$")
_SCOPE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")

#: Every registered pipeline function, by name and version.
_REGISTRY: dict[tuple[str, int], PipelineFunction] = {}


def pipeline(name: str, *, version: int = 1) -> Callable[[PipelineFunction], PipelineFunction]:
    """Register the decorated function as pipeline ``name`` at ``version``."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"pipeline name {name!r} must match {_NAME.pattern}")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"pipeline {name!r}: version must be a whole number from 1, not {version!r}")

    def register(function: PipelineFunction) -> PipelineFunction:
        known = _REGISTRY.get((name, version))
        if known is not None and known is not function:
            raise ValueError(
                f"pipeline {name!r} version {version} is registered twice "
                f"({known.__module__}.{known.__qualname__} and {function.__module__}.{function.__qualname__})"
            )
        _REGISTRY[(name, version)] = function
        return function

    return register


def registered(name: str, version: int) -> PipelineFunction | None:
    """The function registered as ``name`` at ``version``, if any."""
    return _REGISTRY.get((name, version))


def versions_of(name: str) -> list[int]:
    return sorted(v for (n, v) in _REGISTRY if n == name)


class PipelineCodeError(ValueError):
    """A pipeline's code asked for something it may not: a job its entry does not list, a bad name or address."""


class JobFailed(Exception):
    """A job step ended without success (failed, timed out or cancelled in Databricks), repairs included."""

    def __init__(self, run: JobRun) -> None:
        self.run = run
        cause = f": {run.error.type}: {run.error.message}" if run.error else ""
        super().__init__(f"job {run.job!r} (step {run.step}, {run.name}) {run.state.value}{cause}")


class Rejected(Exception):
    """An approval gate was rejected, or nobody decided before its deadline (``decision`` None)."""

    def __init__(self, gate: str, decision: ApprovalDecision | None) -> None:
        self.gate = gate
        self.decision = decision
        if decision is None:
            super().__init__(f"nobody approved {gate!r} before its deadline")
        else:
            said = f": {decision.comment}" if decision.comment else ""
            super().__init__(f"{gate!r} rejected by {decision.by}{said}")


class PipelineCancelled(Exception):
    """Someone cancelled the pipeline: the step that saw it ends, and so does the pipeline."""

    def __init__(self, by: str | None) -> None:
        self.by = by
        super().__init__(f"cancelled by {by or 'someone'}")


class Step[T]:
    """A building block started by the pipeline: await it for its outcome (more than once is fine)."""

    def __init__(self, pipeline: Pipeline, number: str, kind: StepKind, name: str, future: Any, finish) -> None:
        self._pipeline = pipeline
        self.id = number
        self.kind = kind
        self.name = name
        self._future = future
        self._finish = finish
        self.value: Any = None
        self.done = False

    def __await__(self) -> Generator[Any, None, T]:
        return self._outcome().__await__()

    async def _outcome(self) -> T:
        if not self.done:
            expected = promise_tree.step_base(self._pipeline.id, self.id)
            if (made := await self._future.id()) != expected:
                # Only this handle may create the root's children; anything else breaks the step ids.
                raise RuntimeError(f"step {self.name!r} became {made}, not {expected}: steps must be made by Pipeline")
            self.value = await self._settled()
            self.done = True
        return self._finish(self.value)

    async def _settled(self) -> Any:
        if self.kind is StepKind.EMAIL:
            return await receipt_of(self._future)
        return await self._future


class Pipeline:
    """One pipeline as its function sees it: its inputs, and the building blocks it awaits."""

    def __init__(
        self, ctx: Context, spec: PipelineSpec, entry: PipelineEntry, *, watch_from_trigger: bool = True
    ) -> None:
        self._ctx = ctx
        self._spec = spec
        self._entry = entry
        #: How its job steps start watching their runs (see :attr:`.calls.JobTarget.watch_from_trigger`).
        self._watch_from_trigger = watch_from_trigger
        #: The root's children made so far: a step's id is its position among them.
        self._made = 0
        self._steps: list[Step] = []

    @property
    def id(self) -> str:
        return self._spec.id

    @property
    def name(self) -> str:
        """The catalogue entry it was started as."""
        return self._entry.name

    @property
    def recipient(self) -> str:
        """The address the start gave: its outcome is emailed there."""
        return str(self._spec.email)

    @property
    def parameters(self) -> dict[str, str]:
        """The start's parameters, resolved by the catalogue (defaults filled in)."""
        return dict(self._spec.parameters)

    @property
    def steps(self) -> list[Step]:
        return list(self._steps)

    def job(
        self,
        job: str,
        parameters: Mapping[str, str | int | float | bool] | None = None,
        *,
        name: str | None = None,
        check: bool = True,
    ) -> Step[JobRun]:
        """Run catalogue job ``job`` with ``parameters``; await it for its :class:`JobRun`.

        Exactly one Databricks run, waited for by the job's completion mode,
        repaired by its policy (automatically, or by a person within its
        repair window), cancelled if the pipeline is. A run that finally
        fails raises :class:`JobFailed` when awaited, unless ``check`` is
        false. Parameters the catalogue refuses fail the step, and Databricks
        is never called.
        """
        if not self._entry.may_run(job):
            raise PipelineCodeError(
                f"pipeline {self.name!r} may not run job {job!r}: "
                f"its catalogue entry lists {', '.join(self._entry.jobs)}"
            )
        label = _step_name(name or job)
        number = self._next()
        target = JobTarget(
            pipeline_id=self.id,
            base=promise_tree.step_base(self.id, number),
            step=number,
            name=label,
            job=job,
            parameters=_texts(job, parameters or {}),
            email=self.recipient,
            timeout_seconds=self._left(self._spec.timeout_seconds),
            catalogue_name=job,
            watch_from_trigger=self._watch_from_trigger,
        )
        future = self._ctx.options(timeout=_STEP_LIFETIME).run(job_step, target)
        return self._started(Step(self, number, StepKind.JOB, label, future, lambda run: _checked(run, check)))

    def approval(
        self,
        name: str,
        message: str,
        *,
        deadline: timedelta,
        scopes: Sequence[str] = ("approve",),
        notify: Iterable[str] | None = None,
    ) -> Step[ApprovalDecision]:
        """Wait, holding nothing, for a person to approve or reject; await it for the decision.

        Whoever holds one of ``scopes`` (or admin) decides, through the API,
        the web page, the CLI or the client, before ``deadline``. ``notify``
        (the pipeline's own address by default) is emailed a link to the
        pipeline's page. A rejection, or no decision in time, raises
        :class:`Rejected`.
        """
        label = _step_name(name)
        if not 1 <= len(message) <= 2000:
            raise PipelineCodeError(f"approval {label!r}: the message is 1 to 2000 characters")
        seconds = int(deadline.total_seconds())
        if not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
            raise PipelineCodeError(f"approval {label!r}: the deadline is 1 s to {MAX_TIMEOUT_SECONDS} s")
        seconds = self._left(seconds)
        bad = [scope for scope in scopes if not _SCOPE.fullmatch(scope)]
        if not scopes or bad:
            raise PipelineCodeError(f"approval {label!r}: scopes must be one or more of {_SCOPE.pattern}: {bad}")
        number = self._next()
        call = GateCall(
            pipeline_id=self.id,
            step=number,
            name=label,
            message=message,
            scopes=tuple(scopes),
            deadline_seconds=seconds,
            notify=tuple(_addresses(label, [self.recipient] if notify is None else notify)),
            pipeline=self.name,
            pipeline_title=self._entry.title,
            parameters=self.parameters,
        )
        future = self._ctx.options(timeout=deadline + _GATE_SLACK).run(approval_step, call)
        return self._started(Step(self, number, StepKind.APPROVAL, label, future, lambda d: _approved(label, d)))

    def email(
        self,
        subject: str,
        lines: Sequence[str],
        *,
        to: str | None = None,
        runs: Sequence[JobRun] = (),
        name: str = "email",
    ) -> Step[NotificationReceipt]:
        """Email ``subject`` and ``lines`` (and a summary of ``runs``) once; await it for the receipt."""
        label = _step_name(name)
        if not 1 <= len(subject) <= 200:
            raise PipelineCodeError(f"email {label!r}: the subject is 1 to 200 characters")
        number = self._next()
        notification = Notification(
            pipeline_id=self.id,
            email=_addresses("email", [to or self.recipient])[0],
            state=PipelineState.WAITING,
            parameters=self.parameters,
            job=self.name,
            job_title=self._entry.title,
            kind="step",
            step=number,
            step_name=label,
            subject=subject,
            lines=list(lines),
            steps=[summary_of_run(run) for run in runs],
        )
        future = send_email(self._ctx, notification)
        return self._started(Step(self, number, StepKind.EMAIL, label, future, lambda receipt: receipt))

    def outcome_email(self, notification: Notification) -> Step[NotificationReceipt]:
        """The email of the pipeline's outcome (the runner's, after the function ended)."""
        number = self._next()
        future = send_email(self._ctx, notification)
        return Step(self, number, StepKind.EMAIL, "outcome", future, lambda receipt: receipt)

    def _left(self, seconds: int) -> int:
        """``seconds`` of waiting, or less: what is left of the pipeline's own time, less what ending it takes.

        A wait must end before the pipeline does, or nobody would be told. Only
        the first execution's figure counts: a replay finds the wait's promise
        made, with the timeout it was made with.
        """
        left = (self._ctx.info.timeout_at - now_ms()) // 1000 - FINISH_MARGIN_SECONDS
        return max(1, min(seconds, left))

    def _next(self) -> str:
        self._made += 1
        return str(self._made)

    def _started[T](self, step: Step[T]) -> Step[T]:
        self._steps.append(step)
        return step


#: What a pipeline keeps of its time for ending after its last wait (cancel a run, email, record):
#: the least the gateway gives it (PIPELINE_FINISH_GRACE_SECONDS' minimum).
FINISH_MARGIN_SECONDS = 60
#: How long a job step's child workflow may live (Resonate caps it at the pipeline's own deadline).
_STEP_LIFETIME = timedelta(seconds=3 * MAX_TIMEOUT_SECONDS)
#: A gate's child outlives its deadline by this much, so its own wait times out first.
_GATE_SLACK = timedelta(minutes=10)


def _step_name(name: str) -> str:
    if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
        raise PipelineCodeError(f"step name {name!r} must match {_STEP_NAME.pattern}")
    return name


def _texts(job: str, parameters: Mapping[str, Any]) -> dict[str, str]:
    """Job parameters as Databricks takes them, text; a value of any other kind is the code's mistake."""
    texts = {}
    for key, value in parameters.items():
        if isinstance(value, bool):
            texts[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            texts[key] = str(value)
        else:
            raise PipelineCodeError(
                f"job {job!r}: parameter {key!r} is a {type(value).__name__}; give text or a number"
            )
    return texts


def _addresses(what: str, addresses: Iterable[str]) -> list[str]:
    checked = []
    for address in addresses:
        try:
            checked.append(check_recipient(address).address)
        except RecipientRefused as exc:
            raise PipelineCodeError(f"{what}: {exc}") from None
    if len(checked) > 20:
        raise PipelineCodeError(f"{what}: at most 20 addresses")
    return checked


def _checked(run: JobRun, check: bool) -> JobRun:
    if run.state is PipelineState.CANCELLED and run.cancelled_by is not None:
        raise PipelineCancelled(run.cancelled_by)
    if check and not run.succeeded:
        raise JobFailed(run)
    return run


def _approved(gate: str, decision: ApprovalDecision | None) -> ApprovalDecision:
    if decision is not None and decision.action == "cancel":
        raise PipelineCancelled(decision.by)
    if decision is None or decision.action != "approve":
        raise Rejected(gate, decision)
    return decision


def summary_of_run(run: JobRun) -> StepSummary:
    return StepSummary(
        id=run.step,
        kind=StepKind.JOB,
        name=run.name,
        state=StepState(run.state.value),
        job=run.job,
        run=run.run,
        attempts=max(1, len(run.attempts)),
        result=run.result,
        error=run.error,
        started_at=run.started_at,
        ended_at=run.ended_at,
    )

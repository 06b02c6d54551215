"""The runner of a pipeline's function: ``run_pipeline`` at Resonate version 3 (and 2).

The gateway starts every new pipeline here (``PipelineSpec.version`` set).
The runner finds the function the catalogue entry names, at the version the
pipeline started on, and awaits it with a :class:`~.pipelines.Pipeline`.
However the function ends (it returned, a job failed, an approval was
rejected, the pipeline was cancelled, its code raised), the runner waits for
every step still going, emails the outcome once, and records it.

The building blocks' child workflows live here too: :func:`job_step` (one
job, run to its end by :func:`.job_runs.run_job`) and :func:`approval_step`
(one gate).
"""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any

from pydantic import BaseModel
from resonate.context import Context

from pipeline_shared.catalogue import PipelineEntry, UnknownJob
from pipeline_shared.models import (
    ApprovalDecision,
    JobRun,
    Notification,
    NotificationReceipt,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RunError,
    StepKind,
    StepState,
    StepSummary,
)

from . import (
    shipped,  # noqa: F401  (the pipelines we ship register themselves on import)
    steps,
)
from .pipelines import (
    JobFailed,
    Pipeline,
    PipelineCancelled,
    Rejected,
    Step,
    registered,
    summary_of_run,
    versions_of,
)

logger = logging.getLogger(__name__)

#: The most bytes of a function's return value kept as the pipeline's result.
MAX_RESULT_BYTES = 256 * 1024


async def run_pipeline(ctx: Context, spec: PipelineSpec) -> PipelineOutcome:
    """Run the pipeline's function to its end, then email and record its outcome (Resonate version 3)."""
    return await _run(ctx, spec, watch_from_trigger=True)


async def run_pipeline_separate_watch(ctx: Context, spec: PipelineSpec) -> PipelineOutcome:
    """The same at Resonate version 2, which pipelines started on it replay to their end.

    Its job steps schedule a run's first watchdog check in a step of their own,
    after the trigger: the order their children were made in.
    """
    return await _run(ctx, spec, watch_from_trigger=False)


async def _run(ctx: Context, spec: PipelineSpec, *, watch_from_trigger: bool) -> PipelineOutcome:
    deps = ctx.get_dependency(steps.WorkerDeps)
    entry = deps.catalogue.startable.get(spec.job or deps.catalogue.default)
    p = Pipeline(ctx, spec, entry or _missing_entry(spec), watch_from_trigger=watch_from_trigger)
    state, result, error = PipelineState.SUCCEEDED, None, None
    try:
        function = _function_of(entry, spec)
        returned = await function(p)
        state, result, error = _returned(returned)
    except JobFailed as exc:
        state, error = exc.run.state, exc.run.error or RunError(type="JobFailed", message=str(exc))
    except Rejected as exc:
        kind = "ApprovalExpired" if exc.decision is None else "Rejected"
        state, error = PipelineState.FAILED, RunError(type=kind, message=str(exc))
    except PipelineCancelled as exc:
        state, error = PipelineState.CANCELLED, RunError(type="Cancelled", message=f"cancelled by {exc.by}")
    except Exception as exc:
        # The pipeline's own code went wrong: the pipeline fails, saying how,
        # rather than the workflow failing without an outcome or an email.
        # (Resonate's suspension is a BaseException and passes through.)
        state, error = PipelineState.FAILED, RunError(type=type(exc).__name__, message=str(exc)[:20_000] or "-")
    # Every step started is awaited (a pipeline ends after its runs do); what
    # it raises now is already told by the error above.
    for step in p.steps:
        with contextlib.suppress(JobFailed, Rejected, PipelineCancelled):
            await step

    runs = [step.value for step in p.steps if step.kind is StepKind.JOB and step.done]
    only = runs[0] if len(runs) == 1 and len(p.steps) == 1 else None
    if only is not None and result is None:
        result = only.result
    every = [_summary(step) for step in p.steps if step.done]
    summaries = [] if only is not None else every
    notification = Notification(
        pipeline_id=spec.id,
        email=spec.email,
        state=state,
        parameters=only.parameters if only else spec.parameters,
        run=only.run if only else None,
        result=result,
        error=error,
        job=p.name,
        job_title=entry.title if entry else None,
        report=only.report if only else None,
        attempts=only.attempts if only else [],
        thread=only.thread if only else [],
        waited_seconds=spec.timeout_seconds if only and state is PipelineState.TIMED_OUT else None,
        settled_at=only.ended_at if only else None,
        steps=summaries,
    )
    receipt = await p.outcome_email(notification)
    outcome = PipelineOutcome(
        state=state,
        result=result,
        error=error,
        run=only.run if only else None,
        notification=receipt,
        report=only.report if only else None,
        attempts=only.attempts if only else [],
    )
    await ctx.run(steps.record_outcome, spec.id, outcome, p.name, every)
    return outcome


def _function_of(entry: PipelineEntry | None, spec: PipelineSpec):
    if entry is None:
        raise UnknownJob(str(spec.job), [])
    assert spec.version is not None  # the gateway starts versions 2 and 3 only with one
    function = registered(entry.function_name, spec.version)
    if function is None:
        known = ", ".join(map(str, versions_of(entry.function_name))) or "none"
        raise LookupError(
            f"pipeline function {entry.function_name!r} version {spec.version} is not registered on this worker "
            f"(registered versions: {known}); keep every version that pipelines in flight started on"
        )
    return function


def _missing_entry(spec: PipelineSpec) -> PipelineEntry:
    """A stand-in entry for a pipeline whose catalogue entry was removed while it ran (it then fails)."""
    name = spec.job or "unknown"
    return PipelineEntry(name=name, title=name, description="(no longer in the catalogue)", jobs=("unknown",))


def _returned(value: Any) -> tuple[PipelineState, dict[str, Any] | None, RunError | None]:
    """The pipeline's state, result and error from what its function returned."""
    if isinstance(value, JobRun):
        # A pipeline that hands back a run (one that did not check it) ends as the run did.
        return value.state, value.result, value.error
    if value is None:
        return PipelineState.SUCCEEDED, None, None
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if not isinstance(value, dict):
        value = {"value": value}
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        return PipelineState.FAILED, None, RunError(type="ResultNotJSON", message=f"the function's result: {exc}")
    if size > MAX_RESULT_BYTES:
        message = f"the function's result is {size} bytes of JSON; at most {MAX_RESULT_BYTES}"
        return PipelineState.FAILED, None, RunError(type="ResultTooLarge", message=message)
    return PipelineState.SUCCEEDED, value, None


def _summary(step: Step) -> StepSummary:
    value = step.value
    if step.kind is StepKind.JOB:
        return summary_of_run(value)
    if step.kind is StepKind.APPROVAL:
        decision: ApprovalDecision | None = value
        states = {"approve": StepState.APPROVED, "reject": StepState.REJECTED, "cancel": StepState.CANCELLED}
        return StepSummary(
            id=step.id,
            kind=step.kind,
            name=step.name,
            state=StepState.EXPIRED if decision is None else states[decision.action],
            decision=decision,
            ended_at=decision.decided_at if decision else None,
        )
    receipt: NotificationReceipt = value
    return StepSummary(
        id=step.id,
        kind=step.kind,
        name=step.name,
        state=StepState.SENT if receipt.delivered else StepState.NOT_SENT,
        message_id=receipt.message_id,
        error=None if receipt.delivered else RunError(type="NotSent", message=receipt.error or ""),
    )

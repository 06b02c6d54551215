"""The building blocks' own child workflows: a job step and an approval gate.

:class:`~.pipelines.Pipeline` starts them (``P:N``) and the runner's replay
finds them done or resumes them. A job step is one job run to its end by
:func:`.job_runs.run_job`; a gate writes its record, asks the people who may
decide, and waits, holding nothing, for their decision.
"""

from __future__ import annotations

from datetime import timedelta

from resonate.context import Context
from resonate.error import ApplicationError

from pipeline_shared.models import ApprovalDecision, JobRun, Notification, PipelineState

from . import steps
from .calls import GateCall, JobTarget
from .job_runs import notify, run_job


async def job_step(ctx: Context, target: JobTarget) -> JobRun:
    """A job step's child workflow (``P:N``): one job run to its end; its value is the :class:`JobRun`."""
    return await run_job(ctx, target)


async def approval_step(ctx: Context, call: GateCall) -> ApprovalDecision | None:
    """An approval gate's child workflow (``P:N``): the decision, or None when its deadline passed first.

    Its decision promise (``P:N.1``) is settled by ``POST /pipelines/{id}/approve``
    or ``/reject`` (or by a cancel); its record (``P:N.gate``) tells the gateway
    where that promise is, who may decide, and until when.
    """
    decision = ctx.promise(timeout=timedelta(seconds=call.deadline_seconds))
    decision_id = await decision.id()
    record = await ctx.run(steps.open_gate, call, decision_id)
    if record.notify and not record.cancelled_by:
        await notify(
            ctx,
            Notification(
                pipeline_id=call.pipeline_id,
                email=record.notify[0],
                state=PipelineState.AWAITING_APPROVAL,
                parameters=call.parameters,
                job=call.pipeline,
                job_title=call.pipeline_title,
                kind="approval_request",
                step=call.step,
                approval=record.gate,
            ),
        )
    try:
        return ApprovalDecision.model_validate(await decision)
    except ApplicationError:
        # Its timeout, the deadline, passed: our services only resolve it.
        return None

"""The pipeline, top to bottom.

``run_pipeline`` is deterministic orchestration only; every effect is a step
in :mod:`.steps` or a call to another service by name. It replays from the top
whenever it resumes, so it must create its children in the same order every
time: the callback promise first, the trigger step second
(:data:`pipeline_shared.ids.CALLBACK_PROMISE_SEQ` and
:data:`~pipeline_shared.ids.TRIGGER_STEP_SEQ`), because the gateway finds them
by those positions.

While the workflow waits for Databricks it is suspended on the callback
promise: no process, thread or lease is held, and any worker may resume it.
"""

from __future__ import annotations

from datetime import timedelta

from resonate.context import Context
from resonate.error import ApplicationError
from resonate.retry import Exponential

from pipeline_shared import names
from pipeline_shared.models import (
    Notification,
    NotificationReceipt,
    PipelineOutcome,
    PipelineSpec,
    PipelineState,
    RunError,
    Settlement,
    WatchRequest,
)

from . import steps, watchdog

#: Databricks outages must not fail a pipeline whose job is fine: retry the
#: trigger for as long as the pipeline itself may wait, backing off to a minute.
TRIGGER_RETRY = Exponential(delay=1, factor=2, max_delay=60, max_retries=100_000)

#: Cancelling is best effort but worth a few tries: an orphaned run costs money.
CANCEL_RETRY = Exponential(delay=1, factor=2, max_delay=30, max_retries=10)

_STATE_BY_STATUS = {
    "success": PipelineState.SUCCEEDED,
    "failure": PipelineState.FAILED,
    "cancelled": PipelineState.CANCELLED,
}


async def run_pipeline(ctx: Context, spec: PipelineSpec) -> PipelineOutcome:
    """Trigger the job, wait for the run's outcome, email it."""
    callback = ctx.promise(timeout=timedelta(seconds=spec.timeout_seconds))
    promise_id = await callback.id()

    trigger = await ctx.options(retry_policy=TRIGGER_RETRY).run(steps.trigger_databricks_run, spec, promise_id)
    run = trigger.run

    settlement: Settlement | None
    if trigger.error is not None:
        # No run will ever call back: close the promise with the cause, unless
        # a cancel got there first.
        refused = Settlement(status="failure", error=trigger.error, source="worker", received_at=steps.now_ms())
        settlement = await ctx.run(steps.settle_callback_promise, promise_id, refused)
    else:
        if run is not None:
            watch = WatchRequest(
                pipeline_id=spec.id,
                promise_id=promise_id,
                run_id=run.run_id,
                interval_seconds=ctx.get_dependency(steps.WorkerDeps).watchdog_interval_seconds,
                job=spec.job,
            )
            await ctx.run(watchdog.start_watching, watch)
        settlement = await _await_settlement(ctx, callback, promise_id)

    if settlement is None:
        state, result = PipelineState.TIMED_OUT, None
        error = RunError(
            type="TimedOut",
            message=f"no outcome from Databricks within {spec.timeout_seconds} s; the run was stopped",
        )
    else:
        state, result, error = _STATE_BY_STATUS[settlement.status], settlement.result, settlement.error

    # A run nobody waits for any more is stopped. A run that ended by itself
    # (success, failure, or cancelled in Databricks) needs nothing.
    if run is not None and (state is PipelineState.TIMED_OUT or (settlement and settlement.source == "user")):
        refusal = await ctx.options(retry_policy=CANCEL_RETRY).run(steps.cancel_databricks_run, spec.id, run.run_id)
        if refusal is not None and state is PipelineState.TIMED_OUT:
            error = RunError(
                type="TimedOut",
                message=f"no outcome from Databricks within {spec.timeout_seconds} s, and the run could not "
                f"be cancelled: {refusal}",
            )

    job = steps.job_of(ctx.get_dependency(steps.WorkerDeps), spec.job)
    report = settlement.report if settlement else None
    notification = Notification(
        pipeline_id=spec.id,
        email=spec.email,
        state=state,
        parameters=spec.parameters,
        run=run,
        result=result,
        error=error,
        job=job.name,
        job_title=job.title,
        report=report,
        waited_seconds=spec.timeout_seconds if state is PipelineState.TIMED_OUT else None,
        settled_at=settlement.received_at if settlement else None,
    )
    receipt = await _notify(ctx, notification)
    outcome = PipelineOutcome(state=state, result=result, error=error, run=run, notification=receipt, report=report)
    await ctx.run(steps.record_outcome, spec.id, outcome, job.name)
    return outcome


async def _await_settlement(ctx: Context, callback, promise_id: str) -> Settlement | None:
    """The callback's settlement, or None when the promise timed out."""
    try:
        return Settlement.model_validate(await callback)
    except ApplicationError:
        # Our services only ever resolve this promise, so a rejection is the
        # server's timeout, or someone settling it behind our back.
        state = await ctx.run(steps.callback_promise_state, promise_id)
        if state == "rejected_timedout":
            return None
        cause = RunError(type="CallbackRejected", message=f"the callback promise was {state} outside this system")
        return Settlement(status="failure", error=cause, source="worker", received_at=steps.now_ms())


async def _notify(ctx: Context, notification: Notification) -> NotificationReceipt:
    try:
        value = await ctx.options(target=names.NOTIFIER_GROUP).rpc(names.SEND_PIPELINE_EMAIL, notification)
    except ApplicationError as exc:
        # The notifier retries transient SMTP trouble itself; reaching here
        # means it gave up (or its promise timed out). The pipeline's outcome
        # stands, and the failed notification is recorded with it.
        return NotificationReceipt(delivered=False, error=f"notification failed: {exc}")
    return NotificationReceipt.model_validate(value)

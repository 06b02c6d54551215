"""One Databricks job, run to its end: the promise, the trigger, the wait, and the repairs.

This is the heart of every pipeline. :func:`run_job` runs one catalogue job
on the context it is given: a one-job pipeline's own (the workflow of
pipelines started before pipelines were code, :mod:`.workflows`), or a job
step's child workflow (:func:`.runner.job_step`), whose promises then sit one
level down (``P:N.1``, ``P:N.2``, ...). Either way it creates its children in
the same order every time it replays: the callback promise first, the trigger
step second (:data:`pipeline_shared.promise_tree.CALLBACK_PROMISE_SEQ` and
:data:`~pipeline_shared.promise_tree.TRIGGER_STEP_SEQ`), because the gateway
finds them by those positions.

While it waits for Databricks it is suspended on the callback promise: no
process, thread or lease is held, and any worker may resume it.
"""

from __future__ import annotations

from datetime import timedelta

from resonate.context import Context
from resonate.error import ApplicationError
from resonate.retry import Exponential

from pipeline_shared import names, promise_tree
from pipeline_shared.catalogue import Job
from pipeline_shared.models import (
    Attempt,
    AttemptRecord,
    DatabricksRun,
    JobRun,
    Notification,
    NotificationReceipt,
    PipelineState,
    RepairDecision,
    RunError,
    Settlement,
    TriggerOutcome,
    WatchRequest,
)

from . import steps, watchdog
from .calls import JobTarget

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


async def run_job(ctx: Context, target: JobTarget) -> JobRun:
    """Trigger the job, wait for the run's outcome, repair a failed run by the job's policy; its outcome."""
    deps = ctx.get_dependency(steps.WorkerDeps)
    job = steps.job_of(deps, target.catalogue_name)
    callback = ctx.promise(timeout=timedelta(seconds=target.timeout_seconds))
    promise_id = await callback.id()

    trigger_step = trigger_and_watch if target.watch_from_trigger else steps.trigger_databricks_run
    trigger = await ctx.options(retry_policy=TRIGGER_RETRY).run(trigger_step, target, promise_id)
    run = trigger.run

    settlement: Settlement | None
    if trigger.error is not None or trigger.cancelled_by is not None:
        # No run will ever call back: close the promise with the cause, unless
        # a cancel got there first.
        settlement = await ctx.run(steps.settle_callback_promise, promise_id, _no_run(trigger))
    else:
        if run is not None and not target.watch_from_trigger:
            await ctx.run(watchdog.start_watching, _watch(deps, target, promise_id, run, 0))
        settlement = await _await_settlement(ctx, callback, promise_id)

    attempts = [Attempt(number=0, started_at=trigger.started_at or 0, reason="the original run")]
    thread: list[str] = []
    automatic = manual = 0
    parameters = target.parameters
    state, result, error = _ending(settlement, target)
    while run is not None and state is PipelineState.FAILED and settlement is not None:
        attempts[-1] = _ended(attempts[-1], settlement)
        policy, number = job.repair, len(attempts)
        report = settlement.report
        transient = settlement.source != "callback" and policy.is_transient(
            report.termination_type if report else None, report.termination_code if report else None
        )
        if transient and automatic < policy.automatic_attempts:
            await ctx.sleep(timedelta(seconds=policy.backoff(automatic)))
            automatic += 1
            kind = report.termination_code or report.termination_type if report else "transient"
            attempt = Attempt(
                number=number,
                started_at=0,
                reason=f"automatic repair of a transient failure ({kind})",
                by="automatic",
                parameters=_if_changed(parameters, target),
            )
        elif policy.manual_window_seconds > 0 and manual < policy.manual_attempts:
            manual += 1
            decision, receipt_ids = await _await_decision(
                ctx, target, job, settlement, run, attempts, thread, parameters
            )
            thread.extend(receipt_ids)
            if decision is None or decision.action == "abandon":
                error = _not_repaired(decision, policy.manual_window_seconds, error)
                break
            parameters = decision.parameters or parameters
            attempt = Attempt(
                number=number,
                started_at=0,
                reason="repair asked for",
                by=decision.by,
                parameters=_if_changed(parameters, target),
            )
        else:
            break
        # The repaired run reports on a callback promise of its own: the first one is settled.
        repaired = ctx.promise(timeout=timedelta(seconds=target.timeout_seconds))
        repaired_id = await repaired.id()
        made = await ctx.options(retry_policy=TRIGGER_RETRY).run(
            steps.repair_databricks_run, target, run.run_id, attempt, repaired_id, parameters
        )
        if made.attempt is None:
            # No repaired run will report on its promise: close it with the
            # cause (every promise a workflow makes must be settled and awaited).
            refused = Settlement(status="failure", error=made.error, source="worker", received_at=steps.now_ms())
            await ctx.run(steps.settle_callback_promise, repaired_id, refused)
            await _await_settlement(ctx, repaired, repaired_id)
            error = made.error
            break
        attempts.append(made.attempt)
        record = AttemptRecord(attempt=attempts[-1], callback_promise_id=repaired_id)
        await ctx.run(
            steps.record_attempt, target.pipeline_id, promise_tree.attempt_record_id(target.base, number), record
        )
        await ctx.run(watchdog.start_watching, _watch(deps, target, repaired_id, run, number))
        settlement = await _await_settlement(ctx, repaired, repaired_id)
        state, result, error = _ending(settlement, target)
    if settlement is not None and attempts[-1].outcome is None:
        attempts[-1] = _ended(attempts[-1], settlement)

    # A run nobody waits for any more is stopped. A run that ended by itself
    # (success, failure, or cancelled in Databricks) needs nothing.
    if run is not None and (state is PipelineState.TIMED_OUT or (settlement and settlement.source == "user")):
        refusal = await ctx.options(retry_policy=CANCEL_RETRY).run(
            steps.cancel_databricks_run, target.pipeline_id, run.run_id
        )
        if refusal is not None and state is PipelineState.TIMED_OUT:
            error = RunError(
                type="TimedOut",
                message=f"no outcome from Databricks within {target.timeout_seconds} s, and the run could not "
                f"be cancelled: {refusal}",
            )

    return JobRun(
        step=target.step or "1",
        name=target.name,
        job=job.name,
        state=state,
        parameters=parameters,
        result=result,
        error=error,
        run=run,
        report=settlement.report if settlement else None,
        attempts=attempts if len(attempts) > 1 else [],
        thread=thread,
        started_at=trigger.started_at,
        ended_at=settlement.received_at if settlement else None,
        cancelled_by=settlement.by if settlement and settlement.source == "user" else None,
    )


async def trigger_and_watch(ctx: Context, target: JobTarget, promise_id: str) -> TriggerOutcome:
    """The trigger step of a job step at runner version 3: start the run, then have the watchdog watch it.

    One durable step where there were two (the trigger, then
    :func:`.watchdog.start_watching` in its own): the callback promise the
    trigger has just read gives the watch its deadline. Run again after a
    crash, both halves are idempotent (the run's token, the watch's id).
    """
    deps = ctx.get_dependency(steps.WorkerDeps)
    trigger, deadline = await steps.start_run(deps, target, promise_id)
    if trigger.run is not None:
        await watchdog.start_watching(ctx, _watch(deps, target, promise_id, trigger.run, 0), deadline)
    return trigger


def _no_run(trigger: TriggerOutcome) -> Settlement:
    """How a run that was never started ends: Databricks refused it, or the pipeline was cancelled first."""
    if trigger.cancelled_by is not None:
        cause = RunError(type="Cancelled", message=f"the pipeline was cancelled by {trigger.cancelled_by} first")
        return Settlement(
            status="cancelled", error=cause, source="user", by=trigger.cancelled_by, received_at=steps.now_ms()
        )
    return Settlement(status="failure", error=trigger.error, source="worker", received_at=steps.now_ms())


def _watch(
    deps: steps.WorkerDeps, target: JobTarget, promise_id: str, run: DatabricksRun, attempt: int
) -> WatchRequest:
    return WatchRequest(
        pipeline_id=target.pipeline_id,
        promise_id=promise_id,
        run_id=run.run_id,
        job_id=run.job_id,
        interval_seconds=deps.watchdog_interval_seconds,
        job=target.catalogue_name,
        attempt=attempt,
        step=target.step,
    )


def _ending(settlement: Settlement | None, target: JobTarget) -> tuple[PipelineState, dict | None, RunError | None]:
    """The state an outcome gives the run (if nothing repairs it), its result and error."""
    if settlement is None:
        error = RunError(
            type="TimedOut",
            message=f"no outcome from Databricks within {target.timeout_seconds} s; the run was stopped",
        )
        return PipelineState.TIMED_OUT, None, error
    return _STATE_BY_STATUS[settlement.status], settlement.result, settlement.error


def _ended(attempt: Attempt, settlement: Settlement) -> Attempt:
    return attempt.model_copy(update={"outcome": settlement.status, "error": settlement.error})


def _if_changed(parameters: dict[str, str], target: JobTarget) -> dict[str, str] | None:
    """An attempt's parameters as its record holds them: all of them if a repair changed any, else None."""
    return parameters if parameters != target.parameters else None


def _not_repaired(decision: RepairDecision | None, window_seconds: int, cause: RunError | None) -> RunError:
    failed = f": {cause.type}: {cause.message}" if cause else ""
    if decision is None:
        return RunError(
            type="RepairWindowExpired",
            message=f"nobody repaired or abandoned it within its repair window ({window_seconds} s); "
            f"the run stays failed{failed}",
        )
    return RunError(type="Abandoned", message=f"abandoned by {decision.by}; the run stays failed{failed}")


async def _await_decision(
    ctx: Context,
    target: JobTarget,
    job: Job,
    settlement: Settlement,
    run: DatabricksRun,
    attempts: list[Attempt],
    thread: list[str],
    parameters: dict[str, str],
) -> tuple[RepairDecision | None, list[str]]:
    """Wait, holding nothing, for a person to repair or abandon the run; None when the window ends.

    The wait is a promise of the workflow's own (its timeout the repair
    window), found by the gateway through the attempt's record, and settled
    by ``POST /pipelines/{id}/repair`` or ``/abandon``. The person is told by
    an email that says what failed and how to repair it.
    """
    window = job.repair.manual_window_seconds
    decision = ctx.promise(timeout=timedelta(seconds=window))
    decision_id = await decision.id()
    number = len(attempts)
    record = await ctx.run(
        steps.record_attempt,
        target.pipeline_id,
        promise_tree.repair_window_id(target.base, number),
        AttemptRecord(attempt=attempts[-1], decision_promise_id=decision_id),
        window,
    )
    notice = Notification(
        pipeline_id=target.pipeline_id,
        email=target.email,
        state=PipelineState.AWAITING_REPAIR,
        kind="awaiting_repair",
        # What the failed attempt ran with: a repair may have changed the start's.
        parameters=parameters,
        run=run,
        error=settlement.error,
        job=job.name,
        job_title=job.title,
        report=settlement.report,
        attempts=attempts if len(attempts) > 1 else [],
        thread=list(thread),
        repair_deadline=record.repair_deadline,
        settled_at=settlement.received_at,
        step=target.step,
    )
    receipt = await notify(ctx, notice)
    sent = [receipt.message_id] if receipt.delivered and receipt.message_id else []
    try:
        return RepairDecision.model_validate(await decision), sent
    except ApplicationError:
        # The promise's timeout (the repair window) passed; our services only resolve it.
        return None, sent


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


def send_email(ctx: Context, notification: Notification):
    """The notifier's call for ``notification``: a future the caller awaits through :func:`receipt_of`."""
    return ctx.options(target=names.NOTIFIER_GROUP).rpc(names.SEND_PIPELINE_EMAIL, notification)


async def receipt_of(sending) -> NotificationReceipt:
    """What became of an email: the notifier's receipt, or why it could not say."""
    try:
        value = await sending
    except Exception as exc:
        # The notifier retries transient SMTP trouble itself; reaching here
        # means it gave up (or its promise timed out). The pipeline's outcome
        # stands, and the failed notification is recorded with it. Any
        # exception, not only ApplicationError: Resonate hands the awaiter the
        # notifier's own exception whenever this process can unpickle it (a
        # ValueError, an email.errors defect), and the pipeline must end all
        # the same. Suspension is a BaseException and passes through.
        return NotificationReceipt(delivered=False, error=f"notification failed: {exc.__class__.__name__}: {exc}")
    return NotificationReceipt.model_validate(value)


async def notify(ctx: Context, notification: Notification) -> NotificationReceipt:
    """Send ``notification`` through the notifier and wait for its receipt."""
    return await receipt_of(send_email(ctx, notification))

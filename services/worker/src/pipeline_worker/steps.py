"""The pipeline's side effects, one durable step each.

Workflows replay from the top, so every call to the outside world lives here,
in a step whose result Resonate records. A step may still run more than once
(a crash after the effect, before the record), so each is idempotent by
construction: the Databricks run is keyed by an idempotency token derived from
the pipeline id, and the callback promise keeps only its first settlement.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from pydantic import BaseModel
from resonate.context import Context
from resonate.error import ServerError
from resonate.promises import Promises
from resonate.types import Value

from pipeline_shared import ids, names, promise_tree, tracing
from pipeline_shared.callbacks import settle_callback, stored_settlement
from pipeline_shared.catalogue import Catalogue, Completion, Job
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import (
    ApprovalDecision,
    ApprovalRecord,
    Attempt,
    AttemptRecord,
    JobStepRecord,
    PipelineOutcome,
    RepairOutcome,
    RunError,
    Settlement,
    StepSummary,
    TriggerOutcome,
)
from pipeline_shared.signing import derive_callback_key
from pipeline_shared.testhooks import TestHooks

from . import metrics, traces
from .calls import GateCall, JobTarget
from .databricks import DatabricksJobs, PermanentDatabricksError, TransientDatabricksError

logger = logging.getLogger(__name__)

#: How long an attempt's record outlives its writing: longer than any pipeline (timeouts
#: and repair windows are at most 30 days each); the server's retention removes it after.
RECORD_RETENTION_MS = 90 * 24 * 3600 * 1000


@dataclass(frozen=True)
class WorkerDeps:
    """What the steps need, handed to them through Resonate's dependency map."""

    databricks: DatabricksJobs
    promises: Promises
    catalogue: Catalogue
    signing_secret: str
    callback_url: str
    idempotency_namespace: str
    watchdog_interval_seconds: float
    #: The most bytes of task exit values one run's report keeps.
    report_output_budget_bytes: int = 1024 * 1024
    #: Pause points for fault tests; inert unless enabled (see testhooks).
    hooks: TestHooks = field(default_factory=lambda: TestHooks(enabled=False))
    #: Each pipeline's trace context, read from its root promise when tracing is on.
    traces: tracing.TraceContexts = field(default_factory=tracing.TraceContexts)


def now_ms() -> int:
    return int(time.time() * 1000)


def job_of(deps: WorkerDeps, name: str | None) -> Job:
    """The catalogue entry a pipeline runs (None: the default job)."""
    return deps.catalogue.job(name)


async def trigger_databricks_run(ctx: Context, target: JobTarget, promise_id: str) -> TriggerOutcome:
    """Start the job for ``target``; the same pipeline (or job step) never gets a second run.

    A cancel or a timeout may settle the callback promise before this step
    runs (say, while every worker was down); then nobody wants a run and none
    is started, nor for a job step once its pipeline was cancelled. A
    callback may also be there already, when this step is replayed after a
    crash that followed ``run_now``: then ``run_now`` runs again with the
    same idempotency token, which returns the existing run, so the pipeline
    still knows its run. Transient Databricks errors raise, and Resonate
    retries the step with the same token.

    A job step's record (what it runs) is written first, so the gateway shows
    the step from the moment it starts.
    """
    trigger, _ = await start_run(ctx.get_dependency(WorkerDeps), target, promise_id)
    return trigger


async def start_run(deps: WorkerDeps, target: JobTarget, promise_id: str) -> tuple[TriggerOutcome, int | None]:
    """What :func:`trigger_databricks_run` does, and the callback promise's deadline (its ``timeout_at``).

    The deadline is None when the callback promise was not read (the pipeline was cancelled first).
    """
    parent = await deps.traces.of(deps.promises, target.pipeline_id)
    with (
        pipeline_context(target.pipeline_id),
        tracing.span(
            traces.TRACE_SCOPE, "pipeline.trigger", parent=parent, attributes=traces.target_attributes(target)
        ) as span,
    ):
        trigger, deadline = await _start_run(deps, target, promise_id)
        run = trigger.run
        tracing.set_attributes(
            span, {"databricks.run_id": run.run_id if run else None, "databricks.job_id": run.job_id if run else None}
        )
        return trigger, deadline


async def _start_run(deps: WorkerDeps, target: JobTarget, promise_id: str) -> tuple[TriggerOutcome, int | None]:
    if target.step is not None:
        cancelled = await _start_step(deps, target)
        if cancelled is not None:
            logger.info("pipeline cancelled by %s before step %s started; no run", cancelled, target.step)
            return TriggerOutcome(cancelled_by=cancelled), None
    callback = await deps.promises.get(promise_id)
    known = stored_settlement(callback)
    unwanted = known.state != "pending" and (known.stored is None or known.stored.source == "user")
    if unwanted:
        logger.info("pipeline ended (%s) before its run was started; not starting one", known.state)
        return TriggerOutcome(), callback.timeout_at
    job = job_of(deps, target.catalogue_name)
    if (refused := refused_parameters(job, target.parameters)) is not None:
        return TriggerOutcome(error=refused), callback.timeout_at
    parameters = job_parameters(deps, target, target.parameters, promise_id)
    token = ids.idempotency_token(deps.idempotency_namespace, target.base)
    await deps.hooks.checkpoint("before_run_now", target.base)
    try:
        job_id = await deps.databricks.job_id(job)
        try:
            run = await deps.databricks.run_now(job_id, parameters, token)
        except PermanentDatabricksError:
            # A job found by name may have been deleted and deployed anew
            # under another id: the next pipeline looks it up again.
            deps.databricks.forget_job(job)
            raise
    except PermanentDatabricksError as exc:
        logger.warning("Databricks refused to start the job: %s", exc)
        return TriggerOutcome(error=exc.error), callback.timeout_at
    except TransientDatabricksError as exc:
        logger.warning("Databricks unavailable, the step will be retried: %s", exc)
        raise
    await deps.hooks.checkpoint("after_run_now", target.base)
    metrics.RUNS_TRIGGERED.inc()
    logger.info(
        "Databricks run started",
        extra={"fields": {"run_id": run.run_id, "run_page_url": run.run_page_url, "step": target.step}},
    )
    return TriggerOutcome(run=run, started_at=now_ms()), callback.timeout_at


async def _start_step(deps: WorkerDeps, target: JobTarget) -> str | None:
    """Write the job step's record; who cancelled the pipeline, if someone did (then nothing may start)."""
    assert target.step is not None
    record = JobStepRecord(
        step=target.step,
        name=target.name,
        job=target.job,
        parameters=target.parameters,
        timeout_seconds=target.timeout_seconds,
        started_at=now_ms(),
    )
    await deps.promises.create(
        promise_tree.job_step_record_id(target.base),
        timeout_at=now_ms() + RECORD_RETENTION_MS,
        param=Value(data=record.model_dump(mode="json")),
        tags={"resonate:origin": target.pipeline_id},
    )
    return await cancelled_by(deps, target.pipeline_id)


async def cancelled_by(deps: WorkerDeps, pipeline_id: str) -> str | None:
    """Who cancelled the pipeline (its cancel marker's ``by``), or None while nobody has."""
    try:
        marker = await deps.promises.get(promise_tree.cancel_marker_id(pipeline_id))
    except ServerError as exc:
        if exc.code == 404:
            return None
        raise
    data = marker.param.data
    return str(data.get("by") or "someone") if isinstance(data, dict) else "someone"


class OpenedGate(BaseModel):
    """What opening an approval gate did: its record, and who cancelled the pipeline first, if anyone did."""

    gate: ApprovalRecord
    cancelled_by: str | None = None

    @property
    def notify(self) -> list[str]:
        return list(self.gate.notify)


async def open_gate(ctx: Context, call: GateCall, decision_id: str) -> OpenedGate:
    """Write the gate's record where the gateway finds it; once cancelled, close it at once.

    The deadline is the decision promise's own timeout, read back, so the
    record and the wait end together.
    """
    deps = ctx.get_dependency(WorkerDeps)
    decision = await deps.promises.get(decision_id)
    record = ApprovalRecord(
        step=call.step,
        name=call.name,
        message=call.message,
        scopes=list(call.scopes),
        deadline=decision.timeout_at,
        decision_promise_id=decision_id,
        notify=list(call.notify),
        opened_at=now_ms(),
    )
    created = await deps.promises.create(
        promise_tree.approval_record_id(promise_tree.step_base(call.pipeline_id, call.step)),
        timeout_at=now_ms() + RECORD_RETENTION_MS,
        param=Value(data=record.model_dump(mode="json")),
        tags={"resonate:origin": call.pipeline_id},
    )
    by = await cancelled_by(deps, call.pipeline_id)
    if by is not None and decision.state == "pending":
        closed = ApprovalDecision(action="cancel", by=by, decided_at=now_ms())
        await deps.promises.resolve(decision_id, Value(data=closed.model_dump(mode="json")))
    with pipeline_context(call.pipeline_id):
        logger.info("approval gate opened", extra={"fields": {"step": call.step, "gate": call.name}})
    return OpenedGate(gate=ApprovalRecord.model_validate(created.param.data), cancelled_by=by)


def refused_parameters(job: Job, parameters: dict[str, str]) -> RunError | None:
    """Why the catalogue refuses ``parameters`` for ``job`` now, as the pipeline's error; None if it does not.

    Databricks is never given a value the catalogue refuses, whatever let it in.
    """
    refusal = job.refusal(parameters)
    if refusal is None:
        return None
    logger.warning("parameters refused by the catalogue; Databricks is not called: %s", refusal)
    return RunError(type="InvalidParameters", message=str(refusal))


def job_parameters(deps: WorkerDeps, target: JobTarget, parameters: dict[str, str], promise_id: str) -> dict[str, str]:
    """Every job parameter of a run: the user's, and for a job that calls back, the pipeline's own."""
    if job_of(deps, target.catalogue_name).completion is not Completion.CALLBACK:
        return dict(parameters)
    return parameters | {
        names.JOB_PARAM_PIPELINE_ID: target.pipeline_id,
        names.JOB_PARAM_CALLBACK_PROMISE_ID: promise_id,
        names.JOB_PARAM_CALLBACK_URL: deps.callback_url,
        names.JOB_PARAM_CALLBACK_SIGNING_KEY: derive_callback_key(deps.signing_secret, promise_id),
    }


async def repair_databricks_run(
    ctx: Context, target: JobTarget, run_id: int, attempt: Attempt, promise_id: str, parameters: dict[str, str]
) -> RepairOutcome:
    """Repair the run (rerun its failed tasks) as ``attempt``; exactly one repair however often this runs.

    The repair reruns with the user's ``parameters``. The repaired tasks
    report on ``promise_id``, the attempt's own callback promise: a job that
    calls back gets it, with its signing key, in the repair's job parameters.
    A replay after a crash that followed the repair finds it in the run's
    repair history instead of asking for another (see
    :meth:`DatabricksJobs.repair`). Transient errors raise and Resonate
    retries the step.
    """
    deps = ctx.get_dependency(WorkerDeps)
    parent = await deps.traces.of(deps.promises, target.pipeline_id)
    attributes = traces.target_attributes(target) | {"databricks.run_id": run_id, "pipeline.attempt": attempt.number}
    with (
        pipeline_context(target.pipeline_id),
        tracing.span(traces.TRACE_SCOPE, "pipeline.repair", parent=parent, attributes=attributes) as span,
    ):
        if (refused := refused_parameters(job_of(deps, target.catalogue_name), parameters)) is not None:
            return RepairOutcome(error=refused)
        every = job_parameters(deps, target, parameters, promise_id)
        try:
            made = await deps.databricks.repair(run_id, attempt=attempt.number, job_parameters=every)
        except PermanentDatabricksError as exc:
            logger.warning("Databricks refused to repair run %s: %s", run_id, exc)
            return RepairOutcome(error=exc.error)
        await deps.hooks.checkpoint("after_repair_run", target.base)
        logger.info(
            "Databricks run repaired" if not made.adopted else "Databricks run's repair found already made",
            extra={"fields": {"run_id": run_id, "repair_id": made.repair_id, "attempt": attempt.number}},
        )
        metrics.REPAIRS.labels(by="automatic" if attempt.by == "automatic" else "person").inc()
        tracing.set_attributes(span, {"databricks.repair_id": made.repair_id})
        return RepairOutcome(
            attempt=attempt.model_copy(
                update={"repair_id": made.repair_id, "rerun_tasks": made.rerun_tasks, "started_at": now_ms()}
            )
        )


async def record_attempt(
    ctx: Context, pipeline_id: str, promise_id: str, record: AttemptRecord, window_seconds: int | None = None
) -> AttemptRecord:
    """Write an attempt's record where the gateway finds it (``promise_id``); the stored one if it exists.

    A repair window's deadline is stamped here (now + ``window_seconds``),
    once: the step's recorded result is what a replay reads, not the clock.
    """
    deps = ctx.get_dependency(WorkerDeps)
    if window_seconds is not None:
        record = record.model_copy(update={"repair_deadline": now_ms() + window_seconds * 1000})
    created = await deps.promises.create(
        promise_id,
        timeout_at=now_ms() + RECORD_RETENTION_MS,
        param=Value(data=record.model_dump(mode="json")),
        tags={"resonate:origin": pipeline_id},
    )
    return AttemptRecord.model_validate(created.param.data)


async def settle_callback_promise(ctx: Context, promise_id: str, settlement: Settlement) -> Settlement | None:
    """Settle the callback promise ourselves; returns whatever settlement won."""
    deps = ctx.get_dependency(WorkerDeps)
    result = await settle_callback(deps.promises, promise_id, settlement)
    return result.stored


async def callback_promise_state(ctx: Context, promise_id: str) -> str:
    """The callback promise's state, read after awaiting it raised."""
    deps = ctx.get_dependency(WorkerDeps)
    return (await deps.promises.get(promise_id)).state


async def cancel_databricks_run(ctx: Context, pipeline_id: str, run_id: int) -> str | None:
    """Cancel a run nobody waits for any more, so no compute is orphaned.

    Returns None on success, else why Databricks refused (the run is then
    left to its own timeout, and the outcome says so). Transient errors raise
    so the step is retried.
    """
    deps = ctx.get_dependency(WorkerDeps)
    with pipeline_context(pipeline_id):
        try:
            await deps.databricks.cancel(run_id)
        except PermanentDatabricksError as exc:
            logger.warning("Databricks refused to cancel run %s: %s", run_id, exc)
            return exc.error.message
        logger.info("Databricks run cancelled", extra={"fields": {"run_id": run_id}})
        return None


async def record_outcome(
    ctx: Context, pipeline_id: str, outcome: PipelineOutcome, job: str = "", steps: list[StepSummary] | None = None
) -> None:
    """Count, log and trace the final outcome and its steps, once per pipeline (barring a crash here)."""
    deps = ctx.get_dependency(WorkerDeps)
    await deps.hooks.checkpoint("after_email", pipeline_id)
    parent = await deps.traces.of(deps.promises, pipeline_id)
    traces.record_steps(parent, pipeline_id, job, steps or [])
    with (
        pipeline_context(pipeline_id),
        tracing.span(
            traces.TRACE_SCOPE,
            "pipeline.finish",
            parent=parent,
            attributes=traces.outcome_attributes(pipeline_id, job, outcome),
        ),
    ):
        metrics.PIPELINES_FINISHED.labels(state=outcome.state.value, job=job).inc()
        for step in steps or []:
            metrics.STEPS_FINISHED.labels(kind=step.kind.value, state=step.state.value, pipeline=job).inc()
        logger.info(
            "pipeline finished",
            extra={
                "fields": {
                    "state": outcome.state.value,
                    "email_delivered": outcome.notification.delivered if outcome.notification else None,
                }
            },
        )

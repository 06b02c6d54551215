"""The missed-callback watchdog: a notebook may die without calling back.

The cluster is lost, the process is killed, the run is cancelled in the
Databricks UI: then no callback comes, yet Databricks knows the run is over.
While a pipeline waits, the watchdog asks Databricks about its run every
``WATCHDOG_INTERVAL_SECONDS`` and, once the run is over, settles the callback
promise itself. The callback stays the fast path; the first settlement wins,
so the watchdog never overrides one.

Each check is a separate, short invocation that the Resonate server holds
back until it is due (the protocol's ``resonate:delay`` tag), rather than a
loop around a durable sleep: between checks nothing runs, sleeps or holds a
lease, and no execution's history grows with the length of the wait.

Jobs that send webhook notifications (catalogue completion ``notification``)
get the same check sooner: the gateway, told by Databricks that a run started
or ended, dispatches one extra check at once (see
:func:`pipeline_api.domain.notifications`). It finds the pipeline through the run's
index promise (:func:`pipeline_shared.promise_tree.run_index_id`), which
:func:`start_watching` writes. A notification only prompts a check; the
outcome is always read from the Jobs API, so a forged one changes nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from resonate.context import Context
from resonate.retry import Exponential
from resonate.types import Value

from pipeline_shared import names, promise_tree
from pipeline_shared.callbacks import SettleResult, settle_callback
from pipeline_shared.catalogue import Completion, Job
from pipeline_shared.invocations import dispatch
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import CheckOutcome, RunError, RunReport, Settlement, WatchRequest

from . import metrics
from .databricks import PermanentDatabricksError, RunView, TransientDatabricksError
from .steps import WorkerDeps, job_of, now_ms

logger = logging.getLogger(__name__)

#: A check fails only when Resonate itself is unreachable (Databricks errors
#: just postpone it); retry it as the connection comes back.
WATCH_RETRY = Exponential(delay=1, factor=2, max_delay=60, max_retries=20)


async def start_watching(ctx: Context, watch: WatchRequest, deadline: int | None = None) -> bool:
    """Index the run for notifications when its job sends them, then schedule the first check.

    The watch is stamped with the time it starts (this step runs once), from
    which an overdue pipeline is told. ``deadline``, when the caller has just
    read the callback promise pending, is its ``timeout_at`` (then it is not
    read again; a check scheduled as a callback lands finds it settled).
    """
    deps = ctx.get_dependency(WorkerDeps)
    watch = watch.model_copy(update={"started_at": watch.started_at or now_ms()})
    if deadline is None:
        callback = await deps.promises.get(watch.promise_id)
        if callback.state != "pending":
            return False
        deadline = callback.timeout_at
    if job_of(deps, watch.job).completion is Completion.NOTIFICATION:
        # Pending until the pipeline stops waiting; its param is the check a
        # notification prompts. Creating it again returns it unchanged.
        hint = watch.model_copy(update={"hint": True, "check": 1})
        await deps.promises.create(
            promise_tree.run_index_id(watch.run_id, watch.attempt),
            timeout_at=deadline,
            param=Value(data=hint.model_dump(mode="json")),
            tags={"resonate:origin": watch.pipeline_id},
        )
    return await schedule_watchdog_check(ctx, watch, deadline)


async def schedule_watchdog_check(ctx: Context, watch: WatchRequest, deadline: int | None = None) -> bool:
    """Arrange for ``watch`` to run ``watch.interval_seconds`` from now; False if pointless.

    The check is an invocation of the watchdog function whose dispatch the
    Resonate server holds back until it is due (``resonate:delay``): nothing
    runs, sleeps or holds a lease meanwhile. Its id is derived from the
    pipeline and the check number, so scheduling it again changes nothing.
    ``deadline`` is the callback promise's ``timeout_at`` when the caller has
    just read it pending; otherwise it is read here.
    """
    deps = ctx.get_dependency(WorkerDeps)
    if deadline is None:
        callback = await deps.promises.get(watch.promise_id)
        if callback.state != "pending":
            return False
        deadline = callback.timeout_at
    due = now_ms() + int(watch.interval_seconds * 1000)
    if due >= deadline:
        # The promise times out before the check would run: the timeout
        # handles that pipeline.
        return False
    await dispatch(
        deps.promises,
        promise_tree.check_id(promise_tree.base_of(watch.pipeline_id, watch.step), watch.check, watch.attempt),
        names.WATCH_DATABRICKS_RUN,
        watch.model_dump(mode="json"),
        group=names.WORKER_GROUP,
        origin=watch.pipeline_id,
        # A check that could not run before the pipeline stopped waiting is moot.
        timeout_at=deadline,
        not_before=due,
    )
    return True


async def watch_databricks_run(ctx: Context, watch: WatchRequest) -> CheckOutcome:
    """One check of the watchdog (or one a notification prompted), then the next one scheduled.

    When Databricks says the run is over and no callback came, settle the
    callback promise from the run itself: the result task's exit value on
    success, Databricks' state message otherwise, and every task's outcome
    beside it. If the callback wins the race, its settlement stands. Errors
    reaching Databricks only postpone the check. Each check is its own short
    invocation, so however long a pipeline waits, nothing accumulates. A
    check prompted by a notification schedules none: the regular chain
    goes on regardless. What it did, and the state it saw, is its value.
    """
    deps = ctx.get_dependency(WorkerDeps)
    metrics.WATCHDOG_CHECKS.inc()
    job = job_of(deps, watch.job)
    with pipeline_context(watch.pipeline_id):
        if (await deps.promises.get(watch.promise_id)).state != "pending":
            return CheckOutcome(note="callback promise settled")
        read_at = now_ms()
        try:
            run = await deps.databricks.read_run(
                watch.run_id, result_task=job.result_task, output_budget=deps.report_output_budget_bytes
            )
        except (TransientDatabricksError, PermanentDatabricksError) as exc:
            logger.warning("watchdog could not read run %s, will check again: %s", watch.run_id, exc)
            run = None
        seen = (
            {
                "life_cycle_state": run.report.life_cycle_state,
                "result_state": run.report.result_state,
                "read_at": read_at,
            }
            if run
            else {}
        )
        if run is None or not run.verdict.terminal:
            _count_if_overdue(job, watch)
            if watch.hint:
                return CheckOutcome(note="run still going (checked on a notification)", **seen)
            following = watch.model_copy(update={"check": watch.check + 1})
            scheduled = await schedule_watchdog_check(ctx, following)
            note = f"run still going; check {following.check} scheduled" if scheduled else "no further check"
            return CheckOutcome(note=note, **seen)
        settlement = settlement_from_run(run, job)
        outcome: SettleResult = await settle_callback(deps.promises, watch.promise_id, settlement)
        if outcome.stored is not None and outcome.stored.attempt == settlement.attempt:
            metrics.WATCHDOG_SETTLEMENTS.labels(status=settlement.status).inc()
            logger.log(
                logging.INFO if job.completion is not Completion.CALLBACK else logging.WARNING,
                "run ended; outcome read from the run"
                + ("" if job.completion is not Completion.CALLBACK else " (no callback came)"),
                extra={"fields": {"run_id": watch.run_id, "run_state": run.describe(), "hint": watch.hint}},
            )
            return CheckOutcome(note=f"settled from the run: {settlement.status}", **seen)
        return CheckOutcome(note="callback promise settled", **seen)


def settlement_from_run(run: RunView, job: Job) -> Settlement:
    """The outcome of a finished run, as the Jobs API shows it."""
    report = run.report
    status = run.verdict.status or "failure"
    if status == "success":
        return Settlement(
            status="success",
            result=result_of(report, job.result_task),
            report=report,
            source="watchdog",
            received_at=now_ms(),
        )
    cause = RunError(
        type=report.result_state or report.life_cycle_state or "UNKNOWN",
        message=report.state_message or f"the run {run.verdict.meaning or 'ended'} without a message",
    )
    return Settlement(status=status, error=cause, report=report, source="watchdog", received_at=now_ms())


def result_of(report: RunReport, result_task: str | None) -> dict[str, Any]:
    """The pipeline's result from a finished run: its result task's exit value.

    The result task is the catalogue's ``result_task``, or the run's only
    task. An exit value that is a JSON object is the result; any other
    value is kept as ``notebook_exit_value``; none gives ``{}``.
    """
    tasks = [t for t in report.tasks if t.task_key == result_task] if result_task else report.tasks
    if len(tasks) != 1 or tasks[0].exit_value is None:
        return {}
    task = tasks[0]
    if task.truncated:
        return {"notebook_exit_value": task.exit_value, "truncated": True}
    try:
        value = json.loads(task.exit_value)
    except ValueError:
        return {"notebook_exit_value": task.exit_value}
    return value if isinstance(value, dict) else {"notebook_exit_value": value}


def _count_if_overdue(job: Job, watch: WatchRequest) -> None:
    expected = job.expected_duration_seconds
    if expected is not None and watch.started_at is not None and now_ms() - watch.started_at > expected * 1000:
        metrics.PIPELINE_OVERDUE_CHECKS.labels(job=job.name).inc()

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
"""

from __future__ import annotations

import logging

from resonate.context import Context
from resonate.retry import Exponential

from pipeline_shared import names
from pipeline_shared.callbacks import SettleResult, settle_callback
from pipeline_shared.invocations import dispatch
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import RunError, Settlement, WatchRequest

from . import metrics
from .databricks import PermanentDatabricksError, TransientDatabricksError
from .steps import WorkerDeps, now_ms

logger = logging.getLogger(__name__)

#: A check fails only when Resonate itself is unreachable (Databricks errors
#: just postpone it); retry it as the connection comes back.
WATCH_RETRY = Exponential(delay=1, factor=2, max_delay=60, max_retries=20)


async def schedule_watchdog_check(ctx: Context, watch: WatchRequest) -> bool:
    """Arrange for ``watch`` to run ``watch.interval_seconds`` from now; False if pointless.

    The check is an invocation of the watchdog function whose dispatch the
    Resonate server holds back until it is due (``resonate:delay``): nothing
    runs, sleeps or holds a lease meanwhile. Its id is derived from the
    pipeline and the check number, so scheduling it again changes nothing.
    """
    deps = ctx.get_dependency(WorkerDeps)
    callback = await deps.promises.get(watch.promise_id)
    due = now_ms() + int(watch.interval_seconds * 1000)
    if callback.state != "pending" or due >= callback.timeout_at:
        # Settled already, or the promise times out before the check would
        # run: the timeout handles that pipeline.
        return False
    await dispatch(
        deps.promises,
        f"{watch.pipeline_id}:watch{watch.check}",
        names.WATCH_DATABRICKS_RUN,
        watch.model_dump(mode="json"),
        group=names.WORKER_GROUP,
        origin=watch.pipeline_id,
        # A check that could not run before the pipeline stopped waiting is moot.
        timeout_at=callback.timeout_at,
        not_before=due,
    )
    return True


async def watch_databricks_run(ctx: Context, watch: WatchRequest) -> str:
    """One check of the missed-callback watchdog, then the next one scheduled.

    When Databricks says the run is over and no callback came, settle the
    callback promise from the run itself: the notebook's exit value on
    success, Databricks' state message otherwise. If the callback wins the
    race, its settlement stands. Errors reaching Databricks only postpone the
    check. Each check is its own short invocation, so however long a pipeline
    waits, nothing accumulates.
    """
    deps = ctx.get_dependency(WorkerDeps)
    metrics.WATCHDOG_CHECKS.inc()
    with pipeline_context(watch.pipeline_id):
        if (await deps.promises.get(watch.promise_id)).state != "pending":
            return "callback promise settled"
        try:
            run = await deps.databricks.snapshot(watch.run_id)
            result = await deps.databricks.notebook_result(watch.run_id) if run.succeeded else None
        except (TransientDatabricksError, PermanentDatabricksError) as exc:
            logger.warning("watchdog could not read run %s, will check again: %s", watch.run_id, exc)
            run = None
        if run is None or not run.terminal:
            following = watch.model_copy(update={"check": watch.check + 1})
            scheduled = await schedule_watchdog_check(ctx, following)
            return f"run still going; check {following.check} scheduled" if scheduled else "no further check"
        if run.succeeded:
            settlement = Settlement(status="success", result=result or {}, source="watchdog", received_at=now_ms())
        else:
            cause = RunError(
                type=run.result_state or run.life_cycle_state,
                message=run.state_message or f"the run ended {run.life_cycle_state} without a message",
            )
            status = "cancelled" if run.result_state == "CANCELED" else "failure"
            settlement = Settlement(status=status, error=cause, source="watchdog", received_at=now_ms())
        outcome: SettleResult = await settle_callback(deps.promises, watch.promise_id, settlement)
        if outcome.stored is not None and outcome.stored.attempt == settlement.attempt:
            metrics.WATCHDOG_SETTLEMENTS.labels(status=settlement.status).inc()
            logger.warning(
                "run ended without a callback; settled by the watchdog",
                extra={"fields": {"run_id": watch.run_id, "run_state": run.describe()}},
            )
            return f"settled from the run: {settlement.status}"
        return "callback promise settled"

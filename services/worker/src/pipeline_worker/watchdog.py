"""The missed-callback watchdog: a notebook may die without calling back.

The cluster is lost, the process is killed, the run is cancelled in the
Databricks UI: then no callback comes, yet Databricks knows the run is over.
While a pipeline waits on a run, the run has a watch record (a pending
promise of the pipeline, :func:`start_watching`), and once every
``WATCHDOG_INTERVAL_SECONDS`` one worker sweeps them all
(:mod:`.sweep`): it lists the workspace's active runs and reads only the
watched runs that are no longer among them; one that is over settles its
callback promise from the run itself. The callback stays the fast path; the
first settlement wins, so the watchdog never overrides one.

What a sweep costs grows with the runs that ended since the last one, not
with the number waiting: a pipeline waiting for days costs one watch record,
not a check a minute.

Jobs that send webhook notifications (catalogue completion ``notification``)
get a check sooner: the gateway, told by Databricks that a run started or
ended, dispatches one check at once (:func:`watch_databricks_run`; see
:func:`pipeline_api.domain.notifications`). It finds the pipeline through the
run's index promise (:func:`pipeline_shared.promise_tree.run_index_id`),
which :func:`start_watching` writes. A notification only prompts a check; the
outcome is always read from the Jobs API, so a forged one changes nothing.

Pipelines that began waiting before the sweep (each check scheduling the
next, ``resonate:delay``) hand their run to the sweep at their next check.
"""

from __future__ import annotations

import json
import logging
from typing import Any, NamedTuple

from resonate.context import Context
from resonate.retry import Exponential
from resonate.types import Value

from pipeline_shared import promise_tree
from pipeline_shared.callbacks import SettleResult, settle_callback
from pipeline_shared.catalogue import Completion, Job
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
    """Index the run for notifications when its job sends them, and write its watch record; False if moot.

    The watch is stamped with the time it starts (this step runs once), from
    which an overdue pipeline is told. ``deadline``, when the caller has just
    read the callback promise pending, is its ``timeout_at`` (then it is not
    read again).
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
    await write_watch_record(deps, watch, deadline)
    return True


async def write_watch_record(deps: WorkerDeps, watch: WatchRequest, deadline: int) -> None:
    """The run's watch record: pending, for the sweep to find, until the sweep settles it or ``deadline``.

    Its id is the run's and attempt's, so writing it again changes nothing.
    """
    await deps.promises.create(
        promise_tree.watch_record_id(promise_tree.base_of(watch.pipeline_id, watch.step), watch.attempt),
        timeout_at=deadline,
        param=Value(data=watch.model_dump(mode="json")),
        tags={"resonate:origin": watch.pipeline_id, promise_tree.WATCH_TAG: watch.promise_id},
    )


async def watch_databricks_run(ctx: Context, watch: WatchRequest) -> CheckOutcome:
    """One check a notification prompted (or one of a chain begun before the sweep): :func:`check_run`.

    A check of a chain that finds the run still going schedules no next
    one: it writes the run's watch record, and the sweep watches it from
    then on. What it did, and the state it saw, is its value.
    """
    deps = ctx.get_dependency(WorkerDeps)
    with pipeline_context(watch.pipeline_id):
        if (await deps.promises.get(watch.promise_id)).state != "pending":
            return CheckOutcome(note="callback promise settled")
        outcome, over, _ = await check_run(deps, watch)
        if over:
            return outcome
        if watch.hint:
            return outcome.model_copy(update={"note": "run still going (checked on a notification)"})
        callback = await deps.promises.get(watch.promise_id)
        if callback.state != "pending":
            return outcome.model_copy(update={"note": "callback promise settled"})
        await write_watch_record(deps, watch, callback.timeout_at)
        return outcome.model_copy(update={"note": "run still going; watched by the sweep from now on"})


class RunCheck(NamedTuple):
    """What :func:`check_run` did: its value, whether the run was over, whether this read settled the callback."""

    outcome: CheckOutcome
    over: bool
    settled: bool


async def check_run(deps: WorkerDeps, watch: WatchRequest) -> RunCheck:
    """Read the watched run from Databricks; when it is over, settle its callback promise from it.

    The settlement is the result task's exit value on success, Databricks'
    state message otherwise, and every task's outcome beside it; if the
    callback wins the race, its settlement stands. An error reaching
    Databricks decides nothing: the run is read again later.
    """
    metrics.WATCHDOG_CHECKS.inc()
    job = job_of(deps, watch.job)
    read_at = now_ms()
    try:
        run = await deps.databricks.read_run(
            watch.run_id, result_task=job.result_task, output_budget=deps.report_output_budget_bytes
        )
    except (TransientDatabricksError, PermanentDatabricksError) as exc:
        logger.warning("watchdog could not read run %s, will check again: %s", watch.run_id, exc)
        return RunCheck(CheckOutcome(note="Databricks could not be read"), over=False, settled=False)
    seen = {
        "life_cycle_state": run.report.life_cycle_state,
        "result_state": run.report.result_state,
        "read_at": read_at,
    }
    if not run.verdict.terminal:
        if overdue(job, watch):
            metrics.PIPELINE_OVERDUE_CHECKS.labels(job=job.name).inc()
        return RunCheck(CheckOutcome(note="run still going", **seen), over=False, settled=False)
    settlement = settlement_from_run(run, job)
    outcome: SettleResult = await settle_callback(deps.promises, watch.promise_id, settlement)
    if outcome.stored is None or outcome.stored.attempt != settlement.attempt:
        return RunCheck(CheckOutcome(note="callback promise settled", **seen), over=True, settled=False)
    metrics.WATCHDOG_SETTLEMENTS.labels(status=settlement.status).inc()
    missed = job.completion is Completion.CALLBACK
    logger.log(
        logging.WARNING if missed else logging.INFO,
        "run ended; outcome read from the run" + (" (no callback came)" if missed else ""),
        extra={"fields": {"run_id": watch.run_id, "run_state": run.describe(), "hint": watch.hint}},
    )
    return RunCheck(CheckOutcome(note=f"settled from the run: {settlement.status}", **seen), over=True, settled=True)


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


def overdue(job: Job, watch: WatchRequest) -> bool:
    """Whether the watched run has gone on past its job's expected duration (never, when it names none)."""
    expected = job.expected_duration_seconds
    return expected is not None and watch.started_at is not None and now_ms() - watch.started_at > expected * 1000

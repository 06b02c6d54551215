"""The pipeline's side effects, one durable step each.

Workflows replay from the top, so every call to the outside world lives here,
in a step whose result Resonate records. A step may still run more than once
(a crash after the effect, before the record), so each is idempotent by
construction: the Databricks run is keyed by an idempotency token derived from
the pipeline id, and the callback promise keeps only its first settlement.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from resonate.context import Context
from resonate.promises import Promises

from pipeline_shared import ids, names
from pipeline_shared.callbacks import settle_callback, stored_settlement
from pipeline_shared.logs import pipeline_context
from pipeline_shared.models import (
    PipelineOutcome,
    PipelineSpec,
    Settlement,
    TriggerOutcome,
)
from pipeline_shared.signing import derive_callback_key
from pipeline_shared.testhooks import TestHooks

from . import metrics
from .databricks import DatabricksJobs, PermanentDatabricksError, TransientDatabricksError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerDeps:
    """What the steps need, handed to them through Resonate's dependency map."""

    databricks: DatabricksJobs
    promises: Promises
    signing_secret: str
    callback_url: str
    idempotency_namespace: str
    watchdog_interval_seconds: float
    #: Pause points for fault tests; inert unless enabled (see testhooks).
    hooks: TestHooks = field(default_factory=lambda: TestHooks(enabled=False))


def now_ms() -> int:
    return int(time.time() * 1000)


async def trigger_databricks_run(ctx: Context, spec: PipelineSpec, promise_id: str) -> TriggerOutcome:
    """Start the notebook job for ``spec``; the same pipeline never gets a second run.

    A cancel or a timeout may settle the callback promise before this step
    runs (say, while every worker was down); then nobody wants a run and none
    is started. A callback may also be there already, when this step is
    replayed after a crash that followed ``run_now``: then ``run_now`` runs
    again with the same idempotency token, which returns the existing run, so
    the pipeline still knows its run. Transient Databricks errors raise, and
    Resonate retries the step with the same token.
    """
    deps = ctx.get_dependency(WorkerDeps)
    with pipeline_context(spec.id):
        known = stored_settlement(await deps.promises.get(promise_id))
        unwanted = known.state != "pending" and (known.stored is None or known.stored.source == "user")
        if unwanted:
            logger.info("pipeline ended (%s) before its run was started; not starting one", known.state)
            return TriggerOutcome()
        parameters = {
            names.JOB_PARAM_PIPELINE_ID: spec.id,
            names.JOB_PARAM_CALLBACK_PROMISE_ID: promise_id,
            names.JOB_PARAM_CALLBACK_URL: deps.callback_url,
            names.JOB_PARAM_CALLBACK_SIGNING_KEY: derive_callback_key(deps.signing_secret, promise_id),
            names.JOB_PARAM_USER_PARAMETERS: json.dumps(spec.parameters, sort_keys=True),
        }
        token = ids.idempotency_token(deps.idempotency_namespace, spec.id)
        await deps.hooks.checkpoint("before_run_now", spec.id)
        try:
            run = await deps.databricks.run_now(parameters, token)
        except PermanentDatabricksError as exc:
            logger.warning("Databricks refused to start the job: %s", exc)
            return TriggerOutcome(error=exc.error)
        except TransientDatabricksError as exc:
            logger.warning("Databricks unavailable, the step will be retried: %s", exc)
            raise
        await deps.hooks.checkpoint("after_run_now", spec.id)
        metrics.RUNS_TRIGGERED.inc()
        logger.info(
            "Databricks run started",
            extra={"fields": {"run_id": run.run_id, "run_page_url": run.run_page_url}},
        )
        return TriggerOutcome(run=run)


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


async def record_outcome(ctx: Context, pipeline_id: str, outcome: PipelineOutcome) -> None:
    """Count and log the final outcome, once per pipeline (barring a crash here)."""
    await ctx.get_dependency(WorkerDeps).hooks.checkpoint("after_email", pipeline_id)
    with pipeline_context(pipeline_id):
        metrics.PIPELINES_FINISHED.labels(state=outcome.state.value, job="default").inc()  # TODO(job label)
        logger.info(
            "pipeline finished",
            extra={
                "fields": {
                    "state": outcome.state.value,
                    "email_delivered": outcome.notification.delivered if outcome.notification else None,
                }
            },
        )

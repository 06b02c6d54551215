"""The one-job workflow: how pipelines started before pipelines were code run to their end.

Registered as ``run_pipeline`` at Resonate version 1
(:data:`pipeline_shared.names.RUN_PIPELINE_ONE_JOB_VERSION`). Resonate keeps a
task's version for its whole life, so a pipeline started on it replays this
function, and only this one, after any redeploy: its children must keep the
ids they were created with (``P:1`` the callback, ``P:2`` the trigger, ...),
which :func:`.job_runs.run_job` creates in the same order as ever. New
pipelines run their function through :mod:`.runner` (versions 2 and 3).
"""

from __future__ import annotations

from resonate.context import Context

from pipeline_shared.models import Notification, PipelineOutcome, PipelineSpec, PipelineState

from . import steps
from .calls import JobTarget
from .job_runs import notify, run_job


async def run_pipeline(ctx: Context, spec: PipelineSpec) -> PipelineOutcome:
    """Trigger the job, wait for the run's outcome, repair a failed run by its job's policy, email it."""
    job = steps.job_of(ctx.get_dependency(steps.WorkerDeps), spec.job)
    target = JobTarget(
        pipeline_id=spec.id,
        base=spec.id,
        step=None,
        name=job.name,
        job=job.name,
        parameters=spec.parameters,
        email=str(spec.email),
        timeout_seconds=spec.timeout_seconds,
        catalogue_name=spec.job,
    )
    ran = await run_job(ctx, target)
    notification = Notification(
        pipeline_id=spec.id,
        email=spec.email,
        state=ran.state,
        parameters=ran.parameters,
        run=ran.run,
        result=ran.result,
        error=ran.error,
        job=job.name,
        job_title=job.title,
        report=ran.report,
        attempts=ran.attempts,
        thread=ran.thread,
        waited_seconds=spec.timeout_seconds if ran.state is PipelineState.TIMED_OUT else None,
        settled_at=ran.ended_at,
    )
    receipt = await notify(ctx, notification)
    outcome = PipelineOutcome(
        state=ran.state,
        result=ran.result,
        error=ran.error,
        run=ran.run,
        notification=receipt,
        report=ran.report,
        attempts=ran.attempts,
    )
    await ctx.run(steps.record_outcome, spec.id, outcome, job.name)
    return outcome

"""The worker's spans: what they are named, what they say, and the ones made from records.

Spans are made only where a side effect is (the trigger and repair steps,
:mod:`.steps`) or when the pipeline ends (:func:`record_steps`), never in
workflow code, which replays from the top on every resume and would repeat
them. Every span is a child of the pipeline's root context, read back from
its root promise (see :mod:`pipeline_shared.tracing`), so a step resumed on
another worker days later joins the same trace.

A step's span, and a job step's wait for its run, are made when the
pipeline ends, from the times its records kept (``started_at``,
``ended_at``): no process holds a span open across a wait of days.
"""

from __future__ import annotations

import time

from opentelemetry.context import Context
from opentelemetry.trace import set_span_in_context

from pipeline_shared import tracing
from pipeline_shared.models import PipelineOutcome, StepKind, StepState, StepSummary

from .calls import JobTarget

#: The tracer's scope: the worker's spans.
TRACE_SCOPE = "pipeline_worker"

#: The step states that are a failure, marked so on the step's span.
FAILED_STATES = frozenset({StepState.FAILED, StepState.TIMED_OUT, StepState.REJECTED, StepState.NOT_SENT})


def target_attributes(target: JobTarget) -> dict[str, str | None]:
    """What a job step's spans say of it: ids and names, never its parameters or its recipient."""
    return {
        "pipeline.id": target.pipeline_id,
        "pipeline.step": target.step,
        "pipeline.step.name": target.name,
        "pipeline.job": target.job,
    }


def record_steps(parent: Context | None, pipeline_id: str, job: str, steps: list[StepSummary]) -> None:
    """A ``pipeline.step`` span per step, and a ``pipeline.wait`` under each job step's, from their times.

    A step without a recorded start (an email step, an approval that
    expired) is a span at its end; one without an end, at the time now.
    """
    now = int(time.time() * 1000)
    for step in steps:
        end = step.ended_at or now
        run = step.run
        attributes = {
            "pipeline.id": pipeline_id,
            "pipeline.job": job or None,
            "pipeline.step": step.id,
            "pipeline.step.kind": step.kind.value,
            "pipeline.step.name": step.name,
            "pipeline.state": step.state.value,
            "pipeline.attempts": step.attempts if step.kind is StepKind.JOB else None,
            "databricks.run_id": run.run_id if run else None,
        }
        span = tracing.recorded_span(
            TRACE_SCOPE,
            "pipeline.step",
            parent=parent,
            start_ms=step.started_at or end,
            end_ms=end,
            attributes=attributes,
            failed=step.state in FAILED_STATES,
        )
        if step.kind is StepKind.JOB and step.started_at is not None:
            tracing.recorded_span(
                TRACE_SCOPE,
                "pipeline.wait",
                parent=set_span_in_context(span),
                start_ms=step.started_at,
                end_ms=end,
                attributes={
                    "pipeline.id": pipeline_id,
                    "pipeline.step": step.id,
                    "databricks.run_id": attributes["databricks.run_id"],
                },
            )


def outcome_attributes(pipeline_id: str, job: str, outcome: PipelineOutcome) -> dict[str, object]:
    """What the ``pipeline.finish`` span says: the pipeline, its job, its state, whether its email went."""
    return {
        "pipeline.id": pipeline_id,
        "pipeline.job": job or None,
        "pipeline.state": outcome.state.value,
        "email.delivered": outcome.notification.delivered if outcome.notification else None,
        "databricks.run_id": outcome.run.run_id if outcome.run else None,
    }

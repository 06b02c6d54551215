"""What a pipeline's page shows of its steps: which to show, which wait for a person, their time chart.

A pipeline run by its code has steps (jobs, approval gates, emails), each
summarised in the status document with its times in epoch milliseconds. Pure
functions of those summaries, as :mod:`.views` is of the timeline; the bars
are :class:`.views.Phase` so one chart drawing serves phases and steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pipeline_shared.models import StepKind, StepState, StepSummary

from .views import Phase


def steps_of(status: Any) -> list[StepSummary]:
    """The status document's steps, oldest first; none for a pipeline started before pipelines had steps."""
    steps = getattr(status, "steps", None) or []
    return [s if isinstance(s, StepSummary) else StepSummary.model_validate(s) for s in steps]


def steps_worth_showing(steps: Sequence[StepSummary]) -> list[StepSummary]:
    """``steps``, or none when they would only repeat the page: a pipeline of one job step shows that job as the
    pipeline itself (its run, result, attempts), as it always did."""
    if len(steps) == 1 and steps[0].kind is StepKind.JOB:
        return []
    return list(steps)


def open_gates(steps: Sequence[StepSummary]) -> list[StepSummary]:
    """The approval gates waiting for a decision now."""
    return [
        s
        for s in steps
        if s.kind is StepKind.APPROVAL and s.state is StepState.AWAITING_APPROVAL and s.approval is not None
    ]


def awaiting_repair(steps: Sequence[StepSummary]) -> list[StepSummary]:
    """The job steps whose run failed and waits for a person to repair or abandon it."""
    return [s for s in steps if s.kind is StepKind.JOB and s.state is StepState.AWAITING_REPAIR]


def moment(epoch_ms: int | datetime) -> datetime:
    """A step's time (epoch milliseconds, as the status document gives it) as an aware datetime."""
    if isinstance(epoch_ms, datetime):
        return epoch_ms
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


def step_phases(steps: Sequence[StepSummary], *, final: bool, now: datetime) -> list[Phase]:
    """One phase per step that has started, on the pipeline's time axis: from its start to its end, or, while it
    is still going, to ``now`` (to the last moment any step ended once the pipeline is final)."""
    started = [s for s in steps if s.started_at is not None]
    if not started:
        return []
    ends = [moment(s.ended_at) for s in started if s.ended_at is not None]
    horizon = max(ends, default=moment(started[-1].started_at)) if final else now
    drawn = []
    for step in started:
        start = moment(step.started_at)
        going = step.ended_at is None
        end = max(horizon if going else moment(step.ended_at), start)
        drawn.append(Phase(f"{step.id} {step.name}", start, end, open=going and not final, state=step.state.value))
    return drawn


def step_outcome(step: StepSummary) -> str:
    """What became of a step, in a few words, for the steps table (its result is shown apart)."""
    if step.decision is not None:
        said = f": “{step.decision.comment}”" if step.decision.comment else ""
        verb = {"approve": "approved", "reject": "rejected", "cancel": "closed by a cancel"}[step.decision.action]
        return f"{verb} by {step.decision.by}{said}"
    if step.error is not None:
        return f"{step.error.type}: {step.error.message}"
    if step.message_id:
        return f"Message-ID {step.message_id}"
    return ""

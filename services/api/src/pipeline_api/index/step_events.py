"""The events only a pipeline run by its code has: its steps starting and ending, its gates opening and closing.

A job step's run (triggered, called back, checked, repaired, emailed about)
tells the events a one-job workflow's run does (:mod:`.events`), each named
by its step there; what only a step has is told here, read off
:class:`~pipeline_shared.promise_tree.PipelineTree`'s children:

- a job step's record (``P:N.job``): ``step_started``; its own promise
  resolved with the :class:`~pipeline_shared.models.JobRun`: ``step_ended``;
- an approval gate's record (``P:N.gate``): ``gate_opened``, with its
  deadline; its decision promise: ``approved`` / ``rejected`` (by whom, the
  comment), ``approval_cancelled`` (the pipeline was cancelled) or
  ``approval_expired`` (nobody decided by the deadline).

A gate's message and a decision's comment are someone's words: they are
kept in the event's data as given (the models bound them), and its summary
shows them on one line, cut at :data:`MAX_SUMMARY_TEXT`.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline_shared.promise_tree import Gate, JobStep

from .event import Event, iso, settled_at

#: Characters of a gate's message or a decision's comment shown in a summary (the data has the whole).
MAX_SUMMARY_TEXT = 200

#: A decision's event, by its action: kind and verb.
_DECIDED = {
    "approve": ("approved", "approved"),
    "reject": ("rejected", "rejected"),
    "cancel": ("approval_cancelled", "closed: the pipeline was cancelled"),
}


def job_step_events(step: JobStep) -> Iterator[Event]:
    record = step.record
    yield Event(
        "started",
        record.started_at or step.promise.created_at,
        "step_started",
        f"job {record.job} started",
        {"job": record.job, "parameters": record.parameters},
    )
    ended = step.run
    if ended is None or step.own is None:
        return
    because = f": {ended.error.type}: {_one_line(ended.error.message)}" if ended.error else ""
    yield Event(
        "ended",
        ended.ended_at or settled_at(step.own),
        "step_ended",
        f"job {record.job} ended {ended.state}{because}",
        {
            "job": record.job,
            "state": ended.state,
            "run_id": ended.run.run_id if ended.run else None,
            "attempts": max(1, len(ended.attempts)),
            "error": ended.error.model_dump() if ended.error else None,
        },
    )


def gate_events(gate: Gate) -> Iterator[Event]:
    record = gate.record
    yield Event(
        "gate",
        record.opened_at or gate.promise.created_at,
        "gate_opened",
        f"waiting for a person holding {' or '.join(record.scopes)} to approve or reject until "
        f"{iso(record.deadline)}: {_one_line(record.message)}",
        {"deadline": iso(record.deadline), "scopes": record.scopes, "message": record.message},
    )
    decision = gate.decision
    if gate.expired and decision is not None:
        yield Event(
            "decision",
            settled_at(decision),
            "approval_expired",
            f"nobody approved or rejected it by {iso(record.deadline)}",
            {"deadline": iso(record.deadline)},
        )
    elif (decided := gate.decided) is not None:
        kind, verb = _DECIDED[decided.action]
        said = f': "{_one_line(decided.comment)}"' if decided.comment.strip() else ""
        yield Event(
            "decision",
            decided.decided_at or (settled_at(decision) if decision else 0),
            kind,
            f"{verb} by {decided.by}{said}",
            {"by": decided.by, "comment": decided.comment, "action": decided.action},
        )


def _one_line(text: str) -> str:
    """Someone's words in a one-line summary: control characters and line breaks as spaces, bounded."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= MAX_SUMMARY_TEXT else flat[: MAX_SUMMARY_TEXT - 1] + "…"

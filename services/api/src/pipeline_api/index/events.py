"""A pipeline's timeline, read off its promises: what happened, when, and who did it.

Every step of a pipeline leaves a promise in Resonate (see
:mod:`pipeline_shared.promise_tree`, which names them and reads them), and
each promise records when it was created and settled. :func:`timeline_of`
turns one pipeline's promises, read as a :class:`PipelineTree`, into events: the root's creation is ``started``, the
trigger step's value ``run_triggered``, a callback promise's settlement
``callback_received`` (or ``outcome_read_from_run`` when the watchdog read the
run), each watchdog check's reading ``databricks_state``, the notifier's
answers ``email_delivered`` or ``email_refused``, and so on (the table is in
docs/api.md, "A pipeline's timeline").

It is a pure function of the promises, so projecting a pipeline again gives
the same events under the same keys: the index (:mod:`.index`) stores each
once, whenever and however often it is projected. A promise it cannot read
(written by an older or newer version, or by hand) gives no event rather
than a wrong one.
"""

from __future__ import annotations

from collections.abc import Iterator

from pipeline_shared.models import RunReport, changed_parameters
from pipeline_shared.promise_tree import (
    AttemptStep,
    Callback,
    Check,
    Child,
    EmailStep,
    Gate,
    JobStep,
    PipelineTree,
    RepairWindow,
    Trigger,
)

from .event import Event, iso, settled_at
from .step_events import gate_events, job_step_events


def timeline_of(tree: PipelineTree) -> list[Event]:
    """The events of the pipeline whose promises (all of them) ``tree`` holds, in order.

    Two times are corrected by what the other events prove. The trigger and
    repair steps record their run when they complete, which after a worker
    crash or a throttled ``run-now`` can be later than the run's own
    callback: the run existed by its first sign of life, so that is when it
    shows as triggered or repaired (``recorded_at`` keeps the step's time). And a check of the run that read
    it after the pipeline had finished, or a Databricks notification that came after it, tells nothing
    about the pipeline: it is left out (the gateway acts on no such notification, but one may have
    arrived in the moment the pipeline finished).
    """
    root = tree.root
    events = list(_events(tree))
    ended = root.settled_at if root.state != "pending" else None
    if ended is not None:
        events = [e for e in events if e.kind not in _MOOT_AFTER_THE_END or e.at_ms <= ended]
    first_sign: dict[tuple[str | None, int], int] = {}
    for event in events:
        if event.kind in _SIGNS_OF_THE_RUN:
            run = _run_of(event)
            first_sign[run] = min(event.at_ms, first_sign.get(run, event.at_ms))
    events = [_no_later_than(e, first_sign.get(_run_of(e))) if e.kind in _STARTS else e for e in events]
    return sorted(events, key=lambda event: event.order)


#: Events that tell nothing about a pipeline that had finished when they happened.
_MOOT_AFTER_THE_END = frozenset({"databricks_state", "notification_received"})
#: Events only a running attempt (the original run, or a repair of it) can cause.
_SIGNS_OF_THE_RUN = frozenset(
    {"callback_received", "outcome_read_from_run", "notification_received", "databricks_state"}
)
#: Events that start an attempt, recorded by a step once it completes.
_STARTS = frozenset({"run_triggered", "repaired"})


def _run_of(event: Event) -> tuple[str | None, int]:
    """The run an event is of: its job step's (None: the one-job workflow's) and its attempt."""
    return event.data.get("step"), event.data["attempt"]


def _no_later_than(event: Event, at_ms: int | None) -> Event:
    if at_ms is None or event.at_ms <= at_ms:
        return event
    return Event(event.key, at_ms, event.kind, event.summary, {**event.data, "recorded_at": iso(event.at_ms)})


def _events(tree: PipelineTree) -> Iterator[Event]:
    spec = tree.spec
    if spec is None:
        return
    owner = tree.owner
    yield Event(
        "started",
        tree.root.created_at,
        "started",
        f"started by {owner or 'an unknown principal'} (job {spec.job})",
        {"by": owner, "job": spec.job, "parameters": spec.parameters},
    )
    # A pipeline run by its code: each event of a step names it (none does in a one-job workflow's).
    names = {step.id: step.name for step in tree.steps()} if tree.composed else {}
    for child in tree.children():
        step = child.step
        for event in _of_child(child, spec.parameters):
            yield _of_step(event, step, names[step]) if step in names else event

    if tree.root.state != "pending":
        yield _finished(tree)


def _of_child(child: Child, started_with: dict[str, str]) -> Iterator[Event]:
    match child:
        case Trigger():
            yield from _triggered(child)
        case Callback():
            yield from _settled(child)
        case Check(hint=str()):
            yield from _hinted(child)
        case Check():
            yield from _checked(child)
        case RepairWindow():
            yield from _awaited(child, started_with)
        case AttemptStep():
            yield from _repaired(child)
        case EmailStep():
            yield from _emailed(child)
        case JobStep():
            yield from job_step_events(child)
        case Gate():
            yield from gate_events(child)


def _of_step(event: Event, step: str, name: str) -> Event:
    """``event`` as one of step ``step``'s: keyed apart from every other step's, naming it in its data and summary."""
    return Event(
        f"step:{step}/{event.key}",
        event.at_ms,
        event.kind,
        f"{name}: {event.summary}",
        {**event.data, "step": step, "step_name": name},
    )


# ── one promise each ─────────────────────────────────────────────────────────


def _triggered(step: Trigger) -> Iterator[Event]:
    trigger = step.outcome
    if trigger is None:
        return
    at = trigger.started_at or settled_at(step.promise)
    if trigger.run is not None:
        run = trigger.run
        yield Event(
            "run:0",
            at,
            "run_triggered",
            f"Databricks run {run.run_id} triggered" + (f" (job {run.job_id})" if run.job_id else ""),
            {"run_id": run.run_id, "run_page_url": run.run_page_url, "job_id": run.job_id, "attempt": 0},
        )
    elif trigger.error is not None:
        yield Event(
            "run:0",
            at,
            "trigger_failed",
            f"Databricks refused to start the run: {trigger.error.type}: {trigger.error.message}",
            {"error": trigger.error.model_dump()},
        )


def _settled(callback: Callback) -> Iterator[Event]:
    attempt = callback.attempt
    if callback.promise.state == "rejected_timedout":
        yield Event(
            f"outcome:{attempt}",
            settled_at(callback.promise),
            "timed_out",
            "no outcome from Databricks before the pipeline's timeout",
            {"attempt": attempt},
        )
        return
    settlement = callback.settlement
    if settlement is None:
        return
    at = settlement.received_at
    if settlement.source in _SETTLED_BY:
        kind, sentence = _SETTLED_BY[settlement.source]
        of_run = f" (repair {attempt})" if attempt else ""
        yield Event(
            f"outcome:{attempt}",
            at,
            kind,
            sentence.format(of_run=of_run, status=settlement.status),
            {"status": settlement.status, "attempt": attempt},
        )
    elif settlement.source == "user":
        by = settlement.by
        yield Event(f"outcome:{attempt}", at, "cancel_requested", f"cancelled by {by or 'a user'}", {"by": by})
    # A settlement read from the run (``settlement.report``) is the reading of
    # the check that made it, which tells that reading itself (see _checked):
    # telling it here too showed the same state twice at the same moment.


#: A run's outcome, by who reported it: its event and sentence.
_SETTLED_BY = {
    "callback": ("callback_received", "the notebook{of_run} called back: {status}"),
    "watchdog": ("outcome_read_from_run", "the run{of_run} ended and its outcome was read from Databricks: {status}"),
}


def _hinted(check: Check) -> Iterator[Event]:
    attempt, event = check.attempt, check.hint
    yield Event(
        f"hint:{check.promise.id}",
        check.promise.created_at,
        "notification_received",
        f"Databricks notified {event}" + (f" for repair {attempt}" if attempt else ""),
        {"event": event, "attempt": attempt},
    )
    yield from _checked(check)


def _checked(check: Check) -> Iterator[Event]:
    seen = check.outcome
    if seen is None or seen.life_cycle_state is None:
        return
    report = RunReport(life_cycle_state=seen.life_cycle_state, result_state=seen.result_state)
    source = "notification" if check.hint is not None else "watchdog"
    at = seen.read_at or settled_at(check.promise)
    yield _state_seen(f"state:{check.promise.id}", at, report, source, check.attempt)


def _state_seen(key: str, at: int, report: RunReport, source: str, attempt: int) -> Event:
    state = report.life_cycle_state + (f" / {report.result_state}" if report.result_state else "")
    return Event(
        key,
        at,
        "databricks_state",
        f"Databricks showed the run{f' (repair {attempt})' if attempt else ''} {state} (read by the {source})",
        {
            "life_cycle_state": report.life_cycle_state,
            "result_state": report.result_state,
            "source": source,
            "attempt": attempt,
        },
    )


def _awaited(window: RepairWindow, started_with: dict[str, str]) -> Iterator[Event]:
    record, number = window.record, window.number
    if record is None:
        return
    deadline = record.repair_deadline
    yield Event(
        f"await:{number}",
        window.promise.created_at,
        "awaiting_repair",
        "the run failed; waiting for a person to repair or abandon it"
        + (f" until {iso(deadline)}" if deadline else ""),
        {"attempt": number, "repair_deadline": iso(deadline) if deadline else None},
    )
    decision = window.decision
    if decision is None:
        return
    if decision.state == "rejected_timedout":
        yield Event(
            f"decision:{number}",
            settled_at(decision),
            "repair_window_expired",
            "nobody repaired or abandoned it within its repair window",
            {"attempt": number},
        )
    elif decided := window.decided:
        at = decided.decided_at or settled_at(decision)
        if decided.action == "repair":
            # The decision carries every parameter the repair reruns with: the
            # ones it changes are those that differ from what the failed attempt ran with.
            before = record.attempt.parameters or started_with
            changes = changed_parameters(before, decided.parameters or before)
            changed = f", changing {', '.join(changes)}" if changes else " with the same parameters"
            yield Event(
                f"decision:{number}",
                at,
                "repair_requested",
                f"{decided.by} asked for a repair{changed}",
                {"by": decided.by, "parameters": decided.parameters, "attempt": number},
            )
        else:
            yield Event(
                f"decision:{number}",
                at,
                "abandoned",
                f"abandoned by {decided.by}",
                {"by": decided.by, "attempt": number},
            )


def _repaired(step: AttemptStep) -> Iterator[Event]:
    record, number = step.record, step.number
    if record is None:
        return
    attempt = record.attempt
    tasks = f" (rerunning {', '.join(attempt.rerun_tasks)})" if attempt.rerun_tasks else ""
    yield Event(
        f"repair:{number}",
        attempt.started_at or step.promise.created_at,
        "repaired",
        f"repair {number} of the run made{tasks}: {attempt.reason}",
        {
            "attempt": number,
            "repair_id": attempt.repair_id,
            "by": attempt.by,
            "reason": attempt.reason,
            "rerun_tasks": attempt.rerun_tasks,
        },
    )


def _emailed(step: EmailStep) -> Iterator[Event]:
    call, notification = step.promise, step.notification
    if call.state == "pending":
        return
    kind = notification.kind
    about = _ABOUT.get(kind, f"with the outcome ({notification.state})")
    approval = notification.approval
    to = (
        ", ".join(approval.notify)
        if kind == "approval_request" and approval and approval.notify
        else notification.email
    )
    receipt = step.receipt
    if receipt is not None and receipt.delivered:
        yield Event(
            f"email:{call.id}",
            settled_at(call),
            "email_delivered",
            f"email {about} delivered to {to}",
            {"message_id": receipt.message_id, "kind": kind, "to": to},
        )
        return
    if receipt is not None:
        error = receipt.error
    else:
        # Rejected: the notifier's error, as Resonate stores an exception ({"message": ...}).
        reason = call.value.data.get("message") if isinstance(call.value.data, dict) else None
        error = (
            f"the notifier gave up: {reason}" if reason else f"the notifier gave up ({call.state.replace('_', ' ')})"
        )
    yield Event(
        f"email:{call.id}",
        settled_at(call),
        "email_refused",
        f"email {about} NOT delivered: {error}",
        {"error": error, "smtp_code": receipt.smtp_code if receipt else None, "kind": kind},
    )


#: What an email is, in a sentence, by its kind (an outcome's names its state).
_ABOUT = {
    "awaiting_repair": "saying it awaits repair",
    "step": "of the pipeline's code",
    "approval_request": "asking for approval",
}


def _finished(tree: PipelineTree) -> Event:
    root, outcome = tree.root, tree.outcome
    if outcome is None:
        ended = root.state.replace("_", " ")
        error = {"type": "WorkflowEnded", "message": f"the pipeline's workflow ended {ended} before finishing"}
        return Event(
            "finished",
            settled_at(root),
            "finished",
            f"finished failed: {error['message']}",
            {"state": "failed", "error": error},
        )
    error = outcome.error.model_dump() if outcome.error else None
    because = f": {outcome.error.type}: {outcome.error.message}" if outcome.error else ""
    return Event(
        "finished",
        settled_at(root),
        "finished",
        f"finished {outcome.state}{because}",
        {"state": outcome.state, "error": error},
    )

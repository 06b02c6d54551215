"""The emails that tell a user how their pipeline is doing: how it ended, or that it awaits repair.

One function, :func:`compose_email`, turns a :class:`Notification` into a
multipart/alternative message (plain text and HTML) ready for SMTP. It sends
nothing and reads no clock unless asked to, so it is safe to call from a step
that may run more than once: the Message-ID comes from the pipeline id, the
kind of email, the state and the latest attempt, so every composition of the
same email is the same message to the receiving server, and each email of a
repaired pipeline (each wait for repair, the outcome) is a message of its own.

A pipeline run by its code sends more: the emails its code asks for (kind
``step``), a request to the people who may decide at an approval gate (kind
``approval_request``), and an outcome that sums up every step. What those
say is :mod:`.step_emails`'s; their Message-IDs are keyed by the step (and
kind) rather than the pipeline's state, so each step's email is one message
however often it is sent, and apart from every other step's. A pipeline of
one job (no steps) gets exactly the emails it always did.

One pipeline, one conversation. A pipeline that is repaired gets several
emails: one each time a failed run waits for a person, one at the end. Each
names the earlier ones as RFC 5322 section 3.6.4 says a reply does:
``In-Reply-To`` holds the Message-ID of the one before it and ``References``
all of them, oldest first (the parent's References followed by the parent's
Message-ID). Clients that thread on those headers (Thunderbird, Apple Mail,
mutt, the mail sink's page) show one conversation. The subject is the same
base for every email of the pipeline, ``Pipeline {id}`` and the job's title in
brackets when the job is known, followed by the state (``awaiting repair``,
``succeeded``, ``failed``, ...), and carries no ``Re:``:

- the state stays in the subject because it is what a person scanning an
  inbox needs, whether the email asks them to act or tells them it is over;
- no ``Re:``, because nobody replied: RFC 5322 section 3.6.5 describes it as
  the mark of a reply to the original's subject, which these are not (the
  state differs), and clients that also compare subjects strip it before
  comparing, so it would join nothing that is otherwise apart.

The price of the state in the subject: clients that also require the same
subject to thread (Gmail; Outlook's conversation view) keep a pipeline's
emails together only while the state is the same, so the emails awaiting
repair form one conversation there and the outcome another. Dropping the
state from the subject would buy those clients one conversation at the cost
of the inbox no longer saying which email wants action; the headers already
give every other client one.

Much of what goes into the email comes from whoever started the pipeline
(its id, its parameters, a repair's reason) or from a notebook working on
their data (the result, the error text), and the recipient is whoever they
named. So the email carries their text as data, never as words of ours:

- bounded: a value shows at most :data:`MAX_PARAMETER_CHARS` characters
  (:data:`MAX_VALUE_CHARS` for a result's), then ``… (N more characters)``;
  at most :data:`MAX_PARAMETERS` parameters, :data:`MAX_RESULT_ENTRIES`
  result values, :data:`MAX_TASKS` tasks and :data:`MAX_ERROR_CHARS` of an
  error: about 4,000 characters of a caller's text in all, where 30
  parameters of 200 characters once carried 6,000;
- quoted and labelled: parameters are listed as ``name = "value"`` (JSON
  string syntax, so a quote or a newline in a value shows as ``\"`` or
  ``\n``) under a heading that says they are given by whoever started the
  pipeline; results and errors under headings that say who reported them;
- not clickable: ``scheme://`` in their text is shown as ``scheme[:]//``, so
  "Click http://evil to verify your account" in a parameter is no link from
  us (mail clients turn a URL in plain text into one);
- one line where a line is expected, without control or format characters
  (no CR/LF, no bidirectional overrides); kept out of headers except the
  validated pipeline id, the job's one-line title and well-formed
  Message-IDs; escaped in the HTML part.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr

from pipeline_shared.ids import email_message_id
from pipeline_shared.models import PIPELINE_ID, Attempt, Notification, PipelineState, RunError
from pipeline_shared.recipients import check_recipient

from .blocks import (
    MAX_ERROR_CHARS,
    MAX_NAME_CHARS,
    MAX_PARAMETERS,
    MAX_TASKS,
    Block,
    Data,
    Facts,
    Heading,
    Link,
    Para,
    Pre,
    Table,
    duration,
    more,
    one_line,
    quoted,
    render_html,
    render_text,
    repairs_made,
    result_rows,
    safe_url,
    unlinked,
    utc,
    visible,
)
from .step_emails import (
    approval_recipients,
    approval_request_blocks,
    gate_name,
    step_email_blocks,
    step_subject,
    summary_blocks,
)

#: The header carrying the pipeline id, so mail tools (and the test sink) can
#: find one pipeline's email without parsing the body.
PIPELINE_ID_HEADER = "X-Pipeline-Id"
#: The header carrying the state (final, or awaiting repair), for filters and tests.
PIPELINE_STATE_HEADER = "X-Pipeline-State"
#: The header carrying the step an email is about or is (its id), for a pipeline run by its code.
PIPELINE_STEP_HEADER = "X-Pipeline-Step"
#: A step's id as a header may carry it (the model's own pattern, should an unvalidated one arrive).
_STEP_ID = re.compile(r"^[1-9][0-9]{0,5}$")

#: error.type of a pipeline a person gave up on while it awaited repair.
ABANDONED = "Abandoned"
#: error.type of a pipeline nobody repaired or abandoned within its repair window.
REPAIR_WINDOW_EXPIRED = "RepairWindowExpired"
#: Characters of the pipeline id in the subject, should an unvalidated one
#: ever arrive.
MAX_SUBJECT_ID_CHARS = 64
#: Characters of the job's title in the subject; a subject is read in a list.
MAX_SUBJECT_TITLE_CHARS = 80
#: Attempts listed at most, the newest; a pipeline repaired this often has a
#: history better read from its status.
MAX_ATTEMPTS = 30
#: Message-IDs in References at most: the first (the conversation's root) and
#: the newest. Every repair adds one; a client needs the root and the parent,
#: and a receiving server may refuse an unbounded header.
MAX_REFERENCES = 20

#: A hostname-like Message-ID right-hand side: letters, digits, dots, hyphens.
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
#: A Message-ID as RFC 5322 writes one (``<`` dot-atom ``@`` dot-atom ``>``),
#: with nothing around it: the only form a threading header gets from ``thread``.
_MSG_ID = re.compile(r"^<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+>$")

#: The end of the subject: the state, as words.
_SUBJECT_STATES = {
    PipelineState.AWAITING_REPAIR: "awaiting repair",
    PipelineState.SUCCEEDED: "succeeded",
    PipelineState.FAILED: "failed",
    PipelineState.TIMED_OUT: "timed out",
    PipelineState.CANCELLED: "was cancelled",
}


class NotFinalStateError(ValueError):
    """The pipeline is in no state its kind of email is for.

    An ``outcome`` email is for a pipeline that has ended; an
    ``awaiting_repair`` email for one that awaits repair. Every other state
    (starting, waiting, notifying) gets none.
    """


def latest_attempt(notification: Notification) -> int:
    """The number of the newest attempt: 0 for the original run, and for a pipeline never repaired."""
    return max((attempt.number for attempt in notification.attempts), default=0)


#: Said above the parameters: whose words they are.
PARAMETERS_NOTE = (
    "As given by whoever started the pipeline, quoted as data: not written or checked by us, "
    "and no link in them is ours."
)


def _run_blocks(notification: Notification) -> list[Block]:
    run = notification.run
    if run is None:
        return [Para("No Databricks run was started.")]
    url = safe_url(run.run_page_url)
    if url is None:
        return [Para(f"Databricks run {run.run_id} (Databricks gave no link to it).")]
    return [Link(f"Databricks run {run.run_id}", url)]


def _error_blocks(error: RunError | None, heading: str = "What went wrong, as Databricks reported it") -> list[Block]:
    if error is None:
        return [Para("Databricks did not say why.")]
    message = unlinked(visible(error.message, keep_newlines=True).strip())
    blocks: list[Block] = [Heading(heading), Para(one_line(error.type))]
    if message:
        if len(message) > MAX_ERROR_CHARS:
            message = f"{message[:MAX_ERROR_CHARS]}\n{more(len(message) - MAX_ERROR_CHARS)} not shown"
        blocks.append(Pre(message))
    return blocks


def _result_blocks(notification: Notification, by: str = "the notebook") -> list[Block]:
    if notification.result is None:
        return [Para(f"{by.capitalize()} reported no result.")]
    if not notification.result:
        return [Para(f"{by.capitalize()} reported an empty result.")]
    rows, left_out = result_rows(notification.result)
    blocks: list[Block] = [Heading(f"Result, as {by} reported it"), Facts(rows)]
    if left_out:
        blocks.append(Para(f"… and {left_out:,} more values not shown."))
    return blocks


def _task_blocks(notification: Notification) -> list[Block]:
    """Each task's outcome, for a run read from the Jobs API (a multi-task job, or no callback)."""
    report = notification.report
    if report is None or not report.tasks:
        return []
    rows = []
    for task in report.tasks[:MAX_TASKS]:
        outcome = task.result_state or task.life_cycle_state or "unknown"
        detail = visible(task.state_message, keep_newlines=False).strip()
        if task.truncated:
            detail = f"{detail} (its output is cut)".strip()
        rows.append((one_line(task.task_key, 80), one_line(f"{outcome}: {detail}" if detail else outcome)))
    blocks: list[Block] = [Heading("Tasks"), Facts(rows)]
    if len(report.tasks) > MAX_TASKS:
        blocks.append(Para(f"… and {len(report.tasks) - MAX_TASKS:,} more tasks."))
    return blocks


def _job_blocks(notification: Notification) -> list[Block]:
    if notification.job is None:
        return []
    title = notification.job_title or notification.job
    return [Facts([("Job", one_line(f"{title} ({notification.job})" if title != notification.job else title))])]


def _parameter_blocks(notification: Notification) -> list[Block]:
    items = sorted(notification.parameters.items())
    if not items:
        return []
    rows = [(one_line(k, MAX_NAME_CHARS), quoted(v)) for k, v in items[:MAX_PARAMETERS]]
    blocks: list[Block] = [
        Heading("Parameters"),
        Para(PARAMETERS_NOTE),
        Data(rows),
    ]
    if len(items) > MAX_PARAMETERS:
        blocks.append(Para(f"… and {len(items) - MAX_PARAMETERS:,} more parameters not shown."))
    return blocks


def _step_of(notification: Notification) -> str | None:
    """The step the email is about or is, when it is a step's id (a header and a request body may carry it)."""
    step = notification.step
    return step if step is not None and _STEP_ID.fullmatch(step) else None


def _repair_blocks(notification: Notification, pipeline: str) -> list[Block]:
    """How a person repairs or abandons a pipeline awaiting repair, and until when."""
    if notification.repair_deadline is None:
        deadline = "If it is neither repaired nor abandoned before its repair window ends, the pipeline fails."
    else:
        deadline = (
            f"If it is neither repaired nor abandoned by {utc(notification.repair_deadline)}, the pipeline fails."
        )
    # A job step of a pipeline run by its code is named, for when several await repair at once.
    step = _step_of(notification)
    body, abandon = ('{"parameters": {"NAME": "VALUE"}}', "")
    if step is not None:
        body, abandon = (
            f'{{"step": "{step}", "parameters": {{"NAME": "VALUE"}}}}',
            f'\n    body: {{"step": "{step}"}}',
        )
    return [
        Heading("How to repair it"),
        Para(
            "Repairing reruns only the failed tasks of the same Databricks run, "
            "with the same parameters or with the ones you give:"
        ),
        Pre(
            f"POST /pipelines/{pipeline}/repair\n"
            f"    optional body: {body}\n"
            f"pipelines repair {pipeline} [--param NAME=VALUE]"
        ),
        Para(
            "Abandoning it fails the pipeline now:"
            if step is None
            else "Abandoning it fails this step now (the pipeline's code decides what follows):"
        ),
        Pre(f"POST /pipelines/{pipeline}/abandon{abandon}\npipelines abandon {pipeline}"),
        Para(deadline),
    ]


def _attempt_outcome(attempt: Attempt) -> str:
    if attempt.outcome is None:
        return "running"
    if attempt.outcome == "failure" and attempt.error is not None:
        return f"failure: {attempt.error.type}"
    return attempt.outcome


def _attempt_blocks(notification: Notification) -> list[Block]:
    """The pipeline's runs, original and repairs, when it had more than one."""
    attempts = notification.attempts
    if len(attempts) <= 1:
        return []
    shown = attempts[-MAX_ATTEMPTS:]
    columns = ["Attempt", "Started", "By", "Reason", "Reran", "Outcome"]
    changed = any(attempt.parameters for attempt in shown)
    if changed:
        columns.append("Changed parameters")
    rows = []
    for attempt in shown:
        row = [
            "original" if attempt.number == 0 else f"repair {attempt.number}",
            utc(attempt.started_at),
            one_line(attempt.by or "-", 80),
            one_line(attempt.reason, 80),
            one_line(", ".join(attempt.rerun_tasks) or "all tasks"),
            one_line(_attempt_outcome(attempt), 80),
        ]
        if changed:
            changes = sorted((attempt.parameters or {}).items())[:MAX_PARAMETERS]
            row.append(", ".join(f"{one_line(k, MAX_NAME_CHARS)} = {quoted(v)}" for k, v in changes) or "-")
        rows.append(row)
    blocks: list[Block] = [Heading("Attempts"), Table(columns, rows)]
    if len(attempts) > MAX_ATTEMPTS:
        blocks.append(Para(f"… {len(attempts) - MAX_ATTEMPTS:,} earlier attempts not shown."))
    return blocks


def _last_failure_blocks(notification: Notification) -> list[Block]:
    """What the run that was waiting for repair failed with, for a pipeline that then ended without one."""
    failed = [attempt for attempt in notification.attempts if attempt.outcome == "failure"]
    if not failed or failed[-1].error is None:
        return []
    return _error_blocks(failed[-1].error, "What the last attempt failed with")


def _ended_unrepaired_headline(notification: Notification, pipeline: str) -> str | None:
    """The headline of a pipeline that awaited repair and failed without one: abandoned, or out of time."""
    error = notification.error
    if error is None:
        return None
    if error.type == ABANDONED:
        # The worker writes "abandoned by <principal>; the run stays failed: <cause>"; the cause has
        # a section of its own below. Any other wording still reads.
        who = one_line(error.message.partition(";")[0], MAX_NAME_CHARS + 20) or "abandoned"
        return f"Pipeline {pipeline} failed: it was {who} instead of repaired."
    if error.type == REPAIR_WINDOW_EXPIRED:
        return f"Pipeline {pipeline} failed: nobody repaired or abandoned it before its repair window ended."
    return None


#: The headline of a pipeline of several steps that ended, by its state.
_COMPOSED_HEADLINES = {
    PipelineState.SUCCEEDED: "Pipeline {pipeline} finished successfully.",
    PipelineState.FAILED: "Pipeline {pipeline} failed.",
    PipelineState.TIMED_OUT: "Pipeline {pipeline} timed out.",
    PipelineState.CANCELLED: "Pipeline {pipeline} was cancelled.",
}


def _composed_outcome(notification: Notification, pipeline: str) -> list[Block]:
    """How a pipeline of several steps ended: every step, then its code's result or what went wrong."""
    n = notification
    blocks: list[Block] = [Para(_COMPOSED_HEADLINES[n.state].format(pipeline=pipeline)), *summary_blocks(n)]
    if n.state is PipelineState.SUCCEEDED:
        blocks += _result_blocks(n, by="the pipeline's code")
    elif n.error is not None:
        blocks += _error_blocks(n.error, "What went wrong, as the pipeline reported it")
    return [*blocks, *_job_blocks(n), *_parameter_blocks(n)]


def _content(notification: Notification, pipeline: str) -> list[Block]:
    n = notification
    started = n.run is not None
    repairs = latest_attempt(n)
    after_repairs = f" after {repairs_made(repairs)}" if repairs else ""
    unrepaired = _ended_unrepaired_headline(n, pipeline) if n.state is PipelineState.FAILED else None
    blocks: list[Block]
    match n.state:
        case PipelineState.AWAITING_REPAIR:
            failed = f"failed again{after_repairs}" if repairs else "failed"
            until = f" until {utc(n.repair_deadline)}" if n.repair_deadline is not None else ""
            headline = f"Pipeline {pipeline} {failed} and awaits repair{until}."
            blocks = [Para(headline), *_run_blocks(n), *_error_blocks(n.error)]
        case PipelineState.SUCCEEDED:
            headline = f"Pipeline {pipeline} finished successfully{after_repairs}."
            blocks = [Para(headline), *_run_blocks(n), *_result_blocks(n)]
        case PipelineState.FAILED if unrepaired is not None:
            blocks = [Para(unrepaired), *_run_blocks(n), *_last_failure_blocks(n)]
        case PipelineState.FAILED if not started:
            headline = f"Pipeline {pipeline} failed: its Databricks job could not start."
            blocks = [Para(headline), *_error_blocks(n.error)]
        case PipelineState.FAILED:
            headline = f"Pipeline {pipeline} failed{after_repairs}."
            blocks = [Para(headline), *_run_blocks(n), *_error_blocks(n.error)]
        case PipelineState.TIMED_OUT:
            waited = n.waited_seconds
            how_long = f"after waiting {duration(waited)}" if waited is not None else "at its time limit"
            headline = f"Pipeline {pipeline} timed out: it stopped waiting for Databricks {how_long}."
            blocks = [Para(headline), *_run_blocks(n)]
        case PipelineState.CANCELLED if not started:
            blocks = [Para(f"Pipeline {pipeline} was cancelled before a Databricks run started.")]
        case _:
            blocks = [Para(f"Pipeline {pipeline} was cancelled."), *_run_blocks(n)]
    # The way out comes right after what failed, before the history.
    repair = _repair_blocks(n, pipeline) if n.state is PipelineState.AWAITING_REPAIR else []
    return [*blocks, *_task_blocks(n), *repair, *_attempt_blocks(n), *_job_blocks(n), *_parameter_blocks(n)]


# -- The message ---------------------------------------------------------------------


def _header_pipeline_id(pipeline_id: str) -> str:
    """The pipeline id as it may appear in a header.

    The model already restricts ids to a header-safe alphabet; this holds
    even for a Notification built without validation.
    """
    if PIPELINE_ID.fullmatch(pipeline_id):
        return pipeline_id
    return one_line(pipeline_id, MAX_SUBJECT_ID_CHARS)


def _base_subject(notification: Notification, pipeline: str) -> str:
    """What every email of one pipeline's subject starts with: the pipeline, and its job when known."""
    title = notification.job_title or notification.job
    if not title:
        return f"Pipeline {pipeline}"
    return f"Pipeline {pipeline} ({one_line(title, MAX_SUBJECT_TITLE_CHARS)})"


def _references(thread: list[str], own: str) -> list[str]:
    """``thread`` as it may go in References: well-formed ids only, not this email's own, bounded.

    The ids are the worker's record of the emails already sent, so anything
    else in it is a bug upstream; leaving it out keeps the email (and its
    threading by the ids that are sound) rather than refusing it.
    """
    ids = [i for i in thread if _MSG_ID.fullmatch(i) and i != own]
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return ids


def _sender_address(sender: str) -> Address:
    name, addr = parseaddr(sender)
    if "@" not in addr or "\n" in sender or "\r" in sender:
        raise ValueError(f"sender must be one email address, got {sender!r}")
    return Address(display_name=name, addr_spec=addr)


def compose_email(
    notification: Notification,
    *,
    sender: str,
    message_id_domain: str,
    now: datetime | None = None,
    page_url: str | None = None,
) -> EmailMessage:
    """The email of ``notification``: its outcome, that it awaits repair, a step's email or a gate's request.

    ``sender`` is the From address (``"Pipelines <pipelines@example.com>"`` or
    a bare address); ``message_id_domain`` is the right-hand side of the
    Message-ID; ``now`` is the Date (the current time when omitted);
    ``page_url`` is the web page's base URL, which an approval request links
    the pipeline's page under (no link without it). When
    ``notification.thread`` names earlier emails, this one replies to the
    last and references them all (see the module docstring).

    Raises :class:`NotFinalStateError` for a state its kind of email is not
    for (an outcome of a pipeline that has not ended, a wait for repair of a
    pipeline that does not await one),
    :class:`~pipeline_shared.recipients.RecipientRefused` for an address the
    notifier cannot send to (the gateway refuses those at start; a pipeline
    accepted before it did may still hold one) and ``ValueError`` for a
    sender or domain that cannot go in a header, or an approval request
    without its gate.
    """
    state, kind = notification.state, notification.kind
    if kind in {"outcome", "awaiting_repair"}:
        awaiting = kind == "awaiting_repair"
        if (state is PipelineState.AWAITING_REPAIR) != awaiting or not (awaiting or state.is_final):
            wanted = "awaiting_repair" if awaiting else "a final state"
            raise NotFinalStateError(
                f"pipeline {notification.pipeline_id} is {state.value}; "
                f"an email of kind {kind} is sent only in {wanted}"
            )
    if not _DOMAIN.fullmatch(message_id_domain):
        raise ValueError(f"message_id_domain must be a hostname, got {message_id_domain!r}")
    pipeline = _header_pipeline_id(notification.pipeline_id)
    base = _base_subject(notification, pipeline)
    if kind == "approval_request":
        recipients = approval_recipients(notification)
        subject = f"{base} awaits approval: {gate_name(notification)}"
        blocks = [
            *approval_request_blocks(notification, pipeline, page_url),
            *_job_blocks(notification),
            *_parameter_blocks(notification),
        ]
    elif kind == "step":
        recipients = [check_recipient(notification.email)]
        subject = f"{base}: {step_subject(notification)}"
        blocks = step_email_blocks(notification)
    else:
        recipients = [check_recipient(notification.email)]
        subject = f"{base} {_SUBJECT_STATES[state]}"
        composed = kind == "outcome" and notification.steps
        blocks = _composed_outcome(notification, pipeline) if composed else _content(notification, pipeline)
    footer = f"Sent automatically about pipeline {pipeline}. Replies are not read."
    step = _step_of(notification)
    message_id = email_message_id(
        notification.pipeline_id,
        state.value,
        message_id_domain,
        kind=kind,
        attempt=latest_attempt(notification),
        step=step,
    )

    message = EmailMessage(policy=SMTP)
    message["Subject"] = subject
    message["From"] = _sender_address(sender)
    # The IDNA form of the domain: it needs no SMTPUTF8 from the relay.
    message["To"] = [Address(addr_spec=recipient.smtp_address) for recipient in recipients]
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id
    references = _references(notification.thread, message_id)
    if references:
        # RFC 5322 section 3.6.4: the parent's id, and the chain it belongs to, oldest first.
        message["In-Reply-To"] = references[-1]
        message["References"] = " ".join(references)
    message[PIPELINE_ID_HEADER] = pipeline
    message[PIPELINE_STATE_HEADER] = state.value
    if step is not None:
        message[PIPELINE_STEP_HEADER] = step
    # RFC 3834: a machine wrote this; auto-responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(render_text(blocks, footer))
    message.add_alternative(render_html(blocks, subject, footer), subtype="html")
    return message

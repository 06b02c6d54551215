"""What the emails of a pipeline run by its code say: a step's own email, an approval request, a summary of steps.

A pipeline's code (``p.email``, ``p.approval``) and the notebooks it runs
write much of these emails: the subject and lines of an email step, a gate's
name and message, a person's comment on a decision, a job's error. That code
is a team's, and it often quotes what a caller gave (an upload's path, a
parameter), so it is shown as the outcome email shows parameters
(:mod:`.email`'s docstring): as text, on one line each, without control
characters, bounded, with every ``scheme://`` unlinked. The only links are
ours: a Databricks run's page (an http(s) URL Databricks gave, as in the
outcome email) and, in an approval request, the pipeline's page on the web
page (``PAGE_URL``), which only opens the page: deciding there takes a
signed-in person and a form, never a GET.

This module builds blocks and picks recipients; it sends nothing and
composes no message (:func:`.email.compose_email` does).
"""

from __future__ import annotations

from urllib.parse import quote

from pipeline_shared.models import PIPELINE_ID, ApprovalDecision, Notification, StepKind, StepSummary
from pipeline_shared.recipients import Recipient, RecipientRefused, check_recipient

from .blocks import Block, Facts, Heading, Link, Para, Pre, Table, cut, one_line, safe_url, unlinked, utc, visible

#: Lines of an email step shown at most; the rest are counted, not shown.
MAX_LINES = 30
#: Characters of one line shown; longer ones end "… (N more characters)".
MAX_LINE_CHARS = 500
#: Characters of an email step's subject in the Subject header.
MAX_STEP_SUBJECT_CHARS = 120
#: Characters of a gate's name shown (its pattern allows 80).
MAX_GATE_NAME_CHARS = 80
#: Characters of a gate's message shown (the model allows 2,000).
MAX_GATE_MESSAGE_CHARS = 2000
#: Characters of a decision's comment shown in a summary; the status document has it whole.
MAX_COMMENT_CHARS = 200
#: Steps listed in a summary at most; a pipeline loops over a bounded list, but it is the code's to bound.
MAX_STEPS = 50

#: Said above an email step's lines: whose words they are.
LINES_NOTE = "Written by the pipeline's code, shown as text: no link in it is ours."


def step_subject(notification: Notification) -> str:
    """An email step's subject as the pipeline's code gave it, made one bounded line."""
    return one_line(notification.subject or "a message from the pipeline", MAX_STEP_SUBJECT_CHARS)


def gate_name(notification: Notification) -> str:
    approval = notification.approval
    return one_line(approval.name if approval else "(unnamed)", MAX_GATE_NAME_CHARS)


def step_email_blocks(notification: Notification) -> list[Block]:
    """An email the pipeline's code asked for: its lines, then the runs it names."""
    lines = notification.lines
    blocks: list[Block] = [Heading(step_subject(notification)), Para(LINES_NOTE)]
    blocks += [Para(one_line(line, MAX_LINE_CHARS)) for line in lines[:MAX_LINES] if line.strip()]
    if len(lines) > MAX_LINES:
        blocks.append(Para(f"… and {len(lines) - MAX_LINES:,} more lines not shown."))
    if notification.steps:
        blocks += [Heading("Steps"), *steps_table(notification.steps)]
    return blocks


def approval_request_blocks(notification: Notification, pipeline: str, page_url: str | None) -> list[Block]:
    """A gate waits: what it asks, who may decide, until when, and where to decide."""
    approval = notification.approval
    if approval is None:
        raise ValueError(f"pipeline {pipeline}: an approval_request email needs its gate (approval)")
    name = gate_name(notification)
    deadline = utc(approval.deadline)
    scopes = ", ".join(one_line(scope, 40) for scope in approval.scopes)
    blocks: list[Block] = [
        Para(f'Pipeline {pipeline} waits at its approval gate "{name}" for a person to approve or reject it.'),
        Heading("What it asks, as the pipeline's code wrote it"),
        Pre(_bounded_text(approval.message, MAX_GATE_MESSAGE_CHARS)),
        Facts(
            [
                ("Gate", f"{name} (step {approval.step})"),
                ("Who may decide", f"a person holding the scope {scopes}, or an admin"),
                ("Deadline", deadline),
            ]
        ),
    ]
    link = pipeline_page(page_url, notification.pipeline_id)
    if link is not None:
        blocks.append(Link("Open the pipeline's page (sign in, then approve or reject there)", link))
    blocks += [
        Heading("How to decide"),
        Pre(
            f"POST /pipelines/{pipeline}/approve\n"
            f'    body: {{"gate": "{approval.step}", "comment": "why"}}\n'
            f"POST /pipelines/{pipeline}/reject\n"
            f"pipelines approve {pipeline}    pipelines reject {pipeline}"
        ),
        Para(f"If nobody decides by {deadline}, the gate closes and the pipeline does not go past it."),
    ]
    if notification.steps:
        blocks += [Heading("Steps so far"), *steps_table(notification.steps)]
    return blocks


def summary_blocks(notification: Notification) -> list[Block]:
    """The outcome email's account of a pipeline of several steps: one row each."""
    return [Heading("Steps"), *steps_table(notification.steps)]


def steps_table(steps: list[StepSummary]) -> list[Block]:
    rows: list[list[str | Link]] = []
    for step in steps[:MAX_STEPS]:
        rows.append(
            [
                step.id,
                step.kind.value,
                one_line(step.name, MAX_GATE_NAME_CHARS),
                _state(step),
                _run_cell(step),
                str(step.attempts) if step.kind is StepKind.JOB else "-",
                _decision(step.decision),
            ]
        )
    blocks: list[Block] = [Table(["Step", "Kind", "Name", "State", "Run", "Attempts", "Decision"], rows)]
    if len(steps) > MAX_STEPS:
        blocks.append(Para(f"… and {len(steps) - MAX_STEPS:,} more steps not shown."))
    return blocks


def approval_recipients(notification: Notification) -> list[Recipient]:
    """Who an approval request goes to: the gate's ``notify`` addresses, else the pipeline's own.

    Each address is checked as the pipeline's is; one the notifier cannot
    send to is left out and the others are still told. None left: the
    refusal of the first, so the email step ends as not sent and says why.
    """
    approval = notification.approval
    addresses = list(approval.notify) if approval and approval.notify else [notification.email]
    recipients, refusals = [], []
    for address in dict.fromkeys(addresses):
        try:
            recipients.append(check_recipient(address))
        except RecipientRefused as exc:
            refusals.append(exc)
    if not recipients:
        raise refusals[0]
    return recipients


def pipeline_page(page_url: str | None, pipeline_id: str) -> str | None:
    """The pipeline's page on the web page, under ``page_url``; None without one (or for an unsafe id)."""
    if page_url is None or not PIPELINE_ID.fullmatch(pipeline_id):
        return None
    return safe_url(f"{page_url.rstrip('/')}/pipelines/{quote(pipeline_id)}")


def _bounded_text(text: str, limit: int) -> str:
    """Several lines of someone else's text, kept as lines but unlinked, visible and cut at ``limit``."""
    return cut(unlinked(visible(text, keep_newlines=True)).strip(), limit)


def _state(step: StepSummary) -> str:
    state = step.state.value.replace("_", " ")
    return one_line(f"{state}: {step.error.type}", 80) if step.error is not None else state


def _run_cell(step: StepSummary) -> str | Link:
    if step.run is None:
        return "-"
    url = safe_url(step.run.run_page_url)
    label = f"run {step.run.run_id}"
    return Link(label, url) if url is not None else label


def _decision(decision: ApprovalDecision | None) -> str:
    if decision is None:
        return "-"
    done = {"approve": "approved", "reject": "rejected", "cancel": "cancelled"}[decision.action]
    said = f': "{one_line(decision.comment, MAX_COMMENT_CHARS)}"' if decision.comment.strip() else ""
    return f"{done} by {one_line(decision.by, 80)}{said}"

"""The emails that tell a user how their pipeline is doing: how it ended, or that it awaits repair.

One function, :func:`compose_email`, turns a :class:`Notification` into a
multipart/alternative message (plain text and HTML) ready for SMTP. It sends
nothing and reads no clock unless asked to, so it is safe to call from a step
that may run more than once: the Message-ID comes from the pipeline id, the
kind of email, the state and the latest attempt, so every composition of the
same email is the same message to the receiving server, and each email of a
repaired pipeline (each wait for repair, the outcome) is a message of its own.

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

import html
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import urlsplit

from pipeline_shared.ids import email_message_id
from pipeline_shared.models import PIPELINE_ID, Attempt, Notification, PipelineState, RunError
from pipeline_shared.recipients import check_recipient

#: The header carrying the pipeline id, so mail tools (and the test sink) can
#: find one pipeline's email without parsing the body.
PIPELINE_ID_HEADER = "X-Pipeline-Id"
#: The header carrying the state (final, or awaiting repair), for filters and tests.
PIPELINE_STATE_HEADER = "X-Pipeline-State"

#: Result entries shown at most; a notebook may return thousands of keys.
MAX_RESULT_ENTRIES = 20
#: How deep nested result objects are followed before they are shown as JSON.
MAX_RESULT_DEPTH = 4
#: Items of a list shown before "(+N more)".
MAX_LIST_ITEMS = 10
#: Parameters shown at most; the catalogue's jobs take a handful.
MAX_PARAMETERS = 10
#: Characters of a parameter's value shown; longer ones end "… (N more characters)".
MAX_PARAMETER_CHARS = 100
#: Characters of a parameter's name shown.
MAX_NAME_CHARS = 40
#: Characters of one shown result value; longer ones end "… (N more characters)".
MAX_VALUE_CHARS = 100
#: Tasks of a multi-task run listed at most.
MAX_TASKS = 10
#: Characters of Databricks' error message shown: enough for the exception
#: and the lines that raised it; the whole trace is on the run's page.
MAX_ERROR_CHARS = 1000
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

#: error.type of a pipeline a person gave up on while it awaited repair.
ABANDONED = "Abandoned"
#: error.type of a pipeline nobody repaired or abandoned within its repair window.
REPAIR_WINDOW_EXPIRED = "RepairWindowExpired"

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


# -- Making untrusted text presentable ------------------------------------------------


def _visible(text: str, *, keep_newlines: bool) -> str:
    """``text`` without control and format characters.

    Format characters (Unicode category Cf) include the bidirectional
    overrides that can make a value display as something it is not.
    """
    out = []
    for char in text:
        if keep_newlines and char in "\n\t":
            out.append(char)
        elif unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}:
            out.append(" ")
        else:
            out.append(char)
    return "".join(out)


#: ``scheme://`` at the start of a URL.
_URL_SCHEME = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*):(?=//)")


def _unlinked(text: str) -> str:
    """``text`` with every ``scheme://`` shown as ``scheme[:]//``: no mail client makes a link of it.

    The security trade's usual "defanging": a reader still sees the URL and
    can copy it on purpose, but nothing a caller wrote is one click away.
    """
    return _URL_SCHEME.sub(r"\1[:]", text)


def _more(count: int) -> str:
    return f"… ({count:,} more character{'' if count == 1 else 's'})"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + _more(len(text) - limit)


def _one_line(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as one bounded line: a parameter cannot fake extra lines, nor a link."""
    text = value if isinstance(value, str) else str(value)
    return _cut(_unlinked(" ".join(_visible(text, keep_newlines=False).split())), limit)


def _quoted(value: str, limit: int = MAX_PARAMETER_CHARS) -> str:
    """A caller's value as a quoted string: ``"text"``, or ``"text…" (N more characters)`` past ``limit``.

    JSON's string syntax shows a quote, a backslash, a newline or a tab in
    the value as an escape, so the value cannot end its quotes or its line.
    """
    shown = json.dumps(_unlinked(_visible(value[:limit], keep_newlines=True)), ensure_ascii=False)
    if len(value) <= limit:
        return shown
    return f'{shown[:-1]}…" ({len(value) - limit:,} more characters)'


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.6g}"
    return _one_line(value)


def _flatten(value: Any, prefix: str, depth: int) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value and depth < MAX_RESULT_DEPTH:
        for key, item in value.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            yield from _flatten(item, name, depth + 1)
    elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        shown = ", ".join(_scalar(v) for v in value[:MAX_LIST_ITEMS])
        more = len(value) - MAX_LIST_ITEMS
        yield prefix, _one_line(f"[{shown}]" + (f" (+{more} more)" if more > 0 else ""))
    elif isinstance(value, list) and value and all(_is_flat_record(v) for v in value):
        # A table, such as per-column statistics: one line per record, named
        # by its "name" field when it has one.
        for index, record in enumerate(value[:MAX_LIST_ITEMS]):
            label = record.get("name", index)
            fields = ", ".join(f"{key} {_scalar(item)}" for key, item in record.items() if key != "name")
            yield f"{prefix}[{_one_line(label, 40)}]", _one_line(fields)
        if len(value) > MAX_LIST_ITEMS:
            yield prefix, f"(+{len(value) - MAX_LIST_ITEMS} more)"
    elif isinstance(value, dict | list):
        yield prefix, _one_line(json.dumps(value, ensure_ascii=False, default=str))
    else:
        yield prefix, _scalar(value)


def _is_flat_record(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and not any(isinstance(v, dict | list) for v in value.values())


def _result_rows(result: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """Up to :data:`MAX_RESULT_ENTRIES` readable rows, and how many were left out."""
    rows: list[tuple[str, str]] = []
    left_out = 0
    for key, value in _flatten(result, "", 0):
        if len(rows) < MAX_RESULT_ENTRIES:
            rows.append((_one_line(key, 80), value))
        else:
            left_out += 1
    return rows, left_out


def _duration(seconds: int) -> str:
    """``9000`` → ``2 h 30 min``: the two largest units that are not zero."""
    if seconds < 60:
        return f"{seconds} s"
    parts = []
    for unit, size in (("day", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}")
    return " ".join(parts[:2])


def _utc(epoch_ms: int) -> str:
    """``1796320800000`` → ``2026-12-03 18:00 UTC``: a moment nobody has to convert from a server's zone."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _repairs(count: int) -> str:
    return f"{count} repair{'' if count == 1 else 's'}"


def latest_attempt(notification: Notification) -> int:
    """The number of the newest attempt: 0 for the original run, and for a pipeline never repaired."""
    return max((attempt.number for attempt in notification.attempts), default=0)


def _safe_url(url: str | None) -> str | None:
    """The run page URL if it is an http(s) URL on one line, else None."""
    if not url or any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return None
    return url if urlsplit(url).scheme in {"http", "https"} else None


# -- The content, as blocks that render to text and to HTML -------------------------


@dataclass(frozen=True, slots=True)
class _Para:
    text: str


@dataclass(frozen=True, slots=True)
class _Heading:
    text: str


@dataclass(frozen=True, slots=True)
class _Facts:
    rows: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Data:
    """Values someone else gave, each ``name = "value"``, set apart as a quotation."""

    rows: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Pre:
    text: str


@dataclass(frozen=True, slots=True)
class _Link:
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class _Table:
    columns: list[str]
    rows: list[list[str]]


_Block = _Para | _Heading | _Facts | _Data | _Pre | _Link | _Table

#: Said above the parameters: whose words they are.
PARAMETERS_NOTE = (
    "As given by whoever started the pipeline, quoted as data: not written or checked by us, "
    "and no link in them is ours."
)


def _run_blocks(notification: Notification) -> list[_Block]:
    run = notification.run
    if run is None:
        return [_Para("No Databricks run was started.")]
    url = _safe_url(run.run_page_url)
    if url is None:
        return [_Para(f"Databricks run {run.run_id} (Databricks gave no link to it).")]
    return [_Link(f"Databricks run {run.run_id}", url)]


def _error_blocks(error: RunError | None, heading: str = "What went wrong, as Databricks reported it") -> list[_Block]:
    if error is None:
        return [_Para("Databricks did not say why.")]
    message = _unlinked(_visible(error.message, keep_newlines=True).strip())
    blocks: list[_Block] = [_Heading(heading), _Para(_one_line(error.type))]
    if message:
        if len(message) > MAX_ERROR_CHARS:
            message = f"{message[:MAX_ERROR_CHARS]}\n{_more(len(message) - MAX_ERROR_CHARS)} not shown"
        blocks.append(_Pre(message))
    return blocks


def _result_blocks(notification: Notification) -> list[_Block]:
    if notification.result is None:
        return [_Para("The notebook reported no result.")]
    if not notification.result:
        return [_Para("The notebook reported an empty result.")]
    rows, left_out = _result_rows(notification.result)
    blocks: list[_Block] = [_Heading("Result, as the notebook reported it"), _Facts(rows)]
    if left_out:
        blocks.append(_Para(f"… and {left_out:,} more values not shown."))
    return blocks


def _task_blocks(notification: Notification) -> list[_Block]:
    """Each task's outcome, for a run read from the Jobs API (a multi-task job, or no callback)."""
    report = notification.report
    if report is None or not report.tasks:
        return []
    rows = []
    for task in report.tasks[:MAX_TASKS]:
        outcome = task.result_state or task.life_cycle_state or "unknown"
        detail = _visible(task.state_message, keep_newlines=False).strip()
        if task.truncated:
            detail = f"{detail} (its output is cut)".strip()
        rows.append((_one_line(task.task_key, 80), _one_line(f"{outcome}: {detail}" if detail else outcome)))
    blocks: list[_Block] = [_Heading("Tasks"), _Facts(rows)]
    if len(report.tasks) > MAX_TASKS:
        blocks.append(_Para(f"… and {len(report.tasks) - MAX_TASKS:,} more tasks."))
    return blocks


def _job_blocks(notification: Notification) -> list[_Block]:
    if notification.job is None:
        return []
    title = notification.job_title or notification.job
    return [_Facts([("Job", _one_line(f"{title} ({notification.job})" if title != notification.job else title))])]


def _parameter_blocks(notification: Notification) -> list[_Block]:
    items = sorted(notification.parameters.items())
    if not items:
        return []
    rows = [(_one_line(k, MAX_NAME_CHARS), _quoted(v)) for k, v in items[:MAX_PARAMETERS]]
    blocks: list[_Block] = [
        _Heading("Parameters"),
        _Para(PARAMETERS_NOTE),
        _Data(rows),
    ]
    if len(items) > MAX_PARAMETERS:
        blocks.append(_Para(f"… and {len(items) - MAX_PARAMETERS:,} more parameters not shown."))
    return blocks


def _repair_blocks(notification: Notification, pipeline: str) -> list[_Block]:
    """How a person repairs or abandons a pipeline awaiting repair, and until when."""
    if notification.repair_deadline is None:
        deadline = "If it is neither repaired nor abandoned before its repair window ends, the pipeline fails."
    else:
        deadline = (
            f"If it is neither repaired nor abandoned by {_utc(notification.repair_deadline)}, the pipeline fails."
        )
    return [
        _Heading("How to repair it"),
        _Para(
            "Repairing reruns only the failed tasks of the same Databricks run, "
            "with the same parameters or with the ones you give:"
        ),
        _Pre(
            f"POST /pipelines/{pipeline}/repair\n"
            '    optional body: {"parameters": {"NAME": "VALUE"}}\n'
            f"pipelines repair {pipeline} [--param NAME=VALUE]"
        ),
        _Para("Abandoning it fails the pipeline now:"),
        _Pre(f"POST /pipelines/{pipeline}/abandon\npipelines abandon {pipeline}"),
        _Para(deadline),
    ]


def _attempt_outcome(attempt: Attempt) -> str:
    if attempt.outcome is None:
        return "running"
    if attempt.outcome == "failure" and attempt.error is not None:
        return f"failure: {attempt.error.type}"
    return attempt.outcome


def _attempt_blocks(notification: Notification) -> list[_Block]:
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
            _utc(attempt.started_at),
            _one_line(attempt.by or "-", 80),
            _one_line(attempt.reason, 80),
            _one_line(", ".join(attempt.rerun_tasks) or "all tasks"),
            _one_line(_attempt_outcome(attempt), 80),
        ]
        if changed:
            changes = sorted((attempt.parameters or {}).items())[:MAX_PARAMETERS]
            row.append(", ".join(f"{_one_line(k, MAX_NAME_CHARS)} = {_quoted(v)}" for k, v in changes) or "-")
        rows.append(row)
    blocks: list[_Block] = [_Heading("Attempts"), _Table(columns, rows)]
    if len(attempts) > MAX_ATTEMPTS:
        blocks.append(_Para(f"… {len(attempts) - MAX_ATTEMPTS:,} earlier attempts not shown."))
    return blocks


def _last_failure_blocks(notification: Notification) -> list[_Block]:
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
        who = _one_line(error.message.partition(";")[0], MAX_NAME_CHARS + 20) or "abandoned"
        return f"Pipeline {pipeline} failed: it was {who} instead of repaired."
    if error.type == REPAIR_WINDOW_EXPIRED:
        return f"Pipeline {pipeline} failed: nobody repaired or abandoned it before its repair window ended."
    return None


def _content(notification: Notification, pipeline: str) -> list[_Block]:
    n = notification
    started = n.run is not None
    repairs = latest_attempt(n)
    after_repairs = f" after {_repairs(repairs)}" if repairs else ""
    unrepaired = _ended_unrepaired_headline(n, pipeline) if n.state is PipelineState.FAILED else None
    blocks: list[_Block]
    match n.state:
        case PipelineState.AWAITING_REPAIR:
            failed = f"failed again{after_repairs}" if repairs else "failed"
            until = f" until {_utc(n.repair_deadline)}" if n.repair_deadline is not None else ""
            headline = f"Pipeline {pipeline} {failed} and awaits repair{until}."
            blocks = [_Para(headline), *_run_blocks(n), *_error_blocks(n.error)]
        case PipelineState.SUCCEEDED:
            headline = f"Pipeline {pipeline} finished successfully{after_repairs}."
            blocks = [_Para(headline), *_run_blocks(n), *_result_blocks(n)]
        case PipelineState.FAILED if unrepaired is not None:
            blocks = [_Para(unrepaired), *_run_blocks(n), *_last_failure_blocks(n)]
        case PipelineState.FAILED if not started:
            headline = f"Pipeline {pipeline} failed: its Databricks job could not start."
            blocks = [_Para(headline), *_error_blocks(n.error)]
        case PipelineState.FAILED:
            headline = f"Pipeline {pipeline} failed{after_repairs}."
            blocks = [_Para(headline), *_run_blocks(n), *_error_blocks(n.error)]
        case PipelineState.TIMED_OUT:
            waited = n.waited_seconds
            how_long = f"after waiting {_duration(waited)}" if waited is not None else "at its time limit"
            headline = f"Pipeline {pipeline} timed out: it stopped waiting for Databricks {how_long}."
            blocks = [_Para(headline), *_run_blocks(n)]
        case PipelineState.CANCELLED if not started:
            blocks = [_Para(f"Pipeline {pipeline} was cancelled before a Databricks run started.")]
        case _:
            blocks = [_Para(f"Pipeline {pipeline} was cancelled."), *_run_blocks(n)]
    # The way out comes right after what failed, before the history.
    repair = _repair_blocks(n, pipeline) if n.state is PipelineState.AWAITING_REPAIR else []
    return [*blocks, *_task_blocks(n), *repair, *_attempt_blocks(n), *_job_blocks(n), *_parameter_blocks(n)]


def _render_text(blocks: list[_Block], footer: str) -> str:
    lines: list[str] = []
    for block in blocks:
        match block:
            case _Heading(text):
                lines += ["", text]
            case _Para(text):
                lines += [text, ""]
            case _Link(label, url):
                lines += [f"{label}: {url}", ""]
            case _Facts(rows):
                lines += [f"  {key}: {value}" for key, value in rows] + [""]
            case _Data(rows):
                lines += [f"  | {key} = {value}" for key, value in rows] + [""]
            case _Pre(text):
                lines += ["  " + line for line in text.splitlines()] + [""]
            case _Table(columns, rows):
                widths = [max(len(cell) for cell in column) for column in zip(columns, *rows, strict=True)]
                lines += [
                    "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                    for row in [columns, *rows]
                ] + [""]
    lines += ["-- ", footer]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


_CELL = 'style="padding:2px 12px 2px 0;vertical-align:top"'
_QUOTE = "margin:4px 0;padding:2px 10px;border-left:3px solid #bbb;color:#333;background:#fafafa"


def _render_html(blocks: list[_Block], title: str, footer: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(title)}</title></head>",
        '<body style="font-family:sans-serif;line-height:1.4">',
    ]
    for block in blocks:
        match block:
            case _Heading(text):
                parts.append(f'<h3 style="margin-bottom:4px">{e(text)}</h3>')
            case _Para(text):
                parts.append(f"<p>{e(text)}</p>")
            case _Link(label, url):
                parts.append(f'<p><a href="{e(url, quote=True)}">{e(label)}</a></p>')
            case _Facts(rows):
                cells = "".join(
                    f"<tr><td {_CELL}><code>{e(key)}</code></td><td {_CELL}>{e(value)}</td></tr>" for key, value in rows
                )
                parts.append(f"<table>{cells}</table>")
            case _Data(rows):
                cells = "".join(
                    f"<tr><td {_CELL}><code>{e(key)}</code></td><td {_CELL}><code>{e(value)}</code></td></tr>"
                    for key, value in rows
                )
                parts.append(f'<blockquote style="{_QUOTE}"><table>{cells}</table></blockquote>')
            case _Pre(text):
                parts.append(f'<pre style="white-space:pre-wrap;background:#f6f6f6;padding:8px">{e(text)}</pre>')
            case _Table(columns, rows):
                head = "".join(f'<th {_CELL} align="left">{e(column)}</th>' for column in columns)
                body = "".join(
                    "<tr>" + "".join(f"<td {_CELL}>{e(cell)}</td>" for cell in row) + "</tr>" for row in rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts += [f'<p style="color:#666;font-size:small">{e(footer)}</p>', "</body></html>"]
    return "\n".join(parts) + "\n"


# -- The message ---------------------------------------------------------------------


def _header_pipeline_id(pipeline_id: str) -> str:
    """The pipeline id as it may appear in a header.

    The model already restricts ids to a header-safe alphabet; this holds
    even for a Notification built without validation.
    """
    if PIPELINE_ID.fullmatch(pipeline_id):
        return pipeline_id
    return _one_line(pipeline_id, MAX_SUBJECT_ID_CHARS)


def _base_subject(notification: Notification, pipeline: str) -> str:
    """What every email of one pipeline's subject starts with: the pipeline, and its job when known."""
    title = notification.job_title or notification.job
    if not title:
        return f"Pipeline {pipeline}"
    return f"Pipeline {pipeline} ({_one_line(title, MAX_SUBJECT_TITLE_CHARS)})"


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
) -> EmailMessage:
    """The email announcing ``notification``: the pipeline's outcome, or that it awaits repair.

    ``sender`` is the From address (``"Pipelines <pipelines@example.com>"`` or
    a bare address); ``message_id_domain`` is the right-hand side of the
    Message-ID; ``now`` is the Date (the current time when omitted). When
    ``notification.thread`` names earlier emails, this one replies to the
    last and references them all (see the module docstring).

    Raises :class:`NotFinalStateError` for a state its kind of email is not
    for (an outcome of a pipeline that has not ended, a wait for repair of a
    pipeline that does not await one),
    :class:`~pipeline_shared.recipients.RecipientRefused` for an address the
    notifier cannot send to (the gateway refuses those at start; a pipeline
    accepted before it did may still hold one) and ``ValueError`` for a
    sender or domain that cannot go in a header.
    """
    state = notification.state
    awaiting = notification.kind == "awaiting_repair"
    if (state is PipelineState.AWAITING_REPAIR) != awaiting or not (awaiting or state.is_final):
        wanted = "awaiting_repair" if awaiting else "a final state"
        raise NotFinalStateError(
            f"pipeline {notification.pipeline_id} is {state.value}; "
            f"an email of kind {notification.kind} is sent only in {wanted}"
        )
    if not _DOMAIN.fullmatch(message_id_domain):
        raise ValueError(f"message_id_domain must be a hostname, got {message_id_domain!r}")
    recipient = check_recipient(notification.email)
    pipeline = _header_pipeline_id(notification.pipeline_id)
    subject = f"{_base_subject(notification, pipeline)} {_SUBJECT_STATES[state]}"
    footer = f"Sent automatically about pipeline {pipeline}. Replies are not read."
    blocks = _content(notification, pipeline)
    message_id = email_message_id(
        notification.pipeline_id,
        state.value,
        message_id_domain,
        kind=notification.kind,
        attempt=latest_attempt(notification),
    )

    message = EmailMessage(policy=SMTP)
    message["Subject"] = subject
    message["From"] = _sender_address(sender)
    # The IDNA form of the domain: it needs no SMTPUTF8 from the relay.
    message["To"] = Address(addr_spec=recipient.smtp_address)
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id
    references = _references(notification.thread, message_id)
    if references:
        # RFC 5322 section 3.6.4: the parent's id, and the chain it belongs to, oldest first.
        message["In-Reply-To"] = references[-1]
        message["References"] = " ".join(references)
    message[PIPELINE_ID_HEADER] = pipeline
    message[PIPELINE_STATE_HEADER] = state.value
    # RFC 3834: a machine wrote this; auto-responders should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(_render_text(blocks, footer))
    message.add_alternative(_render_html(blocks, subject, footer), subtype="html")
    return message

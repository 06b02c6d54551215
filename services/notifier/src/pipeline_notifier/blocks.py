"""The pieces an email is made of, and a caller's text made harmless inside them.

Everything the notifier writes (an outcome, a wait for repair, a step's own
email, an approval request, a summary of steps) is a list of blocks
(paragraphs, headings, facts, quoted data, tables, links) rendered once as
plain text and once as HTML. The helpers here bound, unlink and flatten text
that came from a caller or a notebook, as :mod:`.email`'s docstring explains;
this module composes no email and decides nothing about what one says.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

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

# -- Making untrusted text presentable ------------------------------------------------


def visible(text: str, *, keep_newlines: bool) -> str:
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


def unlinked(text: str) -> str:
    """``text`` with every ``scheme://`` shown as ``scheme[:]//``: no mail client makes a link of it.

    The security trade's usual "defanging": a reader still sees the URL and
    can copy it on purpose, but nothing a caller wrote is one click away.
    """
    return _URL_SCHEME.sub(r"\1[:]", text)


def more(count: int) -> str:
    return f"… ({count:,} more character{'' if count == 1 else 's'})"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + more(len(text) - limit)


def one_line(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as one bounded line: a parameter cannot fake extra lines, nor a link."""
    text = value if isinstance(value, str) else str(value)
    return cut(unlinked(" ".join(visible(text, keep_newlines=False).split())), limit)


def quoted(value: str, limit: int = MAX_PARAMETER_CHARS) -> str:
    """A caller's value as a quoted string: ``"text"``, or ``"text…" (N more characters)`` past ``limit``.

    JSON's string syntax shows a quote, a backslash, a newline or a tab in
    the value as an escape, so the value cannot end its quotes or its line.
    """
    shown = json.dumps(unlinked(visible(value[:limit], keep_newlines=True)), ensure_ascii=False)
    if len(value) <= limit:
        return shown
    return f'{shown[:-1]}…" ({len(value) - limit:,} more characters)'


def scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 1000 else f"{value:.6g}"
    return one_line(value)


def _flatten(value: Any, prefix: str, depth: int) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict) and value and depth < MAX_RESULT_DEPTH:
        for key, item in value.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            yield from _flatten(item, name, depth + 1)
    elif isinstance(value, list) and all(not isinstance(v, dict | list) for v in value):
        shown = ", ".join(scalar(v) for v in value[:MAX_LIST_ITEMS])
        more = len(value) - MAX_LIST_ITEMS
        yield prefix, one_line(f"[{shown}]" + (f" (+{more} more)" if more > 0 else ""))
    elif isinstance(value, list) and value and all(_is_flat_record(v) for v in value):
        # A table, such as per-column statistics: one line per record, named
        # by its "name" field when it has one.
        for index, record in enumerate(value[:MAX_LIST_ITEMS]):
            label = record.get("name", index)
            fields = ", ".join(f"{key} {scalar(item)}" for key, item in record.items() if key != "name")
            yield f"{prefix}[{one_line(label, 40)}]", one_line(fields)
        if len(value) > MAX_LIST_ITEMS:
            yield prefix, f"(+{len(value) - MAX_LIST_ITEMS} more)"
    elif isinstance(value, dict | list):
        yield prefix, one_line(json.dumps(value, ensure_ascii=False, default=str))
    else:
        yield prefix, scalar(value)


def _is_flat_record(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and not any(isinstance(v, dict | list) for v in value.values())


def result_rows(result: dict[str, Any]) -> tuple[list[tuple[str, str]], int]:
    """Up to :data:`MAX_RESULT_ENTRIES` readable rows, and how many were left out."""
    rows: list[tuple[str, str]] = []
    left_out = 0
    for key, value in _flatten(result, "", 0):
        if len(rows) < MAX_RESULT_ENTRIES:
            rows.append((one_line(key, 80), value))
        else:
            left_out += 1
    return rows, left_out


def duration(seconds: int) -> str:
    """``9000`` → ``2 h 30 min``: the two largest units that are not zero."""
    if seconds < 60:
        return f"{seconds} s"
    parts = []
    for unit, size in (("day", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if unit == 'day' and count > 1 else ''}")
    return " ".join(parts[:2])


def utc(epoch_ms: int) -> str:
    """``1796320800000`` → ``2026-12-03 18:00 UTC``: a moment nobody has to convert from a server's zone."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def repairs_made(count: int) -> str:
    return f"{count} repair{'' if count == 1 else 's'}"


def safe_url(url: str | None) -> str | None:
    """The run page URL if it is an http(s) URL on one line, else None."""
    if not url or any(c.isspace() or unicodedata.category(c) == "Cc" for c in url):
        return None
    return url if urlsplit(url).scheme in {"http", "https"} else None


# -- The content, as blocks that render to text and to HTML -------------------------


@dataclass(frozen=True, slots=True)
class Para:
    text: str


@dataclass(frozen=True, slots=True)
class Heading:
    text: str


@dataclass(frozen=True, slots=True)
class Facts:
    rows: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Data:
    """Values someone else gave, each ``name = "value"``, set apart as a quotation."""

    rows: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class Pre:
    text: str


@dataclass(frozen=True, slots=True)
class Link:
    label: str
    url: str


@dataclass(frozen=True, slots=True)
class Table:
    columns: list[str]
    #: A cell is text, or a link (a Databricks run's page) shown as one in HTML and as its URL in text.
    rows: list[list[str | Link]]


def _cell_text(cell: str | Link) -> str:
    return cell if isinstance(cell, str) else f"{cell.label} {cell.url}"


def _cell_html(cell: str | Link) -> str:
    if isinstance(cell, str):
        return html.escape(cell)
    return f'<a href="{html.escape(cell.url, quote=True)}">{html.escape(cell.label)}</a>'


Block = Para | Heading | Facts | Data | Pre | Link | Table


def render_text(blocks: list[Block], footer: str) -> str:
    lines: list[str] = []
    for block in blocks:
        match block:
            case Heading(text):
                lines += ["", text]
            case Para(text):
                lines += [text, ""]
            case Link(label, url):
                lines += [f"{label}: {url}", ""]
            case Facts(rows):
                lines += [f"  {key}: {value}" for key, value in rows] + [""]
            case Data(rows):
                lines += [f"  | {key} = {value}" for key, value in rows] + [""]
            case Pre(text):
                lines += ["  " + line for line in text.splitlines()] + [""]
            case Table(columns, rows):
                cells = [columns, *([_cell_text(cell) for cell in row] for row in rows)]
                widths = [max(len(cell) for cell in column) for column in zip(*cells, strict=True)]
                lines += [
                    "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                    for row in cells
                ] + [""]
    lines += ["-- ", footer]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"


_CELL = 'style="padding:2px 12px 2px 0;vertical-align:top"'
_QUOTE = "margin:4px 0;padding:2px 10px;border-left:3px solid #bbb;color:#333;background:#fafafa"


def render_html(blocks: list[Block], title: str, footer: str) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8">',
        f"<title>{e(title)}</title></head>",
        '<body style="font-family:sans-serif;line-height:1.4">',
    ]
    for block in blocks:
        match block:
            case Heading(text):
                parts.append(f'<h3 style="margin-bottom:4px">{e(text)}</h3>')
            case Para(text):
                parts.append(f"<p>{e(text)}</p>")
            case Link(label, url):
                parts.append(f'<p><a href="{e(url, quote=True)}">{e(label)}</a></p>')
            case Facts(rows):
                cells = "".join(
                    f"<tr><td {_CELL}><code>{e(key)}</code></td><td {_CELL}>{e(value)}</td></tr>" for key, value in rows
                )
                parts.append(f"<table>{cells}</table>")
            case Data(rows):
                cells = "".join(
                    f"<tr><td {_CELL}><code>{e(key)}</code></td><td {_CELL}><code>{e(value)}</code></td></tr>"
                    for key, value in rows
                )
                parts.append(f'<blockquote style="{_QUOTE}"><table>{cells}</table></blockquote>')
            case Pre(text):
                parts.append(f'<pre style="white-space:pre-wrap;background:#f6f6f6;padding:8px">{e(text)}</pre>')
            case Table(columns, rows):
                head = "".join(f'<th {_CELL} align="left">{e(column)}</th>' for column in columns)
                body = "".join(
                    "<tr>" + "".join(f"<td {_CELL}>{_cell_html(cell)}</td>" for cell in row) + "</tr>" for row in rows
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts += [f'<p style="color:#666;font-size:small">{e(footer)}</p>', "</body></html>"]
    return "\n".join(parts) + "\n"

"""How the ``pipelines`` command shows what the gateway says: tables, timelines, live views, JSON.

It owns the rendering only. It never talks to the gateway (``cli`` does) and
never decides an exit status; it is handed documents already read and returns
nothing but output. Each display has three forms, chosen once per run:

- JSON (``--json``): the gateway's documents as they came, one document per
  command, or JSON Lines (one object per event) for a stream; no colour, no
  rich at all, so what a script reads is exactly what was sent.
- plain lines: when stdout is not a terminal (a pipe, a log, a CI job), one
  line per event, never redrawn.
- a rich display: when stdout is a terminal; colour unless ``NO_COLOR`` is set.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, Self

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

FINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

#: A state's colour in tables and live views (rich styles; dropped under NO_COLOR).
STATE_STYLES = {
    "starting": "blue",
    "waiting": "cyan",
    "awaiting_repair": "bold yellow",
    "awaiting_approval": "bold yellow",
    "notifying": "cyan",
    # A step's own states.
    "running": "cyan",
    "approved": "green",
    "rejected": "bold red",
    "expired": "red",
    "sent": "green",
    "not_sent": "bold red",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "magenta",
    "timed_out": "red",
}

#: What a timeline event says about the pipeline's state, for the live view's
#: headline while it runs. Approximate on purpose: the stream carries events,
#: not states, and `finished` (which names the state) settles it at the end.
STATE_AFTER_EVENT = {
    "started": "starting",
    "run_triggered": "waiting",
    "repair_requested": "waiting",
    "repaired": "waiting",
    "awaiting_repair": "awaiting_repair",
    "awaiting_approval": "awaiting_approval",
    "callback_received": "notifying",
    "outcome_read_from_run": "notifying",
    "timed_out": "notifying",
    "abandoned": "notifying",
    "repair_window_expired": "notifying",
}

#: A terminal redraws the live views this often; the elapsed time ticks with it.
LIVE_REFRESH_PER_SECOND = 4


def terminal_console(no_color: bool) -> Console:
    """The console for rich output, on the current stdout (tests swap it)."""
    # Off a terminal rich would wrap tables at 80 columns; a log line is better long.
    width = None if sys.stdout.isatty() else 200
    return Console(file=sys.stdout, no_color=no_color, highlight=False, width=width, soft_wrap=False)


def print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False), flush=True)


def parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def span(seconds: float) -> str:
    """A duration as a person reads it: 4.2s, 3m05s, 2h10m, 3d04h."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def local_time(instant: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return parse_instant(instant).astimezone().strftime(fmt)


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


# ── the list of pipelines ────────────────────────────────────────────────────


def _duration(summary: dict[str, Any]) -> str:
    created = parse_instant(summary["created_at"])
    if summary["state"] in FINAL_STATES:
        return span((parse_instant(summary["updated_at"]) - created).total_seconds())
    return span((datetime.now(UTC) - created).total_seconds()) + " so far"


def pipeline_table(items: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "job", "state", "owner", "created", "took", "run id"):
        table.add_column(column, no_wrap=True)
    for summary in items:
        table.add_row(
            summary["id"],
            summary["job"],
            state_text(summary["state"]),
            summary.get("owner") or "",
            local_time(summary["created_at"], "%Y-%m-%d %H:%M"),
            _duration(summary),
            "" if summary.get("run_id") is None else str(summary["run_id"]),
        )
    return table


def print_pipeline_page(console: Console, page: dict[str, Any]) -> None:
    items = page["items"]
    if items:
        console.print(pipeline_table(items))
    total = "more than 10,000" if page.get("total") is None else str(page["total"])
    console.print(f"{len(items)} shown of {total} matching")
    if page.get("next_cursor"):
        console.print(f"next page: --cursor {page['next_cursor']}  (or --all)")


def pipeline_line(summary: dict[str, Any]) -> str:
    run = "" if summary.get("run_id") is None else f"  run {summary['run_id']}"
    return f"{time.strftime('%H:%M:%S')}  {summary['id']}  {summary['job']}  {summary['state']}{run}"


class PipelineListView(Protocol):
    def show(self, change_id: str | None, summary: dict[str, Any]) -> None: ...


class PipelineListJsonLines:
    def show(self, change_id: str | None, summary: dict[str, Any]) -> None:
        print_json({"event": "pipeline", "id": change_id, "data": summary})


class PipelineListLines:
    def show(self, change_id: str | None, summary: dict[str, Any]) -> None:
        print(pipeline_line(summary), flush=True)


def _live(console: Console, render: Callable[[], RenderableType]) -> Live:
    """A display redrawn from ``render`` several times a second, in a thread, until stopped."""
    return Live(get_renderable=render, console=console, refresh_per_second=LIVE_REFRESH_PER_SECOND)


class _LiveView:
    _live: Live

    def __enter__(self) -> Self:
        self._live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._live.stop()


class LivePipelineList(_LiveView):
    """A table of the pipelines seen, newest first, each row replaced as its pipeline changes."""

    def __init__(self, console: Console, first_page: list[dict[str, Any]]) -> None:
        self._rows = {summary["id"]: summary for summary in first_page}
        self._live = _live(console, self._render)

    def _render(self) -> Table:
        rows = sorted(self._rows.values(), key=lambda s: (s["created_at"], s["id"]), reverse=True)
        return pipeline_table(rows)

    def show(self, change_id: str | None, summary: dict[str, Any]) -> None:
        self._rows[summary["id"]] = summary


# ── a pipeline's timeline ────────────────────────────────────────────────────


def _elapsed(event: dict[str, Any], start: str | None) -> str:
    if start is None:
        return ""
    return "+" + span((parse_instant(event["at"]) - parse_instant(start)).total_seconds())


def timeline_line(event: dict[str, Any], start: str | None) -> str:
    return f"{local_time(event['at'])}  {_elapsed(event, start):>9}  {event['kind']:<22}  {event['summary']}"


def run_link(events: list[dict[str, Any]]) -> str | None:
    """The run page of the latest run the timeline names."""
    links = [e["data"].get("run_page_url") for e in events if e["kind"] == "run_triggered"]
    return next((link for link in reversed(links) if link), None)


# ── the steps of a pipeline run by its code ──────────────────────────────────


def steps_worth_showing(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The status document's steps, or none when they would only repeat it (one job step: its fields are the
    pipeline's own, so a one-job pipeline reads as it always did)."""
    steps = doc.get("steps") or []
    if len(steps) == 1 and steps[0].get("kind") == "job":
        return []
    return steps


def _step_run(step: dict[str, Any]) -> str:
    run = step.get("run")
    if not run:
        return ""
    return run.get("run_page_url") or f"run {run['run_id']}"


def step_decision(step: dict[str, Any]) -> str:
    """What became of the step, in a few words: a gate's decision and comment, a job's error, an email's id."""
    if decision := step.get("decision"):
        said = f": {decision['comment']}" if decision.get("comment") else ""
        return f"{decision['action']} by {decision['by']}{said}"
    if step.get("state") == "awaiting_approval" and step.get("approval"):
        return f"asks: {step['approval']['message']}"
    if error := step.get("error"):
        return f"{error['type']}: {error['message']}"
    return step.get("message_id") or ""


def steps_table(steps: list[dict[str, Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False, title="steps", title_justify="left")
    for column in ("step", "kind", "name", "state", "run", "attempts", "decision"):
        table.add_column(column, no_wrap=column not in ("run", "decision"))
    for step in steps:
        run = _step_run(step)
        table.add_row(
            step["id"],
            step["kind"],
            step["name"],
            state_text(step["state"]),
            Text(run, style=f"link {run}") if run.startswith("http") else run,
            str(step.get("attempts") or "") if step["kind"] == "job" else "",
            step_decision(step),
        )
    return table


def step_line(step: dict[str, Any]) -> str:
    """One step on a plain line, for pipes and logs."""
    parts = [f"  step {step['id']} {step['kind']} {step['name']}: {step['state']}"]
    if run := _step_run(step):
        parts.append(run)
    if step["kind"] == "job" and step.get("attempts", 0) > 1:
        parts.append(f"{step['attempts']} attempts")
    if decision := step_decision(step):
        parts.append(decision)
    return " | ".join(parts)


def print_steps(console: Console, doc: dict[str, Any]) -> None:
    """The pipeline's steps as a table on a terminal, a line each elsewhere; nothing for a one-job pipeline."""
    steps = steps_worth_showing(doc)
    if not steps:
        return
    if console.is_terminal:
        console.print(steps_table(steps))
    else:
        for step in steps:
            console.print(step_line(step), markup=False)


def waits_for_a_person(pipeline_id: str, state: str) -> str | None:
    """What to run next when the pipeline waits for a person; None when it does not."""
    if state == "awaiting_repair":
        return (
            f"`pipelines repair {pipeline_id}` [--param NAME=VALUE] [--step STEP] "
            f"or `pipelines abandon {pipeline_id}` [--step STEP]"
        )
    if state == "awaiting_approval":
        return (
            f"`pipelines approve {pipeline_id}` [--gate GATE] [--comment TEXT] "
            f"or `pipelines reject {pipeline_id}` [--gate GATE] [--comment TEXT]"
        )
    return None


def end_line(pipeline_id: str, state: str, events: list[dict[str, Any]]) -> str:
    parts = [f"{pipeline_id}: {state}"]
    if events:
        parts.append("took " + _elapsed(events[-1], events[0]["at"]).lstrip("+"))
    if link := run_link(events):
        parts.append(f"run {link}")
    if next_step := waits_for_a_person(pipeline_id, state):
        parts.append(next_step)
    return " | ".join(parts)


class TimelineView(Protocol):
    """Where a followed timeline goes, event by event, until it ends (or stops for a repair)."""

    def begin(self, state: str) -> None:
        """The state the timeline document gave, once its events so far are shown."""

    def show(self, event: dict[str, Any]) -> None: ...

    def end(self, state: str) -> None: ...


class TimelineJsonLines:
    """One JSON object per event, in the stream's own shape: ``{"event", "id", "data"}``."""

    def __init__(self, pipeline_id: str) -> None:
        self._pipeline_id = pipeline_id

    def begin(self, state: str) -> None:
        pass

    def show(self, event: dict[str, Any]) -> None:
        print_json({"event": "timeline", "id": str(event["seq"]), "data": event})

    def end(self, state: str) -> None:
        print_json({"event": "end", "id": None, "data": {"pipeline_id": self._pipeline_id, "state": state}})


class TimelineLines:
    """One plain line per event, then one for the end: for pipes, logs and `pipelines events`."""

    def __init__(self, pipeline_id: str) -> None:
        self._pipeline_id = pipeline_id
        self._events: list[dict[str, Any]] = []

    def begin(self, state: str) -> None:
        pass

    def show(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        print(timeline_line(event, self._events[0]["at"]), flush=True)

    def end(self, state: str) -> None:
        print(end_line(self._pipeline_id, state, self._events), flush=True)


class LiveTimeline(_LiveView):
    """The timeline redrawn in place under a headline: state, elapsed time (ticking), run link."""

    def __init__(self, console: Console, pipeline_id: str) -> None:
        self._pipeline_id = pipeline_id
        self._state = "starting"
        self._events: list[dict[str, Any]] = []
        self._ended_at: datetime | None = None
        self._live = _live(console, self._render)

    def _headline(self) -> Text:
        headline = Text(self._pipeline_id, style="bold")
        started = next((e for e in self._events if e["kind"] == "started"), None)
        if started and started["data"].get("job"):
            headline.append(f"  {started['data']['job']}")
        headline.append("  ").append_text(state_text(self._state))
        if self._events:
            until = self._ended_at or datetime.now(UTC)
            headline.append(f"  {span((until - parse_instant(self._events[0]['at'])).total_seconds())}")
        if link := run_link(self._events):
            headline.append(f"\nrun {link}", style=f"link {link}")
        return headline

    def _render(self) -> Group:
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("time", "elapsed", "kind", "summary"):
            table.add_column(column, no_wrap=column != "summary")
        start = self._events[0]["at"] if self._events else None
        for event in self._events:
            table.add_row(local_time(event["at"], "%H:%M:%S"), _elapsed(event, start), event["kind"], event["summary"])
        return Group(self._headline(), table)

    def begin(self, state: str) -> None:
        self._state = state

    def show(self, event: dict[str, Any]) -> None:
        self._events.append(event)
        if event["kind"] == "finished":
            self._state = event["data"].get("state") or self._state
        else:
            self._state = STATE_AFTER_EVENT.get(event["kind"], self._state)

    def end(self, state: str) -> None:
        self._state = state
        self._ended_at = parse_instant(self._events[-1]["at"]) if self._events else datetime.now(UTC)
        self._live.refresh()
        if state in ("awaiting_repair", "awaiting_approval"):
            self._live.console.print(end_line(self._pipeline_id, state, self._events))

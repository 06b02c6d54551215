"""What the pages show, worked out from the gateway's documents: a timeline's phases, its chart, a result's tables.

Pure functions of :class:`PipelineEvent` lists and result dicts, so the
pages' templates only lay out what is decided here, and tests can check
the decisions without a browser. A pipeline's steps are :mod:`.steps`'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from markupsafe import Markup

from ..schemas import PipelineEvent

#: Events after which the run has an outcome (or will have none): a running phase ends.
OUTCOME_KINDS = frozenset(
    {"callback_received", "outcome_read_from_run", "timed_out", "cancel_requested", "trigger_failed"}
)
#: Events that end a wait for a person.
DECISION_KINDS = frozenset({"repair_requested", "abandoned", "repair_window_expired"})
#: Events that end the outcome's email.
EMAIL_KINDS = frozenset({"email_delivered", "email_refused"})

#: The chart's rows, in CSS pixels: each phase's name and duration on a line, its bar below.
#: Horizontal places are percentages of the chart's width, so the drawing fits any screen
#: while its text keeps the page's size (a scaled drawing shrank it to 5 px on a phone).
ROW_HEIGHT = 42
LABEL_LINE = 16
BAR_HEIGHT = 14
AXIS_HEIGHT = 26
#: The time axis's ticks, start, middle and end, and how each label is anchored to stay inside the chart.
TICK_ANCHORS = ("start", "middle", "end")


@dataclass(frozen=True)
class Phase:
    name: str
    start: datetime
    end: datetime
    #: Still going: its end is "now".
    open: bool = False
    #: A step's state, when the phase is a step's (its bar is coloured by it).
    state: str = ""

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0)

    @property
    def label(self) -> str:
        """What its bar says in words, for the chart's text alternative."""
        took = f"{duration(self.seconds)}{' so far' if self.open else ''}"
        if self.state:
            return f"Step {self.name}, {self.state.replace('_', ' ')}: {took}"
        return f"{self.name}: {took}"

    @property
    def css_class(self) -> str:
        """Its bar's classes: a phase's by its name, a step's by its state."""
        if self.state:
            return f"step-bar step-{self.state}"
        return f"phase phase-{self.name.replace(' ', '-')}"


def phases(events: list[PipelineEvent], *, final: bool, now: datetime) -> list[Phase]:
    """The pipeline's phases, in order: queued, running, awaiting repair, repairing, emailing.

    queued: started → run_triggered; running: run_triggered → the run's
    outcome (callback, watchdog, time-out, cancel); awaiting repair: until a
    decision or the window's end; repairing: repaired → the repaired run's
    outcome; emailing: the final outcome → the email's receipt. A phase not
    ended yet runs to ``now`` while the pipeline is not final, and to the last
    event once it is.
    """
    done: list[Phase] = []
    current: tuple[str, datetime] | None = None
    #: When the outcome the owner is emailed about became known, until its email is sent.
    outcome_at: datetime | None = None

    def close(at: datetime) -> None:
        nonlocal current
        if current is not None:
            done.append(Phase(current[0], current[1], at))
            current = None

    for event in events:
        kind, at = event.kind, event.at
        if kind == "started":
            close(at)
            current = ("queued", at)
        elif kind == "run_triggered":
            if current is None or current[0] == "queued":
                close(at)
                current = ("running", at)
        elif kind == "repaired":
            close(at)
            current, outcome_at = ("repairing", at), None
        elif kind in OUTCOME_KINDS:
            if current is not None and current[0] in ("queued", "running", "repairing"):
                close(at)
            outcome_at = outcome_at or at
        elif kind == "awaiting_repair":
            close(at)
            current, outcome_at = ("awaiting repair", at), None
        elif kind in DECISION_KINDS:
            if current is not None and current[0] == "awaiting repair":
                close(at)
            outcome_at = None if kind == "repair_requested" else at
        elif kind in EMAIL_KINDS and event.data.get("kind") != "awaiting_repair":
            if outcome_at is not None:
                done.append(Phase("emailing", outcome_at, at))
            outcome_at = None
    end, still = (events[-1].at, False) if final and events else (now, True)
    if current is not None:
        done.append(Phase(current[0], current[1], max(end, current[1]), open=still))
    elif outcome_at is not None and not final:
        done.append(Phase("emailing", outcome_at, max(end, outcome_at), open=True))
    return done


@dataclass(frozen=True)
class Bar:
    phase: Phase
    #: Top of its row, in pixels.
    y: int
    #: Where it starts and how wide it is, in percent of the chart's width.
    x: float
    width: float

    @property
    def label_at(self) -> tuple[float, str]:
        """Where its name and duration go, above it: (x in percent, text-anchor). From its start in the
        left half, up to its end in the right half, so the text stays inside the chart."""
        if self.x <= 50:
            return self.x, "start"
        return round(self.x + self.width, 2), "end"


@dataclass(frozen=True)
class Tick:
    #: In percent of the chart's width.
    x: float
    text: str
    anchor: str


@dataclass(frozen=True)
class Chart:
    """A time chart of the phases: one row each, bars placed on one time axis."""

    bars: list[Bar]
    height: int
    total: str
    ticks: list[Tick] = field(default_factory=list)


def chart(drawn: list[Phase]) -> Chart | None:
    """The chart of ``drawn``, or None when there is nothing to draw."""
    if not drawn:
        return None
    start = min(p.start for p in drawn)
    span = max((max(p.end for p in drawn) - start).total_seconds(), 0.001)
    bars = []
    for row, phase in enumerate(drawn):
        x = 100 * (phase.start - start).total_seconds() / span
        # At least a sliver, so an instant phase is still seen.
        width = max(100 * phase.seconds / span, 0.4)
        bars.append(Bar(phase, y=row * ROW_HEIGHT, x=round(min(x, 99.6), 2), width=round(min(width, 100 - x), 2)))
    # Three ticks: their labels fit side by side on a phone.
    ticks = [Tick(50.0 * part, duration(span * part / 2), anchor) for part, anchor in enumerate(TICK_ANCHORS)]
    return Chart(bars, len(drawn) * ROW_HEIGHT + AXIS_HEIGHT, duration(span), ticks)


def duration(seconds: float) -> str:
    """``0.35`` → "350 ms", ``4.2`` → "4.2 s", ``185`` → "3 min 5 s", ``7380`` → "2 h 3 min"."""
    if seconds < 1:
        return f"{round(seconds * 1000)} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


# ── results ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Table:
    """A list of records as a table: one row per record, one column per key."""

    name: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass(frozen=True)
class ResultView:
    #: Scalar fields and small nested values, as key/value rows.
    fields: list[tuple[str, Any]]
    #: Lists of records (csv-statistics' ``columns``), as tables.
    tables: list[Table]


def result_view(result: dict[str, Any]) -> ResultView:
    """A result laid out for a person: its lists of records as tables, everything else as key/value rows."""
    fields: list[tuple[str, Any]] = []
    tables: list[Table] = []
    for key, value in result.items():
        if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            headers: list[str] = []
            for item in value:
                headers.extend(name for name in item if name not in headers)
            tables.append(Table(key, headers, [[item.get(name) for name in headers] for item in value]))
        else:
            fields.append((key, value))
    return ResultView(fields, tables)


def cell(value: Any) -> str:
    """One value as a table cell shows it: numbers rounded for reading, nothing hidden."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return ", ".join(cell(item) for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {cell(v)}" for k, v in value.items())
    return str(value)


#: Where a long path, address or identifier may wrap on a narrow screen: after these, never inside a word.
WRAP_AFTER = re.compile(r"(?<=[/_.@?&=])")


def wrappable(value: Any) -> Markup:
    """``cell(value)``, escaped, with a line-break opportunity (``<wbr>``) after each / _ . @ ? & =."""
    return Markup("<wbr>").join(WRAP_AFTER.split(cell(value)))

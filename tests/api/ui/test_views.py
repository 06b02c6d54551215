"""What the pages show, drawn from the gateway's documents (ui/views.py).

Wrapping long values, a result's tables, a pipeline's phases and their chart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline_api.schemas import PipelineEvent
from pipeline_api.ui.views import Phase, chart, phases, result_view, wrappable
from tests.support.ui_gateway import (
    CSV_RESULT,
)


def test_a_long_value_may_wrap_after_its_separators_and_stays_escaped() -> None:
    assert str(wrappable("<a.b@c/d&e>")) == "&lt;a.<wbr>b@<wbr>c/<wbr>d&amp;<wbr>e&gt;"


def test_result_view_lays_out_records_as_tables_and_the_rest_as_fields() -> None:
    view = result_view(CSV_RESULT)
    assert [name for name, _ in view.fields] == ["source", "row_count", "column_count"]
    [columns] = view.tables
    assert columns.headers[:2] == ["name", "type"] and columns.rows[0][0] == "city"


def test_the_chart_draws_each_phase_on_one_time_axis_with_its_duration_above_it() -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    drawn = [
        Phase("queued", t0, t0 + timedelta(milliseconds=130)),
        Phase("running", t0 + timedelta(milliseconds=130), t0 + timedelta(seconds=1.75)),
        Phase("emailing", t0 + timedelta(seconds=1.75), t0 + timedelta(seconds=2)),
    ]
    drawing = chart(drawn)
    assert drawing is not None
    queued, running, emailing = drawing.bars
    # Places in percent of the chart's width: it fits any screen, and its text keeps the page's size.
    assert queued.x == 0 and emailing.x + emailing.width == pytest.approx(100, abs=0.01)
    assert queued.x + queued.width == pytest.approx(running.x, abs=0.02)
    assert running.width > 5 * emailing.width
    # Each label above its bar: from its start in the left half, up to its end in the right half.
    assert running.label_at == (running.x, "start")
    assert emailing.label_at == (pytest.approx(100, abs=0.01), "end")
    assert [(tick.x, tick.anchor) for tick in drawing.ticks] == [(0, "start"), (50, "middle"), (100, "end")]
    assert drawing.ticks[-1].text == "2.0 s"


def test_a_repaired_pipelines_phases_are_read_off_its_timeline() -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    kinds = [
        "started", "run_triggered", "callback_received", "awaiting_repair", "email_delivered",
        "repair_requested", "repaired", "callback_received", "email_delivered", "finished",
    ]  # fmt: skip
    events = [
        PipelineEvent(seq=n, at=t0 + timedelta(seconds=10 * n), kind=kind, summary=kind) for n, kind in enumerate(kinds)
    ]
    drawn = phases(events, final=True, now=t0 + timedelta(hours=1))
    assert [(p.name, p.seconds) for p in drawn] == [
        ("queued", 10),
        ("running", 10),
        ("awaiting repair", 20),
        ("repairing", 10),
        ("emailing", 10),
    ]
    still = phases(events[:4], final=False, now=t0 + timedelta(seconds=95))
    assert (still[-1].name, still[-1].open, still[-1].seconds) == ("awaiting repair", True, 65)

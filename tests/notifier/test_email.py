"""The composed email: what the user reads for each final state, and its headers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline_notifier.blocks import (
    MAX_ERROR_CHARS,
    MAX_PARAMETER_CHARS,
    MAX_PARAMETERS,
    MAX_RESULT_ENTRIES,
    MAX_VALUE_CHARS,
)
from pipeline_notifier.email import PARAMETERS_NOTE, NotFinalStateError, compose_email
from pipeline_shared.ids import email_message_id
from pipeline_shared.models import DatabricksRun, Notification, PipelineState, RunError
from tests.support.notifier_emails import DOMAIN, RUN, SENDER, bodies, compose, notification


def test_headers_identify_the_pipeline_and_its_outcome() -> None:
    n = notification(PipelineState.SUCCEEDED, result={"rows": 1})
    when = datetime(2026, 11, 26, 18, 0, tzinfo=UTC)
    message = compose(n, now=when)

    assert message["Subject"] == f"Pipeline {n.pipeline_id} succeeded"
    assert message["From"] == SENDER
    assert message["To"] == "analyst@example.com"
    assert message["Date"] == "Thu, 26 Nov 2026 18:00:00 +0000"
    assert message["Message-ID"] == email_message_id(n.pipeline_id, "succeeded", DOMAIN)
    assert message["X-Pipeline-Id"] == n.pipeline_id
    assert message["X-Pipeline-State"] == "succeeded"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


def test_same_outcome_composes_the_same_message_id_and_another_state_does_not() -> None:
    n = notification(PipelineState.FAILED)
    again = compose(n)["Message-ID"]
    assert compose(n)["Message-ID"] == again
    other = compose(n.model_copy(update={"state": PipelineState.CANCELLED}))["Message-ID"]
    assert other != again


@pytest.mark.parametrize(
    ("state", "subject_end"),
    [
        (PipelineState.SUCCEEDED, "succeeded"),
        (PipelineState.FAILED, "failed"),
        (PipelineState.TIMED_OUT, "timed out"),
        (PipelineState.CANCELLED, "was cancelled"),
    ],
)
def test_every_final_state_names_itself_and_links_the_run(state: PipelineState, subject_end: str) -> None:
    n = notification(state)
    message = compose(n)
    text, html = bodies(message)
    assert message["Subject"].endswith(subject_end)
    assert f"Databricks run 4242: {RUN.run_page_url}" in text
    assert f'<a href="{RUN.run_page_url}">Databricks run 4242</a>' in html
    assert '  | region = "eu-west"' in text
    assert "<code>region</code></td><td" in html


def test_success_summarises_the_result_readably() -> None:
    result = {
        "rows_written": 1234567,
        "duration_seconds": 12.345678,
        "ok": True,
        "tables": {"orders": {"rows": 1000, "bytes": 2048.5}},
        "partitions": ["2026-11-24", "2026-11-25"],
        "note": None,
    }
    text, html = bodies(compose(notification(PipelineState.SUCCEEDED, result=result)))
    assert "finished successfully" in text
    for line in (
        "  rows_written: 1,234,567",
        "  duration_seconds: 12.3457",
        "  ok: true",
        "  tables.orders.rows: 1,000",
        "  tables.orders.bytes: 2,048.50",
        "  partitions: [2026-11-24, 2026-11-25]",
        "  note: null",
    ):
        assert line in text
    assert "<code>tables.orders.rows</code>" in html


def test_a_huge_result_is_cut_to_a_bounded_summary() -> None:
    result: dict[str, Any] = {f"metric_{i:04d}": i for i in range(5000)}
    result["blob"] = "x" * 100_000
    result["many"] = list(range(500))
    message = compose(notification(PipelineState.SUCCEEDED, result=result))
    text, _ = bodies(message)
    assert f"and {5002 - MAX_RESULT_ENTRIES:,} more values not shown" in text
    assert "metric_4999" not in text
    assert len(bytes(message)) < 30_000


def test_deep_and_long_values_are_bounded() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for level in range(10):
        deep = {f"l{level}": deep}
    result = {"deep": deep, "text": "y" * 1000, "rows": [{"a": 1}, {"b": 2}]}
    text, _ = bodies(compose(notification(PipelineState.SUCCEEDED, result=result)))
    assert '"leaf": 1' in text  # below the depth limit, shown as JSON
    assert "y" * MAX_VALUE_CHARS + "… (900 more characters)" in text and "y" * (MAX_VALUE_CHARS + 1) not in text
    assert "  rows[0]: a 1" in text and "  rows[1]: b 2" in text


def test_a_table_of_records_reads_one_line_per_record() -> None:
    columns = [
        {"name": "city", "type": "text", "distinct": 6},
        {"name": "population", "type": "numeric", "mean": 348536.3333},
    ]
    text, html = bodies(compose(notification(PipelineState.SUCCEEDED, result={"columns": columns})))
    assert "  columns[city]: type text, distinct 6" in text
    assert "  columns[population]: type numeric, mean 348,536.33" in text
    assert "columns[population]" in html


@pytest.mark.parametrize(
    ("result", "says"),
    [(None, "The notebook reported no result."), ({}, "The notebook reported an empty result.")],
)
def test_success_without_statistics_says_so(result: dict | None, says: str) -> None:
    text, _ = bodies(compose(notification(PipelineState.SUCCEEDED, result=result)))
    assert says in text


def test_failure_shows_databricks_error_type_and_message() -> None:
    error = RunError(
        type="Py4JJavaError",
        message="Traceback (most recent call last):\n  File 'x'\nValueError: bad <input> & more",
    )
    text, html = bodies(compose(notification(PipelineState.FAILED, error=error)))
    assert "What went wrong" in text
    assert "Py4JJavaError" in text
    assert "  ValueError: bad <input> & more" in text
    assert "ValueError: bad &lt;input&gt; &amp; more" in html
    assert "<input>" not in html


def test_failure_message_is_cut_when_long() -> None:
    error = RunError(type="SparkException", message="e" * 19_000)
    text, _ = bodies(compose(notification(PipelineState.FAILED, error=error)))
    assert "e" * MAX_ERROR_CHARS in text
    assert f"… ({19_000 - MAX_ERROR_CHARS:,} more characters) not shown" in text


def test_failure_before_any_run_reads_sensibly() -> None:
    error = RunError(type="RESOURCE_DOES_NOT_EXIST", message="Job 7 does not exist.")
    text, html = bodies(compose(notification(PipelineState.FAILED, run=None, error=error)))
    assert "its Databricks job could not start" in text
    assert "Databricks run" not in text
    assert "Job 7 does not exist." in text and "Job 7 does not exist." in html


def test_failure_without_an_error_says_databricks_gave_no_reason() -> None:
    text, _ = bodies(compose(notification(PipelineState.FAILED, error=None)))
    assert "Databricks did not say why." in text


def test_timeout_says_how_long_it_waited() -> None:
    text, html = bodies(compose(notification(PipelineState.TIMED_OUT, waited_seconds=9000)))
    assert "stopped waiting for Databricks after waiting 2 h 30 min" in text
    assert "2 h 30 min" in html
    text, _ = bodies(compose(notification(PipelineState.TIMED_OUT, waited_seconds=None)))
    assert "at its time limit" in text


def test_cancelled_before_and_after_the_run_started() -> None:
    text, _ = bodies(compose(notification(PipelineState.CANCELLED, run=None)))
    assert "was cancelled before a Databricks run started" in text
    text, _ = bodies(compose(notification(PipelineState.CANCELLED)))
    assert "was cancelled." in text and "Databricks run 4242" in text


def test_run_without_a_link_or_with_an_unsafe_one_is_not_linked() -> None:
    for url in (None, "javascript:alert(1)", "https://ok.example/\r\nX: y"):
        run = DatabricksRun(run_id=7, run_page_url=url)
        text, html = bodies(compose(notification(PipelineState.CANCELLED, run=run)))
        assert "Databricks run 7 (Databricks gave no link to it)." in text
        assert "<a " not in html


@pytest.mark.parametrize("state", [PipelineState.STARTING, PipelineState.WAITING, PipelineState.NOTIFYING])
def test_only_final_states_are_emailed(state: PipelineState) -> None:
    with pytest.raises(NotFinalStateError, match=state.value):
        compose(notification(state))


def test_user_text_cannot_add_headers_or_lines() -> None:
    hostile = "eu\r\nBcc: victim@example.com\r\nResult: success\u202e"
    n = notification(
        PipelineState.SUCCEEDED,
        parameters={"region": hostile, "<b>key</b>": "<script>alert(1)</script>"},
        result={"status\nfake": "ok"},
    )
    message = compose(n)
    raw = bytes(message)
    assert b"\nBcc:" not in raw
    text, html = bodies(message)
    assert '  | region = "eu \\nBcc: victim@example.com \\nResult: success "\r\n' in text
    assert "\nResult: success" not in text
    assert "\u202e" not in text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;key&lt;/b&gt;" in html


def test_parameters_are_quoted_labelled_data_not_words_of_ours() -> None:
    phishing = "Click http://evil.example/login to verify your account"
    n = notification(PipelineState.SUCCEEDED, parameters={"note": phishing, "quote": 'a" and "b\\'})
    text, html = bodies(compose(n))

    parameters = text[text.index("Parameters") :]
    assert parameters.startswith(f"Parameters\r\n{PARAMETERS_NOTE}\r\n\r\n")
    assert '  | note = "Click http[:]//evil.example/login to verify your account"\r\n' in parameters
    assert '  | quote = "a\\" and \\"b\\\\"\r\n' in parameters  # the value cannot close its quotes
    assert "http://evil" not in text and "http://evil" not in html
    assert (
        "<blockquote" in html
        and "<code>&quot;Click http[:]//evil.example/login to verify your account&quot;</code>" in html
    )


def test_a_link_in_a_result_or_an_error_is_not_one_either() -> None:
    columns = [{"name": "Visit https://evil.example now", "type": "text"}]
    error = RunError(type="ValueError", message="cannot read https://evil.example/data.csv: 404")
    succeeded, _ = bodies(compose(notification(PipelineState.SUCCEEDED, result={"columns": columns})))
    failed, html = bodies(compose(notification(PipelineState.FAILED, error=error)))

    assert "columns[Visit https[:]//evil.example now]: type text" in succeeded
    assert "  cannot read https[:]//evil.example/data.csv: 404" in failed
    assert "What went wrong, as Databricks reported it" in failed
    assert "https://evil" not in succeeded + failed + html


def test_a_callers_text_is_bounded_saying_how_much_is_left_out() -> None:
    # Once: 30 parameters of up to 200 characters each, 6,000 characters of a stranger's text.
    parameters = {f"p{i:02d}": "y" * 6000 for i in range(30)}
    text, html = bodies(compose(notification(PipelineState.SUCCEEDED, parameters=parameters)))

    shown = [line for line in text.splitlines() if line.startswith("  | ")]
    assert len(shown) == MAX_PARAMETERS
    assert shown[0] == f'  | p00 = "{"y" * MAX_PARAMETER_CHARS}…" ({6000 - MAX_PARAMETER_CHARS:,} more characters)'
    assert f"… and {30 - MAX_PARAMETERS} more parameters not shown." in text
    for body in (text, html):
        assert body.count("y" * MAX_PARAMETER_CHARS) == MAX_PARAMETERS
        assert "y" * (MAX_PARAMETER_CHARS + 1) not in body


def test_an_unvalidated_pipeline_id_cannot_break_the_headers() -> None:
    n = Notification.model_construct(
        pipeline_id="evil\r\nBcc: victim@example.com",
        email="analyst@example.com",
        state=PipelineState.FAILED,
        parameters={},
        run=None,
        error=None,
    )
    message = compose(n)
    raw = bytes(message)
    assert b"\nBcc:" not in raw
    assert message["Subject"] == "Pipeline evil Bcc: victim@example.com failed"


@pytest.mark.parametrize(
    ("sender", "domain"),
    [("not an address", DOMAIN), (SENDER, "bad domain"), (SENDER, "x>\r\nBcc: y")],
)
def test_bad_sender_or_domain_is_refused(sender: str, domain: str) -> None:
    with pytest.raises(ValueError):
        compose_email(notification(PipelineState.FAILED), sender=sender, message_id_domain=domain)

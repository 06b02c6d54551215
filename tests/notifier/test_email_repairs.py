"""The emails of a pipeline that is repaired: the waits for repair, the outcome, and their one conversation."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest

from pipeline_notifier.email import MAX_REFERENCES, NotFinalStateError
from pipeline_shared.ids import email_message_id
from pipeline_shared.models import Attempt, Notification, PipelineState, RunError, RunReport, TaskOutcome
from tests.support.notifier_emails import DOMAIN, compose, notification
from tests.support.notifier_emails import bodies as crlf_bodies

#: 2026-12-03 18:00 UTC, and the hours after it.
T0 = 1_796_320_800_000
HOUR = 3_600_000

FIRST_FAILURE = RunError(type="SparkException", message="Job aborted: task count failed\n  at line 3")
SECOND_FAILURE = RunError(type="ValueError", message="report: column <total> missing")
ORIGINAL = Attempt(number=0, started_at=T0, reason="the original run", outcome="failure", error=FIRST_FAILURE)
REPAIR_1 = Attempt(
    number=1,
    repair_id=501,
    started_at=T0 + HOUR,
    reason="fixed the input path",
    by="alice",
    rerun_tasks=["count", "report"],
    parameters={"text": "to be"},
    outcome="failure",
    error=SECOND_FAILURE,
)
REPAIR_2 = Attempt(
    number=2,
    repair_id=502,
    started_at=T0 + 2 * HOUR,
    reason="retry",
    by="automatic",
    rerun_tasks=["report"],
    outcome="success",
)
REPORT = RunReport(
    life_cycle_state="TERMINATED",
    result_state="FAILED",
    tasks=[
        TaskOutcome(task_key="count", life_cycle_state="TERMINATED", result_state="SUCCESS"),
        TaskOutcome(
            task_key="report",
            life_cycle_state="TERMINATED",
            result_state="FAILED",
            state_message="ValueError: column missing",
        ),
    ],
)
DEADLINE = T0 + 26 * HOUR  # 2026-12-04 20:00 UTC


def awaiting(**fields: Any) -> Notification:
    values: dict[str, Any] = {
        "kind": "awaiting_repair",
        "job": "word-frequencies",
        "job_title": "Word frequencies",
        "attempts": [ORIGINAL],
        "error": FIRST_FAILURE,
        "report": REPORT,
        "repair_deadline": DEADLINE,
    }
    values.update(fields)
    return notification(PipelineState.AWAITING_REPAIR, **values)


def outcome(state: PipelineState, **fields: Any) -> Notification:
    values: dict[str, Any] = {"job": "word-frequencies", "job_title": "Word frequencies"}
    values.update(fields)
    return notification(state, **values)


def bodies(message: EmailMessage) -> tuple[str, str]:
    """The text and HTML parts as a client shows them, the text's lines ended by newlines."""
    text, html = crlf_bodies(message)
    return text.replace("\r\n", "\n"), html


def header_ids(raw: bytes, name: str) -> list[str] | None:
    """A threading header's ids as a receiving client reads them (unfolded), or None when absent."""
    value = email.message_from_bytes(raw, policy=email.policy.default)[name]
    return None if value is None else str(value).split()


# -- Waiting for repair ----------------------------------------------------------------


def test_a_failed_run_awaiting_repair_says_what_failed_and_how_to_repair_it() -> None:
    n = awaiting()
    message = compose(n)
    text, html = bodies(message)
    pid = n.pipeline_id

    assert message["Subject"] == f"Pipeline {pid} (Word frequencies) awaiting repair"
    assert message["X-Pipeline-State"] == "awaiting_repair"
    assert text.startswith(f"Pipeline {pid} failed and awaits repair until 2026-12-04 20:00 UTC.\n")
    # What failed: Databricks' message, the run, each task.
    assert "What went wrong, as Databricks reported it\nSparkException" in text
    assert "  Job aborted: task count failed\n    at line 3" in text
    assert "Databricks run 4242: https://dbc.example.com/jobs/7/runs/4242" in text
    assert "  count: SUCCESS\n  report: FAILED: ValueError: column missing" in text
    # How to repair it, by HTTP and by the CLI, and until when.
    for line in (
        f"  POST /pipelines/{pid}/repair",
        '      optional body: {"parameters": {"NAME": "VALUE"}}',
        f"  pipelines repair {pid} [--param NAME=VALUE]",
        f"  POST /pipelines/{pid}/abandon",
        f"  pipelines abandon {pid}",
        "If it is neither repaired nor abandoned by 2026-12-04 20:00 UTC, the pipeline fails.",
    ):
        assert line in text
    assert text.index("Tasks") < text.index("How to repair it") < text.index("Job: ")
    assert f"pipelines repair {pid} [--param NAME=VALUE]" in html
    assert "{&quot;parameters&quot;: {&quot;NAME&quot;: &quot;VALUE&quot;}}" in html
    # One attempt is no history.
    assert "Attempts" not in text


def test_a_failed_repair_awaiting_another_lists_the_attempts() -> None:
    n = awaiting(attempts=[ORIGINAL, REPAIR_1], error=SECOND_FAILURE)
    text, html = bodies(compose(n))

    assert text.startswith(f"Pipeline {n.pipeline_id} failed again after 1 repair and awaits repair until ")
    assert "report: column <total> missing" in text
    assert "Attempts\n  Attempt   Started               By     Reason" in text
    rows = [line.split("  ") for line in text.splitlines() if line.startswith(("  original", "  repair 1"))]
    assert [[cell.strip() for cell in row if cell.strip()] for row in rows] == [
        ["original", "2026-12-03 18:00 UTC", "-", "the original run", "all tasks", "failure: SparkException", "-"],
        [
            "repair 1",
            "2026-12-03 19:00 UTC",
            "alice",
            "fixed the input path",
            "count, report",
            "failure: ValueError",
            'text = "to be"',
        ],
    ]
    assert '<th style="padding:2px 12px 2px 0;vertical-align:top" align="left">Reran</th>' in html
    assert '<td style="padding:2px 12px 2px 0;vertical-align:top">count, report</td>' in html


def test_awaiting_repair_without_a_deadline_still_says_the_window_ends() -> None:
    text, _ = bodies(compose(awaiting(repair_deadline=None)))
    assert "awaits repair.\n" in text
    assert "If it is neither repaired nor abandoned before its repair window ends, the pipeline fails." in text


# -- How a repaired pipeline ends --------------------------------------------------------


def test_success_after_repairs_says_how_many_and_lists_the_attempts() -> None:
    n = outcome(PipelineState.SUCCEEDED, attempts=[ORIGINAL, REPAIR_1, REPAIR_2], result={"words": 6})
    message = compose(n)
    text, html = bodies(message)

    assert message["Subject"] == f"Pipeline {n.pipeline_id} (Word frequencies) succeeded"
    assert text.startswith(f"Pipeline {n.pipeline_id} finished successfully after 2 repairs.\n")
    assert "  words: 6" in text
    assert "repair 2  2026-12-03 20:00 UTC  automatic  retry" in text
    assert "report         success" in text
    assert "How to repair it" not in text
    assert '<td style="padding:2px 12px 2px 0;vertical-align:top">automatic</td>' in html


def test_one_repair_is_singular() -> None:
    text, _ = bodies(compose(outcome(PipelineState.SUCCEEDED, attempts=[ORIGINAL, REPAIR_1])))
    assert "finished successfully after 1 repair.\n" in text


def test_an_abandoned_pipeline_says_who_gave_up_and_what_had_failed() -> None:
    n = outcome(
        PipelineState.FAILED,
        attempts=[ORIGINAL, REPAIR_1],
        # As the worker writes it (pipeline_worker.workflows._not_repaired).
        error=RunError(type="Abandoned", message="abandoned by bob; the run stays failed: ValueError: column missing"),
    )
    message = compose(n)
    text, _ = bodies(message)

    assert message["Subject"] == f"Pipeline {n.pipeline_id} (Word frequencies) failed"
    assert text.startswith(f"Pipeline {n.pipeline_id} failed: it was abandoned by bob instead of repaired.\n")
    assert "What the last attempt failed with\nValueError\n\n  report: column <total> missing" in text
    assert "Attempts" in text


def test_a_pipeline_nobody_repaired_in_time_says_its_window_ended() -> None:
    n = outcome(
        PipelineState.FAILED,
        attempts=[ORIGINAL],
        error=RunError(type="RepairWindowExpired", message="the repair window ended at 2026-12-04T20:00Z"),
    )
    text, _ = bodies(compose(n))
    assert text.startswith(
        f"Pipeline {n.pipeline_id} failed: nobody repaired or abandoned it before its repair window ended.\n"
    )
    assert "What the last attempt failed with\nSparkException" in text
    assert "Attempts" not in text  # the original run alone


def test_other_outcomes_after_repairs_keep_their_text_and_add_the_history() -> None:
    failed = outcome(PipelineState.FAILED, attempts=[ORIGINAL, REPAIR_1, REPAIR_2], error=SECOND_FAILURE)
    text, _ = bodies(compose(failed))
    assert text.startswith(f"Pipeline {failed.pipeline_id} failed after 2 repairs.\n")
    assert "What went wrong, as Databricks reported it\nValueError" in text
    for state, says in ((PipelineState.CANCELLED, "was cancelled."), (PipelineState.TIMED_OUT, "timed out")):
        text, _ = bodies(compose(outcome(state, attempts=[ORIGINAL, REPAIR_1])))
        assert says in text.splitlines()[0] and "Attempts" in text


def test_a_pipeline_never_repaired_reads_as_before_but_for_the_jobs_title_in_the_subject() -> None:
    n = outcome(PipelineState.SUCCEEDED, attempts=[ORIGINAL.model_copy(update={"outcome": "success"})])
    message = compose(n)
    text, _ = bodies(message)
    assert message["Subject"] == f"Pipeline {n.pipeline_id} (Word frequencies) succeeded"
    assert text.startswith(f"Pipeline {n.pipeline_id} finished successfully.\n")
    assert "Attempts" not in text
    assert message["In-Reply-To"] is None and message["References"] is None
    # Without a title, the job's name; without a job, the pipeline alone.
    assert compose(outcome(PipelineState.FAILED, job_title=None))["Subject"].endswith("(word-frequencies) failed")


# -- One conversation ------------------------------------------------------------------------


def thread_of_three(pipeline_id: str) -> list[Notification]:
    """Waits after attempt 0 and 1, then success after 2 repairs, each naming the emails before it."""
    common: dict[str, Any] = {"pipeline_id": pipeline_id}
    first = awaiting(**common)
    first_id = email_message_id(pipeline_id, "awaiting_repair", DOMAIN, kind="awaiting_repair", attempt=0)
    second = awaiting(**common, attempts=[ORIGINAL, REPAIR_1], error=SECOND_FAILURE, thread=[first_id])
    second_id = email_message_id(pipeline_id, "awaiting_repair", DOMAIN, kind="awaiting_repair", attempt=1)
    done = outcome(
        PipelineState.SUCCEEDED, **common, attempts=[ORIGINAL, REPAIR_1, REPAIR_2], thread=[first_id, second_id]
    )
    return [first, second, done]


def test_every_email_of_a_pipeline_shares_its_base_subject_and_shows_its_state() -> None:
    messages = [compose(n) for n in thread_of_three("wf-42")]
    assert [m["Subject"] for m in messages] == [
        "Pipeline wf-42 (Word frequencies) awaiting repair",
        "Pipeline wf-42 (Word frequencies) awaiting repair",
        "Pipeline wf-42 (Word frequencies) succeeded",
    ]


def test_each_email_replies_to_the_last_and_references_all_oldest_first() -> None:
    first, second, done = (compose(n) for n in thread_of_three("wf-43"))
    assert header_ids(bytes(first), "In-Reply-To") is None and header_ids(bytes(first), "References") is None
    assert header_ids(bytes(second), "In-Reply-To") == [first["Message-ID"]]
    assert header_ids(bytes(second), "References") == [first["Message-ID"]]
    assert header_ids(bytes(done), "In-Reply-To") == [second["Message-ID"]]
    assert header_ids(bytes(done), "References") == [first["Message-ID"], second["Message-ID"]]
    assert done["References"] == f"{first['Message-ID']} {second['Message-ID']}"


def test_a_long_thread_keeps_its_root_and_its_newest_ids_folded_between_ids() -> None:
    thread = [f"<pipeline.{i:032x}@{DOMAIN}>" for i in range(MAX_REFERENCES + 15)]
    raw = bytes(compose(awaiting(thread=thread)))
    assert header_ids(raw, "References") == [thread[0], *thread[-(MAX_REFERENCES - 1) :]]
    assert header_ids(raw, "In-Reply-To") == [thread[-1]]
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))


def test_ids_that_are_not_message_ids_or_are_its_own_do_not_reach_the_headers() -> None:
    n = awaiting(attempts=[ORIGINAL, REPAIR_1])
    own = email_message_id(n.pipeline_id, "awaiting_repair", DOMAIN, kind="awaiting_repair", attempt=1)
    good = f"<pipeline.{'a' * 32}@{DOMAIN}>"
    hostile = ["<x@y>\r\nBcc: victim@example.com", "no-brackets@x", "<two words@x>", "", good, good, own]
    message = compose(n.model_copy(update={"thread": hostile}))
    raw = bytes(message)
    assert b"\nBcc:" not in raw
    assert header_ids(raw, "References") == [good] and header_ids(raw, "In-Reply-To") == [good]
    assert compose(n.model_copy(update={"thread": ["junk"]}))["References"] is None


# -- Message-IDs -------------------------------------------------------------------------------


def test_message_ids_are_derived_from_kind_state_and_latest_attempt() -> None:
    first, second, done = thread_of_three("wf-44")
    ids = [compose(n)["Message-ID"] for n in (first, second, done)]
    assert ids == [
        email_message_id("wf-44", "awaiting_repair", DOMAIN, kind="awaiting_repair", attempt=0),
        email_message_id("wf-44", "awaiting_repair", DOMAIN, kind="awaiting_repair", attempt=1),
        email_message_id("wf-44", "succeeded", DOMAIN, kind="outcome", attempt=2),
    ]
    # Stable across compositions (a resend), distinct per kind, attempt and state.
    assert [compose(n)["Message-ID"] for n in (first, second, done)] == ids
    failed_instead = compose(done.model_copy(update={"state": PipelineState.FAILED}))["Message-ID"]
    never_repaired = compose(done.model_copy(update={"attempts": [ORIGINAL]}))["Message-ID"]
    assert len({*ids, failed_instead, never_repaired}) == 5
    # An outcome reached without repair keeps the id it always had.
    assert never_repaired == email_message_id("wf-44", "succeeded", DOMAIN)
    assert compose(done.model_copy(update={"attempts": []}))["Message-ID"] == never_repaired


@pytest.mark.parametrize(
    ("state", "kind"),
    [
        (PipelineState.AWAITING_REPAIR, "outcome"),
        (PipelineState.SUCCEEDED, "awaiting_repair"),
        (PipelineState.FAILED, "awaiting_repair"),
        (PipelineState.WAITING, "awaiting_repair"),
        (PipelineState.STARTING, "awaiting_repair"),
        (PipelineState.NOTIFYING, "awaiting_repair"),
    ],
)
def test_a_kind_of_email_is_sent_only_in_its_state(state: PipelineState, kind: str) -> None:
    with pytest.raises(NotFinalStateError, match=f"is {state.value}; an email of kind {kind}"):
        compose(notification(state, kind=kind))


# -- Hostile text in the new parts ------------------------------------------------------------


def test_text_from_people_in_the_repair_parts_is_one_line_and_escaped() -> None:
    hostile = "<script>alert(1)</script>\r\nBcc: victim@example.com\u202e"
    repair = REPAIR_1.model_copy(
        update={"reason": hostile, "by": hostile, "rerun_tasks": [hostile], "parameters": {"<k>": hostile}}
    )
    n = awaiting(
        attempts=[ORIGINAL, repair],
        job_title="Words\r\nBcc: victim@example.com <b>",
        error=RunError(type="<img src=x>", message="<script>bad()</script>"),
    )
    message = compose(n)
    raw = bytes(message)
    text, html = bodies(message)

    assert b"\nBcc:" not in raw
    assert message["Subject"] == f"Pipeline {n.pipeline_id} (Words Bcc: victim@example.com <b>) awaiting repair"
    assert "<script>" not in html and "<img" not in html and "<k>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Bcc: victim@example.com" in html
    assert "&lt;script&gt;bad()&lt;/script&gt;" in html
    assert "\u202e" not in text and "\u202e" not in html
    assert "\nBcc:" not in text
    long_reason = REPAIR_1.model_copy(update={"reason": "r" * 5000})
    text, _ = bodies(compose(awaiting(attempts=[ORIGINAL, long_reason])))
    assert "r" * 79 + "…" in text and "r" * 81 not in text

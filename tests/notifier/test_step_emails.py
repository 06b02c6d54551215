"""The emails of a pipeline run by its code: a step's own email, an approval request, the summary of its steps."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline_notifier.email import PIPELINE_STEP_HEADER
from pipeline_notifier.step_emails import MAX_COMMENT_CHARS, MAX_LINE_CHARS, MAX_LINES
from pipeline_shared.ids import email_message_id
from pipeline_shared.models import (
    ApprovalDecision,
    ApprovalRecord,
    DatabricksRun,
    Notification,
    PipelineState,
    RunError,
    StepKind,
    StepState,
    StepSummary,
)
from pipeline_shared.recipients import RecipientRefused
from tests.support.notifier_emails import DOMAIN, bodies, compose, notification

PAGE_URL = "http://localhost:8000/ui"
DEADLINE = 1_796_407_200_000  # 2026-12-04 18:00 UTC
HOSTILE = "Click http://evil.example/verify now\r\nBcc: victim@example.com\u202e"


def gate(**fields: Any) -> ApprovalRecord:
    values: dict[str, Any] = {
        "step": "4",
        "name": "high-risk",
        "message": "Risk score 91: activate?",
        "scopes": ["approve", "finance"],
        "deadline": DEADLINE,
        "decision_promise_id": "p:4.1",
        "notify": ["approver@example.com", "deputy@example.com"],
        "opened_at": DEADLINE - 86_400_000,
    }
    return ApprovalRecord(**(values | fields))


def step_email(**fields: Any) -> Notification:
    values: dict[str, Any] = {
        "state": PipelineState.WAITING,
        "kind": "step",
        "step": "5",
        "subject": "Onboarding done",
        "lines": ["Score 91", "Report ready"],
        "run": None,
    }
    return notification(**(values | fields))


def approval_request(**fields: Any) -> Notification:
    values: dict[str, Any] = {"state": PipelineState.AWAITING_APPROVAL, "kind": "approval_request", "step": "4"}
    return notification(**(values | {"approval": gate()} | fields))


def steps() -> list[StepSummary]:
    run = DatabricksRun(run_id=88, run_page_url="https://dbc.example.com/jobs/3/runs/88")
    return [
        StepSummary(id="1", kind=StepKind.JOB, name="ingest-upload", state=StepState.SUCCEEDED, job="ingest-upload",
                    run=run, attempts=2),
        StepSummary(id="2", kind=StepKind.JOB, name="risk-score", state=StepState.FAILED, job="risk-score",
                    run=DatabricksRun(run_id=89, run_page_url="javascript:alert(1)"), attempts=1,
                    error=RunError(type="ValueError", message="bad table")),
        StepSummary(id="4", kind=StepKind.APPROVAL, name="high-risk", state=StepState.APPROVED,
                    approval=gate(), decision=ApprovalDecision(action="approve", by="key:alice",
                                                               comment="ok see https://evil.example " + "x" * 500,
                                                               decided_at=DEADLINE - 1000)),
        StepSummary(id="5", kind=StepKind.EMAIL, name="Onboarding done", state=StepState.SENT),
    ]  # fmt: skip


# ── a step's own email ──────────────────────────────────────────────────────


def test_a_step_email_says_what_the_code_wrote_under_its_subject() -> None:
    n = step_email()
    message = compose(n)

    assert message["Subject"] == f"Pipeline {n.pipeline_id}: Onboarding done"
    assert message[PIPELINE_STEP_HEADER] == "5"
    assert message["To"] == "analyst@example.com"
    text, html = bodies(message)
    assert "Score 91" in text and "Report ready" in text
    assert "Score 91" in html


def test_a_step_emails_hostile_subject_and_lines_stay_text_on_their_lines() -> None:
    long = "y" * (MAX_LINE_CHARS + 250)
    n = step_email(subject=HOSTILE, lines=[HOSTILE, long, *[f"line {i}" for i in range(MAX_LINES + 5)]])
    message = compose(n)

    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert "http[:]//evil.example" in message["Subject"]
    assert message["Bcc"] is None
    assert message["To"] == "analyst@example.com"
    text, html = bodies(message)
    for body in (text, html):
        assert "http://evil" not in body
        assert "http[:]//evil.example/verify" in body
        assert "\u202e" not in body
        assert "Bcc: victim@example.com" in body  # on the line it was written on, as text
        assert "250 more characters" in body and "y" * (MAX_LINE_CHARS + 1) not in body
        assert "… and 7 more lines not shown." in body
    assert "line 27" in text and f"line {MAX_LINES}" not in text
    assert '<a href="http://evil' not in html


def test_a_step_email_lists_the_runs_it_names_with_their_links() -> None:
    text, html = bodies(compose(step_email(steps=steps()[:2])))

    assert "run 88 https://dbc.example.com/jobs/3/runs/88" in text
    assert '<a href="https://dbc.example.com/jobs/3/runs/88">run 88</a>' in html
    # Not an http(s) link: shown, never linked.
    assert "run 89" in html and "javascript:" not in html


def test_a_step_emails_message_id_is_keyed_by_its_step_and_stable_whatever_the_state() -> None:
    n = step_email()
    first = compose(n)["Message-ID"]
    again = compose(step_email(pipeline_id=n.pipeline_id, state=PipelineState.NOTIFYING))["Message-ID"]
    other_step = compose(step_email(pipeline_id=n.pipeline_id, step="6"))["Message-ID"]
    outcome = compose(notification(PipelineState.SUCCEEDED, pipeline_id=n.pipeline_id, steps=steps()))["Message-ID"]

    assert first == again == email_message_id(n.pipeline_id, "waiting", DOMAIN, kind="step", step="5")
    assert len({first, other_step, outcome}) == 3
    # The pipeline's outcome keeps the id it always had.
    assert outcome == email_message_id(n.pipeline_id, "succeeded", DOMAIN)


def test_a_step_email_threads_under_the_pipelines_earlier_emails() -> None:
    earlier = compose(approval_request())["Message-ID"]
    message = compose(step_email(thread=[earlier]))

    assert message["In-Reply-To"] == earlier and message["References"] == earlier


# ── an approval request ─────────────────────────────────────────────────────


def test_an_approval_request_tells_the_people_who_may_decide_what_until_when_and_where() -> None:
    n = approval_request()
    message = compose(n, page_url=PAGE_URL)

    assert message["Subject"] == f"Pipeline {n.pipeline_id} awaits approval: high-risk"
    assert message["To"] == "approver@example.com, deputy@example.com"
    assert message[PIPELINE_STEP_HEADER] == "4"
    text, html = bodies(message)
    for body in (text, html):
        assert "Risk score 91: activate?" in body
        assert "approve, finance" in body
        assert "2026-12-04 18:00 UTC" in body
        assert f"POST /pipelines/{n.pipeline_id}/approve" in body
    assert f'<a href="{PAGE_URL}/pipelines/{n.pipeline_id}">' in html


def test_an_approval_requests_only_link_opens_the_page_and_decides_nothing() -> None:
    n = approval_request(approval=gate(message=f"{HOSTILE} http://evil.example/approve?yes=1"))
    _, html = bodies(compose(n, page_url=PAGE_URL))

    links = [part.split('"', 1)[0] for part in html.split('href="')[1:]]
    assert links == [f"{PAGE_URL}/pipelines/{n.pipeline_id}"]
    assert "http[:]//evil.example/approve?yes=1" in html


def test_an_approval_request_without_a_page_url_says_how_to_decide_without_a_link() -> None:
    text, html = bodies(compose(approval_request()))

    assert "href" not in html
    assert "/approve" in text


def test_an_approval_request_leaves_out_an_address_it_cannot_send_to_and_tells_the_others() -> None:
    n = approval_request(approval=gate(notify=["approver@example.com", "josé@example.com"]))
    assert compose(n)["To"] == "approver@example.com"


def test_an_approval_request_nobody_can_receive_is_refused() -> None:
    n = approval_request(approval=gate(notify=["josé@example.com"]))
    with pytest.raises(RecipientRefused):
        compose(n)


def test_an_approval_request_with_nobody_to_notify_goes_to_the_pipelines_own_address() -> None:
    assert compose(approval_request(approval=gate(notify=[])))["To"] == "analyst@example.com"


def test_an_approval_request_without_its_gate_is_refused() -> None:
    with pytest.raises(ValueError, match="needs its gate"):
        compose(approval_request(approval=None))


def test_each_gates_request_is_a_message_of_its_own() -> None:
    n = approval_request()
    second = approval_request(pipeline_id=n.pipeline_id, step="7", approval=gate(step="7"))

    assert compose(n)["Message-ID"] == compose(n)["Message-ID"]
    assert compose(n)["Message-ID"] != compose(second)["Message-ID"]
    assert compose(n)["Message-ID"] == email_message_id(
        n.pipeline_id, "awaiting_approval", DOMAIN, kind="approval_request", step="4"
    )


# ── the outcome of a pipeline of several steps ──────────────────────────────


def test_a_composed_pipelines_outcome_sums_up_every_step() -> None:
    n = notification(PipelineState.SUCCEEDED, steps=steps(), run=None, result={"score": 91})
    message = compose(n)

    assert message["Subject"] == f"Pipeline {n.pipeline_id} succeeded"
    assert message[PIPELINE_STEP_HEADER] is None
    text, html = bodies(message)
    for body in (text, html):
        for name in ("ingest-upload", "risk-score", "high-risk", "Onboarding done"):
            assert name in body
        assert "failed: ValueError" in body
        assert "approved by key:alice" in body
        assert "https[:]//evil.example" in body and "x" * (MAX_COMMENT_CHARS + 1) not in body
        assert "No Databricks run was started" not in body
    assert "Result, as the pipeline's code reported it" in text
    row = next(line for line in text.splitlines() if "ingest-upload" in line)
    assert row.split()[:4] == ["1", "job", "ingest-upload", "succeeded"] and " 2 " in row
    assert '<a href="https://dbc.example.com/jobs/3/runs/88">run 88</a>' in html


def test_a_composed_pipeline_that_failed_says_why_after_its_steps() -> None:
    n = notification(
        PipelineState.FAILED, steps=steps(), run=None, result=None, error=RunError(type="JobFailed", message="risk")
    )
    text, _ = bodies(compose(n))

    assert text.index("Steps") < text.index("What went wrong, as the pipeline reported it") < text.index("JobFailed")


def test_a_job_steps_wait_for_repair_says_which_step_to_repair_and_is_a_message_of_its_own() -> None:
    fields: dict[str, Any] = {"kind": "awaiting_repair", "error": RunError(type="ValueError", message="bad")}
    n = notification(PipelineState.AWAITING_REPAIR, step="3", **fields)
    other = notification(PipelineState.AWAITING_REPAIR, pipeline_id=n.pipeline_id, step="5", **fields)
    text, _ = bodies(compose(n))

    assert '{"step": "3", "parameters": {"NAME": "VALUE"}}' in text
    assert "Abandoning it fails this step now" in text
    assert compose(n)["Message-ID"] != compose(other)["Message-ID"]
    assert compose(n)[PIPELINE_STEP_HEADER] == "3"


def test_a_gate_name_that_slipped_past_validation_stays_one_unlinked_line() -> None:
    # The model refuses such a name; a record written by older or foreign code is not validated again.
    hostile = gate().model_copy(update={"name": HOSTILE, "scopes": ["approve\r\nBcc: x@example.com"]})
    message = compose(approval_request(approval=hostile), page_url=PAGE_URL)

    assert "\n" not in message["Subject"] and "\r" not in message["Subject"]
    assert message["Subject"].endswith(
        "awaits approval: Click http[:]//evil.example/verify now Bcc: victim@example.com"
    )
    assert message["Bcc"] is None
    text, html = bodies(message)
    assert "http://evil" not in text and "http://evil" not in html
    assert "\u202e" not in text

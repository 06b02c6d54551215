"""The timeline of a pipeline run by its code: every event names its step, and steps and gates have events of their own.

Real promises in the tests' resonate-pg, projected by the gateway's own
projector and read back as GET /pipelines/{id}/timeline reads them. A
pipeline of one job started before pipelines were code keeps the timeline it
always had (tests/api/index/test_events.py).
"""

from __future__ import annotations

import psycopg

from pipeline_api.index.queries import PipelineIndex
from pipeline_api.index.step_events import MAX_SUMMARY_TEXT
from pipeline_api.schemas import PipelineEvent
from pipeline_shared.models import ApprovalDecision, PipelineState
from tests.support.composed_promises import ComposedPromises, now_ms
from tests.support.pipeline_promises import PipelinePromises, principal, project_everything

HOSTILE_COMMENT = "fine\r\nBcc: x@example.com " + "y" * 3000


def of_kind(events: list[PipelineEvent], kind: str) -> list[PipelineEvent]:
    return [event for event in events if event.kind == kind]


async def test_every_event_of_a_step_names_it_and_steps_start_and_end(
    index: PipelineIndex, composed: ComposedPromises
) -> None:
    pid = await composed.start(principal())
    await composed.job_step(pid, "1", "ingest-upload", 1001, outcome="success", ended=PipelineState.SUCCEEDED)
    await composed.job_step(pid, "2", "risk-score", 1002, outcome="success", ended=PipelineState.SUCCEEDED)
    await composed.job_step(pid, "3", "report-build", 1003)
    await composed.email_step(pid, "4", "Onboarding done", name="onboarding-done")
    await composed.finish(pid, PipelineState.SUCCEEDED)
    await project_everything(index)

    events = await index.timeline(pid)

    assert (events[0].kind, events[-1].kind) == ("started", "finished")
    for event in events[1:-1]:
        name = event.data["step_name"]
        assert event.summary.startswith(f"{name}: "), event
        assert event.data["step"] in {"1", "2", "3", "4"}
    # Each job step's run is an event of its own, though every step's run is "attempt 0".
    triggered = of_kind(events, "run_triggered")
    assert [(e.data["step"], e.data["run_id"]) for e in triggered] == [("1", 1001), ("2", 1002), ("3", 1003)]
    assert triggered[1].summary == "risk-score: Databricks run 1002 triggered (job 7)"
    assert [e.data["step_name"] for e in of_kind(events, "step_started")] == [
        "ingest-upload",
        "risk-score",
        "report-build",
    ]
    ended = of_kind(events, "step_ended")
    assert [(e.data["step"], e.data["state"]) for e in ended] == [("1", "succeeded"), ("2", "succeeded")]
    assert ended[0].summary == "ingest-upload: job ingest-upload ended succeeded"
    assert [e.data["step"] for e in of_kind(events, "callback_received")] == ["1", "2"]
    [email] = of_kind(events, "email_delivered")
    assert email.data["step"] == "4" and email.data["to"] == "customer@example.com"
    assert email.summary.startswith("onboarding-done: email of the pipeline's code delivered")


async def test_a_gate_tells_when_it_opened_who_decided_and_what_they_said_bounded(
    index: PipelineIndex, composed: ComposedPromises
) -> None:
    pid = await composed.start(principal())
    decided = ApprovalDecision(action="approve", by="key:alice", comment=HOSTILE_COMMENT[:2000], decided_at=now_ms())
    record = await composed.gate(pid, "1", "high-risk", decision=decided, notify=("a@example.com", "b@example.com"))
    await project_everything(index)

    events = await index.timeline(pid)

    [opened] = of_kind(events, "gate_opened")
    assert opened.data["step"] == "1" and opened.data["step_name"] == "high-risk"
    assert opened.data["scopes"] == ["approve"] and opened.data["deadline"].endswith("Z")
    assert opened.summary.startswith("high-risk: waiting for a person holding approve to approve or reject until ")
    assert "\n" not in opened.summary and len(opened.summary) < MAX_SUMMARY_TEXT + 120
    assert opened.data["message"] == record.message
    [approved] = of_kind(events, "approved")
    assert approved.summary.startswith('high-risk: approved by key:alice: "fine Bcc: x@example.com yyy')
    assert "\r" not in approved.summary and "\n" not in approved.summary
    assert len(approved.summary) < MAX_SUMMARY_TEXT + 60
    assert approved.data["comment"] == decided.comment and approved.data["by"] == "key:alice"
    [request] = of_kind(events, "email_delivered")
    assert request.data["kind"] == "approval_request" and request.data["step"] == "1"
    assert request.summary == "high-risk: email asking for approval delivered to a@example.com, b@example.com"


async def test_a_gate_rejected_cancelled_or_left_past_its_deadline_says_so(
    index: PipelineIndex, composed: ComposedPromises, superuser: psycopg.AsyncConnection
) -> None:
    pid = await composed.start(principal())
    await composed.gate(
        pid, "1", "legal", decision=ApprovalDecision(action="reject", by="key:bob", decided_at=now_ms())
    )
    cancel = ApprovalDecision(action="cancel", by="key:carol", decided_at=now_ms())
    await composed.gate(pid, "2", "finance", decision=cancel)
    record = await composed.gate(pid, "3", "high-risk")
    # The server's timeout path, as it writes a decision nobody made by the deadline.
    await superuser.execute(
        "UPDATE resonate.promises SET state = 'rejected_timedout', settled_at = timeout_at WHERE id = %s",
        (record.decision_promise_id,),
    )
    await project_everything(index)

    events = await index.timeline(pid)

    [rejected] = of_kind(events, "rejected")
    assert rejected.summary == "legal: rejected by key:bob" and rejected.data["step"] == "1"
    [cancelled] = of_kind(events, "approval_cancelled")
    assert cancelled.summary == "finance: closed: the pipeline was cancelled by key:carol"
    [expired] = of_kind(events, "approval_expired")
    assert expired.data["step"] == "3" and expired.summary.startswith("high-risk: nobody approved or rejected it by ")


async def test_a_one_job_pipeline_started_before_pipelines_were_code_names_no_step(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    pid = await promises.start(principal())
    run = await promises.trigger(pid, run_id=1301)
    await promises.finish(pid, PipelineState.SUCCEEDED, run=run, result={"rows": 1})
    await project_everything(index)

    events = await index.timeline(pid)

    assert [e.kind for e in events] == ["started", "run_triggered", "finished"]
    assert events[1].summary == "Databricks run 1301 triggered (job 7)"
    assert all("step" not in e.data and "step_name" not in e.data for e in events)

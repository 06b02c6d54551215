"""The customer-onboarding example end to end on the compose stack: three jobs, a parallel pair, a real approval.

Its notebooks really run on the emulator: ingest writes a table, the score and
the report read it side by side. A threshold of 0 makes every upload need a
person's approval; 100 none.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.stack_clients import Emulator, Gateway, MailSink, new_id

ONBOARDING = "customer-onboarding"
#: The risk score job's notebook task (infra/databricks/databricks.yml).
SCORE_TASK = "score"


def start(gateway: Gateway, pipeline_id: str, threshold: int) -> None:
    response = gateway.start(pipeline_id, job=ONBOARDING, parameters={"approval_threshold": str(threshold)})
    assert response.status_code == 202, response.text


def steps_of(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(step["kind"], step["name"], step["state"]) for step in doc["steps"]]


def test_onboarding_waits_for_a_real_approval_and_emails_one_summary(
    gateway: Gateway, emulator: Emulator, mail: MailSink
) -> None:
    pipeline_id = new_id("onboard")
    start(gateway, pipeline_id, threshold=0)

    waiting = gateway.wait_for(pipeline_id, "awaiting_approval", timeout=120)
    assert steps_of(waiting) == [
        ("job", "ingest-upload", "succeeded"),
        ("job", "risk-score", "succeeded"),
        ("job", "report-build", "succeeded"),
        ("approval", "high-risk", "awaiting_approval"),
    ]
    _, score, report, gate = waiting["steps"]
    # The pair ran side by side, each from what ingest produced.
    assert score["started_at"] < report["ended_at"] and report["started_at"] < score["ended_at"]
    assert gate["approval"]["scopes"] == ["approve"] and gate["approval"]["deadline"] > gate["started_at"]
    request = mail.wait_for(pipeline_id)
    assert "high-risk" in request["text"] and re.search(rf"/ui/pipelines/{pipeline_id}\b", request["text"])

    decided = gateway.http.post(f"/pipelines/{pipeline_id}/approve", json={"comment": "known customer"})
    assert decided.status_code == 202, decided.text
    again = gateway.http.post(f"/pipelines/{pipeline_id}/reject", json={"comment": "too late"})
    assert (again.status_code, again.json()["code"]) == (409, "not_awaiting_approval")

    done = gateway.wait_for(pipeline_id, "succeeded", timeout=60)
    assert [s[2] for s in steps_of(done)] == ["succeeded"] * 3 + ["approved", "sent"]
    assert done["steps"][3]["decision"]["comment"] == "known customer"
    assert done["result"]["score"] == score["result"]["score"] and done["result"]["table"]
    assert emulator.counters(pipeline_id)["runs"] == 3
    subjects = sorted(message["subject"] for message in mail.messages(pipeline_id))
    assert len(subjects) == 3, subjects  # the approval request, the summary, the outcome


def test_below_the_threshold_no_person_is_asked(gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("onboard")
    start(gateway, pipeline_id, threshold=100)

    done = gateway.wait_for(pipeline_id, "succeeded", timeout=120)

    assert [kind for kind, _, _ in steps_of(done)] == ["job", "job", "job", "email"]
    assert emulator.counters(pipeline_id)["runs"] == 3


def test_a_rejection_fails_the_pipeline_naming_who_and_why(gateway: Gateway) -> None:
    pipeline_id = new_id("onboard")
    start(gateway, pipeline_id, threshold=0)
    gateway.wait_for(pipeline_id, "awaiting_approval", timeout=120)

    rejected = gateway.http.post(f"/pipelines/{pipeline_id}/reject", json={"gate": "high-risk", "comment": "fraud"})
    assert rejected.status_code == 202, rejected.text

    done = gateway.wait_for(pipeline_id, "failed", timeout=60)
    assert done["error"]["type"] == "Rejected" and "fraud" in done["error"]["message"]
    assert steps_of(done)[-1] == ("approval", "high-risk", "rejected")


def test_a_failed_middle_job_is_repaired_by_a_person_and_the_jobs_before_it_run_once(
    gateway: Gateway, emulator: Emulator
) -> None:
    pipeline_id = new_id("onboard")
    emulator.plan(pipeline_id, tasks={SCORE_TASK: {"fail": True, "fail_attempts": 1, "message": "model not loaded"}})
    start(gateway, pipeline_id, threshold=100)

    waiting = gateway.wait_for(pipeline_id, "awaiting_repair", timeout=120)
    assert steps_of(waiting)[:2] == [("job", "ingest-upload", "succeeded"), ("job", "risk-score", "awaiting_repair")]

    repaired = gateway.http.post(f"/pipelines/{pipeline_id}/repair", json={"step": "risk-score"})
    assert repaired.status_code == 202, repaired.text

    done = gateway.wait_for(pipeline_id, "succeeded", timeout=120)
    score = done["steps"][1]
    assert (score["state"], score["attempts"]) == ("succeeded", 2)
    # Ingest and the report ran once; the score's run was repaired in place, not run again.
    assert emulator.counters(pipeline_id)["runs"] == 3
    emulated = emulator.run(score["run"]["run_id"])
    assert len(emulated["repairs"]) == 1


def test_a_cancel_while_awaiting_approval_ends_it_and_starts_nothing_more(gateway: Gateway, emulator: Emulator) -> None:
    pipeline_id = new_id("onboard")
    start(gateway, pipeline_id, threshold=0)
    gateway.wait_for(pipeline_id, "awaiting_approval", timeout=120)

    cancelled = gateway.http.post(f"/pipelines/{pipeline_id}/cancel")
    assert cancelled.status_code in (200, 202), cancelled.text

    done = gateway.wait_for(pipeline_id, "cancelled", timeout=60)
    assert steps_of(done)[-1] == ("approval", "high-risk", "cancelled")
    assert emulator.counters(pipeline_id)["runs"] == 3

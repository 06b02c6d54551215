"""The customer-onboarding example under faults, in batches of 20: every step exactly once.

Each test runs :data:`~tests.support.fault_batch.BATCH_SIZE` onboarding
pipelines at once (three jobs each: ingest, then the score and the report side
by side) and breaks something at a step boundary: the worker SIGKILLed after a
trigger, between the pair's triggers, while pipelines await approval, after
the emails; the Resonate server killed, and the whole deployment taken down,
while they wait. Each ends with every pipeline final, three Databricks runs
each (a repair is made in its run, not a new one), and every email delivered
once, by Message-ID.
"""

from __future__ import annotations

from typing import Any

from tests.support.fault_batch import Batch, PausePoints
from tests.support.stack import Stack

ONBOARDING = "customer-onboarding"
#: Three jobs a pipeline; a repair is made in its run, not as a new one.
RUNS = 3
#: The summary and the outcome; an approval adds its request.
EMAILS = 2
#: The risk score job's notebook task (infra/databricks/databricks.yml).
SCORE_TASK = "score"


def start(batch: Batch, *, threshold: int = 100) -> Batch:
    return batch.start(job=ONBOARDING, parameters={"approval_threshold": str(threshold)})


def step_states(docs: dict[str, dict[str, Any]]) -> set[tuple[str, ...]]:
    return {tuple(step["state"] for step in doc["steps"]) for doc in docs.values()}


def test_worker_killed_after_the_first_jobs_trigger(stack: Stack, batch: Batch, hooks: PausePoints) -> None:
    hooks.arm("after_run_now", batch.steps("1"))
    start(batch)
    batch.wait_until(lambda: hooks.stopped("after_run_now") >= set(batch.steps("1")), "all stopped after ingest's run")

    stack.kill("worker")
    stack.start("worker")

    docs = batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS)
    assert step_states(docs) == {("succeeded", "succeeded", "succeeded", "sent")}


def test_worker_killed_between_the_pairs_triggers(stack: Stack, batch: Batch, hooks: PausePoints) -> None:
    # The report (step 3) is held before its run is started; the score (step 2) has its run.
    hooks.arm("before_run_now", batch.steps("3"))
    start(batch)
    batch.wait_until(lambda: hooks.stopped("before_run_now") >= set(batch.steps("3")), "all held before the report")

    stack.kill("worker")
    stack.start("worker")

    batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS)


def test_worker_killed_while_pipelines_await_approval(stack: Stack, batch: Batch) -> None:
    start(batch, threshold=0)
    batch.wait_for("awaiting_approval", timeout=180)

    stack.kill("worker")
    for pipeline_id in batch.ids:
        response = batch.gateway.http.post(f"/pipelines/{pipeline_id}/approve", json={"comment": "fine"})
        assert response.status_code == 202, response.text
    stack.start("worker")

    docs = batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS + 1)
    assert step_states(docs) == {("succeeded", "succeeded", "succeeded", "approved", "sent")}


def test_worker_killed_after_the_emails_before_the_outcome_is_recorded(
    stack: Stack, batch: Batch, hooks: PausePoints
) -> None:
    hooks.arm("after_email", batch.ids)
    start(batch)
    batch.wait_until(lambda: hooks.stopped("after_email") >= set(batch.ids), "all stopped after their emails")

    stack.kill("worker")
    stack.start("worker")

    batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS)


def test_resonate_killed_while_the_pair_runs(stack: Stack, batch: Batch) -> None:
    # The pair's notebooks start after 10 s: every pipeline is suspended on two callbacks when the server dies.
    batch.plan(tasks={SCORE_TASK: {"blocked_seconds": 10}})
    start(batch)
    batch.wait_until(
        lambda: all(len(doc["steps"]) == 3 for doc in batch.statuses().values()), "every pair started", timeout=180
    )

    stack.kill("resonate")
    stack.start("resonate")

    batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS)


def test_the_whole_deployment_down_and_up_while_pipelines_await_approval(stack: Stack, batch: Batch) -> None:
    start(batch, threshold=0)
    batch.wait_for("awaiting_approval", timeout=180)

    stack.down_and_up("api", "worker", "notifier", "resonate")
    for pipeline_id in batch.ids:
        response = batch.gateway.http.post(f"/pipelines/{pipeline_id}/approve", json={})
        assert response.status_code == 202, response.text

    batch.wait_for("succeeded", timeout=180)
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS + 1)


def test_a_failed_middle_job_repaired_by_a_person_with_the_worker_killed_after_the_repair(
    stack: Stack, batch: Batch, hooks: PausePoints
) -> None:
    batch.plan(tasks={SCORE_TASK: {"fail": True, "fail_attempts": 1, "message": "model not loaded"}})
    start(batch)
    batch.wait_for("awaiting_repair", timeout=180)
    hooks.arm("after_repair_run", batch.steps("2"))

    for pipeline_id in batch.ids:
        response = batch.gateway.http.post(f"/pipelines/{pipeline_id}/repair", json={"step": "risk-score"})
        assert response.status_code == 202, response.text
    batch.wait_until(lambda: hooks.stopped("after_repair_run") >= set(batch.steps("2")), "all stopped after repair")
    stack.kill("worker")
    stack.start("worker")

    docs = batch.wait_for("succeeded", timeout=180)
    # The repair request, the summary, the outcome; ingest and the report never ran again.
    batch.assert_exactly_once(runs=RUNS, emails=EMAILS + 1)
    assert {doc["steps"][1]["attempts"] for doc in docs.values()} == {2}

"""Repairing a failed run, on Resonate's in-process server: automatic, by a person, abandoned, expired, once.

The fake workspace (tests.support.pipeline_harness) records each repair and
its job parameters; the tests settle each attempt's callback promise as the
notebook would.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pipeline_shared import promise_tree
from pipeline_shared.catalogue import Catalogue, RepairPolicy
from pipeline_shared.models import PipelineOutcome, PipelineState, RunError, TaskOutcome
from pipeline_shared.signing import derive_callback_key
from pipeline_worker.databricks import PermanentDatabricksError, TransientDatabricksError
from tests.support.pipeline_harness import CATALOGUE, SECRET, Harness, run_state

BUG = RunError(type="KeyError", message="'colum' (a typo in the notebook)")


def catalogue_with(job: str, **policy: Any) -> Catalogue:
    """The repository's catalogue with ``job``'s repair policy replaced (no test waits 30 s of backoff)."""
    entry = CATALOGUE.job(job).model_copy(update={"repair": RepairPolicy(**policy)})
    return CATALOGUE.model_copy(update={"jobs": {**CATALOGUE.jobs, job: entry}})


async def outcome_of(handle: Any) -> PipelineOutcome:
    return PipelineOutcome.model_validate(await asyncio.wait_for(handle.result(), 10))


async def repaired_promise(harness: Harness, pipeline_id: str, attempt: int) -> str:
    record = await harness.wait_for_record(promise_tree.attempt_record_id(pipeline_id, attempt))
    assert record.callback_promise_id is not None
    return record.callback_promise_id


async def test_a_person_repairs_with_a_changed_parameter_and_the_same_pipeline_succeeds() -> None:
    harness = Harness()
    try:
        spec, handle = harness.start(parameters={"source": "/Workspace/Shared/pipelines/typo.csv"})
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)

        record = await harness.wait_for_record(promise_tree.repair_window_id(spec.id, 1))
        assert record.repair_deadline is not None and record.attempt.outcome == "failure"
        await harness.decide(spec, 1, "repair", parameters={"source": "/Workspace/Shared/pipelines/fixed.csv"})
        promise_id = await repaired_promise(harness, spec.id, 1)
        await harness.settle(spec, promise_id, status="success", result={"rows": 7})
        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.SUCCEEDED and outcome.result == {"rows": 7}
        [repair] = harness.jobs.repairs[run.run_id]
        assert (
            repair["source"] == "/Workspace/Shared/pipelines/fixed.csv" and repair["callback_promise_id"] == promise_id
        )
        assert repair["callback_signing_key"] == derive_callback_key(SECRET, promise_id)
        assert [(a.number, a.by, a.outcome) for a in outcome.attempts] == [
            (0, None, "failure"),
            (1, "key:tester", "success"),
        ]
        assert outcome.attempts[1].parameters == {"source": "/Workspace/Shared/pipelines/fixed.csv"}
        awaiting, final = harness.notifications
        assert (awaiting.kind, awaiting.state, awaiting.error) == (
            "awaiting_repair",
            PipelineState.AWAITING_REPAIR,
            BUG,
        )
        assert final.kind == "outcome" and final.thread == [f"<{spec.id}.0@test>"]
    finally:
        await harness.stop()


async def test_abandoning_ends_the_pipeline_failed_with_who_and_why() -> None:
    harness = Harness()
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)
        await harness.decide(spec, 1, "abandon")

        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.FAILED and outcome.error is not None
        assert outcome.error.type == "Abandoned" and "key:tester" in outcome.error.message
        assert "KeyError" in outcome.error.message
        assert run.run_id not in harness.jobs.repairs
        assert [n.kind for n in harness.notifications] == ["awaiting_repair", "outcome"]
    finally:
        await harness.stop()


def lost_driver(task_key: str = "pipeline") -> Any:
    task = TaskOutcome(
        task_key=task_key,
        life_cycle_state="TERMINATED",
        result_state="FAILED",
        termination_code="DRIVER_ERROR",
        termination_type="INTERNAL_ERROR",
    )
    report = run_state("TERMINATED", "FAILED", "Task pipeline failed: the driver was lost", [task])
    return report.model_copy(update={"termination_code": "DRIVER_ERROR", "termination_type": "INTERNAL_ERROR"})


async def test_a_transient_failure_is_repaired_automatically_to_success() -> None:
    harness = Harness(
        watchdog_interval=0.05, catalogue=catalogue_with("csv-statistics", automatic_attempts=2, backoff_seconds=0)
    )
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        harness.jobs.states[run.run_id] = lost_driver()  # no callback: the watchdog reads the run

        promise_id = await repaired_promise(harness, spec.id, 1)
        harness.jobs.states[run.run_id] = lost_driver()  # the first repair is lost too
        second = await repaired_promise(harness, spec.id, 2)
        await harness.settle(spec, second, status="success", result={"rows": 2})
        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.SUCCEEDED
        assert len(harness.jobs.repairs[run.run_id]) == 2 and promise_id != second
        assert [(a.by, a.outcome) for a in outcome.attempts] == [
            (None, "failure"),
            ("automatic", "failure"),
            ("automatic", "success"),
        ]
        assert "DRIVER_ERROR" in outcome.attempts[1].reason
        assert [n.kind for n in harness.notifications] == ["outcome"], "no person was asked"
    finally:
        await harness.stop()


async def test_a_worker_dying_right_after_the_repair_still_makes_exactly_one() -> None:
    harness = Harness()
    try:
        harness.jobs.fail_after_repair = [TransientDatabricksError("connection reset after the repair was made")]
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)
        await harness.decide(spec, 1, "repair")

        promise_id = await repaired_promise(harness, spec.id, 1)
        await harness.settle(spec, promise_id, status="success", result={})
        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.SUCCEEDED
        assert len(harness.jobs.repairs[run.run_id]) == 1, "the retried step found the repair already made"
    finally:
        await harness.stop()


async def test_a_notebook_bug_is_never_repaired_automatically() -> None:
    harness = Harness(catalogue=catalogue_with("csv-statistics", automatic_attempts=3, backoff_seconds=0))
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)

        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.FAILED and outcome.error == BUG
        assert run.run_id not in harness.jobs.repairs
        assert json.loads(outcome.model_dump_json())["attempts"] == []
    finally:
        await harness.stop()


async def test_a_repair_databricks_refuses_fails_the_pipeline_with_its_reason() -> None:
    harness = Harness()
    try:
        refusal = RunError(type="DatabricksBadRequest", message="could not repair run: the job was deleted")
        harness.jobs.refuse_repair = [PermanentDatabricksError(refusal)]
        spec, handle = harness.start()
        await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)
        await harness.decide(spec, 1, "repair")

        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.FAILED and outcome.error == refusal
        assert [n.kind for n in harness.notifications] == ["awaiting_repair", "outcome"]
    finally:
        await harness.stop()


async def test_a_repair_with_a_parameter_the_catalogue_refuses_never_reaches_databricks() -> None:
    # A decision written past the gateway (or under an older catalogue): the worker checks again.
    harness = Harness()
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="failure", error=BUG)
        await harness.decide(spec, 1, "repair", parameters={"source": "file:///etc/passwd"})

        outcome = await outcome_of(handle)

        assert outcome.state is PipelineState.FAILED and outcome.error is not None
        assert outcome.error.type == "InvalidParameters" and "source is a URL of scheme 'file'" in outcome.error.message
        assert not harness.jobs.repairs.get(run.run_id), "Databricks was never asked"
    finally:
        await harness.stop()

"""The pipeline workflow on Resonate's in-process server (see tests.support.pipeline_harness)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from resonate.error import ApplicationError

from pipeline_shared import ids, promise_tree
from pipeline_shared.callbacks import create_callback_promise, stored_settlement
from pipeline_shared.models import PipelineOutcome, PipelineSpec, PipelineState, RunError, RunReport
from pipeline_worker.databricks import (
    PermanentDatabricksError,
    TransientDatabricksError,
)
from pipeline_worker.steps import now_ms
from pipeline_worker.workflows import run_pipeline
from tests.support.pipeline_harness import SECRET, Harness, run_state


@pytest.fixture
async def harness():
    h = Harness()
    yield h
    await h.stop()


async def outcome_of(handle: Any) -> PipelineOutcome:
    return PipelineOutcome.model_validate(await asyncio.wait_for(handle.result(), 10))


async def test_success_resumes_on_callback_and_emails_the_result(harness: Harness) -> None:
    spec, handle = harness.start()
    run = await harness.wait_for_run(spec)
    await harness.settle(spec, status="success", result={"rows": 3})

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED
    assert outcome.result == {"rows": 3}
    assert outcome.run == run
    assert outcome.notification is not None and outcome.notification.delivered
    [sent] = harness.notifications
    assert (sent.state, sent.result, sent.run, sent.email) == (PipelineState.SUCCEEDED, {"rows": 3}, run, spec.email)
    assert harness.jobs.cancelled == []


async def test_children_sit_where_the_gateway_looks_for_them(harness: Harness) -> None:
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    callback = await harness.resonate.promises.get(promise_tree.callback_promise_id(spec.id))
    assert callback.state == "pending" and callback.tags.get("resonate:external") == "true"
    assert callback.timeout_at - callback.created_at == pytest.approx(spec.timeout_seconds * 1000, abs=1000)
    await harness.settle(spec, status="success", result={})
    await outcome_of(handle)


async def test_run_now_gets_the_notebook_inputs_and_a_derived_token(harness: Harness) -> None:
    from pipeline_shared.signing import derive_callback_key

    spec, handle = harness.start(parameters={"source": "/Workspace/Shared/pipelines/x.csv"})
    await harness.wait_for_run(spec)
    [params] = harness.jobs.run_now_calls
    promise_id = promise_tree.callback_promise_id(spec.id)
    assert params == {
        "pipeline_id": spec.id,
        "callback_promise_id": promise_id,
        "callback_url": "http://api.test/callbacks/databricks",
        "callback_signing_key": derive_callback_key(SECRET, promise_id),
        "source": "/Workspace/Shared/pipelines/x.csv",
    }
    assert list(harness.jobs.runs_by_token) == [ids.idempotency_token("unit", spec.id)]
    await harness.settle(spec, status="success", result={})
    await outcome_of(handle)


@pytest.mark.parametrize("source", ["/etc/passwd", "http://169.254.169.254/latest/meta-data/"])
async def test_a_parameter_the_catalogue_refuses_fails_the_pipeline_and_never_reaches_databricks(
    harness: Harness, source: str
) -> None:
    # A spec stored past the gateway (or under an older catalogue): the worker checks again.
    _, handle = harness.start(parameters={"source": source})

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error is not None
    assert outcome.error.type == "InvalidParameters" and outcome.error.message.startswith(
        "job 'csv-statistics': source "
    )
    assert harness.jobs.run_now_calls == [], "Databricks was never asked"


async def test_notebook_failure_fails_the_pipeline_with_its_cause(harness: Harness) -> None:
    # A job whose policy has no repair window: a notebook's own failure ends it at once.
    spec, handle = harness.start(job="nightly-refresh", parameters={"table": "sales"})
    await harness.wait_for_run(spec)
    error = RunError(type="FileNotFoundError", message="no such file: /data/in.csv")
    await harness.settle(spec, status="failure", error=error)

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error == error
    assert harness.notifications[0].error == error


async def test_transient_trigger_errors_are_retried_with_the_same_token(harness: Harness) -> None:
    harness.jobs.fail_next = [TransientDatabricksError("503"), TransientDatabricksError("timeout")]
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    await harness.settle(spec, status="success", result={})

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED
    assert len(harness.jobs.run_now_calls) == 3
    assert len(harness.jobs.runs_by_token) == 1


async def test_permanent_trigger_error_fails_without_waiting(harness: Harness) -> None:
    refused = RunError(type="DatabricksNotFound", message="could not start job: Job 7 does not exist.")
    harness.jobs.fail_next = [PermanentDatabricksError(refused)]
    spec, handle = harness.start()

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.FAILED and outcome.error == refused and outcome.run is None
    assert len(harness.jobs.run_now_calls) == 1
    stored = stored_settlement(await harness.resonate.promises.get(promise_tree.callback_promise_id(spec.id)))
    assert stored.stored is not None and stored.stored.source == "worker"


async def test_user_cancel_stops_the_run(harness: Harness) -> None:
    spec, handle = harness.start()
    run = await harness.wait_for_run(spec)
    await harness.settle(
        spec, status="cancelled", source="user", error=RunError(type="Cancelled", message="cancelled by request")
    )

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.CANCELLED
    assert harness.jobs.cancelled == [run.run_id]
    assert harness.notifications[0].state is PipelineState.CANCELLED


async def test_cancel_before_trigger_starts_no_run(harness: Harness) -> None:
    spec = PipelineSpec(id=f"p-{uuid.uuid4().hex[:12]}", email="u@example.com", parameters={}, timeout_seconds=60)
    # The gateway's cancel may create and settle the callback promise before
    # any worker picked the pipeline up.
    await create_callback_promise(harness.resonate.promises, spec.id, now_ms() + 60_000)
    await harness.settle(spec, status="cancelled", source="user", error=RunError(type="Cancelled", message="x"))
    handle = harness.resonate.run(spec.id, run_pipeline, spec)

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.CANCELLED and outcome.run is None
    assert harness.jobs.run_now_calls == [] and harness.jobs.cancelled == []


async def test_a_callback_already_there_still_records_the_run(harness: Harness) -> None:
    # What a replay sees when the worker died after run_now, before recording
    # its result, and the notebook called back meanwhile.
    spec = PipelineSpec(id=f"p-{uuid.uuid4().hex[:12]}", email="u@example.com", parameters={}, timeout_seconds=60)
    await create_callback_promise(harness.resonate.promises, spec.id, now_ms() + 60_000)
    await harness.settle(spec, status="success", result={"rows": 2})
    handle = harness.resonate.run(spec.id, run_pipeline, spec)

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED and outcome.run is not None
    assert len(harness.jobs.runs_by_token) == 1 and harness.jobs.cancelled == []


async def test_timeout_cancels_the_run_and_says_how_long_it_waited(harness: Harness) -> None:
    spec, handle = harness.start(timeout_seconds=1)
    run = await harness.wait_for_run(spec)
    await asyncio.sleep(1.2)
    # Resonate's in-process model times a bare promise out when it is next
    # touched (the real server's tick does it unprompted).
    await harness.promises_get(promise_tree.callback_promise_id(spec.id))

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.TIMED_OUT
    assert outcome.error is not None and outcome.error.type == "TimedOut" and "within 1 s" in outcome.error.message
    assert harness.jobs.cancelled == [run.run_id]
    assert harness.notifications[0].waited_seconds == 1


@pytest.mark.parametrize(
    ("failure", "recorded"),
    [
        (
            ApplicationError("SMTP unreachable after 8 attempts"),
            "notification failed: ApplicationError: SMTP unreachable after 8 attempts",
        ),
        # Resonate hands the awaiter the notifier's own exception when it can be
        # unpickled here (a ValueError, an email.errors defect), not an ApplicationError.
        (
            ValueError("local-part contains non-ASCII characters"),
            "notification failed: ValueError: local-part contains non-ASCII characters",
        ),
    ],
)
async def test_notifier_giving_up_is_recorded_not_fatal(harness: Harness, failure: Exception, recorded: str) -> None:
    harness.notifier_failure = failure
    spec, handle = harness.start()
    await harness.wait_for_run(spec)
    await harness.settle(spec, status="success", result={"rows": 1})

    outcome = await outcome_of(handle)

    assert outcome.state is PipelineState.SUCCEEDED
    assert outcome.notification is not None and not outcome.notification.delivered
    assert outcome.notification.error == recorded


@pytest.mark.parametrize(
    ("snapshot", "output", "state", "error_type"),
    [
        (run_state("TERMINATED", "SUCCESS", ""), {"rows": 5}, PipelineState.SUCCEEDED, None),
        (run_state("TERMINATED", "FAILED", "ValueError: bad row 3"), None, PipelineState.FAILED, "FAILED"),
        (run_state("TERMINATED", "CANCELED", "Run cancelled by a user"), None, PipelineState.CANCELLED, "CANCELED"),
        (run_state("INTERNAL_ERROR", None, "Cluster lost"), None, PipelineState.FAILED, "INTERNAL_ERROR"),
        (run_state("SKIPPED", None, "Skipped: max concurrent runs"), None, PipelineState.FAILED, "SKIPPED"),
    ],
)
async def test_watchdog_settles_a_run_that_ended_without_calling_back(
    snapshot: RunReport, output: dict[str, Any] | None, state: PipelineState, error_type: str | None
) -> None:
    harness = Harness(watchdog_interval=0.05)
    try:
        # A job that is repaired only after a transient failure (these carry no termination type).
        spec, handle = harness.start(job="nightly-refresh", parameters={"table": "sales"})
        run = await harness.wait_for_run(spec)
        harness.jobs.states[run.run_id] = snapshot
        if output is not None:
            harness.jobs.outputs[run.run_id] = json.dumps(output)

        outcome = await outcome_of(handle)

        assert outcome.state is state
        if output is not None:
            assert outcome.result == output
        else:
            assert outcome.error is not None and outcome.error.type == error_type
            assert outcome.error.message == snapshot.state_message
        settled = stored_settlement(await harness.resonate.promises.get(promise_tree.callback_promise_id(spec.id)))
        assert settled.stored is not None and settled.stored.source == "watchdog"
    finally:
        await harness.stop()


async def test_watchdog_never_overrides_a_callback() -> None:
    harness = Harness(watchdog_interval=0.05)
    try:
        spec, handle = harness.start()
        run = await harness.wait_for_run(spec)
        await harness.settle(spec, status="success", result={"from": "callback"})
        harness.jobs.states[run.run_id] = run_state("TERMINATED", "FAILED", "late failure")

        outcome = await outcome_of(handle)
        await asyncio.sleep(0.3)  # let watchdog links that were already scheduled run

        assert outcome.result == {"from": "callback"}
        settled = stored_settlement(await harness.resonate.promises.get(promise_tree.callback_promise_id(spec.id)))
        assert settled.stored is not None and settled.stored.source == "callback"
    finally:
        await harness.stop()

"""Client and AsyncClient against the real gateway in process: start, read, wait, repair, cancel, refusals.

This gateway has no index database, so its event streams answer 503: every
``wait`` here is the polling fallback (the streams are tested in
test_client_streams.py, and both against the compose stack).
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pipeline_client import (
    AsyncClient,
    Client,
    Conflict,
    InvalidRequest,
    NotFound,
    PipelineState,
    Unauthorized,
    Unavailable,
    WaitTimedOut,
)
from pipeline_shared.models import RunError
from tests.support.served_gateway import ServedGateway

SOURCE = "/Workspace/Shared/pipelines/samples/customers.csv"


def new_id() -> str:
    return f"client-{uuid.uuid4().hex[:8]}"


async def test_start_then_wait_returns_the_final_status_with_the_result(served_gateway: ServedGateway) -> None:
    pipeline_id = new_id()
    with Client(served_gateway.url, api_key=served_gateway.key) as client:
        started = await asyncio.to_thread(
            client.start, job="csv-statistics", email="c@x.io", parameters={"source": SOURCE}, id=pipeline_id
        )
        await served_gateway.harness.wait_for_step_run(pipeline_id, "1")
        await served_gateway.harness.settle_step(pipeline_id, "1", status="success", result={"rows": 3})
        done = await asyncio.to_thread(client.wait, pipeline_id, 20, poll_interval=0.05)

    assert started.id == pipeline_id and started.state in (PipelineState.STARTING, PipelineState.WAITING)
    assert started.parameters == {"source": SOURCE}
    assert done.state == "succeeded" and done.state.final
    assert done.result == {"rows": 3}


async def test_the_async_client_waits_for_awaiting_repair_repairs_and_waits_again(
    served_gateway: ServedGateway,
) -> None:
    pipeline_id = new_id()
    harness = served_gateway.harness
    async with AsyncClient(served_gateway.url, api_key=served_gateway.key) as client:
        await client.start(email="c@x.io", parameters={"source": SOURCE}, id=pipeline_id)
        await harness.wait_for_step_run(pipeline_id, "1")
        typo = RunError(type="KeyError", message="'colum'")
        await harness.settle_step(pipeline_id, "1", status="failure", error=typo)
        stopped = await client.wait(pipeline_id, 20, poll_interval=0.05)
        repaired = await client.repair(pipeline_id, parameters={"source": "/Workspace/Shared/pipelines/ok.csv"})
        with pytest.raises(WaitTimedOut) as timed_out:
            await client.wait(pipeline_id, 0.3, poll_interval=0.05)

    assert stopped.state == PipelineState.AWAITING_REPAIR and stopped.repair_deadline is not None
    assert stopped.error is not None and stopped.error.type == "KeyError"
    assert repaired.parameters == {"source": "/Workspace/Shared/pipelines/ok.csv"}
    assert timed_out.value.code == "wait_timed_out" and timed_out.value.last.state == PipelineState.WAITING


async def test_cancel_and_abandon_end_pipelines(served_gateway: ServedGateway) -> None:
    harness = served_gateway.harness
    cancelled_id, abandoned_id = new_id(), new_id()
    async with AsyncClient(served_gateway.url, api_key=served_gateway.key) as client:
        await client.start(email="c@x.io", id=cancelled_id)
        await client.start(email="c@x.io", id=abandoned_id)
        await harness.wait_for_step_run(cancelled_id, "1")
        await harness.wait_for_step_run(abandoned_id, "1")
        await client.cancel(cancelled_id)
        await harness.settle_step(abandoned_id, "1", status="failure", error=RunError(type="Boom", message="no"))
        await client.wait(abandoned_id, 20, poll_interval=0.05)
        await client.abandon(abandoned_id)
        cancelled = await client.wait(cancelled_id, 20, poll_interval=0.05)
        abandoned = await client.wait(abandoned_id, 20, poll_interval=0.05)

    assert cancelled.state == "cancelled"
    assert abandoned.state == "failed"


async def test_jobs_are_typed_and_list_only_what_the_key_may_start(served_gateway: ServedGateway) -> None:
    async with AsyncClient(served_gateway.url, api_key=served_gateway.key) as client:
        jobs = await client.jobs()

    by_name = {job.name: job for job in jobs}
    assert by_name["csv-statistics"].default and "customer-report" not in by_name
    assert [p.name for p in by_name["word-frequencies"].parameters if p.required] == ["text"]


async def test_refusals_raise_by_kind_with_the_gateways_stable_code(served_gateway: ServedGateway) -> None:
    pipeline_id = new_id()
    async with AsyncClient(served_gateway.url, api_key=served_gateway.key) as client:
        await client.start(email="c@x.io", id=pipeline_id)
        with pytest.raises(NotFound) as missing:
            await client.get("no-such-pipeline")
        with pytest.raises(Conflict) as conflict:
            await client.start(email="someone-else@x.io", id=pipeline_id)
        with pytest.raises(InvalidRequest) as invalid:
            await client.start(job="word-frequencies", email="c@x.io")
    async with AsyncClient(served_gateway.url, api_key="pl_not-a-key") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.get(pipeline_id)

    assert (missing.value.status, missing.value.code) == (404, "pipeline_not_found")
    assert (conflict.value.status, conflict.value.code) == (409, "pipeline_conflict")
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_request")
    assert invalid.value.details and "text" in str(invalid.value)
    assert (refused.value.status, refused.value.code) == (401, "invalid_token")


async def test_a_503_past_the_retry_bound_is_raised_with_its_code(served_gateway: ServedGateway) -> None:
    """The index is away here: with no time to wait for it, the call raises rather than hangs."""
    async with AsyncClient(served_gateway.url, api_key=served_gateway.key, max_retry_wait=0) as client:
        with pytest.raises(Unavailable) as away:
            await client.list_page()

    assert (away.value.status, away.value.code, away.value.retry_after) == (503, "index_unavailable", 5.0)

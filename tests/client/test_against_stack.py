"""The client against the compose stack: what a backend does with it, on the real wire.

Start and wait, list every page, follow the events, cancel, repair after a
failure, refusals with their codes; with Client and AsyncClient. The stack
runs with ENVIRONMENT=development, so the client's default key is accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline_client import AsyncClient, Client, Conflict, InvalidRequest, NotFound, PipelineState
from tests.support.stack import Stack
from tests.support.stack_clients import Emulator, new_id

pytestmark = pytest.mark.integration

SAMPLES = "/Workspace/Shared/pipelines/samples"


def eventually(read: Callable[[], set[str]], expected: set[str], timeout: float = 30) -> set[str]:
    """What ``read`` gives once it includes ``expected``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not expected <= (seen := read()):
        assert time.monotonic() < deadline, f"still missing {expected - seen}"
        time.sleep(0.2)
    return seen


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.api_url) as client:
        yield client


def test_start_then_wait_follows_the_pipeline_to_succeeded(client: Client) -> None:
    pipeline = client.start(
        job="csv-statistics", email="you@example.com", parameters={"source": f"{SAMPLES}/customers.csv"}
    )
    done = client.wait(pipeline.id, timeout=120)
    kinds = [event.kind for event in client.events(pipeline.id)]

    assert done.state == PipelineState.SUCCEEDED and done.result
    assert done.notification is None or done.notification.delivered
    assert kinds[0] == "started" and "finished" in kinds


def test_list_reads_every_page_and_filters(client: Client) -> None:
    job = "word-frequencies"
    ids = {client.start(job=job, email="you@example.com", parameters={"text": "a b a"}).id for _ in range(3)}
    for pipeline_id in ids:
        client.wait(pipeline_id, timeout=120)

    # The index trails Resonate by a projection: wait for it to show them succeeded.
    succeeded = eventually(lambda: {s.id for s in client.list(job=job, state=["succeeded"], page_size=2)}, ids)
    listed = [summary.id for summary in client.list(job=job, page_size=2)]

    assert ids <= set(listed) and len(listed) == len(set(listed)), "every page, no pipeline twice"
    assert ids <= succeeded


def test_events_follow_streams_the_timeline_to_its_end(client: Client) -> None:
    pipeline = client.start(email="you@example.com", parameters={"source": f"{SAMPLES}/customers.csv"})

    followed = list(client.events(pipeline.id, follow=True))

    assert [event.seq for event in followed] == sorted({event.seq for event in followed})
    assert followed[0].kind == "started" and followed[-1].kind == "finished"
    assert followed[-1].data["state"] == "succeeded"


def test_cancel_ends_a_hanging_pipeline_cancelled(client: Client, emulator: Emulator) -> None:
    pipeline_id = new_id("client-cancel")
    emulator.plan(pipeline_id, notebook="hang")
    client.start(id=pipeline_id, email="you@example.com", timeout_seconds=300)

    client.cancel(pipeline_id)
    done = client.wait(pipeline_id, timeout=120)

    assert done.state == PipelineState.CANCELLED and done.error and done.error.type == "Cancelled"


def test_a_failure_awaits_repair_and_a_repair_with_a_good_source_succeeds(client: Client) -> None:
    pipeline = client.start(email="you@example.com", parameters={"source": f"{SAMPLES}/missing.csv"})

    stopped = client.wait(pipeline.id, timeout=120)
    client.repair(pipeline.id, parameters={"source": f"{SAMPLES}/customers.csv"})
    done = client.wait(pipeline.id, timeout=120)

    assert stopped.state == PipelineState.AWAITING_REPAIR and stopped.error.type == "FileNotFoundError"
    assert done.state == PipelineState.SUCCEEDED
    assert done.parameters_at_start == {"source": f"{SAMPLES}/missing.csv"} and len(done.attempts) == 2


def test_refusals_carry_the_gateways_codes(client: Client) -> None:
    pipeline = client.start(email="you@example.com", parameters={"source": f"{SAMPLES}/customers.csv"})

    with pytest.raises(NotFound) as missing:
        client.get(new_id("never-started"))
    with pytest.raises(Conflict) as conflict:
        client.start(id=pipeline.id, email="someone-else@example.com")
    with pytest.raises(InvalidRequest) as invalid:
        client.start(email="not an address")
    client.wait(pipeline.id, timeout=120)

    assert (missing.value.status, missing.value.code) == (404, "pipeline_not_found")
    assert (conflict.value.status, conflict.value.code) == (409, "pipeline_conflict")
    assert (invalid.value.status, invalid.value.code) == (422, "invalid_request")


async def test_the_async_client_starts_waits_lists_and_follows(stack: Stack) -> None:
    async with AsyncClient(stack.api_url) as client:
        pipeline = await client.start(email="you@example.com", parameters={"source": f"{SAMPLES}/customers.csv"})
        followed = [event.kind async for event in client.events(pipeline.id, follow=True)]
        done = await client.wait(pipeline.id, timeout=120)
        deadline = time.monotonic() + 30
        while pipeline.id not in (listed := [s.id async for s in client.list(state="succeeded", page_size=5)]):
            assert time.monotonic() < deadline, "the index never showed it succeeded"
            await asyncio.sleep(0.2)
        with pytest.raises(NotFound) as missing:
            await client.cancel(new_id("never-started"))

    assert done.state == PipelineState.SUCCEEDED and followed[-1] == "finished"
    assert pipeline.id in listed
    assert missing.value.code == "pipeline_not_found"

"""The client's streams, pages and retries: against the fake gateway on loopback, and scripted transports.

The fake gateway (fake_gateway.py) serves real ``text/event-stream`` responses
and can drop one mid-way; the scripted transports (httpx's MockTransport, the
seam the client takes) answer 503 or 429 on cue and count what was asked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from pipeline_client import AsyncClient, Client, NotFound, PipelineState, RateLimited, Unavailable
from tests.client.fake_gateway import FAKE_KEY, FakeGateway, FakeTimeline, summary, timeline_events
from tests.support.loopback_server import loopback_socket, serving, url_of


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeGateway, str]]:
    gateway = FakeGateway()
    sock = loopback_socket()
    async with serving(gateway.app(), sock):
        yield gateway, url_of(sock)


async def test_list_reads_every_page_through_next_cursor(fake: tuple[FakeGateway, str]) -> None:
    gateway, url = fake
    gateway.pipelines = [summary(n) for n in range(1, 8)] + [summary(8, "failed")]
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        every = [item.id async for item in client.list(page_size=3)]
        failed = [item async for item in client.list(state="failed")]
        first = await client.list_page(limit=3)

    assert every == [f"p-{n:03d}" for n in range(1, 9)]
    cursors = [dict(seen.query).get("cursor") for seen in gateway.seen if seen.path == "/pipelines"]
    assert cursors == [None, "c/3/+x==", "c/6/+x==", None, None]
    assert [item.id for item in failed] == ["p-008"] and failed[0].state == PipelineState.FAILED
    assert first.total == 8 and first.next_cursor == "c/3/+x=="


async def test_events_follow_resumes_a_dropped_stream_after_the_last_event_and_repeats_none(
    fake: tuple[FakeGateway, str],
) -> None:
    gateway, url = fake
    events = timeline_events("demo-1", "succeeded")
    gateway.timelines["demo-1"] = FakeTimeline(events, shown=2, end_state="succeeded", drop_after=3)
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        so_far = [event.seq async for event in client.events("demo-1")]
        followed = [event async for event in client.events("demo-1", follow=True, reconnect_for=10)]

    assert so_far == [100, 101]
    assert [event.seq for event in followed] == [event["seq"] for event in events]
    assert followed[-1].kind == "finished"
    assert [s.last_event_id for s in gateway.seen if s.path.endswith("/events")][-1] == "102"


async def test_a_quiet_followed_stream_is_kept_past_reconnect_for(fake: tuple[FakeGateway, str]) -> None:
    """``reconnect_for`` bounds the time without a connection, not the time without an event."""
    gateway, url = fake
    events = timeline_events("demo-5", "awaiting_repair")
    gateway.timelines["demo-5"] = FakeTimeline(events, shown=0, end_state=None)  # then keepalives only
    async with AsyncClient(url, api_key=FAKE_KEY) as client:
        stream = client.events("demo-5", follow=True, reconnect_for=0.3)
        seen = [await anext(stream) for _ in events]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(stream), 1.0)

    assert [event.kind for event in seen][-1] == "awaiting_repair"
    assert gateway.timelines["demo-5"].connections == 1


async def test_the_sync_client_follows_events_through_a_drop_and_503s(fake: tuple[FakeGateway, str]) -> None:
    gateway, url = fake
    events = timeline_events("demo-2", "failed")
    gateway.timelines["demo-2"] = FakeTimeline(events, shown=0, end_state="failed", drop_after=2, unavailable_for=2)

    def follow_then_read_a_missing_one() -> list[str]:
        with Client(url, api_key=FAKE_KEY) as client:
            followed = [event.kind for event in client.events("demo-2", follow=True, reconnect_for=10)]
            with pytest.raises(NotFound):
                list(client.events("no-such"))
        return followed

    # In a thread: the fake gateway is served on this test's event loop.
    followed = await asyncio.to_thread(follow_then_read_a_missing_one)

    assert followed == [event["kind"] for event in events]
    assert gateway.timelines["demo-2"].connections == 4


def _query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def _status(state: str, **fields: object) -> dict[str, object]:
    return {
        "id": "w-1",
        "state": state,
        "job": "csv-statistics",
        "email": "c@x.io",
        "parameters": {},
        "timeout_seconds": 60,
        "databricks": None,
        "created_at": "2026-12-01T15:00:00Z",
        "updated_at": "2026-12-01T15:00:01Z",
    } | fields


def _sse(*messages: tuple[str, dict[str, object]]) -> bytes:
    return b"retry: 10\n\n" + b"".join(
        f"event: {event}\nid: {data.get('seq', '')}\ndata: {json.dumps(data)}\n\n".encode() for event, data in messages
    )


def _event(seq: int, kind: str) -> dict[str, object]:
    return {"seq": seq, "at": "2026-12-01T15:00:00Z", "kind": kind, "summary": kind, "data": {}}


def scripted(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    asked: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return handler(request)

    return httpx.MockTransport(record), asked


def test_wait_follows_the_event_stream_and_reads_the_status_only_when_the_pipeline_may_have_ended() -> None:
    finished = False

    def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal finished
        if request.url.path == "/pipelines/w-1/events":
            assert request.headers["accept"] == "text/event-stream" and _query(request) == {"follow": "true"}
            finished = True
            stream = _sse(("timeline", _event(1, "run_triggered")), ("timeline", _event(2, "finished")))
            return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_status("succeeded" if finished else "waiting", result={"rows": 1}))

    transport, asked = scripted(gateway)
    with Client("http://gateway.test", api_key="k", transport=transport) as client:
        done = client.wait("w-1", timeout=5)

    assert done.state == "succeeded" and done.result == {"rows": 1}
    assert [r.url.path for r in asked] == ["/pipelines/w-1", "/pipelines/w-1/events", "/pipelines/w-1"]


async def test_wait_stops_when_the_stream_tells_a_gate_opened_and_waits_through_its_decision() -> None:
    """The index tells a gate opening as ``gate_opened``: that is when a wait reads whether it stops."""
    opened = False
    stream = _sse(
        ("timeline", _event(1, "step_started")),
        ("timeline", _event(2, "gate_opened")),
        ("timeline", _event(3, "approved")),
    )

    def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal opened
        if request.url.path.endswith("/events"):
            opened = True
            return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, json=_status("awaiting_approval" if opened else "waiting"))

    transport, asked = scripted(gateway)
    with Client("http://gateway.test", api_key="k", transport=transport) as client:
        stopped = client.wait("w-1", timeout=5)
    async_transport, async_asked = scripted(gateway)
    opened = False
    async with AsyncClient("http://gateway.test", api_key="k", transport=async_transport) as c:
        also_stopped = await c.wait("w-1", timeout=5)

    assert stopped.state == also_stopped.state == PipelineState.AWAITING_APPROVAL
    paths = ["/pipelines/w-1", "/pipelines/w-1/events", "/pipelines/w-1"]
    assert [r.url.path for r in asked] == [r.url.path for r in async_asked] == paths, "read at the gate, not before"


async def test_wait_falls_back_to_polling_when_the_stream_is_not_a_stream() -> None:
    reads = 0

    def gateway(request: httpx.Request) -> httpx.Response:
        nonlocal reads
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"not": "a stream"})
        reads += 1
        return httpx.Response(200, json=_status("awaiting_repair" if reads >= 3 else "waiting"))

    transport, asked = scripted(gateway)
    async with AsyncClient("http://gateway.test", api_key="k", transport=transport) as c:
        stopped = await c.wait("w-1", timeout=30, poll_interval=0.01)

    assert stopped.state == PipelineState.AWAITING_REPAIR
    assert [r.url.path for r in asked].count("/pipelines/w-1/events") == 3


def test_503_and_429_are_retried_after_retry_after_and_other_errors_are_not() -> None:
    answers = iter(
        [
            httpx.Response(503, json={"code": "resonate_unavailable", "message": "away"}, headers={"retry-after": "0"}),
            httpx.Response(429, json={"code": "start_rate_limited", "message": "slow"}, headers={"retry-after": "0"}),
            httpx.Response(200, json=_status("starting")),
            httpx.Response(404, json={"code": "pipeline_not_found", "message": "no pipeline with this id"}),
        ]
    )
    transport, asked = scripted(lambda _: next(answers))
    with Client("http://gateway.test", api_key="k", transport=transport) as client:
        started = client.start(email="c@x.io", id="w-1")
        with pytest.raises(NotFound):
            client.get("w-2")

    assert started.id == "w-1" and len(asked) == 4


def test_retries_stop_at_the_bound_and_raise_with_the_code() -> None:
    full = {"code": "too_many_waiting", "message": "full"}
    transport, asked = scripted(lambda _: httpx.Response(429, json=full, headers={"retry-after": "2"}))
    with (
        Client("http://gateway.test", api_key="k", transport=transport, max_retry_wait=3) as client,
        pytest.raises(RateLimited) as limited,
    ):
        client.start(email="c@x.io")
    unavailable, _ = scripted(lambda _: httpx.Response(503, json={"code": "index_unavailable", "message": "away"}))
    with (
        Client("http://gateway.test", api_key="k", transport=unavailable, max_retry_wait=0) as client,
        pytest.raises(Unavailable),
    ):
        client.get("w-1")

    assert (limited.value.status, limited.value.code, limited.value.retry_after) == (429, "too_many_waiting", 2.0)
    assert len(asked) == 2, "one retry after 2 s fits in 3 s; a second would not"


def test_the_api_key_defaults_to_the_environment_then_the_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    transport, asked = scripted(lambda _: httpx.Response(200, json={"jobs": []}))
    monkeypatch.setenv("PIPELINES_API_KEY", "pl_from_env")
    with Client("http://gateway.test", transport=transport) as client:
        client.jobs()
    monkeypatch.delenv("PIPELINES_API_KEY")
    with Client("http://gateway.test", transport=transport) as client:
        client.jobs()

    assert asked[0].headers["authorization"] == "Bearer pl_from_env"
    assert asked[1].headers["authorization"] == "Bearer pl_dev_development-only-insecure-api-key"

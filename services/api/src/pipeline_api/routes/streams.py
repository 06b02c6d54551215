"""Server-Sent Events from an async iterator, with keepalives and a clean end.

FastAPI streams SSE itself from a path operation that is a generator
(``response_class=EventSourceResponse``); the list and timeline routes are
not, since the same route answers JSON unless ``?follow=true``. So the
stream is made here, with FastAPI's own encoder (``format_sse_event``), its
keepalive comment and interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi.sse import KEEPALIVE_COMMENT, EventSourceResponse, format_sse_event
from pydantic import BaseModel

from pipeline_shared.errors import CoordinatorUnavailable

#: A comment this often keeps proxies from closing an idle stream (FastAPI's own interval).
KEEPALIVE_SECONDS = 15.0

#: How long a client waits before reconnecting after the stream broke (the SSE ``retry`` field), in ms.
RECONNECT_MS = 2_000


@dataclass(frozen=True)
class StreamEvent:
    event: str
    data: BaseModel | dict
    #: The stream's position after this message: what a client sends back as Last-Event-ID.
    id: str | None = None


def event_stream(messages: AsyncIterator[StreamEvent]) -> EventSourceResponse:
    """Send ``messages`` as SSE until the iterator ends, or the client leaves.

    The database going away mid-stream ends it with an ``error`` event; the
    client reconnects with Last-Event-ID and loses nothing.
    """
    return EventSourceResponse(_encoded(messages), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def _encoded(messages: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=1)

    async def produce() -> None:
        # A separate task, so that waiting for a keepalive never cancels the iterator mid-step.
        try:
            async for message in messages:
                await queue.put(_encode(message))
        except CoordinatorUnavailable as exc:
            await queue.put(_encode(StreamEvent("error", {"code": exc.code, "message": exc.message})))
        finally:
            await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        yield format_sse_event(retry=RECONNECT_MS)
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield KEEPALIVE_COMMENT
                continue
            if item is None:
                return
            yield item
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer


def _encode(message: StreamEvent) -> bytes:
    if isinstance(message.data, BaseModel):
        data = message.data.model_dump_json()
    else:
        data = json.dumps(message.data, separators=(",", ":"), default=str)
    return format_sse_event(data_str=data, event=message.event, id=message.id)

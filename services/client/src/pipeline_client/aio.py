"""The asyncio client: :class:`pipeline_client.Client` for backends that run an event loop.

The same calls, awaited; ``list`` and ``events`` are async iterators. What the
two clients share (requests, retry rules, when a wait is over) is in
``_wire``; this module and ``client`` differ only in how they do I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Self

import httpx
from httpx_sse import ServerSentEvent, SSEError, aconnect_sse

from . import _wire
from .client import _later, _StreamFailed
from .errors import PipelineError, WaitTimedOut
from .models import Job, JobList, PipelineEvent, PipelinePage, PipelineStatus, PipelineSummary, PipelineTimeline


class AsyncClient:
    """A gateway, from asyncio code: :class:`pipeline_client.Client`, awaited.

    ``api_key`` defaults to ``$PIPELINES_API_KEY``, then to the development
    key that only the compose stack on a laptop accepts. ``max_retry_wait``
    bounds how long one call waits in all for a gateway that answers 503 or
    429 (after each ``Retry-After``); ``transport`` is a test seam.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = _wire.DEFAULT_TIMEOUT,
        max_retry_wait: float = _wire.DEFAULT_MAX_RETRY_WAIT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        key, self._using_development_key = _wire.api_key_or_default(api_key)
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, headers=_wire.headers(key), transport=transport
        )
        self.max_retry_wait = max_retry_wait

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    # ── one request ──────────────────────────────────────────────────────────

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call of the gateway's API; its JSON document as sent, untyped.

        For tools that show documents whole (the ``pipelines`` command's
        ``--json``); the typed methods below are built on it. A refusal
        raises by kind; 503 and 429 are retried within ``max_retry_wait``.
        """
        budget = _wire.RetryBudget(self.max_retry_wait)
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                raise _wire.unreachable(self._http.base_url, exc) from exc
            try:
                _wire.raise_for(response, self._using_development_key)
            except PipelineError as exc:
                delay = budget.delay_for(exc)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            return response.json()

    @asynccontextmanager
    async def open_stream(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        last_event_id: str | None = None,
        read_timeout: float = _wire.STREAM_READ_TIMEOUT,
    ) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        """One connection to an event stream (``?follow=true``), its messages as they come.

        No reconnection here: a refusal raises by kind, a connection that
        drops raises :class:`ConnectionFailed` (status None). ``events`` and
        ``wait`` resume after the last event; so does the CLI, its own way.
        """
        headers = {"last-event-id": last_event_id} if last_event_id else {}
        timeout = _wire.stream_timeout(self._http.timeout.connect, read_timeout)
        params = {**(params or {}), "follow": "true"}
        try:
            async with aconnect_sse(self._http, "GET", path, params=params, headers=headers, timeout=timeout) as source:
                if source.response.is_error:
                    await source.response.aread()
                    _wire.raise_for(source.response, self._using_development_key)
                yield _messages(source.aiter_sse(), self._http.base_url)
        except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
            raise _wire.unreachable(self._http.base_url, exc) from exc

    # ── the API ──────────────────────────────────────────────────────────────

    async def start(
        self,
        *,
        email: str,
        job: str | None = None,
        parameters: Mapping[str, str] | None = None,
        id: str | None = None,
        timeout_seconds: int | None = None,
    ) -> PipelineStatus:
        """Start a pipeline; with an ``id`` already started by the same request, the existing one."""
        body = _wire.start_body(job, email, parameters, id, timeout_seconds)
        return PipelineStatus.model_validate(await self.request("POST", "/pipelines", json=body))

    async def get(self, pipeline_id: str) -> PipelineStatus:
        return PipelineStatus.model_validate(await self.request("GET", f"/pipelines/{pipeline_id}"))

    async def cancel(self, pipeline_id: str) -> PipelineStatus:
        return PipelineStatus.model_validate(await self.request("POST", f"/pipelines/{pipeline_id}/cancel"))

    async def repair(
        self, pipeline_id: str, parameters: Mapping[str, str] | None = None, *, step: str | None = None
    ) -> PipelineStatus:
        """Rerun the failed tasks of a pipeline awaiting repair, with ``parameters`` changed.

        ``step`` (a job step's id or name) says which, when several job steps await repair
        (without it, :class:`Conflict` ``step_ambiguous``).
        """
        body = _wire.repair_body(parameters, step)
        return PipelineStatus.model_validate(await self.request("POST", f"/pipelines/{pipeline_id}/repair", json=body))

    async def abandon(self, pipeline_id: str, *, step: str | None = None) -> PipelineStatus:
        """Give up on a pipeline awaiting repair (or on its job step ``step``): that step ends failed."""
        body = _wire.abandon_body(step)
        return PipelineStatus.model_validate(await self.request("POST", f"/pipelines/{pipeline_id}/abandon", json=body))

    async def approve(self, pipeline_id: str, gate: str | None = None, comment: str = "") -> PipelineStatus:
        """Approve the pipeline's open approval gate (``gate``: its name or step id; needed when several are open).

        :class:`Conflict` ``not_awaiting_approval`` when no such gate is open (decided
        already, past its deadline, or none), ``gate_ambiguous`` when several are open
        and none is named; :class:`Forbidden` when the key holds none of the gate's scopes.
        """
        return await self._decide_gate(pipeline_id, "approve", gate, comment)

    async def reject(self, pipeline_id: str, gate: str | None = None, comment: str = "") -> PipelineStatus:
        """Reject the pipeline's open approval gate; the same refusals as :meth:`approve`."""
        return await self._decide_gate(pipeline_id, "reject", gate, comment)

    async def _decide_gate(self, pipeline_id: str, action: str, gate: str | None, comment: str) -> PipelineStatus:
        body = _wire.approval_body(gate, comment)
        return PipelineStatus.model_validate(
            await self.request("POST", f"/pipelines/{pipeline_id}/{action}", json=body)
        )

    async def jobs(self) -> list[Job]:
        return JobList.model_validate(await self.request("GET", "/jobs")).jobs

    async def list_page(
        self,
        *,
        state: str | Iterable[str] | None = None,
        job: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> PipelinePage:
        """One page of the pipelines this key may see, newest first."""
        params = _wire.list_params(state, job, created_after, created_before, limit, cursor)
        return PipelinePage.model_validate(await self.request("GET", "/pipelines", params=params))

    async def list(
        self,
        *,
        state: str | Iterable[str] | None = None,
        job: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[PipelineSummary]:
        """Every matching pipeline, newest first, reading each page as the one before runs out."""
        guard, cursor = _wire.CursorGuard(), None
        while True:
            page = await self.list_page(
                state=state,
                job=job,
                created_after=created_after,
                created_before=created_before,
                limit=page_size,
                cursor=cursor,
            )
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            guard.check(page.next_cursor)
            cursor = page.next_cursor

    async def timeline(self, pipeline_id: str) -> PipelineTimeline:
        return PipelineTimeline.model_validate(await self.request("GET", f"/pipelines/{pipeline_id}/events"))

    async def events(
        self, pipeline_id: str, follow: bool = False, *, after: int = 0, reconnect_for: float = 60.0
    ) -> AsyncIterator[PipelineEvent]:
        """The pipeline's events so far; with ``follow``, then each new one until the pipeline has finished.

        A followed stream that drops is resumed after the last event seen;
        after ``reconnect_for`` seconds without getting it back, ConnectionFailed.
        """
        if not follow:
            for event in (await self.timeline(pipeline_id)).events:
                if event.seq > after:
                    yield event
            return
        deadline = time.monotonic() + reconnect_for
        async for kind, data in self._timeline_stream(pipeline_id, after, lambda: deadline, refresh=reconnect_for):
            if kind == "end":
                return
            yield data

    async def _timeline_stream(
        self, pipeline_id: str, after: int, deadline: Any, refresh: float | None = None, give_up: int | None = None
    ) -> AsyncIterator[tuple[str, Any]]:
        """``("timeline", PipelineEvent)`` and finally ``("end", {...})`` from the event stream, across drops.

        ``deadline()`` is when to stop trying; with ``refresh``, every
        connection made and every event moves it that far ahead, so only
        ``refresh`` seconds without a connection give up.
        ``give_up`` connections failed in a row raise :class:`_StreamFailed`.
        """
        path = f"/pipelines/{pipeline_id}/events"
        last_seq, delay, failures = after, _wire.RECONNECT_DELAY, 0
        reason = "no answer"
        while True:
            remaining = deadline() - time.monotonic()
            if remaining <= 0:
                raise _wire.unreachable(self._http.base_url, Exception(f"the stream {path} dropped ({reason})"))
            last = str(last_seq) if last_seq else None
            # Following for its own sake, a quiet stream is fine (keepalives come every 15 s); a wait's
            # stream is read no longer than the wait has left.
            read_timeout = min(_wire.STREAM_READ_TIMEOUT, remaining if refresh is None else _wire.STREAM_READ_TIMEOUT)
            try:
                async with self.open_stream(path, None, last, read_timeout) as messages:
                    if refresh is not None:
                        deadline = _later(refresh)  # connected again: the time to give up starts anew
                    async for message in messages:
                        if message.retry:
                            delay = message.retry / 1000
                        if message.event == "timeline":
                            failures = 0
                            event = PipelineEvent.model_validate_json(message.data)
                            if event.seq <= last_seq:
                                continue
                            last_seq = event.seq
                            if refresh is not None:
                                deadline = _later(refresh)
                            yield "timeline", event
                        elif message.event == "end":
                            yield "end", message.json()
                            return
                reason = "the gateway closed it"
            except _wire.RECONNECTABLE as exc:
                reason = str(exc)
            failures += 1
            if give_up is not None and failures >= give_up:
                raise _StreamFailed(reason)
            await asyncio.sleep(min(delay, max(deadline() - time.monotonic(), 0)))

    async def wait(
        self,
        pipeline_id: str,
        timeout: float = 600.0,
        *,
        stop_at_awaiting_repair: bool = True,
        stop_at_awaiting_approval: bool = True,
        poll_interval: float = _wire.DEFAULT_POLL_INTERVAL,
    ) -> PipelineStatus:
        """The pipeline's status once it has ended, or waits for a person: awaiting repair or awaiting approval
        (unless told to wait through that).

        It follows the pipeline's event stream and reads the status when an
        event may have ended the wait; when the stream cannot be had it reads
        the status every ``poll_interval`` seconds instead. After ``timeout``
        seconds, :class:`WaitTimedOut` (the pipeline itself goes on).
        """
        ends_at = time.monotonic() + timeout
        status = await self.get(pipeline_id)
        if _wire.wait_is_over(status, stop_at_awaiting_repair, stop_at_awaiting_approval):
            return status
        try:
            stream = self._timeline_stream(
                pipeline_id, 0, lambda: ends_at, give_up=_wire.STREAM_FAILURES_BEFORE_POLLING
            )
            async for kind, data in stream:
                if kind == "end" or data.kind in _wire.OUTCOME_EVENT_KINDS:
                    status = await self.get(pipeline_id)
                    if _wire.wait_is_over(status, stop_at_awaiting_repair, stop_at_awaiting_approval):
                        await stream.aclose()
                        return status
        except _StreamFailed:
            pass
        except PipelineError as exc:
            if exc.status is not None:
                raise
        while (remaining := ends_at - time.monotonic()) > 0:
            status = await self.get(pipeline_id)
            if _wire.wait_is_over(status, stop_at_awaiting_repair, stop_at_awaiting_approval):
                return status
            await asyncio.sleep(min(poll_interval, max(remaining, 0)))
        raise WaitTimedOut(f"{pipeline_id} is still {status.state} after {timeout:g} s", status)


async def _messages(messages: AsyncIterator[ServerSentEvent], base_url: object) -> AsyncIterator[ServerSentEvent]:
    """``messages``, with a connection dropping mid-stream raised as ConnectionFailed."""
    try:
        async for message in messages:
            yield message
    except (httpx.TransportError, httpx.StreamError, SSEError) as exc:
        raise _wire.unreachable(base_url, exc) from exc

"""The index's routes: the list of pipelines and one pipeline's timeline, each as a page or a stream.

Both read the pipeline index (:mod:`pipeline_api.index`), which trails Resonate by one projection;
with ``follow=true`` they answer Server-Sent Events (:mod:`.streams`) that resume after ``Last-Event-ID``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from pipeline_shared.catalogue import JOB_NAME_PATTERN
from pipeline_shared.errors import InvalidListQuery
from pipeline_shared.models import PipelineState

from ..deps import IndexDep, PipelinesDep, ReadablePipeline, Reader
from ..index.cursor import ListQuery
from ..index.queries import MAX_PAGE
from ..routing import AUTHENTICATED_RESPONSES, responses
from ..schemas import PipelinePage, PipelineTimeline
from .streams import StreamEvent, event_stream

router = APIRouter(tags=["index"])


@router.get(
    "/pipelines",
    response_model=PipelinePage,
    responses={200: {"content": {"text/event-stream": {}}, "description": "With follow=true: the stream."}}
    | responses(*AUTHENTICATED_RESPONSES, 422, 503),
    summary="Your pipelines, newest first (all of them, for admin)",
    description="Filtered by state (repeatable), job and creation time; one page at a time (`limit`, "
    "`cursor` from the previous page's `next_cursor`). With `follow=true` (no paging): a stream of "
    "Server-Sent Events, `event: pipeline` with the pipeline's summary each time one that matches "
    "changes; it resumes after `Last-Event-ID`. Read from the pipeline index, which trails Resonate "
    "by the time a projection takes (docs/architecture.md#the-pipeline-index).",
)
async def list_pipelines(
    principal: Reader,
    index: IndexDep,
    state: Annotated[list[PipelineState] | None, Query(description="Only pipelines in this state.")] = None,
    job: Annotated[str | None, Query(pattern=JOB_NAME_PATTERN, description="Only runs of this job.")] = None,
    created_after: Annotated[datetime | None, Query(description="Created at or after (RFC 3339).")] = None,
    created_before: Annotated[datetime | None, Query(description="Created before (RFC 3339).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=1000)] = None,
    follow: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> Any:
    query = ListQuery(
        states=frozenset(state or ()),
        job=job,
        created_after=_aware(created_after, "created_after"),
        created_before=_aware(created_before, "created_before"),
        limit=limit,
        cursor=cursor,
    )
    if not follow:
        return await index.page(principal, query)
    after = _stream_position(last_event_id)

    async def changes() -> AsyncIterator[StreamEvent]:
        async for version, summary in index.follow_list(principal, query, after):
            yield StreamEvent("pipeline", summary, id=str(version))

    return event_stream(changes())


@router.get(
    "/pipelines/{pipeline_id}/events",
    response_model=PipelineTimeline,
    responses={200: {"content": {"text/event-stream": {}}, "description": "With follow=true: the stream."}}
    | responses(*AUTHENTICATED_RESPONSES, 404, 422, 503),
    summary="What happened to a pipeline, in order",
    description="Started (by whom), the run triggered, Databricks states seen, callbacks and notifications "
    "received, repairs, emails delivered or refused, finished; each with its time. With `follow=true`: "
    "every event so far and then each new one as Server-Sent Events (`event: timeline`), then "
    "`event: end` once the pipeline has finished; it resumes after `Last-Event-ID`.",
)
async def pipeline_events(
    pipeline: ReadablePipeline,
    index: IndexDep,
    pipelines: PipelinesDep,
    follow: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> Any:
    pipeline_id = pipeline.root.id
    if not follow:
        events = await index.timeline(pipeline_id)
        summary = await index.summary(pipeline_id)
        state = summary.state if summary else (await pipelines.status(pipeline.root)).state
        return PipelineTimeline(pipeline_id=pipeline_id, state=state, events=events)
    after = _stream_position(last_event_id) or 0

    async def timeline() -> AsyncIterator[StreamEvent]:
        position = after
        async for event in index.follow_timeline(pipeline_id, after):
            # The highest seq sent so far, not this event's: events come in time order, and
            # resuming after the highest one repeats none.
            position = max(position, event.seq)
            yield StreamEvent("timeline", event, id=str(position))
        summary = await index.summary(pipeline_id)
        yield StreamEvent("end", {"pipeline_id": pipeline_id, "state": summary.state if summary else None})

    return event_stream(timeline())


def _aware(moment: datetime | None, name: str) -> datetime | None:
    """A filter's time, which must say its offset: a naive time means a different instant to every reader."""
    if moment is not None and moment.utcoffset() is None:
        raise InvalidListQuery(f"{name}: give the time with its offset, e.g. 2026-12-01T09:00:00Z")
    return moment


def _stream_position(last_event_id: str | None) -> int | None:
    """Where a reconnecting stream resumes: the Last-Event-ID it was sent."""
    if last_event_id is None or not last_event_id.strip():
        return None
    if not last_event_id.strip().isdigit():
        raise InvalidListQuery("Last-Event-ID: not an id this gateway sent (they are whole numbers)")
    return int(last_event_id)

"""What the index answers: a page of pipelines (filters, visibility, cursor), a timeline, and the streams."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY
from psycopg import sql

from pipeline_api.auth.principals import Scope
from pipeline_api.index.cursor import ListQuery, _query_check
from pipeline_api.index.queries import PipelineIndex
from pipeline_api.settings import GatewaySettings
from pipeline_shared.errors import InvalidListQuery
from pipeline_shared.models import PipelineState
from pipeline_shared.resonate_client import ResonateDatabase
from tests.support.composed_promises import ComposedPromises
from tests.support.pipeline_promises import PipelinePromises, principal, project_everything


async def test_a_page_shows_the_principals_own_pipelines_newest_first_and_an_admin_sees_everyones(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    alice, bob = principal(), principal()
    older = await promises.start(alice)
    bobs = await promises.start(bob)
    newer = await promises.start(alice)
    await project_everything(index)

    page = await index.page(alice, ListQuery())
    admin = await index.page(principal(Scope.ADMIN), ListQuery(limit=200))

    assert [item.id for item in page.items] == [newer, older]
    assert (page.total, page.next_cursor) == (2, None)
    assert {item.owner for item in page.items} == {alice.id}
    assert {older, bobs, newer} <= {item.id for item in admin.items}


async def test_filters_by_state_job_and_creation_time_combine(index: PipelineIndex, promises: PipelinePromises) -> None:
    who = principal()
    failed = await promises.start(who)
    words = await promises.start(who, job="word-frequencies")
    starting = await promises.start(who)
    await promises.finish(failed, PipelineState.FAILED)
    await project_everything(index)
    created = {item.id: item.created_at for item in (await index.page(who, ListQuery())).items}

    async def ids_of(**filters: Any) -> list[str]:
        return [item.id for item in (await index.page(who, ListQuery(**filters))).items]

    assert await ids_of(states=frozenset({PipelineState.FAILED})) == [failed]
    assert await ids_of(states=frozenset({PipelineState.STARTING})) == [starting, words]
    assert await ids_of(job="word-frequencies") == [words]
    assert await ids_of(job="csv-statistics", states=frozenset({PipelineState.STARTING})) == [starting]
    assert await ids_of(created_after=created[words]) == [starting, words]
    assert await ids_of(created_before=created[words]) == [failed]
    assert await ids_of(created_after=created[starting] + timedelta(seconds=1)) == []


async def test_a_page_and_its_total_agree_when_a_projection_lands_between_their_reads(
    index: PipelineIndex, database: ResonateDatabase, settings: GatewaySettings, promises: PipelinePromises
) -> None:
    """CI once listed 2 succeeded pipelines under a total of 4: two were projected between the two reads."""
    who = principal()
    pipelines = [await promises.start(who) for _ in range(3)]
    await project_everything(index)
    projector = PipelineIndex(database, settings)

    async def finish_them() -> None:
        for pipeline_id in pipelines:
            await promises.finish(pipeline_id, PipelineState.SUCCEEDED)
        assert await project_everything(projector) >= len(pipelines)

    reader = PipelineIndex(_AfterStatement(database, "ORDER BY created_at", finish_them), settings)
    page = await reader.page(who, ListQuery(states=frozenset({PipelineState.SUCCEEDED})))

    assert (page.items, page.total) == ([], 0)
    after = await index.page(who, ListQuery(states=frozenset({PipelineState.SUCCEEDED})))
    assert ({item.id for item in after.items}, after.total) == (set(pipelines), 3)
    assert after.stream_position > page.stream_position


class _AfterStatement:
    """A database whose sessions run ``then`` once, right after a statement containing ``marker`` has run."""

    def __init__(self, database: ResonateDatabase, marker: str, then: Callable[[], Awaitable[None]]) -> None:
        self._database, self._marker, self._then = database, marker, then

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Any]:
        async with self._database.session() as conn:
            yield _Forwarding(conn, cursor=lambda *args, **kwargs: self._cursor(conn, conn.cursor(*args, **kwargs)))

    def _cursor(self, conn: Any, cursor: Any) -> Any:
        async def execute(query: Any, *args: Any, **kwargs: Any) -> Any:
            result = await cursor.execute(query, *args, **kwargs)
            text = query.as_string(conn) if isinstance(query, sql.Composable) else str(query)
            if self._marker in text and self._then is not None:
                then, self._then = self._then, None
                await then()
            return result

        return _Forwarding(cursor, execute=execute)


class _Forwarding:
    """``wrapped`` but for the attributes given."""

    def __init__(self, wrapped: Any, **own: Any) -> None:
        self._wrapped = wrapped
        self.__dict__.update(own)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


async def test_a_cursor_pages_through_every_pipeline_once_in_order(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    who = principal()
    started = [await promises.start(who) for _ in range(5)]
    await project_everything(index)

    seen, cursor, pages = [], None, 0
    while True:
        page = await index.page(who, ListQuery(limit=2, cursor=cursor))
        pages += 1
        assert page.total == 5
        seen += [item.id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == 3
    assert seen == list(reversed(started))


async def test_a_cursor_given_for_another_list_is_refused(index: PipelineIndex, promises: PipelinePromises) -> None:
    who = principal()
    for _ in range(3):
        await promises.start(who)
    await project_everything(index)
    cursor = (await index.page(who, ListQuery(limit=1))).next_cursor
    assert cursor is not None

    for whose, query in [
        (principal(), ListQuery(limit=1, cursor=cursor)),
        (who, ListQuery(limit=1, cursor=cursor, job="csv-statistics")),
        (who, ListQuery(limit=1, cursor=cursor, states=frozenset({PipelineState.STARTING}))),
        (who, ListQuery(limit=1, cursor=cursor[:-2] + "xx")),
        (who, ListQuery(limit=1, cursor="not a cursor")),
    ]:
        with pytest.raises(InvalidListQuery, match="cursor"):
            await index.page(whose, query)
    # The page size may change between pages: the same list, a bigger page.
    assert len((await index.page(who, ListQuery(limit=5, cursor=cursor))).items) == 2


async def test_a_timeline_after_an_event_holds_only_the_later_ones(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    pipeline_id = await promises.start(principal())
    run = await promises.trigger(pipeline_id, run_id=7002)
    await promises.finish(pipeline_id, PipelineState.SUCCEEDED, run=run, result={"rows": 1})
    await project_everything(index)

    events = await index.timeline(pipeline_id)
    later = await index.timeline(pipeline_id, after=events[0].seq)

    assert [event.kind for event in events] == ["started", "run_triggered", "finished"]
    assert events[1].data["run_id"] == 7002
    assert later == events[1:]
    assert await index.timeline("idx-no-such-pipeline") == []


async def test_following_a_timeline_yields_every_event_and_ends_once_the_pipeline_has_finished(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    pipeline_id = await promises.start(principal())
    await project_everything(index)
    followed: list[str] = []

    async def follow() -> None:
        async for event in index.follow_timeline(pipeline_id):
            followed.append(event.kind)

    follower = asyncio.create_task(follow())
    async with asyncio.timeout(10):
        while followed != ["started"]:
            await asyncio.sleep(0.05)
    await promises.finish(pipeline_id, PipelineState.CANCELLED)
    await project_everything(index)

    async with asyncio.timeout(10):
        await follower
    assert followed == ["started", "finished"]


async def test_following_a_list_yields_each_change_after_the_page_it_resumes_from(
    index: PipelineIndex, promises: PipelinePromises
) -> None:
    who = principal()
    pipeline_id = await promises.start(who)
    await project_everything(index)
    page = await index.page(who, ListQuery())
    changes = index.follow_list(who, ListQuery(), after=page.stream_position)

    await promises.finish(pipeline_id, PipelineState.SUCCEEDED)
    other = await promises.start(principal())  # another principal's: not in this list
    await project_everything(index)

    async with asyncio.timeout(10):
        version, summary = await anext(changes)
    await changes.aclose()
    assert (summary.id, summary.state) == (pipeline_id, PipelineState.SUCCEEDED)
    assert version > page.stream_position
    assert other != pipeline_id


async def test_filters_by_a_steps_name_and_by_what_a_pipeline_awaits(
    index: PipelineIndex, promises: PipelinePromises, composed: ComposedPromises
) -> None:
    who = principal()
    legacy = await promises.start(who)
    scored = await composed.start(who)
    await composed.job_step(scored, "1", "risk-score", 801)
    gated = await composed.start(who)
    await composed.job_step(gated, "1", "report-build", 802, outcome="failure")
    await composed.awaiting_repair(gated, "1")
    await composed.gate(gated, "2", "high-risk")
    repairing = await composed.start(who)
    await composed.job_step(repairing, "1", "risk-score", 803, outcome="failure")
    await composed.awaiting_repair(repairing, "1")
    await project_everything(index)

    async def ids_of(**filters: Any) -> list[str]:
        return [item.id for item in (await index.page(who, ListQuery(**filters))).items]

    assert await ids_of(step="risk-score") == [repairing, scored]
    assert await ids_of(step="high-risk") == [gated]
    assert await ids_of(step="nothing-named-so") == []
    assert await ids_of(awaiting="approval") == [gated]
    # A run awaiting repair beside an open gate is found too, though the gate is what the pipeline's state names.
    assert await ids_of(awaiting="repair") == [repairing, gated]
    assert await ids_of(awaiting="repair", step="risk-score") == [repairing]
    assert await ids_of(states=frozenset({PipelineState.AWAITING_APPROVAL})) == [gated]
    assert legacy in await ids_of()


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"step": "risk-score'; DROP TABLE pipelines.pipeline; --"}, "step"),
        ({"step": "\x00"}, "step"),
        ({"step": ""}, "step"),
        ({"step": "x" * 81}, "step"),
        ({"awaiting": "lunch"}, "awaiting"),
    ],
)
async def test_a_step_or_awaiting_filter_that_cannot_match_is_refused_naming_it(
    index: PipelineIndex, filters: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidListQuery, match=f"^{field}:"):
        await index.page(principal(), ListQuery(**filters))


async def test_a_cursor_given_before_the_step_filters_reads_as_it_did_and_theirs_is_tied_to_them(
    index: PipelineIndex, composed: ComposedPromises
) -> None:
    who = principal()
    for _ in range(3):
        pid = await composed.start(who)
        await composed.job_step(pid, "1", "risk-score", 900)
    await project_everything(index)
    plain = (await index.page(who, ListQuery(limit=1))).next_cursor
    stepped = (await index.page(who, ListQuery(limit=1, step="risk-score"))).next_cursor
    assert plain is not None and stepped is not None

    # A list without the new filters checks its cursor exactly as before them.
    created, pipeline_id, _ = json.loads(base64.urlsafe_b64decode(plain + "=" * (-len(plain) % 4)))
    before = json.dumps([who.id, [], None, created, pipeline_id], separators=(",", ":"))
    assert _query_check(who, ListQuery(), created, pipeline_id) == hashlib.sha256(before.encode()).hexdigest()[:24]
    assert len((await index.page(who, ListQuery(limit=5, cursor=plain))).items) == 2
    assert len((await index.page(who, ListQuery(limit=5, cursor=stepped, step="risk-score"))).items) == 2
    for query in (
        ListQuery(cursor=stepped),
        ListQuery(cursor=plain, step="risk-score"),
        ListQuery(cursor=stepped, awaiting="repair"),
    ):
        with pytest.raises(InvalidListQuery, match="cursor"):
            await index.page(who, query)


def gauge(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} is not exported"
    return value


async def test_the_metrics_read_from_the_index_count_who_waits_for_a_person_and_the_steps_in_flight(
    index: PipelineIndex, composed: ComposedPromises
) -> None:
    await project_everything(index)
    await index.observe()
    approvals = gauge("pipelines_awaiting_people", awaiting="approval")
    repairs = gauge("pipelines_awaiting_people", awaiting="repair")
    running = gauge("pipeline_steps_in_flight", kind="job", state="running")
    sent = gauge("pipeline_steps_in_flight", kind="email", state="sent")

    gated = await composed.start(principal())
    await composed.job_step(gated, "1", "risk-score", 1201)
    await composed.gate(gated, "2", "high-risk")
    await composed.email_step(gated, "3", "Told")
    ended = await composed.start(principal())
    await composed.job_step(ended, "1", "risk-score", 1202)
    await composed.finish(ended, PipelineState.FAILED)
    await project_everything(index)
    await index.observe()

    assert gauge("pipelines_awaiting_people", awaiting="approval") == approvals + 1
    assert gauge("pipelines_awaiting_people", awaiting="repair") == repairs
    # The steps of a pipeline that ended are no longer in flight.
    assert gauge("pipeline_steps_in_flight", kind="job", state="running") == running + 1
    assert gauge("pipeline_steps_in_flight", kind="email", state="sent") == sent + 1
    assert gauge("pipeline_steps_in_flight", kind="approval", state="expired") >= 0

"""The pipeline index: every pipeline's summary and timeline, for lists and streams.

Resonate's Postgres server does not implement promise search, so finding "my
failed pipelines of last night" needs an index of our own. It lives in the
same database, in the schema ``pipelines`` (migrations in
``infra/pipeline-index/migrations``, applied by the resonate-pg image at
start), and it never decides anything: Resonate's promises stay the truth.

How it keeps up, without ever disagreeing for long:

1. A trigger on ``resonate.promises`` notes, **in the same transaction** as
   the write, that a pipeline changed (``pipelines.changes``), and NOTIFYs
   ``pipelines_changed``. A note cannot be lost: it commits or rolls back
   with what it notes, whichever service or crash is involved.
2. The projector (:meth:`PipelineIndex.run`, in every gateway; an advisory
   lock lets one work at a time) takes the notes, reads the noted
   pipelines' promises in one statement, reads each one's as a
   :class:`~pipeline_shared.promise_tree.PipelineTree`, and rewrites its row
   and events from it: the state by the very code that answers ``GET
   /pipelines/{id}`` (:func:`..domain.pipelines.status_of`), the events by
   :func:`.events.timeline_of`. It deletes the notes it handled in the
   same transaction, so a projector killed half way leaves them for the next.
3. A reader sees, between a change in Resonate and its projection (about
   :data:`PROJECTION_DELAY_SECONDS` while the gateway runs, which lets a
   pipeline's burst of writes be projected once; until it runs again
   otherwise), the pipeline's previous state: never a state it has not been in.

Readers that follow (the SSE streams) are woken by ``pipelines_indexed``,
which a projection NOTIFYs, and read again at least every
:data:`FOLLOW_POLL_SECONDS` whatever happens to the listening connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import PoolTimeout
from resonate.types import PromiseRecord

from pipeline_shared.errors import CoordinatorUnavailable, PipelineConflict
from pipeline_shared.models import StepKind, StepState
from pipeline_shared.promise_tree import PipelineTree

from .. import metrics
from ..auth.principals import Principal
from ..domain.pipelines import spec_of, status_of
from ..schemas import PipelineEvent, PipelinePage, PipelineSummary
from .cursor import ListQuery, _decode_cursor, _encode_cursor, _filters
from .event import KINDS
from .events import timeline_of
from .projector import _Projection, _snapshots, _write, composed_row

if TYPE_CHECKING:
    from pipeline_shared.resonate_client import ResonateDatabase

    from ..settings import GatewaySettings

logger = logging.getLogger("pipeline_api.index")

#: The index migration this code reads and writes (infra/pipeline-index/migrations): 2 adds the
#: start limits, 3 the web page's signed-out sessions, 4 each pipeline's steps and awaiting_approval,
#: 5 the record of the catalogue's schedules, 6 the watchdog's sweep (the worker's), 7 a start's admission
#: that tells a taken id in the same statement.
INDEX_MIGRATION = 7

#: Largest page a client may ask for.
MAX_PAGE = 200
#: Counted exactly up to here; beyond, the total is not worth a scan of every row.
TOTAL_LIMIT = 10_000
#: Notes taken per projection batch (a pipeline noted several times is projected once).
BATCH_NOTES = 1_000
#: Changed pipelines a list stream reads at a time.
FOLLOW_BATCH = 500
#: Longest a follower or an idle projector goes without looking, notifications or not.
FOLLOW_POLL_SECONDS = 1.0
#: How long the projector lets changes gather before it projects them; what a reader of the index trails by.
PROJECTION_DELAY_SECONDS = 0.25
#: How long a followed timeline waits for a pipeline the index has not shown yet.
NOT_INDEXED_SECONDS = 60.0
#: How often every gateway reads the index's counts of waiting pipelines and of their steps for its metrics.
OBSERVE_SECONDS = 15.0
#: The states of a pipeline that has not ended, as the index's partial index on them lists them (0004).
_NOT_ENDED = ["starting", "waiting", "awaiting_repair", "awaiting_approval", "notifying"]
#: The advisory lock that lets one projector at a time work (any constant the database does not use otherwise).
PROJECTOR_LOCK = 0x70_69_70_65  # "pipe"
#: The latest version a pipeline row has: where a stream of the changes from then on starts.
_POSITION = (sql.SQL("SELECT coalesce(max(version), 0) AS v FROM pipelines.pipeline"), {})


@dataclass
class _Waiters:
    """Wakes whoever waits for one kind of news: a change in Resonate (the projector), or a projection (followers)."""

    condition: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wake(self) -> None:
        async with self.condition:
            self.condition.notify_all()

    async def wait(self, timeout: float) -> None:
        async with self.condition:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.condition.wait(), timeout)


class PipelineIndex:
    def __init__(self, database: ResonateDatabase, settings: GatewaySettings) -> None:
        self._db = database
        self._settings = settings
        #: Resonate changed (pipelines_changed): the projector has work.
        self._changed = _Waiters()
        #: The index changed (pipelines_indexed, or this process projected): followers have news.
        self._indexed = _Waiters()

    # ── reading ──────────────────────────────────────────────────────────

    async def page(self, principal: Principal, query: ListQuery) -> PipelinePage:
        """One page of the pipelines ``principal`` may see, newest first.

        The page, its total and the stream position are read from one snapshot: read apart, a
        projection landing between them gave a page whose total counted rows it did not show.
        """
        where, params = _filters(principal, query)
        after = where
        if query.cursor is not None:
            created, pipeline_id = _decode_cursor(principal, query, query.cursor)
            after = sql.SQL("{} AND (created_at, id) < (%(cursor_at)s, %(cursor_id)s)").format(where)
            params |= {"cursor_at": created, "cursor_id": pipeline_id}
        positions, rows, counted = await self._read(
            _POSITION,
            (
                sql.SQL(
                    "SELECT * FROM pipelines.pipeline WHERE {} ORDER BY created_at DESC, id DESC LIMIT %(limit)s"
                ).format(after),
                params | {"limit": query.limit + 1},
            ),
            (
                sql.SQL(
                    "SELECT count(*) AS n FROM (SELECT 1 FROM pipelines.pipeline WHERE {} LIMIT %(most)s) AS matching"
                ).format(where),
                params | {"most": TOTAL_LIMIT + 1},
            ),
        )
        total = counted[0]["n"]
        items = [_summary(row) for row in rows[: query.limit]]
        more = len(rows) > query.limit
        return PipelinePage(
            items=items,
            next_cursor=_encode_cursor(principal, query, rows[query.limit - 1]) if more else None,
            total=total if total <= TOTAL_LIMIT else None,
            stream_position=positions[0]["v"],
        )

    async def summary(self, pipeline_id: str) -> PipelineSummary | None:
        rows = await self._fetch(sql.SQL("SELECT * FROM pipelines.pipeline WHERE id = %(id)s"), {"id": pipeline_id})
        return _summary(rows[0]) if rows else None

    async def timeline(self, pipeline_id: str, after: int = 0) -> list[PipelineEvent]:
        """The pipeline's events, in the order they happened; only those indexed after ``after`` if given."""
        rows = await self._fetch(
            sql.SQL(
                "SELECT seq, at, kind, summary, data FROM pipelines.event WHERE pipeline_id = %(id)s AND "
                "seq > %(after)s ORDER BY at, array_position(%(kinds)s::text[], kind), seq"
            ),
            # Events of the same moment in the order they happen (a run is triggered before it calls back).
            {"id": pipeline_id, "after": after, "kinds": list(KINDS)},
        )
        return [PipelineEvent(**row) for row in rows]

    async def follow_timeline(self, pipeline_id: str, after: int = 0) -> AsyncIterator[PipelineEvent]:
        """Every event after ``after``, then each new one as it is indexed; ends once the pipeline has finished.

        A pipeline's state and its events are written in one transaction, so
        once the index shows it final, every event it will ever have is there.
        Also ends when the pipeline leaves the index (collected after its
        retention period), or is still not in it after :data:`NOT_INDEXED_SECONDS`
        (the caller read it from Resonate: it is only just started, or gone).
        """
        indexed = after > 0
        deadline = time.monotonic() + NOT_INDEXED_SECONDS
        while True:
            events = await self.timeline(pipeline_id, after)
            for event in events:
                after = max(after, event.seq)
                yield event
            if any(event.kind == "finished" for event in events):
                return
            if events:
                indexed = True
            else:
                summary = await self.summary(pipeline_id)
                if summary is not None and summary.state.is_final:
                    return
                if summary is None and (indexed or time.monotonic() > deadline):
                    return
                indexed = indexed or summary is not None
            await self._indexed.wait(FOLLOW_POLL_SECONDS)

    async def follow_list(
        self, principal: Principal, query: ListQuery, after: int | None = None
    ) -> AsyncIterator[tuple[int, PipelineSummary]]:
        """Each change of a pipeline matching ``query`` after version ``after`` (None: from now), as it happens."""
        where, params = _filters(principal, query)
        if after is None:
            after = await self._position()
        while True:
            rows = await self._fetch(
                sql.SQL(
                    "SELECT * FROM pipelines.pipeline WHERE {} AND version > %(after)s ORDER BY version LIMIT %(most)s"
                ).format(where),
                params | {"after": after, "most": FOLLOW_BATCH},
            )
            for row in rows:
                after = row["version"]
                yield after, _summary(row)
            if len(rows) < FOLLOW_BATCH:
                await self._indexed.wait(FOLLOW_POLL_SECONDS)

    async def _position(self) -> int:
        """The latest version a pipeline row has: where a stream of the changes from now on starts."""
        (rows,) = await self._read(_POSITION)
        return rows[0]["v"]

    async def problem(self) -> str | None:
        """None when the index is at the migration this code needs, else why not."""
        try:
            rows = await self._fetch(sql.SQL("SELECT max(version) AS v FROM pipelines.schema_migrations"), {})
        except CoordinatorUnavailable as exc:
            return str(exc)
        version = rows[0]["v"] if rows else None
        if version is None or version < INDEX_MIGRATION:
            return f"the pipeline index is at migration {version or 0}; this gateway needs {INDEX_MIGRATION}"
        return None

    async def _fetch(self, query: sql.Composable, params: dict[str, Any]) -> list[dict[str, Any]]:
        (rows,) = await self._read((query, params))
        return rows

    async def _read(self, *statements: tuple[sql.Composable, dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Each statement's rows; several are read in one read-only transaction that sees one snapshot."""
        try:
            async with self._db.session() as conn:
                cursor = conn.cursor(row_factory=dict_row)
                if len(statements) == 1:
                    await cursor.execute(*statements[0])
                    return [await cursor.fetchall()]
                async with conn.transaction():
                    await cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    results = []
                    for query, params in statements:
                        await cursor.execute(query, params)
                        results.append(await cursor.fetchall())
                    return results
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise CoordinatorUnavailable(f"the pipeline index cannot be read: {exc}") from exc
        except psycopg.errors.UndefinedTable as exc:
            raise CoordinatorUnavailable(
                "the pipeline index is not in the database (its migrations have not run)"
            ) from exc

    # ── projecting ───────────────────────────────────────────────────────

    async def observe(self) -> None:
        """Set the metrics read from the index: pipelines waiting for a person, and the steps of those in flight.

        Every gateway reads them (not only the one projecting), so each replica's figures are the index's.
        """
        waiting = await self._fetch(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE state = 'awaiting_approval' OR steps @> %(gate)s) AS approval, "
                "count(*) FILTER (WHERE state = 'awaiting_repair' OR steps @> %(repair)s) AS repair "
                "FROM pipelines.pipeline WHERE state = ANY(%(not_ended)s)"
            ),
            {
                "gate": Jsonb([{"state": "awaiting_approval"}]),
                "repair": Jsonb([{"state": "awaiting_repair"}]),
                "not_ended": _NOT_ENDED,
            },
        )
        for awaiting in ("approval", "repair"):
            metrics.INDEX_AWAITING_PEOPLE.labels(awaiting=awaiting).set(waiting[0][awaiting])
        steps = await self._fetch(
            sql.SQL(
                "SELECT step->>'kind' AS kind, step->>'state' AS state, count(*) AS n "
                "FROM pipelines.pipeline, jsonb_array_elements(steps) AS step "
                "WHERE state = ANY(%(not_ended)s) AND steps <> '[]' GROUP BY 1, 2"
            ),
            {"not_ended": _NOT_ENDED},
        )
        counted = {(row["kind"], row["state"]): row["n"] for row in steps}
        for kind in StepKind:
            for state in StepState:
                metrics.INDEX_STEPS_IN_FLIGHT.labels(kind=kind.value, state=state.value).set(
                    counted.get((kind.value, state.value), 0)
                )

    async def _observe_forever(self) -> None:
        while True:
            try:
                await self.observe()
            except CoordinatorUnavailable as exc:
                logger.info("pipeline index: cannot read its metrics now: %s", exc)
            await asyncio.sleep(OBSERVE_SECONDS)

    async def run(self) -> None:
        """Project every change, as it comes, for as long as the gateway runs."""
        listener = asyncio.create_task(self._listen(), name="pipeline-index-listener")
        observer = asyncio.create_task(self._observe_forever(), name="pipeline-index-metrics")
        try:
            while True:
                # A pipeline writes several promises within moments (a callback, the email's call and its
                # answer, the outcome): waiting this long projects it once for them all, not once each.
                await asyncio.sleep(PROJECTION_DELAY_SECONDS)
                try:
                    projected = await self.project_pending()
                except (CoordinatorUnavailable, psycopg.OperationalError, PoolTimeout) as exc:
                    logger.warning("pipeline index: cannot project now, will retry: %s", exc)
                    projected = 0
                except Exception:
                    logger.exception("pipeline index: projection failed, will retry")
                    projected = 0
                if projected == 0:
                    await self._changed.wait(FOLLOW_POLL_SECONDS)
        finally:
            for task in (listener, observer):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def project_pending(self) -> int:
        """Project the pipelines noted as changed; how many notes were handled (0: none, or another gateway's turn).

        A handful of statements a batch, however many pipelines it holds: the
        promises of all of them in one, their rows and their events each in
        one pipelined batch. A pipeline whose promises cannot be read keeps
        its notes and is tried again; the others go on.
        """
        async with self._db.session() as conn, conn.transaction():
            locked = await (await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PROJECTOR_LOCK,))).fetchone()
            if not locked or not locked[0]:
                return 0
            notes = await (
                await conn.execute(
                    "SELECT seq, pipeline_id, extract(epoch FROM clock_timestamp() - noted_at) FROM pipelines.changes "
                    "ORDER BY seq LIMIT %s",
                    (BATCH_NOTES,),
                )
            ).fetchall()
            metrics.INDEX_LAG.set(float(notes[0][2]) if notes else 0.0)
            if not notes:
                return 0
            by_pipeline: dict[str, list[int]] = {}
            for seq, pipeline_id, _ in notes:
                by_pipeline.setdefault(pipeline_id, []).append(seq)
            snapshots = await _snapshots(conn, list(by_pipeline))
            projections: list[_Projection] = []
            for pipeline_id in by_pipeline:
                try:
                    projections.append(await self._projection(pipeline_id, snapshots.get(pipeline_id, {})))
                except Exception:
                    logger.exception("pipeline index: could not project pipeline %r; will retry", pipeline_id)
                    metrics.INDEX_PROJECTION_FAILURES.inc()
            written = await _write(conn, projections)
            # Exactly the notes read before the pipelines were: a note committed since stays for the next batch.
            handled = [seq for pipeline_id in written for seq in by_pipeline[pipeline_id]]
            if handled:
                await conn.execute("DELETE FROM pipelines.changes WHERE seq = ANY(%s)", (handled,))
                await conn.execute("SELECT pg_notify('pipelines_indexed', '')")
        metrics.INDEX_PROJECTIONS.inc(len(written))
        if handled:
            await self._indexed.wake()
        return len(handled)

    async def _projection(self, pipeline_id: str, promises: dict[str, PromiseRecord]) -> _Projection:
        """One pipeline's row and events from its promises as they are now; no row: it is gone."""
        root = promises.get(pipeline_id)
        tree = PipelineTree(root, promises) if root else None
        if tree is not None and tree.composed:
            # A pipeline run by its code: its row comes from its steps (see .projector).
            return _Projection(pipeline_id, composed_row(tree), timeline_of(tree))
        try:
            status = status_of(tree, spec_of(root), self._settings.catalogue.default) if tree else None
        except PipelineConflict:
            status = None  # an id holding something other than a pipeline
        if tree is None or status is None:
            # Gone (collected after its retention period): its events go with it.
            return _Projection(pipeline_id, None, [])
        run = status.databricks
        row = {
            "id": pipeline_id,
            "owner": tree.owner,
            "job": status.job,
            "state": status.state.value,
            "email": status.email,
            "created_at": status.created_at,
            "updated_at": status.updated_at,
            "run_id": run.run_id if run else None,
            "run_page_url": run.run_page_url if run else None,
            "steps": Jsonb([]),
        }
        return _Projection(pipeline_id, row, timeline_of(tree))

    async def _listen(self) -> None:
        """Wake the projector and the followers on the database's notifications; reconnect when it goes away."""
        while True:
            try:
                conn = await self._db.dedicated()
                try:
                    await conn.execute("LISTEN pipelines_changed")
                    await conn.execute("LISTEN pipelines_indexed")
                    # Whatever was missed while not listening is looked at now.
                    await self._changed.wake()
                    await self._indexed.wake()
                    async for notification in conn.notifies():
                        if notification.channel == "pipelines_changed":
                            await self._changed.wake()
                        else:
                            await self._indexed.wake()
                finally:
                    await conn.close()
            except psycopg.Error as exc:
                logger.info("pipeline index: listening connection lost (%s); polling until it is back", exc)
            await asyncio.sleep(FOLLOW_POLL_SECONDS)


def _summary(row: dict[str, Any]) -> PipelineSummary:
    return PipelineSummary(**{name: row[name] for name in PipelineSummary.model_fields})

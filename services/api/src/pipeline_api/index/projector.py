"""The projector's writing side: a snapshot of each noted pipeline's promises, and its row and events written.

How the projector keeps up (notes, the advisory lock, the delay) is told in :mod:`.queries`, whose
:meth:`~.queries.PipelineIndex.run` drives it; this module reads the noted pipelines' promises in one
statement and writes their projections, all at once or one by one.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from resonate.types import PromiseRecord

from pipeline_shared.models import StepKind
from pipeline_shared.promise_rows import COLUMNS, record_of_row
from pipeline_shared.promise_tree import PipelineTree

from .. import metrics
from .events import Event

logger = logging.getLogger("pipeline_api.index")


#: What the index keeps of each step (:class:`~pipeline_shared.models.StepSummary`): enough to list and
#: filter; the whole of each is the status document's.
STEP_BRIEF = frozenset({"id", "kind", "name", "state"})


@dataclass(frozen=True)
class _Projection:
    pipeline_id: str
    #: Its row in pipelines.pipeline; None when the pipeline is gone.
    row: dict[str, Any] | None
    events: list[Event]


_UPSERT_PIPELINE = """
    INSERT INTO pipelines.pipeline AS p
        (id, owner, job, state, email, created_at, updated_at, run_id, run_page_url, steps)
    VALUES (%(id)s, %(owner)s, %(job)s, %(state)s, %(email)s, %(created_at)s, %(updated_at)s, %(run_id)s,
            %(run_page_url)s, %(steps)s)
    ON CONFLICT (id) DO UPDATE SET
        state = excluded.state, updated_at = excluded.updated_at, run_id = excluded.run_id,
        run_page_url = excluded.run_page_url, steps = excluded.steps, version = nextval('pipelines.history')
    WHERE (p.state, p.updated_at, p.run_id, p.run_page_url, p.steps)
          IS DISTINCT FROM (excluded.state, excluded.updated_at, excluded.run_id, excluded.run_page_url, excluded.steps)
"""

_INSERT_EVENT = (
    "INSERT INTO pipelines.event (pipeline_id, key, at, kind, summary, data) "
    "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (pipeline_id, key) DO NOTHING"
)


async def _snapshots(conn: Any, pipeline_ids: list[str]) -> dict[str, dict[str, PromiseRecord]]:
    """Every promise of each pipeline, read in one statement (one snapshot of them all), by pipeline and id."""
    cursor = await conn.execute(
        f"SELECT origin_id, {COLUMNS} "
        "FROM unnest(%s::text[]) AS noted(pipeline_id), LATERAL pipelines.promises_of(noted.pipeline_id) AS p",
        (pipeline_ids,),
    )
    snapshots: dict[str, dict[str, PromiseRecord]] = {}
    for origin, *columns in await cursor.fetchall():
        record = record_of_row(tuple(columns))
        snapshots.setdefault(origin, {})[record.id] = record
    return snapshots


async def _write(conn: Any, projections: list[_Projection]) -> list[str]:
    """Write the projections; the ids written. All at once, or one by one when that fails, skipping the failures."""
    try:
        async with conn.transaction():
            await _write_all(conn, projections)
        return [projection.pipeline_id for projection in projections]
    except psycopg.OperationalError:
        raise
    except psycopg.Error:
        logger.warning("pipeline index: a batch did not write; writing its pipelines one by one")
    written = []
    for projection in projections:
        try:
            async with conn.transaction():
                await _write_all(conn, [projection])
        except psycopg.OperationalError:
            raise
        except psycopg.Error:
            logger.exception("pipeline index: could not write pipeline %r; will retry", projection.pipeline_id)
            metrics.INDEX_PROJECTION_FAILURES.inc()
            continue
        written.append(projection.pipeline_id)
    return written


async def _write_all(conn: Any, projections: list[_Projection]) -> None:
    gone = [(p.pipeline_id,) for p in projections if p.row is None]
    rows = [p.row for p in projections if p.row is not None]
    # Each pipeline's events in the order they happened, so that each one's seq follows the one before.
    events = [
        (p.pipeline_id, e.key, e.at, e.kind, e.summary, json.dumps(e.data, default=str))
        for p in projections
        if p.row is not None
        for e in p.events
    ]
    async with conn.cursor() as cursor:
        if gone:
            await cursor.executemany("DELETE FROM pipelines.pipeline WHERE id = %s", gone)
        if rows:
            await cursor.executemany(_UPSERT_PIPELINE, rows)
        if events:
            await cursor.executemany(_INSERT_EVENT, events)


def composed_row(tree: PipelineTree) -> dict[str, Any] | None:
    """The row of a pipeline run by its code, read from its steps; None when its root is no pipeline's.

    Its state is the tree's own reading of its steps (the status document's
    rule); its run, that of its one job step when it has exactly one (so a
    pipeline of one job lists as one always did), else none: each step's run
    is on the pipeline's page. Its steps are kept briefly, for the list and
    its filters: id, kind, name and state.
    """
    spec, state = tree.spec, tree.composed_state()
    if spec is None or state is None:
        return None
    steps = tree.steps()
    jobs = [step for step in steps if step.kind is StepKind.JOB]
    run = jobs[0].run if len(jobs) == 1 else None
    updated = max(promise.settled_at or promise.created_at for promise in tree.telling())
    return {
        "id": tree.id,
        "owner": tree.owner,
        "job": spec.job or "",
        "state": state.value,
        "email": spec.email,
        "created_at": _moment(tree.root.created_at),
        "updated_at": _moment(updated),
        "run_id": run.run_id if run else None,
        "run_page_url": run.run_page_url if run else None,
        "steps": Jsonb([step.model_dump(mode="json", include=STEP_BRIEF) for step in steps]),
    }


def _moment(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)

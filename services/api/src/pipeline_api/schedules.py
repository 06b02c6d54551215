"""The catalogue's schedules made Resonate's, at each gateway start.

Why the gateway: it is the service that reads the catalogue as clients see it (what ``GET /jobs``
lists is what is scheduled), every replica holds the catalogue it was deployed with, and it holds
the pipeline index's database, where the record of which schedules are ours lives
(``pipelines.schedule``; resonate-pg cannot list schedules). The worker only runs what fires.

Every replica reconciles once at start, one at a time (a session advisory lock), in the
background and retrying until it succeeds, so a gateway starts and serves even while the database
is away. Reconciling is idempotent (:func:`pipeline_shared.schedules.reconcile`): a second replica
with the same catalogue changes nothing. During a rolling deploy the last replica to start wins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from pipeline_shared.schedules import LocalScheduleRegistry, ScheduleRegistry, declared_schedules, reconcile

if TYPE_CHECKING:
    from pipeline_shared.resonate_client import ResonateLink

    from .settings import GatewaySettings

logger = logging.getLogger("pipeline_api.schedules")

#: The advisory lock that lets one gateway at a time reconcile (any constant the database does not use otherwise).
SCHEDULES_LOCK = 0x73_63_68_64  # "schd"
#: Between attempts while Resonate or the database is away; doubled up to the maximum.
RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 60.0


class DatabaseScheduleRegistry:
    """The record in ``pipelines.schedule`` (infra/pipeline-index/migrations/0005), a statement a change."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def names(self) -> set[str]:
        rows = await (await self._conn.execute("SELECT pipeline FROM pipelines.schedule")).fetchall()
        return {row[0] for row in rows}

    async def add(self, pipeline: str) -> None:
        await self._conn.execute(
            "INSERT INTO pipelines.schedule (pipeline) VALUES (%s) ON CONFLICT (pipeline) DO NOTHING", (pipeline,)
        )

    async def remove(self, pipeline: str) -> None:
        await self._conn.execute("DELETE FROM pipelines.schedule WHERE pipeline = %s", (pipeline,))


async def reconcile_schedules(link: ResonateLink, settings: GatewaySettings, local: ScheduleRegistry) -> None:
    """Make Resonate's schedules the catalogue's, once; ``local`` is the record when there is no database."""
    declared = declared_schedules(settings.catalogue, settings.PIPELINE_FINISH_GRACE_SECONDS)
    schedules = link.resonate.schedules
    if link.database is None:
        changed = await reconcile(schedules, declared, local)
    else:
        async with link.database.session() as conn:
            await conn.execute("SELECT pg_advisory_lock(%s)", (SCHEDULES_LOCK,))
            try:
                changed = await reconcile(schedules, declared, DatabaseScheduleRegistry(conn))
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEDULES_LOCK,))
    logger.info(
        "schedules: %d declared; created %s, replaced %s, deleted %s",
        len(declared),
        changed.created or "none",
        changed.replaced or "none",
        changed.deleted or "none",
    )


async def keep_schedules(link: ResonateLink, settings: GatewaySettings) -> None:
    """:func:`reconcile_schedules`, retried with a growing pause until it succeeds (the lifespan's task)."""
    local = LocalScheduleRegistry()
    pause = RETRY_SECONDS
    while True:
        try:
            await reconcile_schedules(link, settings, local)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("schedules: could not reconcile the catalogue's schedules; retrying in %.0f s", pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, MAX_RETRY_SECONDS)

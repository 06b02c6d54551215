"""Which web page sessions were signed out: the part of a session the server keeps.

A session is a signed cookie (:mod:`.sessions`) that the gateway could
otherwise only let expire: a copy taken before signing out would keep working
until then. Signing out records the session's id here, and every request's
session is checked against the record, so the copy is refused at once.

The record lives in the resonate-pg database, schema ``pipelines`` (migration
``0003_ended_ui_sessions``), so every gateway replica sees every sign-out. A
row is kept only until the session would have expired by itself (and
:data:`CLOCK_MARGIN_SECONDS` more); recording a sign-out deletes the rows past
that. A gateway without a database (in process,
in tests) keeps the record in memory (:class:`LocalSignOuts`), which is right
for one process only.

When the database cannot be read, a session is neither trusted nor dropped:
the request is refused with 503 (CoordinatorUnavailable) and may be retried.

What this module must not do: read cookies or decide who someone is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import psycopg
from psycopg_pool import PoolTimeout

from pipeline_shared.errors import CoordinatorUnavailable

if TYPE_CHECKING:
    from pipeline_shared.resonate_client import ResonateDatabase


#: How long a record outlives its session's end: the database's clock decides when it goes, each
#: gateway's when a cookie has expired, and a gateway whose clock is behind must still find it.
CLOCK_MARGIN_SECONDS = 600


class SignOuts(Protocol):
    async def end(self, session_id: str, ends_at: int) -> None:
        """Record that the session ended; ``ends_at`` is when it would have expired (seconds since the epoch)."""
        ...

    async def ended(self, session_id: str) -> bool:
        """Whether the session was signed out."""
        ...


class DatabaseSignOuts:
    """The record every replica shares, in ``pipelines.ended_ui_session``."""

    def __init__(self, database: ResonateDatabase) -> None:
        self._db = database

    async def end(self, session_id: str, ends_at: int) -> None:
        try:
            async with self._db.session() as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO pipelines.ended_ui_session (session_id, ends_at) VALUES (%s, to_timestamp(%s)) "
                    "ON CONFLICT (session_id) DO NOTHING",
                    (session_id, ends_at),
                )
                # Past its end a session's cookie is refused by its own expiry; its row is no longer needed.
                await conn.execute(
                    "DELETE FROM pipelines.ended_ui_session WHERE ends_at < now() - make_interval(secs => %s)",
                    (CLOCK_MARGIN_SECONDS,),
                )
        except (psycopg.OperationalError, PoolTimeout, psycopg.errors.UndefinedTable) as exc:
            raise CoordinatorUnavailable(f"the sign-out cannot be recorded now; try again: {exc}") from exc

    async def ended(self, session_id: str) -> bool:
        try:
            async with self._db.session() as conn:
                cursor = await conn.execute(
                    "SELECT 1 FROM pipelines.ended_ui_session WHERE session_id = %s", (session_id,)
                )
                return await cursor.fetchone() is not None
        except (psycopg.OperationalError, PoolTimeout, psycopg.errors.UndefinedTable) as exc:
            raise CoordinatorUnavailable(f"the session cannot be checked now; try again: {exc}") from exc


class LocalSignOuts:
    """The record in this process's memory: for a gateway without a database (one process, tests)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._ends: dict[str, int] = {}
        self._clock = clock

    async def end(self, session_id: str, ends_at: int) -> None:
        now = self._clock()
        self._ends = {sid: end for sid, end in self._ends.items() if end >= now}
        self._ends[session_id] = ends_at

    async def ended(self, session_id: str) -> bool:
        return session_id in self._ends

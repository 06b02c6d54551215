"""The one way a service connects to the Resonate server.

The server is resonate-pg: Resonate's protocol as stored procedures in one
Postgres database (infra/resonate-pg). There is no server process between a
service and the database: ``resonate_pg.PostgresConnection`` runs every
request as ``resonate.resonate_rpc(...)`` and receives work by draining the
database's outbox, woken by ``NOTIFY``. What this module adds to it:

- Sessions that survive the database going away. The connector's own pool
  hands out a pooled connection without looking at it, so the first requests
  after a database restart fail on connections that died with the old server.
  :class:`ResonateDatabase` checks a connection that has been idle as it is
  lent, and bounds how long connecting and waiting for a connection may take,
  so a request during an outage fails in seconds (the gateway answers 503)
  instead of hanging. Its connections are in autocommit: one round trip a
  request.
- A database whose far end is gone. A connection to a host lost or a network
  partitioned carries no bytes and would look open forever; TCP keepalive
  and ``tcp_user_timeout`` turn that silence into an error, and the
  connector's LISTEN loop reconnects. Until then its pump drains on a short
  tick, so a deaf listener costs latency, never work.
- Timers left to pg_cron. The connector can advance timers itself, but it
  switches that off for good after one failure, and the services' roles may
  not run ``process_timeouts`` at all: the server's pg_cron job is the
  one driver (see infra/resonate-pg).
- Readiness: the database answers and holds the schema version this code was
  written against.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg import conninfo as libpq
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from resonate.resonate import Resonate
from resonate_pg import PostgresConnection

if TYPE_CHECKING:
    from resonate_pg.client import PgConn

    from .settings import ServiceSettings

#: The resonate-pg schema this code speaks to (``resonate.get_schema_version()``),
#: that of the pinned resonate.sql (infra/resonate-pg/Dockerfile). A database
#: with another version is not used: the stored procedures are the protocol.
EXPECTED_SCHEMA_VERSION = "0.1.0"

#: Longest a new connection may take to be established.
CONNECT_TIMEOUT_SECONDS = 5

#: Longest a request waits for a pooled connection before it fails; during a
#: database outage this is how soon the gateway answers 503.
POOL_WAIT_SECONDS = 5.0

#: Every protocol action is a short stored procedure; one running this long is
#: stuck on something, and failing it lets the caller retry.
STATEMENT_TIMEOUT_MS = 30_000

#: Our transactions hold no one between their statements but a round trip and
#: some Python; one idle this long has lost its client (its locks are freed).
IDLE_IN_TRANSACTION_MS = 30_000

#: Unanswered keepalive probes after which the kernel declares a connection dead.
KEEPALIVE_PROBES = 3

#: A pooled connection idle this long is checked before it is lent.
CHECK_AFTER_IDLE_SECONDS = 2.0

#: How long the pool keeps at one attempt to add a connection before it gives
#: up; the next request that finds no connection starts another at once. The
#: pool waits twice as long after each failure of an attempt, and adds one
#: connection at a time: an attempt kept up through a long outage (it was
#: unbounded here) had grown its waits to tens of seconds by the time the
#: database came back, and every request meanwhile found no connection and
#: was answered 503 (seen after a 30 s partition: the gateway ready, its
#: requests refused). Bounded, a request after the database is back finds it
#: within the last wait (at most 2 s) or connects at once.
RECONNECT_ATTEMPT_SECONDS = 5.0

#: Pooled connections per process. The connector's default (16) is sized for
#: millisecond requests; each is a Postgres backend, the server's scarcer resource.
POOL_MAX_SIZE = 16


def conninfo(url: str, password: str | None, *, application_name: str, keepalive_seconds: float) -> str:
    """The libpq connection string for ``url`` with this project's timeouts, on both ends of the connection."""
    idle = max(1, round(keepalive_seconds))
    interval = max(1, idle // KEEPALIVE_PROBES)
    # Data sent and not acknowledged for this long (a request on a partitioned
    # connection) fails the connection, as keepalive does for an idle one.
    user_timeout_ms = idle * 2 * 1000
    # The server's own bounds on a client gone silent (sent as session settings, so a
    # database we do not configure applies them too). The client's keepalive frees the
    # client from a server gone silent; these free the server from a client gone
    # silent. A client cut off by a partition gives up on its connection and opens
    # another, while its old backend, having answered everything, waits, perhaps inside
    # a transaction holding locks (the projector's advisory lock: then no projector runs
    # again), and would be probed only after the kernel's two hours. Its own keepalives
    # find it as soon as the client's would, and a transaction left idle is ended.
    server = {
        "statement_timeout": STATEMENT_TIMEOUT_MS,
        "idle_in_transaction_session_timeout": IDLE_IN_TRANSACTION_MS,
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": KEEPALIVE_PROBES,
        "tcp_user_timeout": user_timeout_ms,
    }
    return libpq.make_conninfo(
        url,
        password=password,
        application_name=application_name,
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        keepalives=1,
        keepalives_idle=idle,
        keepalives_interval=interval,
        keepalives_count=KEEPALIVE_PROBES,
        tcp_user_timeout=user_timeout_ms,
        options=" ".join(f"-c {name}={value}" for name, value in server.items()),
    )


class ResonateDatabase:
    """The connector's sessions (``resonate_pg.client.PgSessions``), made for outages and for latency.

    Written here rather than taking ``resonate_pg.PsycopgSessions``: that
    one builds its pool with neither a check on lending nor a bound on
    waiting, which are what a database restart and an outage need (see the
    module docstring), and runs each request in a transaction of its own.
    Every request is one stored procedure, atomic by itself, so connections
    are in autocommit: one round trip a request instead of three (BEGIN, the
    call, COMMIT), which the benchmark showed to be most of a pipeline's
    time between its callback and its email. The outbox drain's deletes then
    commit one by one; messages are still handed over only after the
    session, so delivery stays at least once, as the connector promises.
    Nothing connects until the first request.
    """

    def __init__(self, dsn: str, *, max_size: int = POOL_MAX_SIZE) -> None:
        self._dsn = dsn
        #: When each pooled connection was last handed back, to skip the check on a busy one.
        self._returned: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = weakref.WeakKeyDictionary()
        self._pool = AsyncConnectionPool(
            dsn,
            min_size=1,
            max_size=max_size,
            open=False,
            kwargs={"autocommit": True},
            timeout=POOL_WAIT_SECONDS,
            check=self._check,
            reset=self._returned_now,
            reconnect_timeout=RECONNECT_ATTEMPT_SECONDS,
        )
        self._opened = False
        self._lock = asyncio.Lock()

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """A connection that died with the server is replaced, not lent.

        Checking is a round trip, so a connection handed back moments ago is
        lent as it is: if the server died in between, that one request fails
        and is retried, like any request in flight when it died.
        """
        if time.monotonic() - self._returned.get(conn, -math.inf) >= CHECK_AFTER_IDLE_SECONDS:
            await AsyncConnectionPool.check_connection(conn)

    async def _returned_now(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._returned[conn] = time.monotonic()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[PgConn]:
        await self._open()
        async with self._pool.connection() as conn:
            yield cast("PgConn", conn)

    async def dedicated(self) -> PgConn:
        """An autocommit connection for ``LISTEN``, outside the pool (it idles for the process's life)."""
        conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True)
        return cast("PgConn", conn)

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    async def schema_version(self) -> str | None:
        """The schema version the database reports, or None where it has no resonate-pg schema."""
        try:
            async with self.session() as conn:
                cursor = await conn.execute("SELECT resonate.get_schema_version()")
                row = await cursor.fetchone()
        except (psycopg.errors.InvalidSchemaName, psycopg.errors.UndefinedFunction):
            return None
        return row[0] if row else None

    async def problem(self, timeout: float = 2.0) -> str | None:
        """None when the database answers with the expected schema, else why not."""
        try:
            version = await asyncio.wait_for(self.schema_version(), timeout)
        except (TimeoutError, PoolTimeout):
            return await self._why_no_connection(timeout)
        except psycopg.Error as exc:
            return f"the Resonate database refused: {_first_line(exc)}"
        if version is None:
            return "the Resonate database has no resonate-pg schema (resonate.get_schema_version() is missing)"
        if version != EXPECTED_SCHEMA_VERSION:
            return f"the Resonate database has schema {version}; this service needs {EXPECTED_SCHEMA_VERSION}"
        return None

    async def _why_no_connection(self, timeout: float) -> str:
        """Why the pool has no connection to lend: it keeps retrying quietly, so ask once directly."""
        try:
            conn = await asyncio.wait_for(psycopg.AsyncConnection.connect(self._dsn), timeout)
        except TimeoutError:
            return f"the Resonate database did not answer within {timeout:g} s"
        except psycopg.Error as exc:
            # A wrong password or a missing role, say: a reason no retry will change.
            return f"the Resonate database refused: {_first_line(exc)}"
        await conn.close()
        return f"the Resonate database answered, but no pooled connection was free within {timeout:g} s"

    async def _open(self) -> None:
        if not self._opened:
            async with self._lock:
                if not self._opened:
                    # wait=False: a database that is down at start is
                    # reconnected to in the background, and requests fail
                    # after POOL_WAIT_SECONDS meanwhile.
                    await self._pool.open(wait=False)
                    self._opened = True


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class ResonateLink:
    """A started Resonate client plus what is needed to judge its health."""

    def __init__(self, resonate: Resonate, database: ResonateDatabase | None) -> None:
        self.resonate = resonate
        self._database = database

    @property
    def database(self) -> ResonateDatabase | None:
        """The resonate-pg database; None in process (the SDK's local server, in tests)."""
        return self._database

    async def readiness(self) -> str | None:
        """None when ready, else the reason.

        Against resonate-pg: the database answers and has the expected
        schema. In process (tests, with the SDK's local server): always ready.
        """
        if self._database is None:
            return None
        return await self._database.problem()


def connect(
    settings: ServiceSettings,
    group: str,
    *,
    listen: bool = True,
    max_concurrent_tasks: int | None = None,
) -> ResonateLink:
    """Build a Resonate client in ``group`` on the settings' database, not yet started.

    Register functions and dependencies first, then ``link.resonate.start()``
    (in a running loop): once started, work may arrive at any moment.
    ``listen=False`` makes a send-only client: it creates and settles promises
    but receives no work, so it never drains the outbox.
    """
    password = settings.RESONATE_DATABASE_PASSWORD
    database = ResonateDatabase(
        conninfo(
            settings.RESONATE_DATABASE_URL,
            password.get_secret_value() if password is not None else None,
            application_name=group,
            keepalive_seconds=settings.RESONATE_KEEPALIVE_SECONDS,
        )
    )
    pid = uuid.uuid4().hex
    connection = PostgresConnection(sessions=database, pid=pid, group=group, drive_timers=False)
    resonate = Resonate(
        network=connection,
        # [] rather than None: a send-only client must not drain the outbox,
        # which deletes what it reads (see PostgresConnection.start).
        sources=None if listen else [],
        group=group,
        pid=pid,
        max_concurrent_tasks=max_concurrent_tasks,
        ttl=timedelta(seconds=settings.TASK_LEASE_SECONDS),
        autostart=False,
    )
    return ResonateLink(resonate, database)

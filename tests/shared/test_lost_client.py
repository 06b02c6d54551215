"""Connections across a database's outages, both ends: what the server frees, and how soon the pool reconnects.

A client lost without a word, inside a transaction: the server frees what it held, on its own, within seconds.

The client is a container on Docker's default network, connecting with the
connection string every service uses (:func:`~pipeline_shared.resonate_client.conninfo`);
it takes an advisory lock in a transaction (as the index's projector does),
then is cut off that network and killed, so no FIN or reset ever reaches the
server: a host lost, or a partition that outlasts the client. Nothing but the
server's own keepalives can tell its backend that no one is there.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from pipeline_shared.resonate_client import ResonateDatabase, conninfo
from tests.support.resonate_pg import DATABASE, GATEWAY_ROLE, IMAGE, ResonatePg, running_resonate_pg
from tests.support.tcp_relay import TcpRelay

#: The client's keepalive (RESONATE_KEEPALIVE_SECONDS): a silent peer is found dead within about twice this.
KEEPALIVE_SECONDS = 2
#: How long the lock may outlive its client: twice the keepalive, and slack for a busy machine.
FREED_WITHIN_SECONDS = 4 * KEEPALIVE_SECONDS + 4
LOCK = 0x6C_6F_73_74  # "lost"
#: A database away this long: an unbounded attempt tried last at about 15 s (15 ± 1.5: its waits 1, 2, 4, 8 s,
#: the first ± 10 %), and waits 16 s more.
OUTAGE_SECONDS = 18
#: How soon after it is back a request must find a connection (the pool's longest wait, and slack).
BACK_WITHIN_SECONDS = 4


@pytest.fixture(scope="module")
def resonate_pg() -> Iterator[ResonatePg]:
    with running_resonate_pg() as server:
        yield server


def _lock_holders(server: ResonatePg) -> int:
    with psycopg.connect(server.superuser_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND granted", (LOCK,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def _wait(condition: Callable[[], bool], what: str, timeout: float) -> float:
    """Seconds until ``condition()`` held; fails naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_client_lost_inside_a_transaction_has_its_locks_freed_within_twice_its_keepalive(
    resonate_pg: ResonatePg,
) -> None:
    dsn = conninfo(
        f"postgresql://{GATEWAY_ROLE}@{resonate_pg.container_address}:5432/{DATABASE}",
        resonate_pg.gateway_password,
        application_name="lost-client",
        keepalive_seconds=KEEPALIVE_SECONDS,
    )
    name = f"lost-client-{uuid.uuid4().hex[:8]}"
    # psql reads its statements from a pipe that stays open: after the lock it sits idle in the transaction.
    script = f'(echo "BEGIN;"; echo "SELECT pg_advisory_xact_lock({LOCK});"; sleep 3600) | psql "$DSN"'
    subprocess.run(
        ["docker", "run", "--detach", "--name", name, "--env", f"DSN={dsn}", "--entrypoint", "sh", IMAGE, "-c", script],
        check=True,
        capture_output=True,
    )
    try:
        _wait(lambda: _lock_holders(resonate_pg) == 1, "the client holding its lock", timeout=30)

        subprocess.run(["docker", "network", "disconnect", "bridge", name], check=True, capture_output=True)
        subprocess.run(["docker", "kill", name], check=True, capture_output=True)
        freed_after = _wait(
            lambda: _lock_holders(resonate_pg) == 0, "the lost client's lock freed", timeout=FREED_WITHIN_SECONDS
        )
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True)

    assert freed_after <= FREED_WITHIN_SECONDS


async def test_after_a_long_outage_the_pool_connects_as_soon_as_the_database_is_back(
    resonate_pg: ResonatePg,
) -> None:
    # The pool adds connections one at a time and waits twice as long after each failed try:
    # an attempt kept up through the whole outage was still waiting long after it ended.
    relay = TcpRelay(resonate_pg.host, resonate_pg.port)
    await relay.up()
    database = ResonateDatabase(
        conninfo(
            f"postgresql://{GATEWAY_ROLE}@127.0.0.1:{relay.port}/{DATABASE}",
            resonate_pg.gateway_password,
            application_name="outage-test",
            keepalive_seconds=KEEPALIVE_SECONDS,
        )
    )
    try:
        assert await database.problem() is None

        await relay.down()
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:  # requests keep coming, and fail, all along
            assert await database.problem() is not None
            await asyncio.sleep(0.5)
        await relay.up()
        back = time.monotonic()
        while await database.problem() is not None:
            assert time.monotonic() - back < BACK_WITHIN_SECONDS, "no connection long after the database came back"
            await asyncio.sleep(0.1)
    finally:
        await relay.down()
        await database.close()

"""The Resonate server as an operator sees it: resonate-pg in the stack's Postgres.

Looked at from the database side, as the superuser: the pinned schema is in
place, pg_cron really drives the timers every second, finished workflows are
collected after the retention period, pg_cron's own history stays short, and
each service logs in with its own role that can do nothing but speak the
protocol.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from pipeline_shared.resonate_client import EXPECTED_SCHEMA_VERSION, ResonateDatabase, conninfo
from tests.support.stack import RESONATE, SERVICE_ROLES, Stack

DAY_MS = 86_400_000
#: Longest the timers' runs are waited for: a stack just started may not have run them yet.
CRON_DEADLINE_SECONDS = 10


@pytest.fixture
def database(stack: Stack) -> psycopg.Connection:
    with psycopg.connect(stack.resonate_dsn(), autocommit=True) as connection:
        yield connection


def test_the_pinned_schema_is_in_place(database: psycopg.Connection) -> None:
    assert database.execute("SELECT resonate.get_schema_version()").fetchone() == (EXPECTED_SCHEMA_VERSION,)


def test_pg_cron_drives_the_timers_every_second(database: psycopg.Connection) -> None:
    jobs = dict(database.execute("SELECT jobname, schedule FROM cron.job").fetchall())
    assert jobs["resonate_process_timeouts"] == "1 second"
    # Asked again until the last 3 s hold two runs (at once on a stack up that long) rather than
    # after a sleep of 3 s; a run a minute would never get there, and no window may hold a failure.
    deadline = time.monotonic() + CRON_DEADLINE_SECONDS
    while True:
        recent = database.execute(
            "SELECT count(*) FILTER (WHERE d.status = 'succeeded'), count(*) FILTER (WHERE d.status = 'failed')"
            " FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
            " WHERE j.jobname = 'resonate_process_timeouts' AND d.start_time > now() - interval '3 seconds'"
        ).fetchone()
        assert recent is not None
        succeeded, failed = recent
        assert failed == 0, recent
        if succeeded >= 2:
            break
        assert time.monotonic() < deadline, f"under 2 timer runs a 3 s window for {CRON_DEADLINE_SECONDS} s: {recent}"
        time.sleep(0.2)


def test_pg_cron_keeps_only_a_short_history(database: psycopg.Connection) -> None:
    (command,) = database.execute("SELECT command FROM cron.job WHERE jobname = 'resonate_cron_history'").fetchone()
    assert command == "DELETE FROM cron.job_run_details WHERE end_time < now() - interval '1 hour'"


def test_finished_workflows_are_collected_after_the_retention_period(database: psycopg.Connection) -> None:
    schedule, command = database.execute(
        "SELECT schedule, command FROM cron.job WHERE jobname = 'resonate_gc'"
    ).fetchone()
    assert schedule == "* * * * *"
    now_ms = int(time.time() * 1000)
    ids = {age: f"gc-test-{age}-{uuid.uuid4().hex[:8]}" for age in (31, 29)}
    for age, promise_id in ids.items():
        settled = now_ms - age * DAY_MS
        database.execute(
            "INSERT INTO resonate.promises (id, state, timeout_at, created_at, settled_at)"
            " VALUES (%s, 'resolved', %s, %s, %s)",
            (promise_id, settled, settled - 1000, settled),
        )
    # What the job runs every minute, run now.
    database.execute(command)
    rows = database.execute("SELECT id FROM resonate.promises WHERE id = ANY(%s)", (list(ids.values()),))
    left = {row[0] for row in rows}
    assert left == {ids[29]}, "settled 31 days ago must be collected, 29 days ago kept (retention 30 days)"
    database.execute("DELETE FROM resonate.promises WHERE id = %s", (ids[29],))


def test_each_service_logs_in_with_its_own_role(database: psycopg.Connection) -> None:
    sessions = set(
        database.execute(
            "SELECT application_name, usename FROM pg_stat_activity"
            " WHERE datname = 'resonate' AND usename LIKE 'pipeline_%'"
        ).fetchall()
    )
    for group, (role, _) in SERVICE_ROLES.items():
        assert (group, role) in sessions, sessions


@pytest.mark.parametrize("service", sorted(SERVICE_ROLES))
def test_a_service_role_can_speak_the_protocol_and_nothing_else(stack: Stack, service: str) -> None:
    role, password = SERVICE_ROLES[service]
    with psycopg.connect(stack.resonate_dsn(role, password), autocommit=True) as connection:
        assert connection.execute("SELECT resonate.get_schema_version()").fetchone() == (EXPECTED_SCHEMA_VERSION,)
        reply = connection.execute(
            "SELECT resonate.resonate_rpc(%s::jsonb)",
            (
                '{"kind": "promise.get", "head": {"corrId": "t", "version": "2026-04-01"},'
                ' "data": {"id": "never-created"}}',
            ),
        ).fetchone()[0]
        assert reply["head"]["status"] == 404, reply
        for forbidden in (
            "SELECT * FROM resonate.promises LIMIT 1",
            "DELETE FROM resonate.outbox",
            "SELECT resonate.process_timeouts()",
            "SELECT resonate.gc(0)",
            "SELECT * FROM cron.job",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(forbidden)


def test_a_wrong_password_is_refused(stack: Stack) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(stack.resonate_dsn("pipeline_api", "not-the-password"), connect_timeout=5)


async def test_readiness_names_what_is_wrong_with_the_database(stack: Stack) -> None:
    role, password = SERVICE_ROLES["worker"]
    host, port = stack.address(RESONATE)

    async def problem(user_password: str, database: str = "resonate") -> str | None:
        url = f"postgresql://{role}@{host}:{port}/{database}"
        db = ResonateDatabase(conninfo(url, user_password, application_name="readiness-test", keepalive_seconds=30))
        try:
            return await db.problem()
        finally:
            await db.close()

    assert await problem(password) is None
    refused = await problem("not-the-password")
    assert refused is not None and "password authentication failed" in refused
    # A database that answers but holds no Resonate schema (the cluster's default one).
    assert await problem(password, "postgres") == (
        "the Resonate database has no resonate-pg schema (resonate.get_schema_version() is missing)"
    )

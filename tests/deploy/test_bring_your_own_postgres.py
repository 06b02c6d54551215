"""Bring your own Postgres: ``resonate-pg apply`` on a plain Postgres, as its admin role that is no superuser.

The server is a plain Postgres 17 with pg_cron, not the project's image, set
up as a managed service hands one over (tests/support/plain_postgres.py):
pg_cron's jobs kept in ``postgres``, an admin role with CREATEROLE and
CREATEDB, a database it owns. Then, as a team would: ``docker run
<resonate-pg image> apply`` with the libpq variables, and the services' roles
use what it made, through the same code the services run.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from resonate.types import Value

from pipeline_api.index.queries import PipelineIndex
from pipeline_shared import promise_tree
from pipeline_shared.resonate_client import EXPECTED_SCHEMA_VERSION
from tests.support.plain_postgres import (
    ADMIN_ROLE,
    MAY_MOVE_JOBS,
    PlainPostgres,
    admin_connection,
    apply,
    as_provider,
    running_plain_postgres,
)
from tests.support.resonate_pg import client_settings, send_only_link

#: The timer job runs every second; a promise past its timeout is timed out within this.
TIMED_OUT_WITHIN_SECONDS = 8


def _state(server: PlainPostgres) -> dict[str, Any]:
    """What apply makes, as rows: pg_cron's jobs, the migrations, the roles and their memberships, the schema."""
    with admin_connection(server, "postgres") as conn:
        jobs = conn.execute(
            "SELECT jobid, jobname, schedule, command, database, username, active FROM cron.job ORDER BY jobid"
        ).fetchall()
    with admin_connection(server) as conn:
        migrations = conn.execute("SELECT * FROM pipelines.schema_migrations ORDER BY version").fetchall()
        roles = conn.execute(
            "SELECT r.rolname, r.rolcanlogin, g.rolname, m.admin_option FROM pg_roles r"
            " LEFT JOIN pg_auth_members m ON m.member = r.oid LEFT JOIN pg_roles g ON g.oid = m.roleid"
            " WHERE r.rolname NOT LIKE 'pg\\_%' ORDER BY 1, 3"
        ).fetchall()
        functions = conn.execute(
            "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname IN ('resonate', 'pipelines') ORDER BY 1"
        ).fetchall()
    return {"jobs": jobs, "migrations": migrations, "roles": roles, "functions": functions}


def test_apply_runs_as_an_admin_that_is_not_a_superuser(server: PlainPostgres) -> None:
    with admin_connection(server) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert conn.execute("SELECT resonate.get_schema_version()").fetchone() == (EXPECTED_SCHEMA_VERSION,)
    jobs = {job[1]: job for job in _state(server)["jobs"]}
    assert set(jobs) == {"resonate_process_timeouts", "resonate_gc", "resonate_cron_history"}
    # Scheduled from pg_cron's database into the resonate database, as the admin.
    timer = ("1 second", "SELECT resonate.process_timeouts()", "resonate", ADMIN_ROLE, True)
    assert jobs["resonate_process_timeouts"][2:] == timer
    assert jobs["resonate_cron_history"][4] == "postgres", "the history job works on pg_cron's own table"


def test_a_second_apply_changes_nothing(server: PlainPostgres, resonate_pg_image: str) -> None:
    before = _state(server)

    again = apply(server, resonate_pg_image)

    assert again.returncode == 0, again.stderr
    assert "already in place" in again.stderr
    assert "applying" not in again.stderr
    assert _state(server) == before


async def test_the_services_roles_log_in_and_the_gateway_is_ready(server: PlainPostgres) -> None:
    gateway = client_settings(server.gateway_url, server.gateway_password)
    async with send_only_link(gateway, "gateway-readiness") as link:
        assert await link.readiness() is None, "the schema check the gateway's /readyz makes"
        assert link.database is not None
        assert await PipelineIndex(link.database, gateway).problem() is None, "the index check /readyz makes"
    worker = client_settings(server.worker_url, server.worker_password)
    async with send_only_link(worker, "worker-readiness") as link:
        assert await link.readiness() is None


async def test_a_promise_round_trip_through_the_stored_procedures_as_the_worker(server: PlainPostgres) -> None:
    promise_id = f"byo-round-trip-{uuid.uuid4().hex}"
    settings = client_settings(server.worker_url, server.worker_password)
    async with send_only_link(settings, "worker-round-trip") as link:
        created = await link.resonate.promises.create(
            promise_id, timeout_at=_ms_from_now(3_600), param=Value(), tags={}
        )
        assert created.state == "pending"
        await link.resonate.promises.resolve(promise_id, Value(data="done"))
        settled = await link.resonate.promises.get(promise_id)
    assert settled.state == "resolved"


async def test_pg_cron_times_out_a_promise_past_its_timeout(server: PlainPostgres) -> None:
    promise_id = f"byo-timeout-{uuid.uuid4().hex}"
    settings = client_settings(server.worker_url, server.worker_password)
    async with send_only_link(settings, "worker-timeout") as link:
        # External, as a pipeline's callback promise is: resonate-pg enforces only such promises' timeouts.
        tags = {promise_tree.EXTERNAL_TAG: "true"}
        await link.resonate.promises.create(promise_id, timeout_at=_ms_from_now(1), param=Value(), tags=tags)

    # The row itself, as the admin: only process_timeouts(), run by pg_cron's job, changes it.
    deadline = time.monotonic() + TIMED_OUT_WITHIN_SECONDS
    with admin_connection(server) as conn:
        while (state := _promise_state(conn, promise_id)) == "pending" and time.monotonic() < deadline:
            time.sleep(0.25)
    assert state == "rejected_timedout"


def test_apply_as_a_role_that_may_not_schedule_names_the_grants_and_writes_nothing(
    server: PlainPostgres, resonate_pg_image: str
) -> None:
    # Another admin as the provider makes it, without the grants on pg_cron; its database does not exist yet.
    as_provider(server, "CREATE ROLE :\"admin\" LOGIN CREATEROLE CREATEDB PASSWORD :'password';", admin="narrow_admin")

    outcome = apply(server, resonate_pg_image, role="narrow_admin", database="narrow")

    assert outcome.returncode != 0
    assert "GRANT USAGE ON SCHEMA cron TO narrow_admin" in outcome.stderr
    assert "GRANT EXECUTE ON FUNCTION cron.schedule_in_database" in outcome.stderr
    with admin_connection(server, "postgres") as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'narrow'").fetchone() == (0,)


def test_a_role_that_may_only_move_pg_cron_jobs_schedules_them_into_the_resonate_database(
    resonate_pg_image: str,
) -> None:
    with running_plain_postgres(grant=MAY_MOVE_JOBS) as rds_like:
        outcome = apply(rds_like, resonate_pg_image)
        assert outcome.returncode == 0, outcome.stderr
        with admin_connection(rds_like, "postgres") as conn:
            jobs = dict(conn.execute("SELECT jobname, database FROM cron.job").fetchall())
            timer_runs = _wait_for_a_timer_run(conn)
        again = apply(rds_like, resonate_pg_image)

    assert jobs == {
        "resonate_process_timeouts": "resonate",
        "resonate_gc": "resonate",
        "resonate_cron_history": "postgres",
    }
    assert timer_runs and all(status == "succeeded" for status in timer_runs), timer_runs
    assert again.returncode == 0, again.stderr


def test_apply_without_pg_cron_fails_naming_it(resonate_pg_image: str) -> None:
    with running_plain_postgres(pg_cron=False) as bare:
        outcome = apply(bare, resonate_pg_image)
        with admin_connection(bare) as conn:
            schema = conn.execute("SELECT to_regnamespace('resonate')").fetchone()

    assert outcome.returncode != 0
    assert "pg_cron is not loaded" in outcome.stderr and "shared_preload_libraries" in outcome.stderr
    assert schema == (None,), "nothing applied before the check"


def _wait_for_a_timer_run(conn: Any) -> list[str]:
    """The statuses of the timer job's finished runs, once there is one (or after a few seconds).

    Finished only: a run is also 'starting', 'connecting' or 'sending' on its way to 'running'.
    """
    deadline = time.monotonic() + TIMED_OUT_WITHIN_SECONDS
    while True:
        statuses = [
            status
            for (status,) in conn.execute(
                "SELECT d.status FROM cron.job_run_details d JOIN cron.job j USING (jobid)"
                " WHERE j.jobname = 'resonate_process_timeouts' AND d.status IN ('succeeded', 'failed')"
            ).fetchall()
        ]
        if statuses or time.monotonic() > deadline:
            return statuses
        time.sleep(0.25)


def _ms_from_now(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


def _promise_state(conn: Any, promise_id: str) -> str | None:
    row = conn.execute("SELECT state FROM resonate.promises WHERE id = %s", (promise_id,)).fetchone()
    return row[0] if row else None

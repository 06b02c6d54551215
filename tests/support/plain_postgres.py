"""A plain Postgres in a container, set up as a managed service hands one over, and ``resonate-pg apply`` run on it.

The server is not the project's image: ``tests/support/plain_postgres/Dockerfile``
is Debian 13's postgresql-17 and postgresql-17-cron and nothing else. It is
started as the managed services run theirs (pg_cron preloaded, its metadata in
the ``postgres`` database), and a superuser then does only what a provider does
(:data:`PROVIDER_SETUP`): create pg_cron, an admin role with CREATEROLE and
CREATEDB that is no superuser, a database it owns, and the grants on pg_cron
that a managed service's admin role holds. Everything after that runs as the
admin: ``apply`` is the resonate-pg image (the stack's own, built as compose
builds it) with the argument ``apply`` and the libpq variables.

Containers are started and removed with the docker CLI by the fixture that
uses them, on Docker's default network (apply reaches the server by its
address there) with the port published on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from tests.support.resonate_pg import DATABASE, GATEWAY_ROLE, WORKER_ROLE
from tests.support.stack import REPO_ROOT, compose_files

#: The test image's tag; built from the Dockerfile beside this module.
IMAGE = "resonate-databricks-plain-postgres"
#: Its recipe.
CONTEXT = REPO_ROOT / "tests" / "support" / "plain_postgres"
#: The offline override in COMPOSE_FILE means no registry: build from the offline Debian 13 base instead.
OFFLINE_OVERRIDE = REPO_ROOT / "infra" / "offline" / "compose.yaml"
#: The base image infra/offline/setup.sh builds (its OFFLINE_BASE_IMAGE default).
OFFLINE_BASE_IMAGE = "resonate-databricks/python:3.13-trixie"
#: Longest a build may take (cold: Debian's postgresql-17 installed).
BUILD_TIMEOUT_SECONDS = 900
#: Longest the server may take to take connections.
READY_TIMEOUT_SECONDS = 30
#: Longest one apply may take.
APPLY_TIMEOUT_SECONDS = 120
#: The provider's admin role: CREATEROLE and CREATEDB, not a superuser.
ADMIN_ROLE = "team_admin"
#: Server settings as a managed service has them: pg_cron preloaded, its jobs kept in `postgres`.
WITH_PG_CRON = (
    "-c",
    "shared_preload_libraries=pg_cron",
    "-c",
    "cron.database_name=postgres",
    "-c",
    "cron.use_background_workers=on",
)
#: What a provider does before handing the server over (psql variables: admin, password, database).
PROVIDER_SETUP = """
CREATE ROLE :"admin" LOGIN CREATEROLE CREATEDB PASSWORD :'password';
CREATE DATABASE :"database" OWNER :"admin";
"""
#: ... and, where pg_cron is loaded, creates it and lets the admin schedule jobs.
PROVIDER_PG_CRON = """
CREATE EXTENSION pg_cron;
GRANT USAGE ON SCHEMA cron TO :"admin";
"""
#: The grant that lets the admin schedule a job into another database: pg_cron's own function ...
MAY_SCHEDULE_IN_DATABASE = (
    'GRANT EXECUTE ON FUNCTION cron.schedule_in_database(text, text, text, text, text, boolean) TO :"admin";'
)
#: ... or the right to move a job there, the way Amazon RDS documents it.
MAY_MOVE_JOBS = 'GRANT UPDATE ON cron.job TO :"admin";'


@dataclass(frozen=True)
class PlainPostgres:
    """A running plain Postgres, the passwords this session gave its roles, and where it answers."""

    container: str
    host_port: int
    #: Its address on Docker's default network, where the apply container reaches it.
    container_address: str
    admin_password: str
    gateway_password: str
    worker_password: str

    def dsn(self, role: str, password: str, database: str = DATABASE) -> str:
        return f"postgresql://{role}:{password}@127.0.0.1:{self.host_port}/{database}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn(ADMIN_ROLE, self.admin_password)

    @property
    def gateway_url(self) -> str:
        """RESONATE_DATABASE_URL for a gateway, the password given apart."""
        return f"postgresql://{GATEWAY_ROLE}@127.0.0.1:{self.host_port}/{DATABASE}"

    @property
    def worker_url(self) -> str:
        """RESONATE_DATABASE_URL for a worker, the password given apart."""
        return f"postgresql://{WORKER_ROLE}@127.0.0.1:{self.host_port}/{DATABASE}"


def build_image() -> str:
    """Build (or find in the cache) the plain Postgres image; its tag."""
    offline = str(OFFLINE_OVERRIDE) in compose_files()
    base = ["--build-arg", f"BASE_IMAGE={OFFLINE_BASE_IMAGE}"] if offline else []
    command = ["docker", "build", "--quiet", "--tag", IMAGE, *base, str(CONTEXT)]
    try:
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or "").splitlines()[-20:])
        raise RuntimeError(f"the plain Postgres image did not build ({' '.join(command)}):\n{tail}") from exc
    return IMAGE


@contextmanager
def running_plain_postgres(*, pg_cron: bool = True, grant: str = MAY_SCHEDULE_IN_DATABASE) -> Iterator[PlainPostgres]:
    """A fresh plain Postgres handed over as a provider would (with pg_cron or without), removed when the block ends.

    ``grant`` is what the provider grants the admin on pg_cron beyond its schema.
    """
    image = build_image()
    name = f"plain-postgres-{uuid.uuid4().hex[:10]}"
    settings = WITH_PG_CRON if pg_cron else ()
    subprocess.run(
        ["docker", "run", "--detach", "--name", name, "--publish", "127.0.0.1::5432", image, *settings],
        check=True,
        capture_output=True,
    )
    try:
        server = PlainPostgres(
            container=name,
            host_port=int(_docker(["port", name, "5432/tcp"]).rsplit(":", 1)[1]),
            container_address=_docker(["inspect", "--format", "{{.NetworkSettings.IPAddress}}", name]),
            admin_password=secrets.token_hex(16),
            gateway_password=secrets.token_hex(16),
            worker_password=secrets.token_hex(16),
        )
        _wait_until_ready(name)
        as_provider(server, PROVIDER_SETUP + (PROVIDER_PG_CRON + grant if pg_cron else ""), admin=ADMIN_ROLE)
        yield server
    finally:
        subprocess.run(["docker", "rm", "--force", "--volumes", name], capture_output=True)


def as_provider(server: PlainPostgres, script: str, *, admin: str) -> None:
    """Run ``script`` as the server's superuser, as its provider would (psql variables: admin, password, database)."""
    _docker(
        [
            "exec", "--interactive", server.container, "psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1",
            "--set", f"admin={admin}", "--set", f"password={server.admin_password}",
            "--set", f"database={DATABASE}", "--dbname", "postgres",
        ],
        stdin=script,
    )  # fmt: skip


def apply(
    server: PlainPostgres, resonate_pg_image: str, *, role: str = ADMIN_ROLE, database: str = DATABASE
) -> subprocess.CompletedProcess[str]:
    """``docker run <resonate-pg image> apply`` as the provider's admin (or ``role``), as a team would run it."""
    environment = {
        "PGHOST": server.container_address,
        "PGPORT": "5432",
        "PGUSER": role,
        "PGPASSWORD": server.admin_password,
        "PGDATABASE": database,
        "RESONATE_PG_LOGINS": f"{GATEWAY_ROLE} {WORKER_ROLE}",
        f"RESONATE_PG_PASSWORD_{GATEWAY_ROLE}": server.gateway_password,
        f"RESONATE_PG_PASSWORD_{WORKER_ROLE}": server.worker_password,
        "RESONATE_PG_INDEX_LOGINS": GATEWAY_ROLE,
        "RESONATE_PG_WATCHDOG_LOGINS": WORKER_ROLE,
    }
    # Values reach the container through the docker CLI's environment (`--env NAME` passes that one name
    # on), never its command line, where `ps` would show the passwords.
    names = [argument for name in environment for argument in ("--env", name)]
    return subprocess.run(
        ["docker", "run", "--rm", *names, resonate_pg_image, "apply"],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=APPLY_TIMEOUT_SECONDS,
    )


def _docker(arguments: list[str], stdin: str | None = None) -> str:
    completed = subprocess.run(["docker", *arguments], input=stdin, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"docker {' '.join(arguments[:2])} failed: {completed.stderr.strip()}")
    return completed.stdout.strip()


def _wait_until_ready(name: str) -> None:
    """Block until the server takes connections on its socket (the provider's steps run there)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        probe = subprocess.run(["docker", "exec", name, "pg_isready", "--quiet"], capture_output=True)
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            logs = subprocess.run(["docker", "logs", "--tail", "30", name], capture_output=True, text=True)
            raise RuntimeError(f"the plain Postgres did not take connections:\n{logs.stdout}{logs.stderr}")
        time.sleep(0.3)


def admin_connection(server: PlainPostgres, database: str = DATABASE) -> psycopg.Connection:
    """An autocommit connection as the provider's admin (what an operator looks with)."""
    return psycopg.connect(server.dsn(ADMIN_ROLE, server.admin_password, database), autocommit=True)

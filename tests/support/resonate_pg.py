"""One resonate-pg server in a container, for tests of the code that reads and writes its database in process.

The image is the stack's own (infra/resonate-pg), built by compose from the
same files the test stack uses (``compose.yaml`` plus ``COMPOSE_FILE``, so
CI's offline override applies), under a project name of its own so that its
tag is predictable and never one the compose test stack or a developer's
stack uses. Building is a cache hit once the image exists, and a rebuild
when a migration or the schema changed, so the tests never run old SQL.

The container is started by testcontainers, apart from any compose stack:
its own name, a random host port, and the same entrypoint as at stack start,
so resonate.sql, the pipeline index's migrations and the login roles are in
place once it accepts connections. Ryuk (testcontainers' reaper) is not
used: its image comes from a registry CI machines cannot reach; the fixture
that starts the container stops it.
"""

from __future__ import annotations

import fcntl
import secrets
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pydantic import SecretStr
from testcontainers.core.config import testcontainers_config
from testcontainers.core.container import DockerContainer

from pipeline_api.settings import GatewaySettings
from pipeline_shared.resonate_client import ResonateLink, connect
from tests.support.pipeline_harness import CATALOGUE_FILE, SECRET
from tests.support.stack import REPO_ROOT, compose_files

#: The compose project the image is built under; compose tags it ``<project>-resonate``.
IMAGE_PROJECT = "resonate-databricks-index-tests"
#: The image the tests run.
IMAGE = f"{IMAGE_PROJECT}-resonate"
#: Held while the image builds, so that one build runs at a time on this machine.
BUILD_LOCK = Path(tempfile.gettempdir()) / f"{IMAGE_PROJECT}-build.lock"
#: Longest a build may take (cold, offline: Debian's postgresql-17 installed into the base image).
BUILD_TIMEOUT_SECONDS = 900
#: Longest the server may take from start to accepting connections (first start: initdb, schema, migrations).
READY_TIMEOUT_SECONDS = 120
#: The gateway's login role, as compose.yaml names it; it is given the index's role as at stack start.
GATEWAY_ROLE = "pipeline_api"
#: The worker's login role, as compose.yaml names it; it is given the watchdog's role as at stack start.
WORKER_ROLE = "pipeline_worker"
#: The database the entrypoint makes.
DATABASE = "resonate"


@dataclass(frozen=True)
class ResonatePg:
    """Where the running server answers, and the passwords this session gave it."""

    host: str
    port: int
    superuser_password: str
    gateway_password: str
    worker_password: str
    #: Its address on Docker's default network, where another container reaches it.
    container_address: str

    @property
    def superuser_dsn(self) -> str:
        """The superuser: what tests use to look at or arrange the database, as an operator would."""
        return f"postgresql://postgres:{self.superuser_password}@{self.host}:{self.port}/{DATABASE}"

    @property
    def gateway_url(self) -> str:
        """RESONATE_DATABASE_URL for a gateway: its own role, the password given apart."""
        return f"postgresql://{GATEWAY_ROLE}@{self.host}:{self.port}/{DATABASE}"

    @property
    def worker_url(self) -> str:
        """RESONATE_DATABASE_URL for a worker: its own role, the password given apart."""
        return f"postgresql://{WORKER_ROLE}@{self.host}:{self.port}/{DATABASE}"


def build_image() -> str:
    """Build (or find in the cache) the resonate-pg image as compose builds it; its tag.

    Two xdist workers may ask at once (the index tests' container and the deploy tests'
    ``apply``): a lock file makes the second wait for the first's build, then find it cached.
    """
    files = [argument for path in compose_files() for argument in ("--file", path)]
    command = ["docker", "compose", "--project-name", IMAGE_PROJECT, *files, "build", "resonate"]
    try:
        with open(BUILD_LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            subprocess.run(
                command, cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT_SECONDS
            )
    except subprocess.CalledProcessError as exc:
        tail = "\n".join((exc.stderr or "").splitlines()[-20:])
        raise RuntimeError(
            f"the resonate-pg image did not build ({' '.join(command)}):\n{tail}\n"
            "On a machine without an image registry, run infra/offline/setup.sh and set "
            "COMPOSE_FILE=compose.yaml:infra/offline/compose.yaml."
        ) from exc
    return IMAGE


@contextmanager
def running_resonate_pg() -> Iterator[ResonatePg]:
    """A fresh resonate-pg server (no volume: it starts empty), stopped and removed when the block ends."""
    image = build_image()
    testcontainers_config.ryuk_disabled = True
    superuser_password, gateway_password, worker_password = (secrets.token_hex(16) for _ in range(3))
    container = (
        DockerContainer(image)
        .with_env("POSTGRES_PASSWORD", superuser_password)
        .with_env("RESONATE_PG_LOGINS", f"{GATEWAY_ROLE} {WORKER_ROLE}")
        .with_env(f"RESONATE_PG_PASSWORD_{GATEWAY_ROLE}", gateway_password)
        .with_env(f"RESONATE_PG_PASSWORD_{WORKER_ROLE}", worker_password)
        .with_env("RESONATE_PG_INDEX_LOGINS", GATEWAY_ROLE)
        .with_env("RESONATE_PG_WATCHDOG_LOGINS", WORKER_ROLE)
        .with_exposed_ports(5432)
    )
    container.start()
    try:
        wrapped = container.get_wrapped_container()
        wrapped.reload()
        server = ResonatePg(
            container.get_container_host_ip(),
            int(container.get_exposed_port(5432)),
            superuser_password,
            gateway_password,
            worker_password,
            wrapped.attrs["NetworkSettings"]["IPAddress"],
        )
        _wait_until_ready(container, server)
        yield server
    finally:
        container.stop()


def _wait_until_ready(container: DockerContainer, server: ResonatePg) -> None:
    """Block until the server takes connections: the entrypoint listens on TCP only once it has bootstrapped."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        try:
            with psycopg.connect(server.superuser_dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1 FROM pipelines.schema_migrations")
                return
        except psycopg.Error as exc:
            container.get_wrapped_container().reload()
            status = container.get_wrapped_container().status
            if status in {"exited", "dead"} or time.monotonic() > deadline:
                stdout, stderr = container.get_logs()
                logs = (stdout + stderr).decode(errors="replace")[-4000:]
                raise RuntimeError(f"resonate-pg did not become ready ({status}; last error: {exc}):\n{logs}") from exc
            time.sleep(0.5)


def client_settings(url: str, password: str) -> GatewaySettings:
    """A Resonate client's settings on the server as login ``url`` (the settings' shape is the gateway's)."""
    return GatewaySettings(
        RESONATE_DATABASE_URL=url,
        RESONATE_DATABASE_PASSWORD=SecretStr(password),
        CALLBACK_SIGNING_SECRET=SECRET,
        JOB_CATALOGUE_FILE=CATALOGUE_FILE,
    )


@asynccontextmanager
async def send_only_link(settings: GatewaySettings, group: str) -> AsyncIterator[ResonateLink]:
    """A send-only Resonate client on the server and its database sessions, closed when the block ends."""
    link = connect(settings, group, listen=False)
    link.resonate.start()
    try:
        yield link
    finally:
        await link.resonate.stop()
        if link.database is not None:
            await link.database.close()

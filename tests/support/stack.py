"""The compose stack that integration and fault tests run against (fixture ``stack``).

One stack per test session: building and starting seven containers costs far
more than any test, so every test shares it and keeps apart from the others
through unique ids. The stack is torn down with its volumes when the session
ends, and torn down before it starts too, so a run never inherits state from
an aborted one.

The compose files are the ones ``docker compose`` itself would use here:
``compose.yaml`` plus whatever ``COMPOSE_FILE`` names (CI names the offline
override), so the tests run the stack a developer runs. The project name is
separate from the development stack's, and so are its host ports, so a test
run never adopts, wipes or collides with a stack someone started by hand.

Docker missing is a failure, never a skip: these tests are the only proof that
the stack starts at all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testcontainers.compose import DockerCompose

from pipeline_api.auth.keys import (
    DEVELOPMENT_API_KEY,
    DEVELOPMENT_PRINCIPAL,
    DEVELOPMENT_SCOPES,
    KeyEntry,
    key_digest,
    mint,
)
from pipeline_api.auth.principals import Scope
from pipeline_shared.catalogue import Catalogue

#: The repository root, where compose.yaml lives and compose paths start.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Always used; COMPOSE_FILE may add overrides after it.
BASE_COMPOSE_FILE = "compose.yaml"
#: The pytest-xdist worker this process is (gw0, gw1, ...), empty when tests run in one process.
#: Each worker that runs stack tests brings up a stack of its own (tests/conftest.py says which
#: tests share one), under its own project name and host ports.
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_WORKER_INDEX = int(XDIST_WORKER[2:]) if XDIST_WORKER.startswith("gw") and XDIST_WORKER[2:].isdigit() else 0
#: Keeps the test stack's containers and volumes apart from a developer's.
PROJECT_NAME = os.environ.get("TEST_STACK_PROJECT", "resonate-databricks-test") + (
    f"-{XDIST_WORKER}" if XDIST_WORKER else ""
)
#: Longest a service may take to turn healthy again after a start or restart.
HEALTHY_TIMEOUT_SECONDS = 90.0
#: Longest the whole stack may take to turn healthy once its containers exist.
#: Without a bound, a service that keeps restarting would hang the session.
STARTUP_TIMEOUT_SECONDS = 180
#: Longest `up --build` may take in all, image builds included (cold: minutes).
BUILD_AND_START_TIMEOUT_SECONDS = 1200
#: How often container state is polled while waiting for it to change.
POLL_INTERVAL_SECONDS = 0.5
#: Lines of each service's log shown when the stack fails to start.
LOG_TAIL_LINES = 40
#: ANSI control sequences (ESC [ ... letter).
TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: Last lines of `docker compose up` output shown then, where it says what failed.
VERDICT_LINES = 8


#: Added to every default host port (8000 -> 18000, ...): the test stack's own
#: ports, so a stack a developer runs on the defaults can stay up meanwhile;
#: 1000 more per xdist worker (gw1: 19000, ...), which keeps every port of up to
#: four workers' stacks distinct. Set TEST_STACK_PORT_OFFSET (and
#: TEST_STACK_PROJECT) to run two test sessions side by side.
PORT_OFFSET = int(os.environ.get("TEST_STACK_PORT_OFFSET", "10000")) + 1000 * _WORKER_INDEX

#: compose.yaml's default host ports, by the variable that moves each.
DEFAULT_HOST_PORTS = {
    "API_HOST_PORT": 8000,
    "API_CALLBACK_HOST_PORT": 8002,
    "RESONATE_HOST_PORT": 5433,
    "DATABRICKS_HOST_PORT": 8080,
    "SMTP_HOST_PORT": 1025,
    "MAILSINK_HOST_PORT": 8025,
    "WORKER_OPS_HOST_PORT": 9101,
    "NOTIFIER_OPS_HOST_PORT": 9102,
}

#: Test principals with small start limits of their own: 2 starts a minute; 1 pipeline waiting.
LIMITED_PRINCIPAL = "test-limited"
QUOTA_PRINCIPAL = "test-quota"

#: Settings compose.yaml reads from the environment, tuned so that tests of
#: slow paths finish in seconds. Everything else runs with compose's defaults.
TEST_SETTINGS = {
    # Docker runs each container's health check this often. Every check is a process
    # started in the container (about 60 ms of CPU each, most of it Docker's own): at
    # compose's 2 s an idle stack took 0.23 of this 2-core machine's cores, at one a
    # minute 0.05; CI runs two stacks beside its tests. Waiting for a restarted service runs its check itself
    # (Stack.wait_healthy), so the interval costs the tests only the stack's first start.
    "HEALTHCHECK_INTERVAL": "5s",
    # A run's emulated phases (compose's defaults: 0.2 s queued, 1 s pending, 0.3 s terminating)
    # are waits every pipeline of every test sits through, job by job; shortened like the
    # catalogue's backoffs. Every phase is still passed through and seen (tests/databricks_emulator).
    "DATABRICKS_EMULATOR_QUEUED_SECONDS": "0.05",
    "DATABRICKS_EMULATOR_PENDING_SECONDS": "0.2",
    "DATABRICKS_EMULATOR_TERMINATING_SECONDS": "0.1",
    # The watchdog settles runs that never call back; a minute is too long to wait.
    "WATCHDOG_INTERVAL_SECONDS": "2",
    # A killed worker's or notifier's work moves to a live one this soon.
    "TASK_LEASE_SECONDS": "6",
    # A partitioned Resonate database is noticed within twice this (TCP keepalive).
    "RESONATE_KEEPALIVE_SECONDS": "3",
    # Fault tests stop pipelines at exact points (pipeline_shared.testhooks).
    "WORKER_TEST_HOOKS": "1",
    # A Databricks answer slower than this is retried; fault tests make one slow.
    "DATABRICKS_HTTP_TIMEOUT_SECONDS": "5",
    # Start limits: every start goes through them, but the suite starts batches of
    # 20+ (faults), 45 (the index's paging) and 200 racing identical starts (abuse),
    # mostly as the development principal, so the defaults are raised well above
    # what it starts in a minute. The principals that test the limits have small
    # ones of their own (tests/integration/hostile/test_limits.py).
    "START_RATE_PER_MINUTE": "600",
    "PIPELINES_WAITING_PER_PRINCIPAL": "1000",
    "PRINCIPAL_START_LIMITS": f"key:{LIMITED_PRINCIPAL}=2/0,key:{QUOTA_PRINCIPAL}=0/1",
    # What every test emails (example.com and its subdomains); others are refused.
    "RECIPIENT_DOMAINS": "example.com,.example.com",
    # Short enough for tests of slow and crowding clients to finish in seconds;
    # the callback listener takes fewer connections than by default, still more than the suite opens at once.
    "HTTP_HEADER_TIMEOUT_SECONDS": "5",
    "HTTP_BODY_TIMEOUT_SECONDS": "5",
    "CALLBACK_HEADER_TIMEOUT_SECONDS": "3",
    "CALLBACK_BODY_TIMEOUT_SECONDS": "3",
    "CALLBACK_MAX_CONNECTIONS": "100",
    **{name: str(port + PORT_OFFSET) for name, port in DEFAULT_HOST_PORTS.items()},
}


#: Where the gateway container reads the test stack's keys file.
KEYS_FILE_IN_CONTAINER = "/etc/pipelines/keys/api-keys.toml"


class TestKeys:
    """The test stack's API keys: the development key, as every tier's clients use it, and a few principals more.

    The stack runs with a keys file (``API_KEYS_FILE``) so that tests can
    authenticate as several principals, revoke a key while the gateway runs,
    and see that what the file does not list is refused. The file lists the
    development key too (allowed in ENVIRONMENT=development), under the same
    principal the gateway gives it without a file.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "api-keys.toml"
        self.keys: dict[str, str] = {"dev": DEVELOPMENT_API_KEY}
        self._entries: dict[str, KeyEntry] = {
            "dev": KeyEntry(
                id="dev",
                hash=key_digest(DEVELOPMENT_API_KEY),
                principal=DEVELOPMENT_PRINCIPAL,
                scopes=DEVELOPMENT_SCOPES,
            )
        }
        for name, scopes in {
            "other": {Scope.START, Scope.READ, Scope.CANCEL},
            "reader": {Scope.READ},
            "admin": {Scope.ADMIN},
            "revoked": {Scope.START, Scope.READ, Scope.CANCEL},
            "starter": {Scope.START},
            # Lists only what tests/integration/test_index.py starts with it.
            "lister": {Scope.START, Scope.READ, Scope.CANCEL},
            # Start limits of their own (TEST_SETTINGS' PRINCIPAL_START_LIMITS).
            "limited": {Scope.START, Scope.READ, Scope.CANCEL},
            "quota": {Scope.START, Scope.READ, Scope.CANCEL},
        }.items():
            key, entry = mint(f"test-{name}", frozenset(scopes), key_id=name)
            self.keys[name], self._entries[name] = key, entry
        self.write()

    def write(self, *, without: tuple[str, ...] = ()) -> None:
        """(Re)write the file whole and rename it into place, as an operator should."""
        text = "\n\n".join(entry.as_toml() for name, entry in self._entries.items() if name not in without)
        draft = self.path.with_suffix(".new")
        draft.write_text(text + "\n", encoding="utf-8")
        draft.chmod(0o644)
        draft.replace(self.path)


@dataclass(frozen=True)
class PublishedPort:
    """A container port and the service it belongs to."""

    service: str
    port: int


#: compose.yaml's development superuser password of the Resonate database:
#: tests look at the database as an operator would.
DEVELOPMENT_SUPERUSER_PASSWORD = "dev-only-insecure-superuser-password"

#: compose.yaml's services, their database roles and development passwords.
SERVICE_ROLES = {
    "api": ("pipeline_api", "dev-only-insecure-api-db-password"),
    "worker": ("pipeline_worker", "dev-only-insecure-worker-db-password"),
    "notifier": ("pipeline_notifier", "dev-only-insecure-notifier-db-password"),
}

#: The ports tests reach, by what the test calls them.
API = PublishedPort("api", 8000)
API_CALLBACKS = PublishedPort("api", 8002)
RESONATE = PublishedPort("resonate", 5432)
DATABRICKS = PublishedPort("databricks", 8080)
MAILSINK_HTTP = PublishedPort("mailsink", 8025)
MAILSINK_SMTP = PublishedPort("mailsink", 1025)
WORKER_OPS = PublishedPort("worker", 9000)
NOTIFIER_OPS = PublishedPort("notifier", 9000)


def compose_files(environ: Mapping[str, str] = os.environ) -> list[str]:
    """compose.yaml, then the files COMPOSE_FILE names, relative to the repo root."""
    separator = environ.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
    named = [part for part in environ.get("COMPOSE_FILE", "").split(separator) if part]
    files: list[str] = []
    for name in [BASE_COMPOSE_FILE, *named]:
        path = (REPO_ROOT / name).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"COMPOSE_FILE names {name!r}, but {path} does not exist")
        if str(path) not in files:
            files.append(str(path))
    return files


def _docker_problem() -> str | None:
    """Why Docker cannot run the stack here, or None when it can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not on PATH"
    checks = [
        (["docker", "info", "--format", "{{.ServerVersion}}"], "the Docker daemon does not answer"),
        (["docker", "compose", "version", "--short"], "the docker compose plugin is missing"),
    ]
    for command, problem in checks:
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=30)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            return f"{problem} ({' '.join(command)}: {detail.decode(errors='replace').strip()})"
    return None


class Stack:
    """The running stack: where its services answer, and control over them."""

    def __init__(self, compose: DockerCompose, keys: TestKeys, settings: Mapping[str, str]) -> None:
        self._compose = compose
        self.keys = keys
        #: What compose reads from the environment for this stack. Only the
        #: compose commands get it: set in this process, it would reach every
        #: test that reads its settings from the environment too.
        self.environment = {**os.environ, **settings}
        self._addresses: dict[PublishedPort, tuple[str, int]] = {}
        self._definitions: dict[str, Any] | None = None

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``docker compose ARGS`` on this stack's files and project."""
        command = [*self._compose.docker_compose_command(), *args]
        return subprocess.run(
            command, cwd=REPO_ROOT, check=True, capture_output=True, text=True, timeout=timeout, env=self.environment
        )

    def services(self) -> list[str]:
        """The services compose starts with these files (profiles applied)."""
        return self.compose("config", "--services").stdout.split()

    def address(self, published: PublishedPort) -> tuple[str, int]:
        """Host and port where ``published`` answers on this machine.

        Read from the compose configuration rather than from the container, so
        it is known while the service is killed too.
        """
        if not self._addresses:
            for service, definition in self._services_defined().items():
                for port in definition.get("ports", []):
                    if port.get("published"):
                        where = (port.get("host_ip") or "127.0.0.1", int(port["published"]))
                        self._addresses[PublishedPort(service, int(port["target"]))] = where
        try:
            return self._addresses[published]
        except KeyError:
            raise LookupError(f"{published.service} does not publish port {published.port}") from None

    def _services_defined(self) -> dict[str, Any]:
        """Each service's definition as compose resolves it, read once.

        What the stack is made of (its services, their ports and dependencies), which no test changes.
        """
        if self._definitions is None:
            self._definitions = json.loads(self.compose("config", "--format", "json").stdout)["services"]
        return self._definitions

    def url(self, published: PublishedPort) -> str:
        host, port = self.address(published)
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url(API)

    def resonate_dsn(self, user: str = "postgres", password: str = DEVELOPMENT_SUPERUSER_PASSWORD) -> str:
        """A libpq URL for the Resonate database as ``user`` (by default the superuser)."""
        host, port = self.address(RESONATE)
        return f"postgresql://{user}:{password}@{host}:{port}/resonate"

    @property
    def callback_url(self) -> str:
        """The gateway's public listener: the callback route and nothing else."""
        return self.url(API_CALLBACKS)

    @property
    def databricks_url(self) -> str:
        return self.url(DATABRICKS)

    @property
    def mailsink_url(self) -> str:
        return self.url(MAILSINK_HTTP)

    @property
    def smtp_address(self) -> tuple[str, int]:
        return self.address(MAILSINK_SMTP)

    @property
    def worker_ops_url(self) -> str:
        return self.url(WORKER_OPS)

    @property
    def notifier_ops_url(self) -> str:
        return self.url(NOTIFIER_OPS)

    def published_ports(self) -> list[tuple[str, int, str]]:
        """(service, container port, host address) of every port the stack publishes."""
        return [
            (container.Service or "", publisher.TargetPort or 0, publisher.URL or "")
            for container in self._compose.get_containers()
            for publisher in container.Publishers
            if publisher.PublishedPort
        ]

    def state(self, service: str) -> tuple[str, str]:
        """(state, health) of the service's container, e.g. ("running", "healthy")."""
        container = self._compose.get_container(service, include_all=True)
        return container.State or "", container.Health or ""

    def states(self) -> dict[str, tuple[str, str]]:
        """(state, health) of every service's (first) container, from one ``docker compose ps``.

        One call where asking each service apart costs one each: a fault test's check that the
        stack is whole again made twelve, about 1.5 s a test.
        """
        states: dict[str, tuple[str, str]] = {}
        for container in self._compose.get_containers(include_all=True):
            states.setdefault(container.Service or "", (container.State or "", container.Health or ""))
        return states

    def container_name(self, service: str) -> str:
        """The name of the service's (first) container, e.g. for ``docker kill``."""
        return self._compose.get_container(service, include_all=True).Name or f"{PROJECT_NAME}-{service}-1"

    def kill(self, service: str, signal: str = "SIGKILL") -> None:
        """Kill the service's container; it stays down until :meth:`start`."""
        self.compose("kill", "--signal", signal, service)

    def stop(self, service: str) -> None:
        """Stop the service gracefully (SIGTERM, then SIGKILL after the grace period)."""
        self.compose("stop", service)

    def start(self, service: str, *, wait: bool = True) -> None:
        """Start a stopped or killed service, by default waiting until it is healthy."""
        self.compose("start", service)
        if wait:
            self.wait_healthy(service)

    def down_and_up(self, *services: str) -> None:
        """``docker compose down`` the services (containers removed, volumes kept), then ``up`` them, healthy.

        The containers are new: nothing survives but what the named volumes hold.
        """
        self.compose("down", "--timeout", "10", *services)
        self.up(*services)

    def up(self, *services: str) -> None:
        """Create and start the services (all by default) from their built images, each healthy before its dependents.

        Each service starts as soon as what it depends on passes its health check, which this
        runs itself (:meth:`wait_healthy`). ``up --wait`` waited, for each dependency, for
        Docker's own next scheduled check: the test stack's checks run every 5 s
        (``HEALTHCHECK_INTERVAL``) and Docker 20.10 has no shorter interval while a container
        starts, so two layers of dependencies cost 10 s a start where the services were ready in 2.
        """
        for layer in self._start_order(services or tuple(self._services_defined())):
            self.compose("up", "--detach", "--no-build", "--no-deps", *layer)
            for service in layer:
                self.wait_healthy(service, timeout=STARTUP_TIMEOUT_SECONDS)

    def _start_order(self, services: Sequence[str]) -> list[list[str]]:
        """``services`` in layers, each depending only on services of earlier layers or not named."""
        defined = self._services_defined()
        waiting = {service: set(defined[service].get("depends_on", {})) & set(services) for service in services}
        layers: list[list[str]] = []
        while waiting:
            layer = sorted(service for service, needs in waiting.items() if not needs)
            if not layer:
                raise AssertionError(f"services depending on each other: {sorted(waiting)}")
            layers.append(layer)
            waiting = {service: needs - set(layer) for service, needs in waiting.items() if service not in layer}
        return layers

    def restart(self, service: str, *, wait: bool = True) -> None:
        self.compose("restart", service)
        if wait:
            self.wait_healthy(service)

    @contextmanager
    def partitioned(self, service: str) -> Iterator[None]:
        """Cut the service's container off every network for the block, then reattach it.

        Nothing is closed: peers' connections to it go silent, as when a
        host is lost or a network partitions. It keeps its service name.
        """
        container = self.container_name(service)
        networks_of = ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container]
        inspected = subprocess.run(networks_of, capture_output=True, text=True, check=True)
        networks = list(json.loads(inspected.stdout))
        for network in networks:
            subprocess.run(["docker", "network", "disconnect", network, container], check=True)
        try:
            yield
        finally:
            for network in networks:
                subprocess.run(["docker", "network", "connect", "--alias", service, network, container], check=True)

    def logs(self, *services: str, tail: int | None = None) -> str:
        args = ["logs", "--no-color"]
        if tail is not None:
            args += ["--tail", str(tail)]
        # compose writes a terminal control sequence before each line even
        # with --no-color; it would only clutter a failure message.
        return TERMINAL_CONTROL.sub("", self.compose(*args, *services).stdout)

    def wait_healthy(self, service: str, timeout: float = HEALTHY_TIMEOUT_SECONDS) -> None:
        """Block until the service's container is healthy, or fail saying why not.

        Healthy as Docker judges it, or as soon as its own health check passes when this
        runs it (:meth:`health_check_passes`): the test stack's checks run every
        ``HEALTHCHECK_INTERVAL`` (see :data:`TEST_SETTINGS`), which a restarted service
        would otherwise wait out.
        """
        deadline = time.monotonic() + timeout
        state, health = self.state(service)
        while health != "healthy" and not (state == "running" and self.health_check_passes(service)):
            if state in {"exited", "dead"}:
                raise AssertionError(
                    f"{service} {state} instead of turning healthy:\n{self.logs(service, tail=LOG_TAIL_LINES)}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{service} not healthy after {timeout:.0f}s "
                    f"(state={state}, health={health}):\n"
                    f"{self.logs(service, tail=LOG_TAIL_LINES)}"
                )
            time.sleep(POLL_INTERVAL_SECONDS)
            state, health = self.state(service)

    def health_check_passes(self, service: str) -> bool:
        """Whether the service's own Docker health check passes now (:func:`health_check_passes`)."""
        return health_check_passes(self.container_name(service))


def health_check_passes(container: str) -> bool:
    """Whether the container's own Docker health check passes now, run in it as Docker runs it.

    Waiting for Docker's next scheduled check costs up to ``HEALTHCHECK_INTERVAL``
    (5 s on the test stack) after every restart.
    """
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Config.Healthcheck.Test}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    test = json.loads(inspected.stdout or "null") if inspected.returncode == 0 else None
    if not test or test[0] not in {"CMD", "CMD-SHELL"}:
        return False
    command = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
    checked = subprocess.run(["docker", "exec", container, *command], capture_output=True, check=False)
    return checked.returncode == 0


def _start_failure(stack: Stack, exc: subprocess.SubprocessError | AssertionError) -> str:
    """What to tell the developer when the stack did not come up."""
    try:
        status = stack.compose("ps", "--all").stdout
        logs = stack.logs(tail=LOG_TAIL_LINES)
    except subprocess.SubprocessError as inner:
        status, logs = f"(docker compose ps failed: {inner})", ""
    command = " ".join(map(str, getattr(exc, "cmd", [])))
    stderr = getattr(exc, "stderr", None) or ""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    hint = ""
    if "port is already allocated" in stderr or "address already in use" in stderr:
        hint = "(a development stack is probably running: `docker compose down` it first)\n"
    # `up` narrates every container's progress; the verdict is at the end. A service that never
    # turned healthy says so in the first line of its error (Stack.wait_healthy).
    stderr = "\n".join(stderr.splitlines()[-VERDICT_LINES:]) if stderr else str(exc).partition("\n")[0]
    return (
        f"the compose stack did not start: {command}\n{stderr}\n{hint}"
        f"--- docker compose ps --all\n{status}\n"
        f"--- last {LOG_TAIL_LINES} log lines a service\n{logs}"
    )


#: The repository's catalogue, which the test stack runs with its waits shortened.
CATALOGUE = REPO_ROOT / "infra" / "catalogue.toml"
#: What the test stack's copy changes, per job: backoffs of a second, and for one job a repair
#: window short enough to watch it end.
STACK_CATALOGUE_CHANGES = {
    "csv-statistics": {"backoff_seconds": 1},
    "nightly-refresh": {"backoff_seconds": 1},
    "customer-report": {"backoff_seconds": 1},
    "word-frequencies": {"manual_window_seconds": 8},
}


#: A team's own pipeline module and its catalogue entry, which the test stack mounts and appends.
TEAM_FOLDER = REPO_ROOT / "tests" / "support" / "team"
TEAM_CATALOGUE = TEAM_FOLDER / "catalogue.toml"


def write_stack_catalogue(folder: Path) -> Path:
    """The repository's catalogue with STACK_CATALOGUE_CHANGES applied, as a file compose can mount.

    Only waits change: the jobs, parameters and policies are the
    repository's, so the stack runs what users run, only faster.
    """
    catalogue = Catalogue.load(CATALOGUE)
    lines = CATALOGUE.read_text(encoding="utf-8").splitlines()
    out, section = [], None
    for line in lines:
        header = re.fullmatch(r"\[jobs\.([a-z0-9-]+)\.repair\]", line.strip())
        if line.startswith("["):
            section = header.group(1) if header else None
        key = line.split("=", 1)[0].strip()
        if section in STACK_CATALOGUE_CHANGES and key in STACK_CATALOGUE_CHANGES[section]:
            continue
        out.append(line)
        if header and section in STACK_CATALOGUE_CHANGES:
            out.extend(f"{name} = {value}" for name, value in STACK_CATALOGUE_CHANGES[section].items())
    # A team's pipeline, mounted on the worker (TEAM_PIPELINES): its entry as the team writes it.
    out.append(TEAM_CATALOGUE.read_text(encoding="utf-8"))
    path = folder / "catalogue.toml"
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    path.chmod(0o644)
    folder.chmod(0o755)
    changed = Catalogue.load(path)
    for name, changes in STACK_CATALOGUE_CHANGES.items():
        assert (
            changed.job(name).repair.model_dump() == catalogue.job(name).repair.model_copy(update=changes).model_dump()
        )
    return path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose stack, built and healthy, shared by the whole session."""
    problem = _docker_problem()
    if problem is not None:
        pytest.fail(
            f"Docker is unavailable: {problem}. Integration tests need a running Docker "
            "Engine with the compose v2 plugin; on a machine without an image registry, "
            "run infra/offline/setup.sh and set "
            "COMPOSE_FILE=compose.yaml:infra/offline/compose.yaml.",
            pytrace=False,
        )
    with pytest.MonkeyPatch.context() as env:
        # Every compose command, testcontainers' and ours, then uses this project.
        env.setenv("COMPOSE_PROJECT_NAME", PROJECT_NAME)
        folder = tmp_path_factory.mktemp("api-keys")
        folder.chmod(0o755)  # the gateway runs as its own user in the container
        keys = TestKeys(folder)
        catalogue = write_stack_catalogue(tmp_path_factory.mktemp("catalogue"))
        settings = TEST_SETTINGS | {
            "API_KEYS_DIR": str(folder),
            "API_KEYS_FILE": KEYS_FILE_IN_CONTAINER,
            "JOB_CATALOGUE": str(catalogue),
            "TEAM_PIPELINES": str(TEAM_FOLDER),
            "PIPELINE_MODULES": "team_pipelines",
        }
        compose = DockerCompose(context=REPO_ROOT, compose_file_name=compose_files())
        running = Stack(compose, keys, settings)
        running.compose("down", "--volumes", "--remove-orphans")
        try:
            # Not compose.start(): it waits with no bound.
            running.compose("build", timeout=BUILD_AND_START_TIMEOUT_SECONDS)
            running.up()
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as exc:
            message = _start_failure(running, exc)
            compose.stop(down=True)
            pytest.fail(message, pytrace=False)
        try:
            yield running
        finally:
            compose.stop(down=True)

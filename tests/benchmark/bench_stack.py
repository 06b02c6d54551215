"""The benchmark's own compose stack, and what its containers cost in CPU and memory.

The stack is the one ``docker compose up`` runs here (compose.yaml plus what
``COMPOSE_FILE`` names, as the integration tests do), under its own project
name and host ports, so it never adopts or disturbs a developer's stack or the
tests'. Only benchmark-specific settings differ, all through variables
compose.yaml already reads:

- health checks run every 5 s instead of 2 s (each one starts a Python
  process in its container, which costs the cores being measured);
- the emulator's run phases are 0 s, so a notebook that does nothing but call
  back finishes as fast as its process runs, and its cap on concurrent runs is
  lifted, so 10,000 runs can wait at once;
- the worker's watchdog interval is set per stage: short while the polling
  baseline is measured, long (:data:`QUIET_WATCHDOG_SECONDS`) while
  everything else is, so its checks do not mix into those figures. Changing
  it recreates the worker container only; Resonate keeps every workflow.

Container figures are per process: Docker's ``top`` gives each container's
processes (host pids, docker-init excluded) and their resident memory (RSS),
/proc/<pid>/smaps_rollup their proportional memory (PSS) and /proc/<pid>/stat
their CPU time. That leaves out the health checks' short-lived processes,
which are not the service's work; where /proc cannot see the pids (Docker in
a VM), the container's CPU comes from Docker's stats and its memory is RSS.

Memory is PSS rather than RSS because the Resonate server is Postgres, a
process per connection: every backend maps the same shared buffers, and
summed RSS counts each shared page once per backend that touched it (670 MiB
of RSS for 136 MiB of PSS, 30 processes, measured on the benchmark stack).
PSS divides a shared page among the processes sharing it, so the sum is what
the container's processes hold together. For the single-process Python
services the two differ by the shared libraries' pages.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import docker
from docker.models.containers import Container

from tests.support.stack import DEFAULT_HOST_PORTS, DEVELOPMENT_SUPERUSER_PASSWORD, REPO_ROOT, compose_files

#: Keeps the benchmark's containers apart from a developer's stack and the tests'.
PROJECT_NAME = "resonate-databricks-bench"
#: Added to compose.yaml's default host ports (8000 -> 28000, ...); the tests use +10000.
PORT_OFFSET = 20000
#: Watchdog interval while no figure depends on it: one check an hour per
#: waiting pipeline, so 10,000 waiting pipelines cost about 3 checks a second.
QUIET_WATCHDOG_SECONDS = 3600
#: `up --build` may take this long in all (a cold build takes minutes).
BUILD_AND_START_TIMEOUT_SECONDS = 1200
#: Longest the containers may take to turn healthy after `up` or a recreate.
HEALTHY_TIMEOUT_SECONDS = 180

#: What the benchmark sets besides ports and the watchdog; see the module docstring.
BENCH_SETTINGS = {
    # Every health check starts a Python process in its container; at compose's
    # 2 s the six containers spent 0.22 cores on them, measured idle on the
    # 2-core machine. 5 s keeps start-up quick and takes most of that away.
    "HEALTHCHECK_INTERVAL": "5s",
    "DATABRICKS_EMULATOR_QUEUED_SECONDS": "0",
    "DATABRICKS_EMULATOR_PENDING_SECONDS": "0",
    "DATABRICKS_EMULATOR_TERMINATING_SECONDS": "0",
    "DATABRICKS_EMULATOR_MAX_CONCURRENT_RUNS": "100000",
    # The benchmark starts thousands of pipelines as one principal and holds 10,000 waiting:
    # the start limits are lifted (0: none), so that it measures the gateway, not its limits.
    "START_RATE_PER_MINUTE": "0",
    "PIPELINES_WAITING_PER_PRINCIPAL": "0",
    # Figure 9 reads the worker's and the notifier's live objects (GET /test-hooks/heap);
    # no pause point is ever armed, so no pipeline stops at one.
    "WORKER_TEST_HOOKS": "true",
}

#: The services whose cost is reported, in report order.
SERVICES = ("api", "resonate", "worker", "notifier", "databricks", "mailsink")


class StackError(RuntimeError):
    """The stack could not be started, found or changed; the message says what compose answered."""


@dataclass
class ContainerSample:
    """CPU seconds used since each container started, and its processes' memory, at one instant."""

    at: float
    cpu_seconds: dict[str, float]
    memory_bytes: dict[str, int]
    #: By service, which memory ``memory_bytes`` holds: "pss", or "rss" where /proc cannot be read.
    memory_measure: dict[str, str]


@dataclass
class BenchStack:
    project: str = PROJECT_NAME
    port_offset: int = PORT_OFFSET
    #: The worker's current WATCHDOG_INTERVAL_SECONDS.
    watchdog_interval_seconds: float = QUIET_WATCHDOG_SECONDS
    _docker: docker.DockerClient | None = field(default=None, repr=False)
    _containers: dict[str, Container] = field(default_factory=dict, repr=False)

    # -- compose ---------------------------------------------------------------------

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(BENCH_SETTINGS)
        env.update({name: str(self._host_port(name)) for name in DEFAULT_HOST_PORTS})
        env["COMPOSE_PROJECT_NAME"] = self.project
        env["WATCHDOG_INTERVAL_SECONDS"] = f"{self.watchdog_interval_seconds:g}"
        return env

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "--project-name", self.project]
        for path in compose_files():
            command += ["--file", path]
        command += list(args)
        try:
            return subprocess.run(
                command,
                cwd=REPO_ROOT,
                env=self.environment(),
                check=True,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.CalledProcessError as exc:
            tail = "\n".join((exc.stderr or "").splitlines()[-12:])
            raise StackError(f"`{' '.join(command)}` failed (exit {exc.returncode}):\n{tail}") from exc
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"`{' '.join(command)}` did not finish within {timeout:.0f} s") from exc

    def up(self, *, fresh: bool) -> float:
        """Start the stack (building images when ``fresh``); returns the seconds it took.

        ``fresh`` first removes any earlier benchmark stack with its volumes, so
        no figure inherits state; otherwise a running stack is used as it is,
        and compose recreates only containers whose settings differ.
        """
        started = time.monotonic()
        if fresh:
            self.compose("down", "--volumes", "--remove-orphans")
        args = ["up", "--detach", "--wait", "--wait-timeout", str(HEALTHY_TIMEOUT_SECONDS)]
        self.compose(*args, *(["--build"] if fresh else []), timeout=BUILD_AND_START_TIMEOUT_SECONDS)
        self._containers.clear()
        return time.monotonic() - started

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans")

    def set_watchdog_interval(self, seconds: float) -> float:
        """Recreate the worker with another watchdog interval; returns the seconds it took.

        Workflows in flight are unaffected (their state is in Resonate); each
        watchdog check carries the interval it was scheduled with, so only
        pipelines triggered from now on use the new one.
        """
        if seconds == self.watchdog_interval_seconds:
            return 0.0
        started = time.monotonic()
        self.watchdog_interval_seconds = seconds
        self.compose("up", "--detach", "--no-deps", "--wait", "--wait-timeout", str(HEALTHY_TIMEOUT_SECONDS), "worker")
        self._containers.pop("worker", None)
        return time.monotonic() - started

    def url(self, service_port: str) -> str:
        """``http://127.0.0.1:PORT`` for one of DEFAULT_HOST_PORTS' variables, e.g. ``API_HOST_PORT``."""
        return f"http://127.0.0.1:{self._host_port(service_port)}"

    def resonate_dsn(self) -> str:
        """A libpq URL for the Resonate database as its superuser, with compose.yaml's development password."""
        port = self._host_port("RESONATE_HOST_PORT")
        return f"postgresql://postgres:{DEVELOPMENT_SUPERUSER_PASSWORD}@127.0.0.1:{port}/resonate"

    def _host_port(self, service_port: str) -> int:
        return DEFAULT_HOST_PORTS[service_port] + self.port_offset

    # -- container figures ---------------------------------------------------------------

    def _container(self, service: str) -> Container:
        if service not in self._containers:
            self._docker = self._docker or docker.from_env()
            found = self._docker.containers.list(
                filters={
                    "label": [f"com.docker.compose.project={self.project}", f"com.docker.compose.service={service}"]
                }
            )
            if len(found) != 1:
                raise StackError(
                    f"expected one running {service} container in project {self.project}, found {len(found)}"
                )
            self._containers[service] = found[0]
        return self._containers[service]

    def sample(self, services: tuple[str, ...] = SERVICES) -> ContainerSample:
        cpu: dict[str, float] = {}
        memory: dict[str, int] = {}
        measure: dict[str, str] = {}
        for service in services:
            container = self._container(service)
            processes = _processes(container)
            memory[service], measure[service] = _memory(processes)
            try:
                cpu[service] = sum(_process_cpu_seconds(p.pid) for p in processes)
            except OSError:
                cpu[service] = self._cpu_seconds(container)
        return ContainerSample(at=time.time(), cpu_seconds=cpu, memory_bytes=memory, memory_measure=measure)

    def _cpu_seconds(self, container: Container) -> float:
        """CPU time the whole container has used, from the Docker API (about a second per call)."""
        stats = container.stats(stream=False)
        return stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9

    def worker_setting(self, name: str) -> str | None:
        """An environment variable as the worker container has it."""
        for entry in self._container("worker").attrs["Config"]["Env"]:
            key, _, value = entry.partition("=")
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class _Process:
    pid: int
    rss_bytes: int


def _processes(container: Container) -> list[_Process]:
    """The container's processes (host pids) and their RSS, docker-init excluded."""
    table = container.top(ps_args="-o pid,rss,args")
    titles = table["Titles"]
    pid_at, rss_at = titles.index("PID"), titles.index("RSS")
    return [
        _Process(int(row[pid_at]), int(row[rss_at]) * 1024)
        for row in table["Processes"] or []
        if "docker-init" not in row[-1]
    ]


def _memory(processes: list[_Process]) -> tuple[int, str]:
    """The processes' memory together and how it was measured: PSS from /proc, or RSS where /proc refuses."""
    proportional: list[int] = []
    for process in processes:
        try:
            proportional.append(_proportional_bytes(process.pid))
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited since `top` listed it, or a pid of another kernel (Docker in a VM)
        except PermissionError:
            proportional.clear()  # another user's processes, and the benchmark is not root
            break
    if proportional:
        return sum(proportional), "pss"
    return sum(p.rss_bytes for p in processes), "rss"


def _proportional_bytes(pid: int) -> int:
    """One process's PSS: its private pages, and each shared page divided by the processes sharing it."""
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    raise FileNotFoundError(f"/proc/{pid}/smaps_rollup has no Pss line")


#: Clock ticks per second, the unit of /proc/<pid>/stat's CPU times.
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu_seconds(pid: int) -> float:
    """CPU time of one process and of its children it has waited for (the emulator's notebooks), from /proc.

    Read on the host: Docker's own stats take a second per call here, and
    count the health checks' short-lived processes too. Raises OSError where
    container pids are not visible (Docker in a VM); the caller then asks Docker.
    """
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # Fields 14-17 of proc(5) (utime, stime, cutime, cstime); index 0 here is field 3.
    return sum(int(value) for value in fields[11:15]) / _CLOCK_TICKS


def cpu_used(before: ContainerSample, after: ContainerSample) -> dict[str, float]:
    """CPU seconds each service used between two samples."""
    return {name: after.cpu_seconds[name] - before.cpu_seconds[name] for name in before.cpu_seconds}


def machine_facts() -> dict[str, object]:
    """What the figures were taken on: cores, memory, CPU model, load, versions, commit."""
    facts: dict[str, object] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        with open("/proc/meminfo") as meminfo:
            total_kib = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        facts["memory_gib"] = round(total_kib / 1024 / 1024, 1)
        with open("/proc/cpuinfo") as cpuinfo:
            facts["cpu_model"] = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None
            )
    except OSError:
        pass
    facts["docker"] = _quiet(["docker", "version", "--format", "{{.Server.Version}}"])
    facts["compose"] = _quiet(["docker", "compose", "version", "--short"])
    facts["commit"] = _quiet(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    facts["uncommitted_changes"] = bool(_quiet(["git", "-C", str(REPO_ROOT), "status", "--porcelain"]))
    facts["compose_files"] = [os.path.relpath(path, REPO_ROOT) for path in compose_files()]
    return facts


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def _quiet(command: list[str]) -> str | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def settings_summary(stack: BenchStack) -> Mapping[str, str]:
    return {**BENCH_SETTINGS, "project": stack.project, "port_offset": str(stack.port_offset)}

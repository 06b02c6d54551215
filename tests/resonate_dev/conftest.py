"""Fixtures that run the stand-in and the official SDKs as separate OS processes.

Every test gets its own stand-in (``python -m resonate_dev``) on a free
loopback port, with a wire log of every frame it sends. SDK clients and
workers are subprocesses running the small scripts beside this file
(``py_worker.py``, ``py_client.py``) and in ``ts/`` (the TypeScript SDK from
npm). Whatever a test starts is stopped when it ends.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

HERE = Path(__file__).parent
TS_DIR = HERE / "ts"
PYTHON = sys.executable

#: How long a process may take to come up (stand-in, worker) before a test fails.
STARTUP_SECONDS = 20.0
#: How long one SDK client call may take before a test fails.
CALL_SECONDS = 40.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Any, what: str, timeout: float = STARTUP_SECONDS) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class StandIn:
    url: str
    wire_log: Path
    process: subprocess.Popen[bytes]
    output: Path
    #: Loopback only: no proxy or netrc lookups from the environment.
    http: httpx.Client = field(default_factory=lambda: httpx.Client(trust_env=False, timeout=10))

    def post(self, kind: str, data: dict[str, Any], *, auth: str | None = None) -> httpx.Response:
        """Send one request envelope, as an SDK would."""
        head: dict[str, Any] = {"corrId": uuid.uuid4().hex, "version": "2026-04-01"}
        if auth is not None:
            head["auth"] = auth
        return self.http.post(f"{self.url}/", json={"kind": kind, "head": head, "data": data})

    def log(self) -> str:
        return self.output.read_text(errors="replace")


@dataclass
class Processes:
    """Every subprocess a test started, stopped at teardown."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(args, **kwargs)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in reversed(self.started):
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


@pytest.fixture
def start_standin(processes: Processes, tmp_path: Path) -> Iterator[Any]:
    """Start a stand-in with extra environment; returns a :class:`StandIn` once ready."""
    clients: list[httpx.Client] = []

    def start(**env: str) -> StandIn:
        port = free_port()
        wire_log = tmp_path / f"wire-{port}.jsonl"
        output = tmp_path / f"standin-{port}.log"
        environment = {
            **os.environ,
            "RESONATE_DEV__WIRE_LOG": str(wire_log),
            "RESONATE_LEVEL": "info",
            **env,
        }
        with output.open("wb") as sink:
            process = processes.popen(
                [PYTHON, "-m", "resonate_dev", "--host", "127.0.0.1", "--port", str(port)],
                env=environment,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        standin = StandIn(
            url=f"http://127.0.0.1:{port}", wire_log=wire_log, process=process, output=output
        )
        clients.append(standin.http)

        def ready() -> bool:
            if process.poll() is not None:
                pytest.fail(f"stand-in exited with {process.returncode}:\n{output.read_text()}")
            try:
                return standin.http.get(f"{standin.url}/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, "the stand-in's /ready")
        return standin

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def standin(start_standin: Any) -> StandIn:
    return start_standin()


def read_json_line(process: subprocess.Popen[bytes], what: str, timeout: float) -> dict[str, Any]:
    """The next JSON line a child prints on stdout, or fail with what it said instead."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    buffered = b""
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.1):
            if process.poll() is not None:
                break
            continue
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        buffered += chunk
        for line in buffered.splitlines():
            if line.startswith(b"{"):
                return json.loads(line)
    process.poll()
    pytest.fail(
        f"{what} printed no JSON line within {timeout}s (exit {process.returncode}): {buffered!r}"
    )


@dataclass
class Sdk:
    """Starts SDK workers and runs SDK client calls, each in its own process."""

    processes: Processes
    tmp_path: Path
    ts_project: TsProject

    def _stderr(self, name: str) -> IO[bytes]:
        """Where a child's stderr goes: a file in the test's tmp dir, kept for failures."""
        return (self.tmp_path / f"{name}.err").open("wb")

    def py_worker(
        self,
        url: str,
        group: str,
        pid: str,
        *,
        ttl: float | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        args = [PYTHON, str(HERE / "py_worker.py"), url, group, pid]
        if ttl is not None:
            args += ["--ttl", str(ttl)]
        with self._stderr(pid) as err:
            process = self.processes.popen(
                args, stdout=subprocess.PIPE, stderr=err, env={**os.environ, **(env or {})}
            )
        ready = read_json_line(process, f"python worker {pid}", STARTUP_SECONDS)
        assert ready == {"ready": True, "group": group, "pid": pid}
        return process

    def py_client(
        self, url: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start one client call; read its answer with :meth:`answer`."""
        with self._stderr(f"client-{uuid.uuid4().hex[:6]}") as err:
            return self.processes.popen(
                [PYTHON, str(HERE / "py_client.py"), url, *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **(env or {})},
            )

    def call(self, url: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        return self.answer(self.py_client(url, *args, env=env))

    def answer(self, client: subprocess.Popen[bytes]) -> dict[str, Any]:
        return read_json_line(client, f"python client {client.args[3:]}", CALL_SECONDS)

    def ts_worker(self, url: str, group: str, pid: str) -> subprocess.Popen[bytes]:
        with self._stderr(pid) as err:
            process = self.processes.popen(
                [node(), "--import", "./polyfill.mjs", "worker.mjs", url, group, pid],
                cwd=self.ts_project.require(),
                stdout=subprocess.PIPE,
                stderr=err,
            )
        ready = read_json_line(process, f"typescript worker {pid}", STARTUP_SECONDS)
        assert ready == {"ready": True, "group": group, "pid": pid}
        return process

    def ts_run_workflow(
        self, url: str, group: str, pid: str, id: str, sleep_ms: int
    ) -> dict[str, Any]:
        with self._stderr(pid) as err:
            process = self.processes.popen(
                [
                    node(),
                    "--import",
                    "./polyfill.mjs",
                    "run_workflow.mjs",
                    url,
                    group,
                    pid,
                    id,
                    str(sleep_ms),
                ],
                cwd=self.ts_project.require(),
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return read_json_line(process, "typescript workflow run", CALL_SECONDS)


@pytest.fixture
def sdk(processes: Processes, tmp_path: Path, ts_project: TsProject) -> Sdk:
    return Sdk(processes=processes, tmp_path=tmp_path, ts_project=ts_project)


def node() -> str:
    path = shutil.which("node")
    if path is None:
        pytest.fail(
            "Node.js is not installed: the TypeScript SDK tests need `node` (20 or later) on PATH"
        )
    return path


@dataclass
class TsProject:
    """The Node project with @resonatehq/sdk, or why it could not be made ready.

    The problem is raised by :meth:`require` inside each test that needs
    Node, so a missing ``node`` or ``npm`` shows as a failed test saying what
    is missing, not as a fixture error.
    """

    path: Path
    problem: str | None = None

    def require(self) -> Path:
        node()
        if self.problem is not None:
            pytest.fail(self.problem)
        return self.path


def _install_ts_project() -> str | None:
    if (TS_DIR / "node_modules" / "@resonatehq" / "sdk").is_dir():
        return None
    npm = shutil.which("npm")
    if npm is None:
        return (
            "npm is not installed: it is needed to install @resonatehq/sdk for the TypeScript tests"
        )
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=TS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        return f"npm ci failed in {TS_DIR}:\n{result.stdout}\n{result.stderr}"
    return None


@pytest.fixture(scope="session")
def ts_project() -> TsProject:
    """The Node project, installed with ``npm ci`` when node_modules is absent."""
    return TsProject(path=TS_DIR, problem=_install_ts_project())


@pytest.fixture
def wire_check(ts_project: TsProject) -> Any:
    """Asserts every frame in a stand-in's wire log passes the TypeScript SDK's validators."""

    def check(standin: StandIn) -> dict[str, int]:
        result = subprocess.run(
            [node(), "validate_wire.mjs", str(standin.wire_log)],
            cwd=ts_project.require(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"wire validator crashed:\n{result.stdout}\n{result.stderr}")
        assert report["invalid"] == [], "frames the TypeScript SDK rejects:\n" + "\n".join(
            json.dumps(frame) for frame in report["invalid"][:10]
        )
        assert report["checked"]["response"] > 0
        return report["checked"]

    return check
